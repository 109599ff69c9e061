"""A collection's own fusion, fitted on its judgments and kept only when it ranks better out of fold."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app.engine.fusion import convex_fusion, rank_by, rrf_fusion
from app.engine.types import NORMALIZATIONS, SearchDefaults

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# The fitted fusion must beat the default's nDCG@10 out of fold by this much to replace it (a noise margin),
# and by SIGNIFICANCE standard errors of the per-query differences: on 100 judged NFCorpus dev queries a fit that
# won by 0.007 out of fold ranked the other 224 queries 0.0045 worse (README), within the noise of 100 queries.
FUSION_MARGIN = 0.005
SIGNIFICANCE = 2.0  # ~97.5% one-sided, for a paired mean


@dataclass
class FusionCase:
    """One judged query's candidates as both retrievers scored and ranked them (rank 0: not retrieved)."""

    labels: np.ndarray  # candidate labels, for stable tie order
    bm25: np.ndarray
    cosine: np.ndarray
    bm25_rank: np.ndarray
    dense_rank: np.ndarray
    relevant: np.ndarray  # bool per candidate
    n_relevant: int  # judged relevant, retrieved or not (for the ideal ranking)


def grid(defaults: SearchDefaults) -> list[SearchDefaults]:
    """Every fusion tried: convex with each normalisation and dense weight, and RRF with the default k."""
    return [replace(defaults, method="convex", alpha=a, normalization=n) for n in NORMALIZATIONS for a in ALPHAS] \
        + [replace(defaults, method="rrf")]


def fused(case: FusionCase, fusion: SearchDefaults) -> np.ndarray:
    if fusion.method == "rrf":
        return rrf_fusion([case.bm25_rank, case.dense_rank], fusion.rrf_k)
    return convex_fusion(case.bm25, case.cosine, fusion.alpha, fusion.normalization)


def ndcg_at_10(case: FusionCase, fusion: SearchDefaults) -> float:
    """Binary nDCG@10 of the fused order (trec_eval's gain and discount)."""
    order = rank_by(fused(case, fusion), case.labels)[:10]
    gains = case.relevant[order].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    ideal = float(np.sum(discounts[: min(case.n_relevant, len(order))])) or math.inf
    return float(gains @ discounts) / ideal


def describe(fusion: SearchDefaults) -> dict[str, Any]:
    if fusion.method == "rrf":
        return {"method": "rrf", "rrf_k": fusion.rrf_k}
    return {"method": "convex", "alpha": fusion.alpha, "normalization": fusion.normalization}


def required_gain(gains: np.ndarray) -> float:
    """How much better than the default a fit's mean per-query nDCG@10 must be: FUSION_MARGIN, or SIGNIFICANCE
    standard errors of the per-query `gains` when they are noisier (infinite for fewer than two queries)."""
    if gains.size < 2:
        return math.inf
    return max(FUSION_MARGIN, SIGNIFICANCE * float(gains.std(ddof=1)) / math.sqrt(gains.size))


def fit_fusion(cases: list[FusionCase], default: SearchDefaults, folds: int = 5, seed: int = 0
               ) -> tuple[SearchDefaults | None, dict[str, Any]]:
    """(the fitted fusion, or None to keep the default; the report). Out of fold: each fold's queries are ranked
    by the fusion that did best on the other folds, and that is compared with the default on the same queries."""
    options = grid(default)
    scores = np.array([[ndcg_at_10(case, option) for option in options] for case in cases])  # (queries, options)
    default_scores = np.array([ndcg_at_10(case, default) for case in cases])
    fold = np.random.default_rng(seed).permutation(len(cases)) % max(2, min(folds, len(cases)))
    out_of_fold = np.empty(len(cases))
    for f in np.unique(fold):
        best = int(np.argmax(scores[fold != f].mean(axis=0)))
        out_of_fold[fold == f] = scores[fold == f, best]
    chosen = options[int(np.argmax(scores.mean(axis=0)))]
    fitted_ndcg, default_ndcg = float(out_of_fold.mean()), float(default_scores.mean())
    needed = required_gain(out_of_fold - default_scores)
    keep = fitted_ndcg > default_ndcg + needed
    report = {
        "kept": "fitted" if keep else "default",
        "why": f"nDCG@10 on these judgments: fitted {fitted_ndcg:.3f} (out of fold) vs default {default_ndcg:.3f}; "
               f"the fitted fusion is kept only when it is better by more than {needed:.3f} (the larger of "
               f"{FUSION_MARGIN} and {SIGNIFICANCE:g} standard errors of the per-query differences)",
        "fitted": {**describe(chosen), "ndcg@10_out_of_fold": fitted_ndcg},
        "default": {**describe(default), "ndcg@10": default_ndcg},
        "margin": needed,
    }
    return (chosen if keep else None), report
