"""Global threshold choice, filtering metrics and the pooled logistic fit of raw cosine (pure numpy)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_RECALL_TARGETS: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95, 0.99)
# The recall the default threshold is chosen for, everywhere a caller does not name one.
DEFAULT_RECALL_TARGET = 0.95


@dataclass
class Calibration:
    """Global probability thresholds chosen on held-out judgments, plus the metrics measured there."""

    threshold: float
    recall_target: float
    thresholds: dict[float, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        # JSON object keys must be strings; repr keeps the float exact on the way back.
        return {
            "threshold": float(self.threshold),
            "recall_target": float(self.recall_target),
            "thresholds": {repr(float(k)): float(v) for k, v in sorted(self.thresholds.items())},
            "metrics": {str(k): float(v) for k, v in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, data: object) -> Calibration:
        if not isinstance(data, Mapping):
            raise ValueError("calibration must be a JSON object")
        try:
            thresholds = {float(k): float(v) for k, v in dict(data["thresholds"]).items()}
            metrics = {str(k): float(v) for k, v in dict(data["metrics"]).items()}
            return cls(
                threshold=float(data["threshold"]),
                recall_target=float(data["recall_target"]),
                thresholds=thresholds,
                metrics=metrics,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed calibration: {exc!r}") from exc


def _check_target(recall_target: float) -> None:
    if not (0.0 < recall_target <= 1.0) or math.isnan(recall_target):
        raise ValueError(f"recall target must be in (0, 1], got {recall_target!r}")


def _pooled(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    return s, y.astype(bool)


def choose_threshold(probs: np.ndarray, labels: np.ndarray, recall_target: float) -> float:
    """Highest t such that keeping ``probs >= t`` keeps at least ``recall_target`` of the positives."""
    _check_target(recall_target)
    s, y = _pooled(probs, labels)
    positives = np.sort(s[y])[::-1]
    if positives.size == 0:
        raise ValueError("cannot choose a threshold: no positive labels")
    # The epsilon keeps e.g. 0.7 * 10 = 7.000000000000001 from demanding an 8th positive.
    needed = max(1, math.ceil(recall_target * positives.size - 1e-9))
    return float(positives[needed - 1])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the step-wise precision-recall curve, ties scored as one threshold (0.0 if no positives)."""
    s, y = _pooled(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Only the last index of each run of tied scores is a real operating point.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall_gain = np.diff(np.r_[0, tps]) / n_pos
    return float(np.sum(recall_gain * precision))


def pr_auc_difference_se(a: list[np.ndarray], b: list[np.ndarray], labels: list[np.ndarray],
                         resamples: int = 100, seed: int = 0) -> float:
    """Standard error of PR-AUC(a) - PR-AUC(b) on the same queries, by a paired bootstrap over queries (each
    resample draws whole queries, so a query's candidates stay together); infinite for fewer than two queries."""
    if len(labels) < 2:
        return math.inf
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        picked = rng.integers(0, len(labels), len(labels))
        y = np.concatenate([labels[i] for i in picked])
        diffs.append(average_precision(np.concatenate([a[i] for i in picked]), y)
                     - average_precision(np.concatenate([b[i] for i in picked]), y))
    return float(np.std(diffs, ddof=1))


def recall_se(probs: list[np.ndarray], labels: list[np.ndarray], threshold: float, resamples: int = 200,
              seed: int = 0) -> float:
    """Standard error of the recall kept at `threshold`, by a bootstrap over queries (a query's relevant
    documents rise and fall together); infinite for fewer than two queries."""
    if len(labels) < 2:
        return math.inf
    kept = np.array([float(np.asarray(y)[np.asarray(p) >= threshold].sum())
                     for p, y in zip(probs, labels, strict=True)])
    relevant = np.array([float(np.sum(y)) for y in labels])
    picked = np.random.default_rng(seed).integers(0, len(labels), (resamples, len(labels)))
    totals = relevant[picked].sum(axis=1)
    recalls = np.divide(kept[picked].sum(axis=1), totals, out=np.ones(resamples), where=totals > 0)
    return float(np.std(recalls, ddof=1))


def cross_validated_metrics(probs: list[np.ndarray], labels: list[np.ndarray], recall_target: float,
                            n_folds: int = 5, seed: int = 0) -> dict[str, float]:
    """`filter_metrics` of choosing the threshold on these judgments, measured on queries it was not chosen on:
    each fold of queries filtered at the threshold the other folds choose (their pooled positives meeting
    `recall_target`). What a recalibration promises new queries, where measuring the threshold on the queries
    it was chosen on meets the target by construction."""
    n_folds = max(2, min(n_folds, len(labels)))
    fold = np.random.default_rng(seed).permutation(len(labels)) % n_folds
    full = choose_threshold(np.concatenate(probs), np.concatenate(labels), recall_target)
    shifted = [np.empty(0)] * len(labels)
    for f in range(n_folds):
        rest = np.flatnonzero(fold != f)
        rest_labels = np.concatenate([labels[i] for i in rest])
        threshold = choose_threshold(np.concatenate([probs[i] for i in rest]), rest_labels, recall_target) \
            if rest_labels.any() else full
        for i in np.flatnonzero(fold == f):
            shifted[i] = np.asarray(probs[i], np.float64) - threshold  # kept: at or above 0
    metrics = filter_metrics(shifted, labels, 0.0)
    metrics.update({"pr_auc": average_precision(np.concatenate(probs), np.concatenate(labels)), "threshold": full,
                    "folds": float(n_folds)})
    return metrics


def group_threshold(probs: list[np.ndarray], labels: list[np.ndarray], groups: Sequence[str],
                    recall_target: float) -> float:
    """Highest t at which every group with a positive (a collection, say) keeps at least ``recall_target`` of
    its own positives: the lowest of the groups' own thresholds.

    Pooled instead, the groups whose relevant documents score high carry the target, and a collection that
    judges loosely (NFCorpus's "partially relevant") is cut at half its recall when it is left out in training
    (README, leave-one-domain-out). Per group, the threshold is the one that held on every collection it was
    chosen on, which is what a new collection needs to be promised."""
    names = dict.fromkeys(groups)
    if len(groups) != len(probs):
        raise ValueError(f"need one group per query: {len(groups)} groups, {len(probs)} queries")
    chosen = []
    for name in names:
        idx = [i for i, g in enumerate(groups) if g == name]
        ys = np.concatenate([labels[i] for i in idx])
        if ys.any():
            chosen.append(choose_threshold(np.concatenate([probs[i] for i in idx]), ys, recall_target))
    if not chosen:
        raise ValueError("cannot choose a threshold: no positive labels")
    return min(chosen)


def calibrate(out_of_fold: list[np.ndarray], xs: list[np.ndarray], ys: list[np.ndarray], recall_target: float,
              n_folds: int, groups: Sequence[str] | None = None) -> Calibration:
    """Thresholds on the out-of-fold probabilities for every recall target (pooled, or with `groups` met on
    every group: `group_threshold`), and the metrics at the chosen one beside those of raw cosine (`xs`) at its
    own threshold for the same target, chosen by the same rule."""
    pooled_probs, pooled_labels = np.concatenate(out_of_fold), np.concatenate(ys)
    targets = sorted({*DEFAULT_RECALL_TARGETS, float(recall_target)})
    if groups is None:
        thresholds = {t: choose_threshold(pooled_probs, pooled_labels, t) for t in targets}
        raw_threshold = choose_threshold(np.concatenate(xs), pooled_labels, recall_target)
    else:
        thresholds = {t: group_threshold(out_of_fold, ys, groups, t) for t in targets}
        raw_threshold = group_threshold(xs, ys, groups, recall_target)
    metrics = filter_metrics(out_of_fold, ys, thresholds[recall_target])
    raw_metrics = filter_metrics(xs, ys, raw_threshold)
    metrics.update({f"raw_cosine_{k}": v for k, v in raw_metrics.items()})
    metrics.update({"folds": float(n_folds), "queries": float(len(xs)), "positive_pairs": float(pooled_labels.sum())})
    return Calibration(
        threshold=thresholds[recall_target],
        recall_target=float(recall_target),
        thresholds=thresholds,
        metrics=metrics,
    )


def precision_at_recall(scores_pooled: np.ndarray, labels_pooled: np.ndarray, recall_target: float) -> float:
    """Precision of the set kept by the threshold that ``choose_threshold`` picks for this target."""
    s, y = _pooled(scores_pooled, labels_pooled)
    t = choose_threshold(s, y, recall_target)
    return float(y[s >= t].mean())


def filter_metrics(
    scores: list[np.ndarray],
    labels: list[np.ndarray],
    threshold: float,
    n_relevant: list[int] | None = None,
) -> dict[str, float]:
    """Metrics of keeping ``score >= threshold`` per query; precision of an empty kept set counts as 1."""
    if len(scores) != len(labels) or not scores:
        raise ValueError("scores and labels must be non-empty lists of the same length")
    if n_relevant is not None and len(n_relevant) != len(scores):
        raise ValueError("n_relevant must have one entry per query")
    pairs = [_pooled(s, y) for s, y in zip(scores, labels, strict=True)]
    kept_counts = np.array([int((s >= threshold).sum()) for s, _ in pairs])
    kept_pos = sum(int(y[s >= threshold].sum()) for s, y in pairs)
    cand_pos = sum(int(y.sum()) for _, y in pairs)
    n_cand = sum(s.size for s, _ in pairs)
    n_kept = int(kept_counts.sum())
    recall_kept = kept_pos / cand_pos if cand_pos else 1.0
    if n_relevant is None:
        recall = recall_kept
    else:
        total_rel = sum(n_relevant)
        # Judged-relevant documents the retriever never returned cost recall too.
        recall = kept_pos / total_rel if total_rel else 1.0
    return {
        "pr_auc": average_precision(np.concatenate([s for s, _ in pairs]), np.concatenate([y for _, y in pairs])),
        "precision": kept_pos / n_kept if n_kept else 1.0,
        "recall": recall,
        "recall_kept": recall_kept,
        "kept_per_query": float(kept_counts.mean()),
        "fraction_filtered": 1.0 - n_kept / n_cand if n_cand else 0.0,
        "empty_query_rate": float(np.mean(kept_counts == 0)),
        "threshold": float(threshold),
        "n_queries": float(len(pairs)),
    }


def kept_at_recall(scores: list[np.ndarray], labels: list[np.ndarray], recall: float) -> float:
    """Mean kept a query by the one global threshold on `scores` that keeps `recall` of the positives: what raw
    cosine keeps at the recall an adapter reached, the baseline it is measured against."""
    threshold = choose_threshold(np.concatenate(scores), np.concatenate(labels), min(max(recall, 1e-9), 1.0))
    return filter_metrics(scores, labels, threshold)["kept_per_query"]


def fit_logistic_1d(x: np.ndarray, y: np.ndarray, l2: float = 1e-6, max_iter: int = 100) -> tuple[float, float]:
    """(slope, intercept) of a logistic regression of labels on one feature, by damped Newton steps."""
    xs, yb = _pooled(x, y)
    weights, intercept = fit_logistic(xs[:, None], yb, l2=l2, max_iter=max_iter)
    return float(weights[0]), intercept


def fit_logistic(features: np.ndarray, y: np.ndarray, l2: float = 1e-6, max_iter: int = 100
                 ) -> tuple[np.ndarray, float]:
    """(weights, intercept) of a logistic regression of 0/1 labels on the columns of `features`."""
    yb = np.asarray(y).ravel()
    if yb.all() or not yb.any():
        raise ValueError("logistic fit needs both positive and negative labels")
    target = yb.astype(np.float64)
    n_features = features.shape[1]
    design = np.column_stack([np.asarray(features, dtype=np.float64), np.ones(len(target))])
    # The ridge on the weights keeps separable data from running off to infinity.
    ridge = np.diag([l2] * n_features + [1e-12])
    prior = float(target.mean())
    w = np.array([0.0] * n_features + [math.log(prior / (1.0 - prior))])

    def loss(v: np.ndarray) -> float:
        z = design @ v
        return float(np.mean(np.logaddexp(0.0, z) - target * z) + 0.5 * l2 * float(v[:-1] @ v[:-1]))

    current = loss(w)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh(0.5 * (design @ w)))
        grad = design.T @ (p - target) / len(target) + ridge @ w
        hess = (design.T * (p * (1.0 - p))) @ design / len(target) + ridge
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current + 1e-15:
            scale *= 0.5
        w = w - scale * step
        current = loss(w)
        if float(np.max(np.abs(scale * step))) < 1e-10:
            break
    return w[:-1], float(w[-1])
