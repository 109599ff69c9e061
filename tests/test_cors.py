"""CORS: a page on an allowed origin may call the API (preflight included); one on another origin may not."""

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AppFactory

ALLOWED = "https://search.example"
OTHER = "https://elsewhere.example"


def _preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options("/v1/collections/animals/search", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-request-id"})


def test_preflight_from_an_allowed_origin_is_answered(make_client: AppFactory) -> None:
    with make_client(cors_origins=[ALLOWED, "http://localhost:3000"]) as client:
        response = _preflight(client, ALLOWED)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "x-request-id"} <= allowed
        odd = client.options("/v1/collections", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET",
                                                         "Access-Control-Request-Headers": "x-debug"})
        assert odd.status_code == 400 and odd.json()["error"]["details"][0]["refused"] == ["headers"]
        # It said to list the origin in SEARCH_CORS_ORIGINS, which was not the cause (QA).
        message = odd.json()["error"]["message"]
        assert "Authorization" in message and "SEARCH_CORS_ORIGINS" not in message
        # A Private Network Access preflight was refused with an empty hint after "(private-network);" (QA).
        private = client.options("/v1/collections", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET",
                                                             "Access-Control-Request-Private-Network": "true"})
        assert private.status_code == 400 and "Private Network Access" in private.json()["error"]["message"]


def test_cross_origin_request_from_an_allowed_origin_can_be_read(make_client: AppFactory) -> None:
    with make_client(cors_origins=[ALLOWED]) as client:
        response = client.get("/v1/collections", headers={"Origin": ALLOWED})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        # The page may read the request id (to quote it), a training job's Location and a 503's Retry-After.
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert exposed == {"x-request-id", "location", "retry-after"}
        # An error answer too, or the page could not read the error body.
        missing = client.get("/v1/collections/nope", headers={"Origin": ALLOWED})
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == ALLOWED


def test_other_origins_get_no_cors_headers(make_client: AppFactory) -> None:
    with make_client(cors_origins=[ALLOWED]) as client:
        preflight = _preflight(client, OTHER)
        assert preflight.status_code == 400
        assert preflight.json()["error"]["code"] == "cors_refused"
        assert "access-control-allow-origin" not in preflight.headers
        response = client.get("/v1/collections", headers={"Origin": OTHER})
        assert "access-control-allow-origin" not in response.headers  # the browser keeps the answer from the page


def test_no_origins_configured_means_same_origin_only(client: TestClient) -> None:
    assert _preflight(client, ALLOWED).status_code == 405
    assert "access-control-allow-origin" not in client.get("/v1/collections", headers={"Origin": ALLOWED}).headers


def test_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    monkeypatch.setenv("SEARCH_CORS_ORIGINS", "https://a.example, http://localhost:5173")
    assert Settings().cors_origins == ["https://a.example", "http://localhost:5173"]


@pytest.mark.parametrize("bad", ["http://allowed.example/", "https://a.example/app", "a.example",
                                 "https://A.example", "http://a.example:0300", "http://a.example:99999",
                                 "http://a.example:0", "http://a.example:", "http://a.example:80a",
                                 "http://[::1]:070"])
def test_a_value_that_is_not_an_origin_refuses_the_settings(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    """A trailing "/" (a common copy-paste) was taken, and then never matched a browser's Origin (QA)."""
    from pydantic import ValidationError

    from app.settings import Settings

    monkeypatch.setenv("SEARCH_CORS_ORIGINS", f"https://ok.example, {bad}")
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings()
    monkeypatch.setenv("SEARCH_CORS_ORIGINS", "*, http://[::1]:8080, chrome-extension://abcdef")
    assert Settings().cors_origins == ["*", "http://[::1]:8080", "chrome-extension://abcdef"]


@pytest.mark.parametrize("origin", ["https://a.example:443", "http://a.example:80"])
def test_an_origin_with_its_default_port_refuses_the_settings(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    """A browser leaves the default port out of Origin, so such a value was taken and never matched (QA)."""
    from pydantic import ValidationError

    from app.settings import Settings

    monkeypatch.setenv("SEARCH_CORS_ORIGINS", origin)
    with pytest.raises(ValidationError, match="default port"):
        Settings()
    monkeypatch.setenv("SEARCH_CORS_ORIGINS", "https://a.example:8443, http://a.example:8080")
    assert Settings().cors_origins == ["https://a.example:8443", "http://a.example:8080"]
