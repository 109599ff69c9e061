"""A collection's own fusion: fitted on its judgments, kept only when it ranks better out of fold."""

import numpy as np
import pytest

from app.engine.fusion_fit import FUSION_MARGIN, FusionCase, fit_fusion, grid, ndcg_at_10, required_gain
from app.engine.types import SearchDefaults


def _case(rng: np.random.Generator, lexical_knows: bool) -> FusionCase:
    """40 candidates, 4 relevant: one retriever ranks the relevant first, the other at random."""
    relevant = np.zeros(40, bool)
    relevant[rng.choice(40, 4, replace=False)] = True
    informed = np.where(relevant, 10.0, 1.0) + rng.random(40)
    noise = rng.random(40)
    bm25, cosine = (informed, noise * 0.5) if lexical_knows else (noise * 5.0, 0.3 + 0.5 * np.where(relevant, 1, 0))
    ranks = [np.argsort(np.argsort(-s)) + 1 for s in (bm25, cosine)]
    return FusionCase(np.arange(40), bm25, cosine, ranks[0], ranks[1], relevant, 4)


def test_ndcg_at_10_hand_example() -> None:
    case = FusionCase(np.arange(3), np.array([3.0, 2.0, 1.0]), np.zeros(3), np.array([1, 2, 3]), np.zeros(3, int),
                      np.array([False, True, False]), n_relevant=2)
    lexical_only = SearchDefaults(alpha=0.0)
    # the relevant one at rank 2: 1/log2(3); ideal holds two relevant at ranks 1 and 2
    assert ndcg_at_10(case, lexical_only) == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))


def test_a_collection_whose_lexical_side_knows_better_gets_a_lexical_fusion() -> None:
    rng = np.random.default_rng(0)
    cases = [_case(rng, lexical_knows=True) for _ in range(60)]
    default = SearchDefaults()  # convex, dense weight 0.8
    fitted, report = fit_fusion(cases, default)
    assert fitted is not None and report["kept"] == "fitted"
    assert fitted.method == "rrf" or fitted.alpha < default.alpha
    assert report["fitted"]["ndcg@10_out_of_fold"] > report["default"]["ndcg@10"] + report["margin"]
    assert report["margin"] >= FUSION_MARGIN


def test_a_win_within_the_noise_of_the_per_query_differences_is_not_enough() -> None:
    # Ten queries 0.30 better, ten 0.28 worse: a mean gain of 0.01, above the fixed margin, but its standard
    # error is 0.066, so the fit must win by 2 of them.
    noisy = np.array([0.30, -0.28] * 10)
    assert required_gain(noisy) == pytest.approx(2 * noisy.std(ddof=1) / np.sqrt(20))
    assert noisy.mean() > FUSION_MARGIN and noisy.mean() < required_gain(noisy)
    # The same mean gain on every query is a real one: the fixed margin is what it must beat.
    assert required_gain(np.full(20, 0.01)) == FUSION_MARGIN
    assert required_gain(np.array([0.5])) == np.inf


def test_the_default_stays_when_fitting_cannot_beat_it() -> None:
    rng = np.random.default_rng(1)
    cases = [_case(rng, lexical_knows=False) for _ in range(60)]  # dense knows: the default's 0.8 is right
    fitted, report = fit_fusion(cases, SearchDefaults())
    assert fitted is None and report["kept"] == "default"
    assert len(grid(SearchDefaults())) == 3 * 7 + 1
