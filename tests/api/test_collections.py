"""Collections: idempotent create, conflicts, listing, describing, deleting."""

from fastapi.testclient import TestClient

from app.engine.types import Bm25Settings, CollectionSettings, HnswSettings
from tests.conftest import AppFactory


def test_create_is_idempotent_and_conflicts_on_other_settings(client: TestClient) -> None:
    assert client.put("/v1/collections/books").status_code == 201
    assert client.put("/v1/collections/books").status_code == 200
    same = client.put("/v1/collections/books", json={"hnsw": {"m": 32, "ef_construction": 200, "ef_search": None}})
    assert same.status_code == 200
    # an explicit ef_search is not the default's self-tuned one
    assert client.put("/v1/collections/books", json={"hnsw": {"ef_search": 512}}).status_code == 409
    other = client.put("/v1/collections/books", json={"bm25": {"k1": 0.9, "b": 0.4}})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "collection_conflict"


def test_settings_left_out_of_a_put_take_the_configured_defaults(make_client: AppFactory) -> None:
    """A field left out of a partial `hnsw` or `bm25` took the built-in default, not the operator's: with m 24
    configured, `{"hnsw": {"ef_construction": 100}}` made m 32, and `{"hnsw": {}}` conflicted with a bare PUT
    (QA)."""
    configured = CollectionSettings(HnswSettings(m=24, ef_search=256), Bm25Settings(k1=0.9, b=0.4))
    with make_client(collection_defaults=configured) as client:
        assert client.put("/v1/collections/a").json()["settings"] == configured.to_dict()
        for same in ({"hnsw": {}}, {"bm25": {}}, {"hnsw": {"m": 24}, "bm25": {"b": 0.4}}):
            assert client.put("/v1/collections/a", json=same).status_code == 200, same
        partial = client.put("/v1/collections/b", json={"hnsw": {"ef_construction": 100}, "bm25": {"k1": 1.5}})
        assert partial.json()["settings"] == {"hnsw": {"m": 24, "ef_construction": 100, "ef_search": 256},
                                              "bm25": {"k1": 1.5, "b": 0.4}}
        # null means the default, as for every option: here the configured one
        assert client.put("/v1/collections/a", json={"hnsw": {"ef_search": None, "m": None}}).status_code == 200


def test_list_describe_and_delete(client: TestClient) -> None:
    client.put("/v1/collections/a", json={"hnsw": {"m": 8, "ef_construction": 64, "ef_search": 32}})
    client.put("/v1/collections/b")
    client.post("/v1/collections/b/documents", json={"documents": [{"id": "1", "text": "hello world"}]})
    assert client.get("/v1/collections").json() == {
        "collections": [{"name": "a", "count": 0}, {"name": "b", "count": 1}]}
    info = client.get("/v1/collections/a").json()
    assert info["settings"]["hnsw"] == {"m": 8, "ef_construction": 64, "ef_search": 32}
    assert info["dimension"] == 384
    assert "relevance" in info
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert info["encoder"] == engine.embedder.identity.to_dict()  # what made its vectors: model and backend
    assert client.delete("/v1/collections/a").status_code == 204
    assert client.get("/v1/collections/a").status_code == 404
    assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["b"]


def test_deleted_collection_can_be_recreated_empty(client: TestClient) -> None:
    client.put("/v1/collections/c")
    client.post("/v1/collections/c/documents", json={"documents": [{"id": "1", "text": "hello world"}]})
    client.delete("/v1/collections/c")
    assert client.put("/v1/collections/c").status_code == 201
    assert client.get("/v1/collections/c").json()["count"] == 0
    assert client.get("/v1/collections/c/documents/1").status_code == 404


def test_unknown_collection_and_bad_names(client: TestClient) -> None:
    for method, path in (("GET", "/v1/collections/nope"), ("DELETE", "/v1/collections/nope"),
                         ("POST", "/v1/collections/nope/search"), ("GET", "/v1/collections/nope/documents/x")):
        response = client.request(method, path, json={"query": "x"} if method == "POST" else None)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "collection_not_found"
    bad = client.put("/v1/collections/-bad name")
    assert bad.status_code == 422
    assert set(bad.json()["error"]) == {"code", "message", "details"}
    # and the OpenAPI document says every error has all three (it had details optional: QA)
    error = client.get("/openapi.json").json()["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"code", "message", "details"}


def test_a_name_holding_an_escaped_slash_is_a_422_like_any_name_outside_the_pattern(client: TestClient) -> None:
    """What a client sends for the name "a/b" reached no route: the router's generic 404 "Not Found" (QA). A
    document id may still hold one."""
    for method, path in (("PUT", "/v1/collections/a%2Fb"), ("GET", "/v1/collections/a%2fb/documents/x"),
                         ("POST", "/v1/collections/a%2Fb/search")):
        response = client.request(method, path, json={"query": "x"} if method == "POST" else None)
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["error"]["message"] == "a collection name cannot hold '/'"
        assert response.json()["error"]["details"][0]["loc"] == ["path", "name"]
    assert client.get("/v1/collections").json()["collections"] == []
    assert client.put("/v1/collections/c").status_code == 201
    stored = client.post("/v1/collections/c/documents", json={"documents": [{"id": "a/b", "text": "x"}]})
    assert stored.status_code == 200
    assert client.get("/v1/collections/c/documents/a%2Fb").json()["id"] == "a/b"
    assert client.get("/v1/collections/nope/x").status_code == 404  # no such route, no slash in a name


def test_invalid_settings_are_rejected(client: TestClient) -> None:
    for body in ({"hnsw": {"m": 0}}, {"bm25": {"b": 2}}, {"hnsw": {"unknown": 1}}, {"other": 1}):
        response = client.put("/v1/collections/x", json=body)
        assert response.status_code == 422, body
    assert client.get("/v1/collections/x").status_code == 404
