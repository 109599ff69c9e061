"""DenseIndex against exact search on real MiniLM embeddings: recall, filters, deletes, snapshots."""

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import app.engine.dense as dense_module
from app.engine.dense import DenseIndex, VacuumCancelled
from app.engine.embedder import Embedder
from app.engine.types import HnswSettings
from tests.helpers import stdlib_docstrings


@pytest.fixture(scope="module")
def vectors(embedder: Embedder) -> np.ndarray:
    """A few thousand real sentence embeddings of standard-library documentation."""
    sentences = [s.strip() for doc in stdlib_docstrings() for s in re.split(r"(?<=[.!?])\s+|\n\n", doc)]
    sentences = sorted({s for s in sentences if 20 <= len(s) <= 300})
    assert len(sentences) >= 2000
    return embedder.encode_documents(sentences)


def _exact(data: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    return set(labels[np.argsort(-(data @ query))[:k]].tolist())


def test_recall_at_10_against_exact_search(vectors: np.ndarray) -> None:
    labels = np.arange(100, 100 + len(vectors), dtype=np.int64) * 7  # sparse, non-contiguous labels
    index = DenseIndex(vectors.shape[1], HnswSettings(), capacity=64)  # grows by resizing
    for start in range(0, len(vectors), 500):
        index.upsert(labels[start:start + 500], vectors[start:start + 500])
    queries = vectors[::30] + 0.05 * np.random.default_rng(0).standard_normal(vectors[::30].shape)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    found = [set(index.search(q, 10)[0].tolist()) & _exact(vectors, labels, q, 10) for q in queries]
    recall = sum(len(f) for f in found) / (10 * len(queries))
    assert recall >= 0.95
    top, sims = index.search(queries[0], 10)
    assert np.allclose(sims, vectors[np.searchsorted(labels, top)] @ queries[0], atol=1e-5)


def test_filtered_search_returns_k_hits_whenever_k_match(vectors: np.ndarray) -> None:
    labels = np.arange(len(vectors), dtype=np.int64)
    index = DenseIndex(vectors.shape[1], HnswSettings())
    index.upsert(labels, vectors)
    for allowed in (labels[::500], labels[::3]):  # exact scan and filtered graph walk
        got, _ = index.search(vectors[1], 5, allowed=allowed)
        assert len(got) == 5 and set(got.tolist()) <= set(allowed.tolist())
        assert set(got.tolist()) == _exact(vectors[allowed], allowed, vectors[1], 5) or len(allowed) > 1000


def test_deleted_labels_never_come_back(vectors: np.ndarray, tmp_path: Path) -> None:
    data = vectors[:400]
    index = DenseIndex(data.shape[1], HnswSettings(), capacity=400)
    index.upsert(np.arange(400, dtype=np.int64), data)
    index.delete(list(range(0, 400, 2)))
    assert len(index) == 200
    got, _ = index.search(data[0], 50)
    assert all(label % 2 == 1 for label in got.tolist())
    index.upsert(np.arange(1000, 1200, dtype=np.int64), data[:200])  # fresh nodes beside the deleted ones
    assert len(index) == 400 and index.deleted_nodes == 200
    index.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, HnswSettings())
    assert np.array_equal(loaded.search(data[3], 10)[0], index.search(data[3], 10)[0])
    with pytest.raises(ValueError):
        DenseIndex.load(tmp_path, HnswSettings(m=8))  # snapshot built with other settings



def test_exact_scan_and_cosines_come_from_the_int8_copy(vectors: np.ndarray, tmp_path: Path) -> None:
    labels = np.arange(len(vectors), dtype=np.int64) + 10
    index = DenseIndex(vectors.shape[1], HnswSettings())
    index.upsert(labels, vectors)
    allowed = labels[::4]
    got, sims = index.search(vectors[40], 20, allowed=allowed)  # the exact scan
    assert set(got.tolist()) == _exact(vectors[::4], allowed, vectors[40], 20)
    assert np.allclose(sims, vectors[got - 10] @ vectors[40], atol=1e-6)  # re-scored: exact
    assert np.allclose(index.cosines(labels, vectors[7]), vectors @ vectors[7], atol=3e-3)
    index.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, HnswSettings())
    assert np.array_equal(loaded.cosines(labels, vectors[7]), index.cosines(labels, vectors[7]))


def test_a_format_1_snapshot_loads_and_rebuilds_the_int8_copy(vectors: np.ndarray, tmp_path: Path) -> None:
    data = vectors[:300]
    index = DenseIndex(data.shape[1], HnswSettings())
    index.upsert(np.arange(300, dtype=np.int64), data)
    index.delete(list(range(0, 300, 3)))
    index.save(tmp_path)
    manifest = json.loads((tmp_path / "dense.json").read_text())
    del manifest["sha256"]  # checksums came after format 1
    (tmp_path / "dense.json").write_text(json.dumps({**manifest, "format": 1}))
    for old in tmp_path.glob("int8-*.npy"):  # what a format-1 snapshot lacks
        old.unlink()
    loaded = DenseIndex.load(tmp_path, HnswSettings())
    live = np.arange(300)[np.arange(300) % 3 != 0]
    assert len(loaded) == 200
    assert np.allclose(loaded.cosines(live, data[1]), data[live] @ data[1], atol=3e-3)


def test_staged_vectors_are_searchable_before_they_settle(vectors: np.ndarray, tmp_path: Path) -> None:
    data, labels = vectors[:600], np.arange(600, dtype=np.int64)
    index = DenseIndex(data.shape[1], HnswSettings())
    index.upsert(labels[:400], data[:400])
    index.stage(labels[400:], data[400:])
    assert index.staged == 200 and len(index) == 600
    query = data[450]
    top, sims = index.search(query, 10)
    assert top[0] == 450 and set(top.tolist()) == _exact(data, labels, query, 10)
    assert np.allclose(sims, data[top] @ query, atol=1e-5)
    wide = np.arange(0, 600, 2, dtype=np.int64)  # a filter, answered by the exact scan
    assert set(index.search(query, 5, wide)[0].tolist()) == _exact(data[wide], wide, query, 5)
    assert np.allclose(index.vectors(np.array([3, 450, 7])), data[[3, 450, 7]], atol=1e-6)  # graph: re-normalised
    index.delete([450, 3])
    assert 450 not in index.search(query, 10)[0] and index.staged == 199 and len(index) == 598
    (tmp_path / "staged").mkdir()
    index.save(tmp_path / "staged")  # a snapshot taken mid-settle keeps the staged ones
    loaded = DenseIndex.load(tmp_path / "staged", HnswSettings())
    assert loaded.staged == 0 and len(loaded) == 598
    assert index.settle(150) == 49 and index.settle() == 0 and index.staged == 0
    for settled in (index, loaded):
        assert np.array_equal(settled.search(query, 10)[0], index.search(query, 10)[0])
        assert 450 not in settled.search(query, 10)[0]


def test_re_posted_vectors_take_fresh_nodes_and_a_rebuild_drops_the_deleted_ones(
        vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """hnswlib's reuse of a deleted slot was ~6x a fresh insert and cost recall (app/engine/dense.py): re-posts
    take fresh nodes, and past VACUUM_RATIO the graph is rebuilt from its live vectors while writes go on."""
    monkeypatch.setattr(dense_module, "VACUUM_MIN", 100)
    data = vectors[:600]
    index = DenseIndex(data.shape[1], HnswSettings())
    index.upsert(np.arange(600, dtype=np.int64), data)
    index.delete(list(range(100)))  # 100 documents re-posted: deleted, then in again under new labels
    index.upsert(np.arange(1000, 1100, dtype=np.int64), data[:100])
    assert (index.deleted_nodes, len(index), index.vacuum_due()) == (100, 600, False)  # 100 of 700 nodes
    index.delete(list(range(100, 200)))
    index.upsert(np.arange(1100, 1200, dtype=np.int64), data[100:200])
    assert (index.deleted_nodes, index.vacuum_due()) == (200, True)  # 200 of 800 nodes: over a fifth
    built = index.graph_labels()
    with pytest.raises(VacuumCancelled):
        index.build_graph(built, index.vectors(built), _set(threading.Event()))
    graph = index.build_graph(built, index.vectors(built), threading.Event())
    # Writes go on meanwhile: a built label deleted, 50 settled into the old graph, 10 staged.
    index.delete([1000])
    index.upsert(np.arange(2000, 2050, dtype=np.int64), data[200:250])
    index.stage(np.arange(3000, 3010, dtype=np.int64), data[250:260])
    index.adopt(graph, built)
    assert (index.deleted_nodes, index.staged, len(index)) == (1, 60, 659)
    live = np.concatenate([np.arange(1001, 1200), np.arange(200, 600), np.arange(2000, 2050), np.arange(3000, 3010)])
    live_data = np.concatenate([data[1:200], data[200:600], data[200:250], data[250:260]])
    for settle in (False, True):
        if settle:
            assert index.settle() == 0 and index.deleted_nodes == 1
        for query in data[[1, 210, 255, 599]]:
            top = index.search(query, 10)[0]
            assert 1000 not in top.tolist()
            assert len(set(top.tolist()) & _exact(live_data, live, query, 10)) >= 9
        staged = set() if settle else set(range(2000, 2050)) | set(range(3000, 3010))
        assert set(index.graph_labels().tolist()) == set(live.tolist()) - staged


def _set(event: threading.Event) -> threading.Event:
    event.set()
    return event
