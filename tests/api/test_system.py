"""Probes, Prometheus metrics and request ids."""

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.client import ApiError
from app.main import create_app
from app.settings import Settings
from tests.conftest import wait_ready
from tests.helpers import ANIMALS

SEARCH = "/v1/collections/animals/search"


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_metrics_count_routes_documents_and_the_filter(animals: TestClient) -> None:
    before = samples(animals)
    animals.post(SEARCH, json={"query": "salmon", "relevance": {"threshold": 0.0}})  # keeps every candidate
    animals.post(SEARCH, json={"query": "salmon", "relevance": {"threshold": 1.0}})  # keeps none: empty
    animals.get("/v1/collections/animals/documents/nope")
    after = samples(animals)

    route = {"method": "POST", "route": "/v1/collections/{name}/search"}
    assert value(after, "search_http_requests_total", **route, status="200") - \
        value(before, "search_http_requests_total", **route, status="200") == 2
    missing = {"method": "GET", "route": "/v1/collections/{name}/documents/{doc_id}", "status": "404"}
    assert value(after, "search_http_requests_total", **missing) == value(before, "search_http_requests_total",
                                                                          **missing) + 1
    assert value(after, "search_http_request_seconds_count", **route) == 2
    assert value(after, "search_collection_documents", collection="animals") == len(ANIMALS)
    assert value(after, "search_ingested_documents_total", collection="animals") == len(ANIMALS)
    assert value(after, "search_ingest_seconds_total", collection="animals") > 0

    def delta(name: str) -> float:
        return value(after, name, collection="animals") - value(before, name, collection="animals")

    assert delta("search_queries_total") == 2 and delta("search_queries_empty_total") == 1
    # Both searches saw the same candidates; the second dropped all of them, the first none.
    assert delta("search_relevance_candidates_total") == 2 * delta("search_relevance_filtered_total") > 0


def test_a_client_that_leaves_mid_upload_is_no_500_and_a_413_counts_on_its_route(animals: TestClient) -> None:
    """A client that closed its connection mid-body was counted as a 500 under route "unmatched" (QA), setting off
    5xx alerts for no server error; a 413 answered before routing was "unmatched" too."""
    route = {"method": "POST", "route": "/v1/collections/{name}/search"}

    async def call(headers: list[tuple[bytes, bytes]], messages: list[dict[str, object]]) -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": SEARCH, "raw_path": SEARCH.encode(), "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
                 "client": ("127.0.0.1", 5000), "server": ("test", 80)}
        await animals.app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    before = samples(animals)
    left = animals.portal.call(call, [(b"content-length", b"100")],  # type: ignore[union-attr]
                               [{"type": "http.request", "body": b'{"query":', "more_body": True}])
    assert left == []  # nobody to answer
    too_big = animals.portal.call(call, [(b"content-length", str(1 << 40).encode())], [])  # type: ignore[union-attr]
    assert too_big[0]["status"] == 413
    after = samples(animals)
    for status in ("499", "413"):
        assert value(after, "search_http_requests_total", **route, status=status) == \
            value(before, "search_http_requests_total", **route, status=status) + 1, status
    for status in ("500", "499", "413"):
        assert value(after, "search_http_requests_total", method="POST", route="unmatched", status=status) == \
            value(before, "search_http_requests_total", method="POST", route="unmatched", status=status)


def test_request_ids_are_echoed_or_made(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(len(rid) == 32 for rid in made)


def test_metrics_count_the_query_encoders_passes(animals: TestClient) -> None:
    before = samples(animals)
    for query in ("salmon", "eagles", "bone"):
        animals.post(SEARCH, json={"query": query})
    # encoded too: its hits carry their probability
    animals.post(SEARCH, json={"query": "salmon", "mode": "lexical", "relevance": {"enabled": False}})
    after = samples(animals)

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    # one client, one search at a time: each encoded alone, in a pass of its own
    assert delta("search_query_encoder_passes_total") == delta("search_query_encoder_queries_total") == 4


def test_metrics_count_the_searches_that_waited_for_a_slot(animals: TestClient) -> None:
    slots = animals.app.state.engine.search_slots  # type: ignore[attr-defined]
    animals.post(SEARCH, json={"query": "salmon"})
    assert slots.waits == 0  # one search at a time never waits
    slots.waits, slots.wait_seconds = 3, 0.25  # as if three had waited (tests/engine/test_search_slots.py)
    found = samples(animals)
    assert value(found, "search_slot_waits_total") == 3
    assert value(found, "search_slot_wait_seconds_total") == 0.25


def test_an_unexpected_error_is_a_500_answer_not_a_dropped_connection(animals: TestClient,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette's last-resort handler answers a 500 and then raises the error again, and uvicorn closes the
    keep-alive connection: the next request on it failed. Now the error ends in its answer (the test client
    raises what reaches the server), and the metrics count it."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "search", broken)
    before = samples(animals)
    response = animals.post(SEARCH, json={"query": "salmon"}, headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"] == "bug-1"
    labels = {"method": "POST", "route": "/v1/collections/{name}/search", "status": "500"}
    assert value(samples(animals), "search_http_requests_total", **labels) == value(
        before, "search_http_requests_total", **labels) + 1


def test_a_request_cut_short_by_the_shutdown_is_a_503_to_retry() -> None:
    """Past its graceful-shutdown timeout uvicorn cancels the requests still running and answered each with a
    bare text 500, which the client and the ingest command take as fatal (QA: a bulk load at a rolling restart).
    Now it is the service's 503 with Retry-After, the connection closed."""
    from app.api.errors import UnexpectedErrors

    async def still_encoding(scope: object, receive: object, send: object) -> None:
        await asyncio.sleep(3600)

    async def cut_short() -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/collections/c/documents", "headers": []}
        task = asyncio.create_task(UnexpectedErrors(still_encoding)(scope, receive, send))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        await task  # answered, not raised: uvicorn would otherwise answer its own 500
        return sent

    start, body = asyncio.run(cut_short())
    headers = {k.decode(): v.decode() for k, v in start["headers"]}  # type: ignore[attr-defined]
    assert start["status"] == 503 and headers["retry-after"] and headers["connection"] == "close"
    error = json.loads(body["body"])["error"]  # type: ignore[arg-type]
    assert error["code"] == "not_ready" and "retry" in error["message"]


def test_head_is_answered_as_get_without_the_body(animals: TestClient) -> None:
    """HEAD on /health, /ready or any GET route was a 405, which an uptime check or `curl -I` reads as down (QA)."""
    for path in ("/health", "/ready", "/v1/collections", "/v1/collections/animals", "/ui/"):
        got, head = animals.get(path), animals.head(path)
        assert head.status_code == got.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.headers["content-type"] == got.headers["content-type"], path
    assert animals.head("/v1/collections/nowhere").status_code == 404
    assert animals.head("/v1/collections/animals/search").status_code == 405  # a POST route


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("post", "/v1/collections/x", "GET, HEAD, PUT, DELETE"),  # three routes share the path: all are named
    ("post", "/health", "GET, HEAD"),  # HeadAsGet answers HEAD wherever GET is
    ("put", "/v1/collections/x/search", "POST"),
    ("delete", "/v1/collections", "GET, HEAD"),
])
def test_a_wrong_method_is_405_with_the_methods_the_path_takes(client: TestClient, method: str, path: str,
                                                               allow: str) -> None:
    response = client.request(method.upper(), path)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow


def test_every_route_that_takes_a_body_says_it_can_answer_413_and_415(client: TestClient) -> None:
    """Any body over the limit is a 413, whatever the route (app/api/limits.py); the search, PUT and train routes
    did not say so in the OpenAPI document (QA)."""
    paths = client.get("/openapi.json").json()["paths"]
    with_body = [(path, method, operation) for path, operations in paths.items()
                 for method, operation in operations.items() if "requestBody" in operation]
    assert len(with_body) >= 4  # PUT a collection, POST documents, search and train
    for path, method, operation in with_body:
        assert {"413", "415"} <= set(operation["responses"]), (method, path)


def test_an_api_path_with_a_trailing_slash_is_served_as_the_path_without_it(animals: TestClient) -> None:
    """It was an empty-bodied 307 redirect (QA): no error body, and a redirected POST many clients do not follow."""
    route = {"method": "POST", "route": "/v1/collections/{name}/search", "status": "200"}
    before = value(samples(animals), "search_http_requests_total", **route)
    found = animals.post(SEARCH + "/", json={"query": "cats purr", "k": 3}, follow_redirects=False)
    assert found.status_code == 200, found.text
    assert value(samples(animals), "search_http_requests_total", **route) == before + 1
    assert found.json()["hits"] == animals.post(SEARCH, json={"query": "cats purr", "k": 3}).json()["hits"]
    listed = animals.get("/v1/collections/", follow_redirects=False)
    assert listed.status_code == 200 and "animals" in {c["name"] for c in listed.json()["collections"]}
    assert animals.get("/v1/collections/animals/", follow_redirects=False).json()["count"] == len(ANIMALS)
    # A document id may end in "/": its path is taken as it is.
    doc = {"id": "notes/", "text": "A slash at the end of an id."}
    assert animals.post("/v1/collections/animals/documents", json={"documents": [doc]}).status_code == 200
    assert animals.get("/v1/collections/animals/documents/notes/").json()["id"] == "notes/"
    assert animals.get("/v1/collections/animals/documents/cat/").status_code == 404  # "cat/" is another id
    # No document's id is empty: `…/documents/` is the listing (it was a 422 for the missing id).
    page = animals.get("/v1/collections/animals/documents/", params={"limit": 2}, follow_redirects=False)
    assert page.status_code == 200 and len(page.json()["documents"]) == 2
    missing = animals.get("/v1/nothing/here/", follow_redirects=False)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_start_that_fails_says_why_in_its_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A SEARCH_MODEL that is no model logged "start-up failed; shutting down", its reason only the last of 13
    traceback lines (QA); /ready says it too."""
    settings = Settings(data_dir=tmp_path / "data", model=str(tmp_path / "no-model"))
    with caplog.at_level(logging.ERROR), TestClient(create_app(settings)) as client:
        with pytest.raises(ApiError) as failed:
            wait_ready(client)
        assert failed.value.code == "startup_failed"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start-up failed")]
    assert "no-model" in line and "Error: " in line, line


@pytest.mark.parametrize(("flag", "free", "said"), [(os.ST_RDONLY, 1000, "read-only filesystem"),
                                                    (0, 0, "disk is full")])
def test_ready_says_degraded_while_the_data_dir_cannot_take_a_write(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, flag: int, free: int, said: str) -> None:
    """A data dir remounted read-only (or full) answered every write 503 (or 507) while /ready said "ready" (QA).
    It stays a 200 (searches are served) and clears with the disk."""
    real = os.statvfs
    data_dir = str(client.app.state.settings.data_dir)  # type: ignore[attr-defined]

    def statvfs(path: Any) -> os.statvfs_result:
        got = real(path)
        if str(path) != data_dir:
            return got
        fields = list(got)
        fields[3], fields[4], fields[8] = free, free, got.f_flag | flag  # f_bfree, f_bavail, f_flag
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    answer = client.get("/ready")
    assert answer.status_code == 200 and answer.json()["status"] == "degraded"
    assert said in answer.json()["reason"] and "searches are served" in answer.json()["reason"]
    monkeypatch.setattr(os, "statvfs", real)
    assert client.get("/ready").json() == {"status": "ready"}
