"""What the adapter reads of a query: its embedding and/or its candidates' STATS (standardised) for the network,
and each candidate's cosine as the map reads it (raw, or min-max scaled over the query's list); and the per-query
loss weights that let every collection weigh the same when one adapter is trained across several."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# What the network may read of a query: its embedding, and statistics of its candidates that mean the same for
# any encoder (`query_stats`). An adapter that reads only the statistics serves collections of any dimension.
INPUTS: tuple[str, ...] = ("embedding", "stats")
STATS: tuple[str, ...] = ("top1_cosine", "top5_cosine", "top10_cosine", "mean_cosine", "std_cosine",
                          "log1p_best_bm25", "log1p_query_terms")
STATS_DEPTH = 100  # the statistics read the best this many cosines: the dense top-100 of a default search
# How the map reads a candidate's cosine: as it is ("raw"), or min-max scaled over the query's own list ("minmax":
# the best of the search's top-100 is 1, the worst 0). Scaled, the map reads where a candidate sits in its list
# rather than an encoder- and collection-dependent level; the query's level still reaches the network through
# STATS and the embedding. Chosen by leave-one-domain-out runs (README).
COSINE_SCALES: tuple[str, ...] = ("raw", "minmax")
# The scale of the shipped recipe (train-adapter, lodo), whose networks also read STATS. A network reading only
# the embedding (a collection's own adapter trained from scratch) keeps "raw": scaled, it would lose the level.
DEFAULT_COSINE_SCALE = "minmax"
_MIN_RANGE = 1e-6  # a list whose cosines are all alike scales to 0, not to a division by zero


def query_stats(cosines: np.ndarray, bm25: np.ndarray, n_terms: int) -> np.ndarray:
    """The STATS of one query's candidates: the best cosines' shape (1st, 5th, 10th, mean and spread of the best
    STATS_DEPTH), the best BM25 score and the query's term count (as log1p). Dimension-free: an adapter reading
    only these serves any encoder, and they let the map follow how sharp or diffuse a query's list is."""
    top = np.sort(np.asarray(cosines, dtype=np.float64))[::-1][:STATS_DEPTH]
    if top.size == 0:
        top = np.zeros(1)
    best_bm25 = float(np.max(bm25)) if np.size(bm25) else 0.0
    return np.array([top[0], top[min(4, top.size - 1)], top[min(9, top.size - 1)], top.mean(), top.std(),
                     math.log1p(max(best_bm25, 0.0)), math.log1p(max(n_terms, 0))])


def check_cosine_scale(scale: str) -> str:
    if scale not in COSINE_SCALES:
        raise ValueError(f"cosine_scale must be one of {COSINE_SCALES}, got {scale!r}")
    return scale


def scaled_cosines(cosines: np.ndarray, scale: str, reference: np.ndarray | None = None) -> np.ndarray:
    """The cosines as a map on `scale` (COSINE_SCALES) reads them; `reference`: the query's list to scale over (by
    default, `cosines` themselves)."""
    if scale == "minmax":
        return minmax_scaled(cosines, reference)
    return np.asarray(cosines, dtype=np.float64)


def minmax_scaled(cosines: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """`cosines` with the best of `reference` (by default, of themselves) at 1 and its worst at 0."""
    x = np.asarray(cosines, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.size == 0:
        return np.zeros_like(x)
    low = float(ref.min())
    return (x - low) / max(float(ref.max()) - low, _MIN_RANGE)



def group_weights(groups: Sequence[str], cosines: list[np.ndarray]) -> np.ndarray:
    """Per-query weights under which every group (a collection, say) carries the same share of the loss, so
    a collection with many judged queries does not decide the map for all of them."""
    names = sorted(set(groups))
    pairs = {g: sum(x.size for x, h in zip(cosines, groups, strict=True) if h == g) for g in names}
    total = sum(pairs.values())
    return np.array([total / (len(names) * pairs[g]) for g in groups], dtype=np.float64)


def input_spec(inputs: tuple[str, ...], stats: np.ndarray | None, n_queries: int,
               cosine_scale: str = "raw") -> dict[str, Any]:
    """The adapter's input keywords: which inputs, the STATS' centre and scale over the training queries, and
    how the map reads the cosines."""
    spec: dict[str, Any] = {"inputs": tuple(inputs), "cosine_scale": check_cosine_scale(cosine_scale)}
    if "stats" not in inputs:
        return spec
    if stats is None or np.shape(stats) != (n_queries, len(STATS)) or not np.all(np.isfinite(stats)):
        raise ValueError(f"an adapter reading stats needs one finite row of {len(STATS)} STATS per query")
    values = np.asarray(stats, dtype=np.float64)
    spec.update(stats_center=values.mean(axis=0), stats_scale=np.maximum(values.std(axis=0), 1e-6))
    return spec


def features(query_embs: np.ndarray, stats: np.ndarray | None, spec: dict[str, Any]) -> np.ndarray:
    """What the networks are trained on: the rows `CosineAdapter.features` gives at serving time."""
    parts = []
    if "embedding" in spec["inputs"]:
        parts.append(np.asarray(query_embs, dtype=np.float64))
    if "stats" in spec["inputs"]:
        parts.append((np.asarray(stats, dtype=np.float64) - spec["stats_center"]) / spec["stats_scale"])
    return np.hstack(parts)
