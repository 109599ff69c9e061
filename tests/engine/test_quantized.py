"""Int8Vectors: cosines within the quantisation bound, label bookkeeping, snapshots."""

from pathlib import Path

import numpy as np
import pytest

from app.engine.quantized import Int8Vectors, quantize


def _unit(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_cosines_stay_within_half_a_step_a_coordinate() -> None:
    vectors, query = _unit(500), _unit(1, seed=1)[0]
    codes, scales = quantize(vectors * 3.0)  # any length: the copy is of the unit vector
    error = np.abs((codes * scales[:, None]) - vectors)
    assert (error <= scales[:, None] / 2 + 1e-7).all()
    copy = Int8Vectors(64)
    copy.add(np.arange(500), vectors)
    exact = vectors @ query
    got = copy.cosines(np.arange(500), query)
    assert np.abs(got - exact).max() <= (scales / 2 * np.abs(query).sum()).max()
    assert np.abs(got - exact).max() < 5e-3


def test_lookups_follow_labels_through_out_of_order_adds_and_deletes() -> None:
    vectors = _unit(3000)
    copy = Int8Vectors(64, capacity=8)  # grows
    labels = np.arange(3000, dtype=np.int64) * 5 + 7
    copy.add(labels[1000:], vectors[1000:])
    copy.add(labels[:1000][::-1], vectors[:1000][::-1])  # before every held label, and reversed
    query = vectors[0]
    np.testing.assert_allclose(copy.cosines(labels, query), vectors @ query, atol=5e-3)
    copy.delete(labels[::2])
    copy.delete(np.array([labels[0], 999_999]))  # already deleted, never held: nothing happens
    assert len(copy) == 1500
    np.testing.assert_allclose(copy.cosines(labels[1::2], query), vectors[1::2] @ query, atol=5e-3)
    with pytest.raises(KeyError):
        copy.cosines(labels[:1], query)
    with pytest.raises(KeyError):
        copy.cosines(np.array([3]), query)


def test_deleted_rows_are_dropped_once_they_outnumber_the_live_ones() -> None:
    vectors = _unit(10_000)
    copy = Int8Vectors(64)
    copy.add(np.arange(10_000), vectors)
    copy.delete(np.arange(0, 10_000, 10))
    assert copy._rows == 10_000  # 1,000 dead rows: kept
    copy.delete(np.arange(10_000)[np.arange(10_000) % 10 != 0][:8000])
    assert len(copy) == 1000 and copy._rows == 1000  # compacted
    rest = np.arange(10_000)[np.arange(10_000) % 10 != 0][8000:]
    np.testing.assert_allclose(copy.cosines(rest, vectors[5]), vectors[rest] @ vectors[5], atol=5e-3)


def test_save_and_load_round_trip_and_refuse_damage(tmp_path: Path) -> None:
    vectors = _unit(300)
    copy = Int8Vectors(64)
    copy.add(np.arange(300), vectors)
    copy.delete(np.arange(0, 300, 3))
    copy.save(tmp_path)
    loaded = Int8Vectors.load(tmp_path, 64)
    assert len(loaded) == 200
    live = np.arange(300)[np.arange(300) % 3 != 0]
    assert np.array_equal(loaded.cosines(live, vectors[1]), copy.cosines(live, vectors[1]))
    loaded.add(np.array([1000]), vectors[:1])  # grows from the loaded arrays
    assert loaded.cosines(np.array([1000]), vectors[0])[0] == pytest.approx(1.0, abs=5e-3)
    with pytest.raises(ValueError):
        Int8Vectors.load(tmp_path, 32)  # another dimension
    np.save(tmp_path / "int8-labels.npy", np.arange(199, -1, -1, dtype=np.int64))
    with pytest.raises(ValueError):
        Int8Vectors.load(tmp_path, 64)  # labels out of order
    (tmp_path / "int8-codes.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError):
        Int8Vectors.load(tmp_path, 64)
