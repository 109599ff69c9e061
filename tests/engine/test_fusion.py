"""Fusion functions against hand-computed values."""

import numpy as np
import pytest

from app.engine.fusion import convex_fusion, normalize, rank_by, rrf_fusion


def test_tm2c2_uses_the_theoretical_floor_and_observed_max() -> None:
    # cosine floor -1: (s + 1) / (max + 1); BM25 floor 0: s / max
    assert normalize(np.array([0.5, 0.0, -1.0]), "tm2c2", -1.0) == pytest.approx([1.0, 1 / 1.5, 0.0])
    assert normalize(np.array([4.0, 2.0, 1.0]), "tm2c2", 0.0) == pytest.approx([1.0, 0.5, 0.25])


def test_minmax_and_zscore() -> None:
    assert normalize(np.array([4.0, 2.0, 1.0]), "minmax", 0.0) == pytest.approx([1.0, 1 / 3, 0.0])
    z = normalize(np.array([1.0, 2.0, 3.0]), "zscore", 0.0)
    assert z == pytest.approx([-np.sqrt(1.5), 0.0, np.sqrt(1.5)])


def test_constant_and_empty_lists_do_not_divide_by_zero() -> None:
    assert normalize(np.array([0.0, 0.0]), "tm2c2", 0.0).tolist() == [0.0, 0.0]
    assert normalize(np.array([3.0, 3.0]), "minmax", 0.0).tolist() == [0.0, 0.0]
    assert normalize(np.array([3.0, 3.0]), "zscore", 0.0).tolist() == [0.0, 0.0]
    assert normalize(np.array([]), "tm2c2", 0.0).size == 0


def test_convex_combination_by_hand() -> None:
    lexical = np.array([10.0, 5.0, 0.0])
    dense = np.array([0.2, 0.6, 0.0])
    # tm2c2: lexical -> [1, .5, 0]; dense -> [(1.2)/1.6, 1, 1/1.6] = [.75, 1, .625]
    fused = convex_fusion(lexical, dense, alpha=0.5)
    assert fused == pytest.approx([0.875, 0.75, 0.3125])
    assert convex_fusion(lexical, dense, alpha=1.0) == pytest.approx([0.75, 1.0, 0.625])
    assert convex_fusion(lexical, dense, alpha=0.0) == pytest.approx([1.0, 0.5, 0.0])


def test_convex_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="alpha"):
        convex_fusion(np.zeros(2), np.zeros(2), alpha=1.5)
    with pytest.raises(ValueError, match="aligned"):
        convex_fusion(np.zeros(2), np.zeros(3), alpha=0.5)
    with pytest.raises(ValueError, match="normalization"):
        normalize(np.ones(2), "softmax", 0.0)  # type: ignore[arg-type]


def test_rrf_by_hand() -> None:
    # doc0: ranks 1 and 3; doc1: rank 2 lexical only; doc2: rank 1 dense only
    fused = rrf_fusion([np.array([1, 2, 0]), np.array([3, 0, 1])], rrf_k=60)
    assert fused == pytest.approx([1 / 61 + 1 / 63, 1 / 62, 1 / 61])
    with pytest.raises(ValueError):
        rrf_fusion([np.array([1])], rrf_k=0)


def test_rank_by_breaks_ties_by_label() -> None:
    order = rank_by(np.array([0.5, 0.9, 0.5, 0.1]), np.array([30, 10, 20, 40]))
    assert order.tolist() == [1, 2, 0, 3]
