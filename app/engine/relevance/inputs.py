"""What the adapter's networks read of a query: the embedding and/or its candidates' STATS, standardised; and the
per-query loss weights that let every collection weigh the same when one adapter is trained across several."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.engine.relevance.adapter import STATS, check_cosine_scale


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
