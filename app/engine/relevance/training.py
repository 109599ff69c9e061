"""Fitting one Cosine Adapter network (its torch loop in descent.py, imported only to train); cross_fit.py fits the
ensemble the service serves and calibrates its thresholds."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from app.engine.relevance.adapter import (
    DEFAULT_FAMILY,
    FAMILIES,
    WEIGHT_NAMES,
    CosineAdapter,
    softplus_inverse,
)
from app.engine.relevance.calibration import fit_logistic

if TYPE_CHECKING:
    from app.engine.relevance.descent import Descent

MIN_POSITIVE_QUERIES = 5
_MIN_SLOPE = 1e-3  # a raw cosine that does not predict relevance still needs a > 0 to start from


def _check_data(
    query_embs: np.ndarray, cosines: list[np.ndarray], labels: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    q = np.asarray(query_embs, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] == 0:
        raise ValueError(f"query_embs must be a non-empty (n_queries, dim) array, got shape {q.shape}")
    if len(cosines) != q.shape[0] or len(labels) != q.shape[0]:
        raise ValueError(
            f"need one cosine array and one label array per query: {q.shape[0]} queries, "
            f"{len(cosines)} cosine arrays, {len(labels)} label arrays"
        )
    xs = [np.asarray(c, dtype=np.float64).ravel() for c in cosines]
    ys = [np.asarray(y).ravel() for y in labels]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x.shape != y.shape:
            raise ValueError(f"query {i}: {x.size} cosines but {y.size} labels")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError(f"query {i}: labels must be 0/1")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"query {i}: non-finite cosine")
    if not np.all(np.isfinite(q)):
        raise ValueError("query_embs contains non-finite values")
    return q, xs, [y.astype(np.float64) for y in ys]


def _check_lexical(family: str, lexical: list[np.ndarray] | None, xs: list[np.ndarray]) -> list[np.ndarray] | None:
    if family != "hybrid":
        return None
    if lexical is None or len(lexical) != len(xs):
        raise ValueError("the hybrid family needs one lexical-evidence array per query")
    lex = [np.asarray(v, dtype=np.float64).ravel() for v in lexical]
    if any(v.shape != x.shape or not np.all(np.isfinite(v)) for v, x in zip(lex, xs, strict=True)):
        raise ValueError("lexical evidence must be finite and aligned with the cosines")
    return lex


class TrainingData(NamedTuple):
    """Checked training data: one row of `queries` and one array of the rest per query."""

    queries: np.ndarray
    cosines: list[np.ndarray]
    labels: list[np.ndarray]
    lexical: list[np.ndarray] | None  # only for the hybrid family
    weights: np.ndarray | None  # one per query: its pairs' weight in the loss (None: all alike)

    def subset(self, idx: np.ndarray) -> TrainingData:
        return TrainingData(self.queries[idx], [self.cosines[i] for i in idx], [self.labels[i] for i in idx],
                            None if self.lexical is None else [self.lexical[i] for i in idx],
                            None if self.weights is None else self.weights[idx])


def checked_data(query_embs: np.ndarray, cosines: list[np.ndarray], labels: list[np.ndarray], family: str,
                 lexical: list[np.ndarray] | None, weights: np.ndarray | None = None) -> TrainingData:
    q, xs, ys = _check_data(query_embs, cosines, labels)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if weights.shape != (len(xs),) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be one finite, non-negative value per query")
    return TrainingData(q, xs, ys, _check_lexical(family, lexical, xs), weights)


class _Start(NamedTuple):
    """Where training starts: weights that map every query by the pooled logistic fit (held in the output
    biases, with a zero output layer)."""

    weights: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # w1, b1, w2, b2
    slope: float | None  # of the pooled logistic fit; None for a warm start
    intercept: float | None


def fit_adapter(
    query_embs: np.ndarray,
    cosines: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    family: str = DEFAULT_FAMILY,
    hidden: int = 64,
    steps: int = 600,
    lr: float = 1e-2,
    weight_decay: float = 0.1,
    seed: int = 0,
    threads: int = 1,
    progress: bool = False,
    pos_weight: float | None = None,
    val_fraction: float = 0.2,
    patience: int = 100,
    lexical: list[np.ndarray] | None = None,
    weights: np.ndarray | None = None,
    start: CosineAdapter | None = None,
    query_noise: float = 0.0,
    noisy_columns: int | None = None,
) -> CosineAdapter:
    """Full-batch AdamW on pair-level BCE, starting exactly at the pooled logistic fit of raw cosine, or, with
    ``start``, at one of its members (``seed`` picks which): a warm start that fine-tunes it.

    ``query_noise``: the standard deviation of Gaussian noise added to each coordinate of the query embedding
    at every step (`descent.Noise`), on its first ``noisy_columns`` columns (None: all of them).

    ``val_fraction`` of the queries (stratified on having a positive) are kept out of the gradient and
    the weights with the lowest validation loss are returned, stopping after ``patience`` steps without
    improvement; with too few queries for that, all are trained on for ``steps`` steps.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    if hidden < 1 or steps < 0 or threads < 1:
        raise ValueError("hidden and threads must be >= 1 and steps >= 0")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not (math.isfinite(query_noise) and query_noise >= 0.0):
        raise ValueError(f"query_noise must be a finite number >= 0, got {query_noise!r}")
    data = checked_data(query_embs, cosines, labels, family, lexical, weights)
    rng = np.random.default_rng(seed)  # the split draws from it first, then the initialisation
    train_idx, val_idx = _train_validation_split(data.labels, val_fraction, rng)
    train = data.subset(train_idx)
    begin = _initialise(train, family, hidden, rng) if start is None else _warm(start, family, seed, data.queries)
    from app.engine.relevance import descent  # torch: only when training

    run = descent.descend(
        family,
        begin.weights,
        descent.batch(*data, train_idx),
        descent.batch(*data, val_idx) if val_idx.size else None,
        steps=steps, lr=lr, weight_decay=weight_decay, pos_weight=pos_weight, patience=patience,
        threads=threads, progress=progress,
        query_noise=descent.noise(query_noise, data.queries.shape[1] if noisy_columns is None else noisy_columns,
                                  seed),
    )
    settings: dict[str, object] = {"family": family, "hidden": hidden, "steps": steps, "lr": lr,
                                   "weight_decay": weight_decay, "seed": seed, "pos_weight": pos_weight,
                                   "query_noise": query_noise}
    info = _report(settings, begin, run, train, n_val=int(val_idx.size))
    return CosineAdapter(family, dict(zip(WEIGHT_NAMES, run.weights, strict=True)), info=info)


def _train_validation_split(
    ys: list[np.ndarray], val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) query indices; no validation unless there are enough queries with a positive."""
    n_pos_queries = sum(bool(y.any()) for y in ys)
    if val_fraction > 0.0 and n_pos_queries >= 2 * MIN_POSITIVE_QUERIES:
        return _stratified_split(ys, val_fraction, rng)
    return np.arange(len(ys)), np.arange(0)


def _initialise(train: TrainingData, family: str, hidden: int, rng: np.random.Generator) -> _Start:
    """Weights at which the network's map is exactly the pooled logistic fit over the training queries."""
    x_all, y_all = np.concatenate(train.cosines), np.concatenate(train.labels)
    features = x_all[:, None] if train.lexical is None else np.column_stack([x_all, np.concatenate(train.lexical)])
    coefs, intercept = fit_logistic(features, y_all)
    slope = max(float(coefs[0]), _MIN_SLOPE)

    # Data-dependent init: hidden units see centred, unit-variance pre-activations over the training
    # queries, because sentence embeddings share a large common direction that would otherwise saturate tanh.
    q = train.queries
    w1 = rng.standard_normal((q.shape[1], hidden))
    mean_q = q.mean(axis=0)
    spread = ((q - mean_q) @ w1).std(axis=0) if q.shape[0] > 1 else np.ones(hidden)
    w1 = w1 / np.maximum(spread, 1e-6)
    b1 = -mean_q @ w1
    # A zero output layer makes step 0 exactly the global fit, so training can only refine it per query.
    extra = [softplus_inverse(max(float(c), _MIN_SLOPE)) for c in coefs[1:]] if family == "hybrid" else [0.0]
    b2 = np.array([softplus_inverse(slope), intercept, *extra][: FAMILIES[family]])
    w2 = np.zeros((hidden, FAMILIES[family]))
    return _Start((w1, b1, w2, b2), slope, intercept)


def _warm(start: CosineAdapter, family: str, seed: int, queries: np.ndarray) -> _Start:
    """The weights of one of `start`'s members, to fine-tune from."""
    if start.family != family or start.weights["w1"].shape[1] != queries.shape[1]:
        raise ValueError(f"cannot warm-start a {family} adapter on {queries.shape[1]} inputs from a "
                         f"{start.family} adapter on {start.weights['w1'].shape[1]}")
    member = seed % start.members
    w1, b1, w2, b2 = (start.weights[n][member].copy() for n in WEIGHT_NAMES)
    return _Start((w1, b1, w2, b2), None, None)


def _report(settings: dict[str, object], start: _Start, run: Descent, train: TrainingData,
            n_val: int) -> dict[str, object]:
    """The adapter's `info`: how it was trained and on how much."""
    return {
        **settings,
        "init_slope": start.slope,
        "init_intercept": start.intercept,
        "initial_loss": run.initial_loss,
        "final_loss": run.final_loss,
        "best_val_loss": run.best_val_loss,
        "best_step": run.best_step,
        "steps_run": run.steps_run,
        "val_queries": n_val,
        "n_queries": len(train.cosines),
        "n_pairs": int(sum(x.size for x in train.cosines)),
        "n_positive_pairs": int(np.concatenate(train.labels).sum()),
    }


def _stratified_split(ys: list[np.ndarray], fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) query indices; stratified on "has a positive" so both sides keep at least one."""
    has_pos = np.array([bool(y.any()) for y in ys])
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for group, minimum in ((np.flatnonzero(has_pos), 1), (np.flatnonzero(~has_pos), 0)):
        perm = rng.permutation(group)
        n_held = min(max(round(fraction * perm.size), minimum), perm.size - minimum)
        held.append(perm[:n_held])
        kept.append(perm[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))
