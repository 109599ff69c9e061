"""Score fusion for hybrid retrieval (Bruch et al., "An Analysis of Fusion Functions for Hybrid Retrieval").

Pure functions over aligned score arrays: convex combination of normalised scores (theoretical
min-max `tm2c2`, min-max, z-score) and reciprocal rank fusion.
"""

from typing import Literal

import numpy as np

Normalization = Literal["tm2c2", "minmax", "zscore"]

# Theoretical lower bounds of the raw scores: BM25 is never negative, cosine is at least -1.
LEXICAL_FLOOR = 0.0
DENSE_FLOOR = -1.0


def normalize(scores: np.ndarray, method: Normalization, floor: float) -> np.ndarray:
    """Normalises one retriever's scores over the candidate set.

    tm2c2: (s - floor) / (max - floor), the theoretical minimum with the observed maximum;
    minmax: (s - min) / (max - min); zscore: (s - mean) / std. A constant list maps to zeros.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    if method == "zscore":
        std = scores.std()
        return np.zeros_like(scores) if std == 0 else (scores - scores.mean()) / std
    low = floor if method == "tm2c2" else scores.min()
    if method not in ("tm2c2", "minmax"):
        raise ValueError(f"unknown normalization {method!r}")
    span = scores.max() - low
    return np.zeros_like(scores) if span <= 0 else (scores - low) / span


def convex_fusion(lexical: np.ndarray, dense: np.ndarray, alpha: float,
                  method: Normalization = "tm2c2") -> np.ndarray:
    """alpha * norm(dense) + (1 - alpha) * norm(lexical), for scores aligned on the same candidates."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if len(lexical) != len(dense):
        raise ValueError("lexical and dense scores must be aligned on the same candidates")
    return alpha * normalize(dense, method, DENSE_FLOOR) + (1.0 - alpha) * normalize(lexical, method, LEXICAL_FLOOR)


def rrf_fusion(ranks: list[np.ndarray], rrf_k: int = 60) -> np.ndarray:
    """Sum over retrievers of 1 / (rrf_k + rank), ranks 1-based; rank 0 means "not retrieved"."""
    if rrf_k < 1:
        raise ValueError(f"rrf_k must be at least 1, got {rrf_k}")
    total = np.zeros(len(ranks[0]) if ranks else 0, dtype=np.float64)
    for rank in ranks:
        rank = np.asarray(rank)
        total += np.where(rank > 0, 1.0 / (rrf_k + np.maximum(rank, 1)), 0.0)
    return total


def rank_by(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Order of candidates: score descending, ties by smaller label, so pages are stable."""
    return np.lexsort((labels, -np.asarray(scores)))
