"""GET …/documents: the collection a page at a time, in id order, with vectors when asked (an export)."""

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.helpers import ANIMALS

IDS = ["b", "a/1", "é", "c", "a", "a 2", "Z", "日本"]


def _all(client: TestClient, collection: str, **params: Any) -> list[dict[str, Any]]:
    listed, after = [], None
    while True:
        response = client.get(f"/v1/collections/{collection}/documents",
                              params={**params, **({} if after is None else {"after": after})})
        assert response.status_code == 200, response.text
        page = response.json()
        listed += page["documents"]
        after = page["next"]
        if after is None:
            return listed


def test_pages_list_every_document_once_in_id_order(client: TestClient) -> None:
    client.put("/v1/collections/l")
    docs = [{"id": doc_id, "text": f"text of {doc_id}", "title": f"title {n}" if n % 2 else None,
             "metadata": {"n": n, "tags": ["x"]}} for n, doc_id in enumerate(IDS)]
    assert client.post("/v1/collections/l/documents", json={"documents": docs}).status_code == 200
    for limit in (1, 3, len(IDS), 100):
        listed = _all(client, "l", limit=limit)
        assert [d["id"] for d in listed] == sorted(IDS, key=lambda i: i.encode())  # the store's order: bytes
        assert {d["id"]: d for d in listed} == {d["id"]: {**d, "title": d["title"]} for d in docs}
        assert all("vector" not in d for d in listed)  # only when asked for
    first = client.get("/v1/collections/l/documents", params={"limit": 3}).json()
    assert first["next"] == first["documents"][-1]["id"]
    last = client.get("/v1/collections/l/documents", params={"after": first["next"], "limit": 100}).json()
    assert last["next"] is None and len(last["documents"]) == len(IDS) - 3
    # A write between pages: a deleted document is not listed, nor one listed twice; a new one after the cursor is.
    client.delete("/v1/collections/l/documents/c")
    client.post("/v1/collections/l/documents", json={"documents": [{"id": "zz", "text": "late"}]})
    rest = client.get("/v1/collections/l/documents", params={"after": first["next"]}).json()["documents"]
    assert [d["id"] for d in rest] == sorted((set(IDS) - {"c"} | {"zz"}) - {d["id"] for d in first["documents"]},
                                             key=lambda i: i.encode())


def test_vectors_are_the_stored_unit_vectors_and_load_elsewhere_unchanged(client: TestClient) -> None:
    client.put("/v1/collections/v")
    rng = np.random.default_rng(5)
    given = rng.standard_normal((4, 384))
    docs = [{"id": f"own{i}", "text": f"own vector {i}", "vector": (v * 3).tolist()} for i, v in enumerate(given)]
    client.post("/v1/collections/v/documents", json={"documents": docs + ANIMALS[:3]})
    listed = _all(client, "v", vectors=True, limit=2)
    assert len(listed) == 7
    for doc in listed:
        vector = np.asarray(doc["vector"])
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
        if doc["id"].startswith("own"):  # the service normalised what was brought
            expected = given[int(doc["id"][3:])]
            assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)
    # The export posted to another collection is the same collection: same documents, same dense answers.
    client.put("/v1/collections/copy")
    assert client.post("/v1/collections/copy/documents", json={"documents": listed}).status_code == 200
    copy = _all(client, "copy", vectors=True)
    assert [{**d, "vector": None} for d in copy] == [{**d, "vector": None} for d in listed]
    assert np.allclose([d["vector"] for d in copy], [d["vector"] for d in listed], atol=1e-6)
    body = {"query": "a cat", "mode": "dense", "relevance": {"enabled": False}, "k": 7}
    original, copied = (client.post(f"/v1/collections/{c}/search", json=body).json()["hits"] for c in ("v", "copy"))
    assert [(h["id"], round(h["score"], 5)) for h in original] == [(h["id"], round(h["score"], 5)) for h in copied]


def test_bad_listing_requests_are_refused(client: TestClient) -> None:
    client.put("/v1/collections/b")
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"vectors": "maybe"}, {"after": ""}):
        response = client.get("/v1/collections/b/documents", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"]
    assert client.get("/v1/collections/missing/documents").status_code == 404
    assert client.get("/v1/collections/b/documents").json() == {"documents": [], "next": None}


def test_a_bulk_delete_removes_every_id_it_finds_at_once_and_names_the_others(animals: TestClient) -> None:
    before = animals.get("/v1/collections/animals").json()["count"]
    response = animals.post("/v1/collections/animals/documents/delete",
                            json={"ids": ["dog", "nope", "cat", "dog", "salmon"]})
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 3, "ids": ["dog", "cat", "salmon"], "missing": ["nope"]}
    assert animals.get("/v1/collections/animals").json()["count"] == before - 3
    for gone in ("dog", "cat", "salmon"):
        assert animals.get(f"/v1/collections/animals/documents/{gone}").status_code == 404
    for mode in ("lexical", "dense", "hybrid"):
        hits = animals.post("/v1/collections/animals/search", json={
            "query": "dog cat salmon", "mode": mode, "k": 100, "relevance": {"enabled": False}}).json()["hits"]
        assert not {"dog", "cat", "salmon"} & {h["id"] for h in hits}, mode
    again = animals.post("/v1/collections/animals/documents/delete", json={"ids": ["dog"]}).json()
    assert again == {"deleted": 0, "ids": [], "missing": ["dog"]}  # deleting twice finds it gone: no error


def test_bad_bulk_deletes_are_refused_and_delete_nothing(animals: TestClient) -> None:
    before = animals.get("/v1/collections/animals").json()["count"]
    for body in ({"ids": []}, {"ids": "dog"}, {"ids": ["dog", ""]}, {"ids": ["dog"], "extra": 1}, {}):
        response = animals.post("/v1/collections/animals/documents/delete", json=body)
        assert response.status_code == 422, body
    # Over the limit: a 413 that says to split it, as a document batch over its own (it was a 422, QA).
    response = animals.post("/v1/collections/animals/documents/delete",
                            json={"ids": ["dog"] + [f"d{i}" for i in range(10_000)]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    assert "the limit is 10,000: split it" in response.json()["error"]["message"]
    assert animals.post("/v1/collections/animals/documents/delete", content=b'{"ids": ["dog"]}').status_code == 415
    assert animals.post("/v1/collections/missing/documents/delete", json={"ids": ["dog"]}).status_code == 404
    assert animals.get("/v1/collections/animals").json()["count"] == before
    # A document whose id is "delete" is still read and deleted by its own path.
    animals.post("/v1/collections/animals/documents", json={"documents": [{"id": "delete", "text": "an id"}]})
    assert animals.get("/v1/collections/animals/documents/delete").json()["id"] == "delete"
    assert animals.delete("/v1/collections/animals/documents/delete").status_code == 204


def test_a_query_parameter_a_route_does_not_take_is_refused(animals: TestClient) -> None:
    """`?limt=5` was read as no limit at all, silently (the fuzz test sent `?=null` to the listing: 200)."""
    answer = animals.get("/v1/collections/animals/documents", params={"limt": 5})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert "unknown query parameter 'limt'; this route takes after, limit, vectors" in error["message"]
    assert error["details"] == [{"loc": ["query", "limt"], "msg": "not a parameter of this route",
                                 "type": "extra_forbidden"}]
    assert animals.get("/v1/collections/animals?x=1").status_code == 422  # "this route takes none"
    assert animals.get("/v1/collections/animals/documents", params={"limit": 1}).status_code == 200
    assert animals.get("/ui/?q=dog").status_code == 200  # the page's own address is left alone
