"""API keys: read keys read, admin keys write, everything else is refused; health stays open."""

import logging

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AppFactory

READ, ADMIN = "read-key-123", "admin-key-456"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_enforced_on_every_route(make_client: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with make_client(api_keys=[READ], admin_keys=[ADMIN]) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        writes = [("PUT", "/v1/collections/k", None),
                  ("POST", "/v1/collections/k/documents", {"documents": [{"id": "1", "text": "hello"}]}),
                  ("DELETE", "/v1/collections/k/documents/1", None),
                  ("POST", "/v1/collections/k/documents/delete", {"ids": ["1"]}),
                  ("POST", "/v1/collections/k/relevance/train", {"examples": [{"query": "q", "relevant_ids": ["1"]}]}),
                  ("DELETE", "/v1/collections/k/relevance", None),
                  ("DELETE", "/v1/collections/k", None)]
        reads = [("GET", "/v1/collections", None), ("GET", "/v1/collections/k", None),
                 ("GET", "/v1/collections/k/documents/1", None), ("GET", "/v1/collections/k/documents", None),
                 ("POST", "/v1/collections/k/search", {"query": "q"}),
                 ("GET", "/v1/collections/k/relevance", None)]
        for method, path, body in writes + reads:
            for headers in ({}, _auth("wrong"), {"Authorization": "Basic abc"}):
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert response.json()["error"]["code"] == "unauthorized"
        for method, path, body in writes:
            response = client.request(method, path, json=body, headers=_auth(READ))
            assert response.status_code == 403, (method, path)
        assert client.put("/v1/collections/k", headers=_auth(ADMIN)).status_code == 201
        assert client.post("/v1/collections/k/documents", json={"documents": [{"id": "1", "text": "hello"}]},
                           headers=_auth(ADMIN)).status_code == 200
        for method, path, body in reads:
            assert client.request(method, path, json=body, headers=_auth(READ)).status_code == 200, path
            assert client.request(method, path, json=body, headers=_auth(ADMIN)).status_code == 200, path
    assert caplog.records and READ not in caplog.text and ADMIN not in caplog.text  # keys are never logged


def test_open_service_needs_no_key(client: TestClient) -> None:
    assert client.put("/v1/collections/open").status_code == 201


def test_a_body_that_is_not_json_is_refused_for_its_key_first(make_client: AppFactory) -> None:
    """FastAPI parses a JSON body before the route's key check: a caller with no key (or a read key on a write)
    was told that the body was bad (422) before that it may not ask at all. The size limit's 413 still comes
    first: it is checked before any route is."""
    with make_client(api_keys=[READ], admin_keys=[ADMIN]) as client:
        assert client.put("/v1/collections/k", headers=_auth(ADMIN)).status_code == 201
        routes = [("POST", "/v1/collections/k/search", False), ("PUT", "/v1/collections/k2", True),
                  ("POST", "/v1/collections/k/relevance/train", True), ("POST", "/v1/collections/k/documents", True)]

        def status(method: str, path: str, body: bytes, *key: str) -> int:
            headers = {"content-type": "application/json", **(_auth(key[0]) if key else {})}
            return client.request(method, path, content=body, headers=headers).status_code

        for body in (b'{"query": ', b'{"query": "\xff"}'):  # not JSON; not UTF-8
            for method, path, writes in routes:
                assert status(method, path, body) == 401 and status(method, path, body, "wrong") == 401, (path, body)
                assert status(method, path, body, READ) == (403 if writes else 422), (path, body)
                assert status(method, path, body, ADMIN) == 422, (path, body)
        assert [c["name"] for c in client.get("/v1/collections", headers=_auth(READ)).json()["collections"]] == ["k"]
