"""The search page's files as the app serves them (the page itself is driven in a browser in tests/ui)."""

import re

from fastapi.testclient import TestClient

from app.api.ui import PAGE_DIR


def test_root_sends_a_browser_to_the_page(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    # Defence in depth for the highlights the page inserts as HTML: only its own script runs, nothing frames it.
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        response = client.get(f"/ui/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_the_page_fetches_nothing_from_elsewhere() -> None:
    """Works offline: no CDN, no absolute URL in any of its files."""
    for path in PAGE_DIR.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path.name


def test_a_missing_file_gets_the_error_body(client: TestClient) -> None:
    response = client.get("/ui/nothing.js")
    assert response.status_code == 404 and "error" in response.json()
