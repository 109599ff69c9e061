"""A collection's writes and its deletion: a write that raced a delete must not resurrect the collection."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.errors import CollectionNotFound
from app.store.documents import NewDocument


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
