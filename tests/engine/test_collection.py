"""A collection's writes: settling a batch in short turns, and a write that raced a delete must not resurrect
the collection."""

from itertools import pairwise

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.engine.collection import next_turn
from app.engine.embedder import normalise
from app.errors import CollectionNotFound
from app.store.base import NewDocument


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
