"""A collection's writes: settling a batch in short turns, and a write that raced a delete must not resurrect
the collection."""

import time
from itertools import pairwise

import numpy as np
import pytest
from fastapi.testclient import TestClient

import app.engine.dense as dense_module
from app.engine.collection import next_turn
from app.engine.embedder import normalise
from app.errors import CollectionNotFound
from app.store.base import NewDocument
from tests.conftest import AppFactory
from tests.engine.test_hnsw_tuning import clustered


def test_write_after_delete_is_refused_and_leaves_nothing(client: TestClient) -> None:
    client.put("/v1/collections/gone")
    engine = client.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("gone")  # held by a request that started before the delete
    assert client.delete("/v1/collections/gone").status_code == 204
    doc = NewDocument("late", "a late write", None, {}, np.ones(384, dtype=np.float32) / np.sqrt(384))
    with pytest.raises(CollectionNotFound):
        collection.upsert([doc])
    with pytest.raises(CollectionNotFound):
        collection.delete("late")
    collection.snapshot()  # a periodic snapshot of a deleted collection writes nothing
    assert not collection.snapshots.root.exists()
    assert engine.store.count("gone") == 0
    assert client.put("/v1/collections/gone").status_code == 201
    assert client.get("/v1/collections/gone").json()["count"] == 0


def test_next_turn_aims_at_the_budget_and_at_most_doubles() -> None:
    assert next_turn(8, 0.040, budget=0.010) == 2  # 5 ms a vector: two fit in 10 ms
    assert next_turn(8, 0.200, budget=0.010) == 1  # never fewer than one
    assert next_turn(4, 0.001, budget=0.010) == 8  # fast: grow, but only twice the last turn
    assert next_turn(4, 0.0, budget=0.010) == 8
    assert next_turn(200, 0.001, budget=0.010) == 256  # capped


def test_an_upsert_settles_its_batch_before_it_returns_in_turns_that_at_most_double(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.put("/v1/collections/turns")
    collection = client.app.state.engine.collection("turns")  # type: ignore[attr-defined]
    turns: list[int] = []
    settle = collection.dense.settle

    def recording_settle(limit: int | None = None) -> int:
        turns.append(collection.dense.staged if limit is None else limit)
        return settle(limit)

    monkeypatch.setattr(collection.dense, "settle", recording_settle)
    rng = np.random.default_rng(0)
    vectors = normalise(rng.standard_normal((300, 384)).astype(np.float32))
    collection.upsert([NewDocument(f"d{i}", f"document {i}", None, {}, v) for i, v in enumerate(vectors)])
    assert collection.dense.staged == 0 and len(collection.dense) == 300
    assert sum(turns) >= 300 and turns[0] == 1 and len(turns) > 1
    assert all(1 <= b <= 2 * a for a, b in pairwise(turns))


def test_re_posting_a_fifth_of_the_graph_rebuilds_it_in_the_background_and_a_restart_keeps_it(
        make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense_module, "VACUUM_MIN", 50)
    vectors = clustered(401)

    def post(client: TestClient, ids: range, shift: int) -> None:
        docs = [{"id": f"d{i}", "text": f"document {i}", "vector": vectors[i + shift].tolist()} for i in ids]
        assert client.post("/v1/collections/churn/documents", json={"documents": docs}).status_code == 200

    def check(client: TestClient, deleted: int) -> None:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        collection = engine.collection("churn")
        collection.wait_upkeep(60)
        assert (collection.dense.deleted_nodes, len(collection.dense)) == (deleted, 400)
        for doc_id, vector in (("d5", vectors[6]), ("d300", vectors[300])):  # d5 re-posted with d6's vector
            with collection.lock.read():
                top = collection.dense.search(vector, 1)[0]
            assert top.tolist() == [engine.get("churn", doc_id).label]

    with make_client() as client:
        assert client.put("/v1/collections/churn").status_code == 201
        post(client, range(400), 0)
        post(client, range(60), 1)  # re-posted with other vectors: 60 deleted nodes of 460, no rebuild
        check(client, 60)
        post(client, range(60, 120), 1)  # 120 of 520: rebuilt without them
        check(client, 0)
    with make_client() as client:  # the snapshot taken at the stop holds the rebuilt graph
        check(client, 0)


def test_a_failed_rebuild_is_not_retried_at_every_write_but_after_a_growing_pause(
        make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dense_module, "VACUUM_MIN", 20)
    vectors, attempts = clustered(201), []
    build_graph = dense_module.DenseIndex.build_graph

    def failing(*args: object, **kwargs: object) -> object:
        attempts.append(1)
        raise MemoryError("no room for a second graph")

    def post(client: TestClient, ids: range, shift: int) -> None:
        docs = [{"id": f"d{i}", "text": f"document {i}", "vector": vectors[i + shift].tolist()} for i in ids]
        assert client.post("/v1/collections/churn/documents", json={"documents": docs}).status_code == 200

    with make_client() as client:
        assert client.put("/v1/collections/churn").status_code == 201
        collection = client.app.state.engine.collection("churn")  # type: ignore[attr-defined]
        post(client, range(200), 0)
        monkeypatch.setattr(dense_module.DenseIndex, "build_graph", failing)
        post(client, range(60), 1)  # 60 deleted nodes of 260: due, and the rebuild fails
        collection.wait_upkeep(60)
        for start in (60, 70, 80):  # still due at every write, not tried again meanwhile
            post(client, range(start, start + 10), 1)
            collection.wait_upkeep(60)
        assert attempts == [1] and collection.dense.deleted_nodes == 90
        assert 20 < collection._retry_at - time.monotonic() <= 30
        collection._retry_at = 0.0  # the pause is over
        post(client, range(90, 100), 1)
        collection.wait_upkeep(60)
        assert attempts == [1, 1] and 55 < collection._retry_at - time.monotonic() <= 60  # twice as long
        monkeypatch.setattr(dense_module.DenseIndex, "build_graph", build_graph)
        collection._retry_at = 0.0
        post(client, range(100, 110), 1)
        collection.wait_upkeep(60)
        assert collection.dense.deleted_nodes == 0 and collection._failures == 0
