"""Self-tuned ef_search: exact neighbours, the smallest ef that meets the target, when it is due, kept on disk."""

import threading
from pathlib import Path

import numpy as np
import pytest

from app.engine.dense import DenseIndex
from app.engine.hnsw_tuning import EF_CANDIDATES, FIRST_TUNING_AT, TuningCancelled, due, measure, probes
from app.engine.rwlock import ReadWriteLock
from app.engine.types import EF_SEARCH_UNTUNED, HnswSettings

DIM = 384


def clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIM))
    vectors = centres[rng.integers(0, 20, n)] + 0.7 * rng.normal(size=(n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def index() -> DenseIndex:
    # m 4 / ef_construction 16: a deliberately poor graph, so that small ef values miss and the choice matters
    dense = DenseIndex(DIM, HnswSettings(m=4, ef_construction=16), capacity=1500)
    dense.upsert(np.arange(1500, dtype=np.int64), clustered(1500))
    return dense


def test_exact_top_is_brute_force(index: DenseIndex) -> None:
    vectors = clustered(1500)
    queries = clustered(5, seed=1)
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(index.exact_top(queries, 10), expected)


def test_probes_are_unit_vectors_away_from_any_one_document(index: DenseIndex) -> None:
    queries = probes(index, index.graph_labels(), 50)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    nearest = (queries @ clustered(1500).T).max(axis=1)
    assert nearest.max() < 0.99  # not a document's own vector, whose nearest neighbour is itself
    assert np.array_equal(queries, probes(index, index.graph_labels(), 50))  # seeded: the same on every run


def test_measure_picks_the_smallest_ef_that_meets_the_target(index: DenseIndex) -> None:
    tuning = measure(index, ReadWriteLock(), 0.95)
    assert tuning is not None
    assert tuning.recall >= 0.95 and tuning.trials[tuning.ef_search] == tuning.recall
    smaller = [recall for ef, recall in tuning.trials.items() if ef < tuning.ef_search]
    assert smaller and max(smaller) < 0.95  # the poor graph needed more than the smallest candidate
    # Narrowed between the grid's values: the last miss is within an eighth of the ef chosen.
    missed = max(ef for ef in tuning.trials if ef < tuning.ef_search)
    assert tuning.ef_search - missed <= max(8, tuning.ef_search // 8)
    assert any(ef not in EF_CANDIDATES for ef in tuning.trials)
    assert (tuning.measured_at, tuning.sample, tuning.k) == (1500, 200, 10)
    # An independent check of the recall reported: the same probes, a brute-force ground truth, the graph at that ef.
    queries = probes(index, index.graph_labels(), 200)
    truth = np.argsort(-(queries @ clustered(1500).T), axis=1)[:, :10]
    found = index.walk(queries, 10, tuning.ef_search)
    hits = sum(len(set(row.tolist()) & set(t.tolist())) for row, t in zip(found, truth, strict=True))
    assert hits / 2000 == pytest.approx(tuning.recall, abs=1e-9)
    # a lower target never needs a larger ef
    lower = measure(index, ReadWriteLock(), 0.5)
    assert lower is not None and lower.ef_search <= tuning.ef_search


def test_small_graphs_are_not_measured_and_doubling_makes_it_due() -> None:
    small = DenseIndex(DIM, HnswSettings())
    small.upsert(np.arange(50, dtype=np.int64), clustered(50))
    assert measure(small, ReadWriteLock(), 0.95) is None
    assert small.ef_search == EF_SEARCH_UNTUNED
    assert not due(FIRST_TUNING_AT - 1, None) and due(FIRST_TUNING_AT, None)
    index = DenseIndex(DIM, HnswSettings(m=4, ef_construction=16), capacity=1500)
    index.upsert(np.arange(1500, dtype=np.int64), clustered(1500))
    tuning = measure(index, ReadWriteLock(), 0.95)
    assert not due(2999, tuning) and due(3000, tuning)


def test_explicit_ef_wins_and_the_tuning_survives_a_snapshot(index: DenseIndex, tmp_path: Path) -> None:
    tuning = measure(index, ReadWriteLock(), 0.95)
    assert tuning is not None
    index.tuning = tuning
    assert index.ef_search == tuning.ef_search
    index.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, index.settings)
    assert loaded.tuning == tuning and loaded.ef_search == tuning.ef_search
    explicit = DenseIndex(DIM, HnswSettings(ef_search=40), tuning=tuning)
    assert explicit.ef_search == 40


def test_a_cancelled_measurement_stops() -> None:
    index = DenseIndex(DIM, HnswSettings(), capacity=1200)
    index.upsert(np.arange(1200, dtype=np.int64), clustered(1200))
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(TuningCancelled):
        measure(index, ReadWriteLock(), 0.95, cancelled)
