"""Training of the Cosine Adapter (torch, imported lazily) and its held-out calibration."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.engine.relevance.adapter import (
    ABS_FLOOR,
    DEFAULT_FAMILY,
    FAMILIES,
    POWER_MAX_EXPONENT,
    CosineAdapter,
    softplus_inverse,
)
from app.engine.relevance.calibration import (
    DEFAULT_RECALL_TARGET,
    DEFAULT_RECALL_TARGETS,
    Calibration,
    choose_threshold,
    filter_metrics,
    fit_logistic,
)

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
) -> CosineAdapter:
    """Full-batch AdamW on pair-level BCE, starting exactly at the pooled logistic fit of raw cosine.

    ``val_fraction`` of the queries (stratified on having a positive) are kept out of the gradient and
    the weights with the lowest validation loss are returned, stopping after ``patience`` steps without
    improvement; with too few queries for that, all are trained on for ``steps`` steps.
    """
    import torch
    from tqdm import tqdm

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    if hidden < 1 or steps < 0 or threads < 1:
        raise ValueError("hidden and threads must be >= 1 and steps >= 0")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    q_all, xs_all, ys_all = _check_data(query_embs, cosines, labels)
    lex_all = _check_lexical(family, lexical, xs_all)
    rng = np.random.default_rng(seed)
    n_pos_queries = sum(bool(y.any()) for y in ys_all)
    if val_fraction > 0.0 and n_pos_queries >= 2 * MIN_POSITIVE_QUERIES:
        train_idx, val_idx = _stratified_split(ys_all, val_fraction, rng)
    else:
        train_idx, val_idx = np.arange(len(xs_all)), np.arange(0)
    q, xs, ys = q_all[train_idx], [xs_all[i] for i in train_idx], [ys_all[i] for i in train_idx]
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    features = x_all[:, None] if lex_all is None else np.column_stack([
        x_all, np.concatenate([lex_all[i] for i in train_idx])])
    coefs, intercept = fit_logistic(features, y_all)
    slope = max(float(coefs[0]), _MIN_SLOPE)

    # Data-dependent init: hidden units see centred, unit-variance pre-activations over the training
    # queries, because sentence embeddings share a large common direction that would otherwise saturate tanh.
    w1 = rng.standard_normal((q.shape[1], hidden))
    mean_q = q.mean(axis=0)
    spread = ((q - mean_q) @ w1).std(axis=0) if q.shape[0] > 1 else np.ones(hidden)
    w1 = w1 / np.maximum(spread, 1e-6)
    b1 = -mean_q @ w1
    # A zero output layer makes step 0 exactly the global fit, so training can only refine it per query.
    extra = [softplus_inverse(max(float(c), _MIN_SLOPE)) for c in coefs[1:]] if family == "hybrid" else [0.0]
    b2 = np.array([softplus_inverse(slope), intercept, *extra][: FAMILIES[family]])
    w2 = np.zeros((hidden, FAMILIES[family]))

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dt = torch.float64
        params = [torch.tensor(a, dtype=dt, requires_grad=True) for a in (w1, b1, w2, b2)]
        weight_pos = None if pos_weight is None else torch.tensor(float(pos_weight), dtype=dt)

        def batch(idx: np.ndarray) -> tuple[torch.Tensor, ...]:
            bx = [xs_all[i] for i in idx]
            return (
                torch.tensor(q_all[idx], dtype=dt),
                torch.tensor(np.concatenate(bx), dtype=dt),
                torch.tensor(np.concatenate([ys_all[i] for i in idx]), dtype=dt),
                torch.tensor(np.repeat(np.arange(len(bx)), [x.size for x in bx]), dtype=torch.long),
                torch.tensor(np.concatenate([lex_all[i] for i in idx]) if lex_all is not None else np.zeros(1),
                             dtype=dt),
            )

        def loss_fn(data: tuple[torch.Tensor, ...]) -> torch.Tensor:
            q_t, x_t, y_t, qidx, lex_t = data
            tw1, tb1, tw2, tb2 = params
            raw = torch.tanh(q_t @ tw1 + tb1) @ tw2 + tb2
            a = torch.nn.functional.softplus(raw[:, 0])[qidx]
            b = raw[:, 1][qidx]
            if family == "linear":
                z = a * x_t + b
            elif family == "hybrid":
                c = torch.nn.functional.softplus(raw[:, 2])[qidx]
                z = a * x_t + c * lex_t + b
            else:
                k = POWER_MAX_EXPONENT * torch.sigmoid(raw[:, 2])[qidx]
                z = torch.sign(x_t) * a * x_t.abs().clamp_min(ABS_FLOOR).pow(k) + b
            return torch.nn.functional.binary_cross_entropy_with_logits(z, y_t, pos_weight=weight_pos)

        train_data = batch(train_idx)
        val_data = batch(val_idx) if val_idx.size else None
        # Biases carry the global fit; decaying them would drag the map back toward slope 0.7 / intercept 0.
        opt = torch.optim.AdamW(
            [
                {"params": [params[0], params[2]], "weight_decay": weight_decay},
                {"params": [params[1], params[3]], "weight_decay": 0.0},
            ],
            lr=lr,
        )

        def snapshot() -> list[np.ndarray]:
            return [p.detach().cpu().numpy().astype(np.float64, copy=True) for p in params]

        with torch.no_grad():
            initial_loss = float(loss_fn(train_data))
            best_val = float(loss_fn(val_data)) if val_data is not None else float("nan")
        best, best_step, steps_run = snapshot(), 0, 0
        bar = tqdm(range(1, steps + 1), disable=not progress, desc=f"adapter ({family})")
        for step in bar:
            opt.zero_grad()
            loss = loss_fn(train_data)
            loss.backward()
            opt.step()
            steps_run = step
            if val_data is None:
                best_step = step
                continue
            with torch.no_grad():
                val_loss = float(loss_fn(val_data))
            if val_loss < best_val:
                best, best_val, best_step = snapshot(), val_loss, step
            if progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}", val=f"{val_loss:.4f}", best=best_step)
            if step - best_step >= patience:
                break
        if val_data is None:
            best = snapshot()
        with torch.no_grad():
            for p, value in zip(params, best, strict=True):
                p.copy_(torch.from_numpy(value))
            final_loss = float(loss_fn(train_data))
    finally:
        torch.set_num_threads(previous_threads)
    weights = dict(zip(("w1", "b1", "w2", "b2"), best, strict=True))

    info: dict[str, object] = {
        "family": family,
        "hidden": hidden,
        "steps": steps,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "pos_weight": pos_weight,
        "init_slope": slope,
        "init_intercept": intercept,
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "best_val_loss": best_val if val_data is not None else None,
        "best_step": best_step,
        "steps_run": steps_run,
        "val_queries": int(val_idx.size),
        "n_queries": len(xs),
        "n_pairs": int(x_all.size),
        "n_positive_pairs": int(y_all.sum()),
    }
    return CosineAdapter(family, weights, info=info)


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
    **fit_kwargs: Any,
) -> CosineAdapter:
    """Fits ``repeats`` adapters (seeds) per fold and serves their ensemble, with global thresholds chosen
    out of fold.

    Each query's probabilities come from the members fitted without it, so the thresholds (and the metrics
    reported beside them) are measured out of sample on all the judgments, not on a small holdout whose
    few positives would make a 95%-recall threshold noisy; averaging the members then cuts the variance of
    any single one (on SciFact train, out of fold: 3 seeds a fold raised PR-AUC from 0.52-0.53 to
    0.56-0.58 and cut kept-per-query at 95% recall from 24-28 to 22-25, over 3 seeds of the whole run).
    Raw cosine gets its own global threshold for the same target, as the baseline.
    """
    if not 0.0 < recall_target <= 1.0:
        raise ValueError(f"recall target must be in (0, 1], got {recall_target!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    q, xs, ys = _check_data(query_embs, cosines, labels)
    lex = _check_lexical(family, lexical, xs)
    n_pos = sum(bool(y.any()) for y in ys)
    if n_pos < MIN_POSITIVE_QUERIES:
        raise ValueError(
            f"need at least {MIN_POSITIVE_QUERIES} queries with a relevant candidate to train and calibrate "
            f"an adapter, got {n_pos}"
        )
    n_folds = max(2, min(folds, n_pos // 2))
    fold = _folds(ys, n_folds, np.random.default_rng(seed))

    def subset(idx: np.ndarray) -> dict[str, Any]:  # the folds' share of the lexical evidence
        return {"lexical": None if lex is None else [lex[i] for i in idx]}

    out_of_fold: list[np.ndarray] = [np.empty(0)] * len(xs)
    parts = []
    for f in range(n_folds):
        fit_idx, held_idx = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        fold_parts = [fit_adapter(q[fit_idx], [xs[i] for i in fit_idx], [ys[i] for i in fit_idx], family=family,
                                  seed=seed + f + n_folds * r, **subset(fit_idx), **fit_kwargs)
                      for r in range(repeats)]
        parts.extend(fold_parts)
        fold_adapter = CosineAdapter.ensemble(fold_parts)
        for i in held_idx:
            out_of_fold[i] = fold_adapter.probabilities(q[i], xs[i], None if lex is None else lex[i])
    info = {k: v for k, v in parts[0].info.items() if k not in ("seed", "n_queries", "n_pairs", "n_positive_pairs")}
    info.update({"members": len(parts), "folds": n_folds, "repeats": repeats,
                 "member_best_steps": [p.info["best_step"] for p in parts],
                 "n_queries": len(xs), "n_pairs": int(sum(x.size for x in xs))})
    adapter = CosineAdapter.ensemble(parts, info=info)

    pooled_probs, pooled_labels = np.concatenate(out_of_fold), np.concatenate(ys)
    targets = sorted({*DEFAULT_RECALL_TARGETS, float(recall_target)})
    thresholds = {t: choose_threshold(pooled_probs, pooled_labels, t) for t in targets}
    raw_threshold = choose_threshold(np.concatenate(xs), pooled_labels, recall_target)
    metrics = filter_metrics(out_of_fold, ys, thresholds[recall_target])
    raw_metrics = filter_metrics(xs, ys, raw_threshold)
    metrics.update({f"raw_cosine_{k}": v for k, v in raw_metrics.items()})
    metrics.update({"folds": float(n_folds), "queries": float(len(xs)), "positive_pairs": float(pooled_labels.sum())})
    adapter.calibration = Calibration(
        threshold=thresholds[recall_target],
        recall_target=float(recall_target),
        thresholds=thresholds,
        metrics=metrics,
    )
    return adapter
