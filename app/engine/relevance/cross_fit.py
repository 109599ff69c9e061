"""The ensemble the service serves: networks fitted fold by fold (`training.fit_adapter`), their thresholds chosen
on out-of-fold probabilities (`train_and_calibrate`), and thresholds re-chosen on a collection's own judgments
(`recalibrate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.engine.relevance.adapter import DEFAULT_FAMILY, CosineAdapter
from app.engine.relevance.calibration import DEFAULT_RECALL_TARGET, calibrate
from app.engine.relevance.inputs import features as features_of
from app.engine.relevance.inputs import group_weights, input_spec, scaled_cosines
from app.engine.relevance.training import MIN_POSITIVE_QUERIES, TrainingData, checked_data, fit_adapter


def _folds(ys: list[np.ndarray], n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each query; queries with a positive are spread evenly so every fold has some."""
    fold = np.empty(len(ys), dtype=np.int64)
    for group in (np.flatnonzero([y.any() for y in ys]), np.flatnonzero([not y.any() for y in ys])):
        fold[rng.permutation(group)] = np.arange(group.size) % n_folds
    return fold


def train_and_calibrate(
    query_embs: np.ndarray,
    cosines: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    folds: int = 5,
    repeats: int = 3,
    recall_target: float = DEFAULT_RECALL_TARGET,
    family: str = DEFAULT_FAMILY,
    seed: int = 0,
    lexical: list[np.ndarray] | None = None,
    inputs: tuple[str, ...] = ("embedding",),
    stats: np.ndarray | None = None,
    groups: Sequence[str] | None = None,
    start: CosineAdapter | None = None,
    cosine_scale: str = "raw",
    references: Sequence[np.ndarray] | None = None,
    out_of_fold_into: list[np.ndarray] | None = None,
    on_member: Callable[[float], None] | None = None,
    **fit_kwargs: Any,
) -> CosineAdapter:
    """Fits ``repeats`` adapters (seeds) per fold and serves their ensemble, with global thresholds chosen
    out of fold.

    Each query's probabilities come from the members fitted without it, so the thresholds (and the metrics
    beside them) are measured out of sample on all the judgments, not on a small holdout whose few positives
    would make a 95%-recall threshold noisy; averaging members cuts the variance of any one (SciFact train, out
    of fold: 3 seeds a fold, PR-AUC 0.52-0.53 -> 0.56-0.58). Raw cosine gets its own threshold, as the baseline.

    ``inputs`` says what the network reads of a query: its embedding (``query_embs``) and/or ``stats``, one
    row of `adapter.STATS` per query (standardised here; the adapter keeps the centre and scale). With
    ``groups`` (a name per query, e.g. its collection), every group weighs the same in the loss and the
    thresholds meet their recall target on every group (`calibration.group_threshold`). ``cosine_scale``:
    how the map reads the cosines (`adapter.COSINE_SCALES`). With ``start``, every member fine-tunes one of its
    members (its family, inputs, STATS scaling and cosine scale are kept). ``on_member`` hears the fraction of
    members fitted after each one (a job's progress; an exception it raises ends the training).
    """
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {recall_target!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if start is not None:
        spec = start.input_spec()
        family = start.family
        fit_kwargs = {**fit_kwargs, "hidden": start.hidden, "start": start}
    else:
        spec = input_spec(inputs, stats, len(cosines), cosine_scale)
    features = features_of(query_embs, stats, spec)
    # Noise, if any, goes on the embedding's columns (first among the features), never on the STATS.
    fit_kwargs["noisy_columns"] = np.shape(query_embs)[1] if "embedding" in spec["inputs"] else 0
    weights = None if groups is None else group_weights(groups, cosines)
    raw = checked_data(features, cosines, labels, family, lexical, weights)
    # The members are fitted on the cosines as the served map reads them: scaled over each query's `references`
    # (the shown list a search scales over); without any (None or empty, as TrainingSet has it), its own pool.
    if references and len(references) != len(raw.cosines):
        raise ValueError(f"got {len(references)} references for {len(raw.cosines)} queries")
    refs: Sequence[np.ndarray | None] = references if references else [None] * len(raw.cosines)
    data = raw._replace(cosines=[scaled_cosines(c, spec["cosine_scale"], r)
                                 for c, r in zip(raw.cosines, refs, strict=True)])
    n_pos = sum(bool(y.any()) for y in data.labels)
    if n_pos < MIN_POSITIVE_QUERIES:
        raise ValueError(
            f"need at least {MIN_POSITIVE_QUERIES} queries with a relevant candidate to train and calibrate "
            f"an adapter, got {n_pos}"
        )
    n_folds = max(2, min(folds, n_pos // 2))
    fold = _folds(data.labels, n_folds, np.random.default_rng(seed))
    parts, out_of_fold = _cross_fit(data, fold, n_folds, repeats, family=family, seed=seed, fit_kwargs=fit_kwargs,
                                    on_member=on_member)
    info = {k: v for k, v in parts[0].info.items() if k not in ("seed", "n_queries", "n_pairs", "n_positive_pairs")}
    info.update({"members": len(parts), "folds": n_folds, "repeats": repeats,
                 "member_best_steps": [p.info["best_step"] for p in parts],
                 "n_queries": len(data.cosines), "n_pairs": int(sum(x.size for x in data.cosines))})
    ensemble = CosineAdapter.ensemble(parts)
    adapter = CosineAdapter(ensemble.family, ensemble.weights, info=info, **spec)
    adapter.calibration = calibrate(out_of_fold, raw.cosines, data.labels, recall_target, n_folds, groups)
    if out_of_fold_into is not None:  # the caller compares them with another adapter's on the same queries
        out_of_fold_into.extend(out_of_fold)
    return adapter


def recalibrate(adapter: CosineAdapter, probabilities: list[np.ndarray], cosines: list[np.ndarray],
                labels: list[np.ndarray], recall_target: float) -> CosineAdapter:
    """The same network with its thresholds chosen on these judgments, where `probabilities` are its own on
    them (out of sample for an adapter that never saw them): a per-collection recalibration."""
    return adapter.with_calibration(calibrate(probabilities, [np.asarray(c, np.float64) for c in cosines],
                                              [np.asarray(y, np.float64) for y in labels], recall_target, n_folds=0))


def _cross_fit(
    data: TrainingData, fold: np.ndarray, n_folds: int, repeats: int, *, family: str, seed: int,
    fit_kwargs: dict[str, Any], on_member: Callable[[float], None] | None = None,
) -> tuple[list[CosineAdapter], list[np.ndarray]]:
    """(members, out-of-fold probabilities): `repeats` adapters (seeds) fitted without each fold, and each
    query's probabilities from the ensemble of the members fitted without it. `on_member` hears the fraction
    of members fitted after each one; an exception it raises ends the fit."""
    out_of_fold: list[np.ndarray] = [np.empty(0)] * len(data.cosines)
    parts: list[CosineAdapter] = []
    for f in range(n_folds):
        fit_idx, held_idx = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        fit = data.subset(fit_idx)
        fold_parts = []
        for r in range(repeats):
            fold_parts.append(fit_adapter(fit.queries, fit.cosines, fit.labels, family=family,
                                          seed=seed + f + n_folds * r, lexical=fit.lexical, weights=fit.weights,
                                          **fit_kwargs))
            if on_member is not None:
                on_member((len(parts) + len(fold_parts)) / (n_folds * repeats))
        parts.extend(fold_parts)
        fold_adapter = CosineAdapter.ensemble(fold_parts)
        for i in held_idx:
            out_of_fold[i] = fold_adapter.probabilities(data.queries[i], data.cosines[i],
                                                        None if data.lexical is None else data.lexical[i])
    return parts, out_of_fold
