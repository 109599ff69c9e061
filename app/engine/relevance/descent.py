"""The Cosine Adapter's training loop in torch; imported only to train, so serving never loads torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from app.engine.relevance.adapter import ABS_FLOOR, POWER_MAX_EXPONENT

_DT = torch.float64


class Batch(NamedTuple):
    """Some queries' candidates as tensors, pairs concatenated query after query."""

    queries: torch.Tensor  # (n_queries, dim)
    cosines: torch.Tensor  # (n_pairs,)
    labels: torch.Tensor  # (n_pairs,)
    query_of: torch.Tensor  # (n_pairs,) long: the row in `queries` of each pair's query
    lexical: torch.Tensor  # (n_pairs,); a placeholder zero for the families that read none
    weights: torch.Tensor | None  # (n_pairs,) each pair's weight in the loss; None: all alike


class Noise(NamedTuple):
    """Gaussian noise on the query embedding at each training step (a fresh draw a step): the network then
    cannot key on the exact directions of its training collections' queries. Measured by leave-one-domain-out
    and out-of-fold runs (README, "The relevance filter")."""

    sigma: float  # per coordinate of the (unit-length) embedding
    columns: int  # the leading feature columns that are the embedding (the STATS after them are left alone)
    generator: torch.Generator


def noise(sigma: float, columns: int, seed: int) -> Noise | None:
    """The noise of `sigma` on `columns` columns, drawn from `seed`; None where it would add nothing."""
    return Noise(sigma, columns, torch.Generator().manual_seed(seed)) if sigma > 0.0 and columns > 0 else None


class Descent(NamedTuple):
    """What the training loop returns: the weights of its best step and how it got there."""

    weights: list[np.ndarray]  # w1, b1, w2, b2
    initial_loss: float
    final_loss: float
    best_val_loss: float | None  # None without a validation split
    best_step: int
    steps_run: int


def batch(queries: np.ndarray, cosines: list[np.ndarray], labels: list[np.ndarray],
          lexical: list[np.ndarray] | None, weights: np.ndarray | None, idx: np.ndarray) -> Batch:
    """The queries `idx` of the checked training data as one batch (`weights`: one per query, or None)."""
    bx = [cosines[i] for i in idx]
    return Batch(
        torch.tensor(queries[idx], dtype=_DT),
        torch.tensor(np.concatenate(bx), dtype=_DT),
        torch.tensor(np.concatenate([labels[i] for i in idx]), dtype=_DT),
        torch.tensor(np.repeat(np.arange(len(bx)), [x.size for x in bx]), dtype=torch.long),
        torch.tensor(np.concatenate([lexical[i] for i in idx]) if lexical is not None else np.zeros(1), dtype=_DT),
        None if weights is None else torch.tensor(np.repeat(weights[idx], [x.size for x in bx]), dtype=_DT),
    )


def logits(family: str, params: Sequence[torch.Tensor], queries: torch.Tensor, cosines: torch.Tensor,
           query_of: torch.Tensor, lexical: torch.Tensor) -> torch.Tensor:
    """Each pair's logit under one network (w1, b1, w2, b2): the torch twin of `CosineAdapter.logits`,
    which serves the same maps in numpy (tests/engine/test_relevance.py holds the two to agree)."""
    w1, b1, w2, b2 = params
    raw = torch.tanh(queries @ w1 + b1) @ w2 + b2
    a = torch.nn.functional.softplus(raw[:, 0])[query_of]
    b = raw[:, 1][query_of]
    if family == "linear":
        return a * cosines + b
    if family == "hybrid":
        c = torch.nn.functional.softplus(raw[:, 2])[query_of]
        return a * cosines + c * lexical + b
    k = POWER_MAX_EXPONENT * torch.sigmoid(raw[:, 2])[query_of]
    return torch.sign(cosines) * a * cosines.abs().clamp_min(ABS_FLOOR).pow(k) + b


def _loss(family: str, params: Sequence[torch.Tensor], data: Batch, pos_weight: torch.Tensor | None) -> torch.Tensor:
    z = logits(family, params, data.queries, data.cosines, data.query_of, data.lexical)
    return torch.nn.functional.binary_cross_entropy_with_logits(z, data.labels, weight=data.weights,
                                                                pos_weight=pos_weight)


def with_noise(data: Batch, noise: Noise | None) -> Batch:
    """`data` with Gaussian noise added to the first `noise.columns` columns of its queries (the embedding's)."""
    if noise is None:
        return data
    q = data.queries.clone()
    columns = min(noise.columns, q.shape[1])
    q[:, :columns] += noise.sigma * torch.randn(q.shape[0], columns, dtype=_DT, generator=noise.generator)
    return data._replace(queries=q)


def _snapshot(params: Sequence[torch.Tensor]) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().astype(np.float64, copy=True) for p in params]


def descend(
    family: str,
    start: Sequence[np.ndarray],
    train: Batch,
    val: Batch | None,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    pos_weight: float | None,
    patience: int,
    threads: int,
    progress: bool,
    query_noise: Noise | None = None,
) -> Descent:
    """Full-batch AdamW on pair-level BCE from the weights `start` (w1, b1, w2, b2). With a validation
    batch, the weights of the step with the lowest validation loss, stopping after `patience` steps without
    improvement; without one, the weights after `steps` steps. With `query_noise`, each step's training batch
    carries fresh noise on its query embeddings (validation and the reported losses read them clean)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = [torch.tensor(a, dtype=_DT, requires_grad=True) for a in start]
        weight_pos = None if pos_weight is None else torch.tensor(float(pos_weight), dtype=_DT)

        def loss(data: Batch) -> torch.Tensor:
            return _loss(family, params, data, weight_pos)

        with torch.no_grad():
            initial_loss = float(loss(train))
        best, best_val, best_step, steps_run = _loop(
            params, loss, train, val, query_noise, steps=steps, lr=lr, weight_decay=weight_decay, patience=patience,
            progress=progress, desc=f"adapter ({family})",
        )
        with torch.no_grad():
            for p, value in zip(params, best, strict=True):
                p.copy_(torch.from_numpy(value))
            final_loss = float(loss(train))
    finally:
        torch.set_num_threads(previous_threads)
    return Descent(best, initial_loss, final_loss, best_val if val is not None else None, best_step, steps_run)


def _loop(
    params: list[torch.Tensor],
    loss: Callable[[Batch], torch.Tensor],
    train: Batch,
    val: Batch | None,
    query_noise: Noise | None,
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    patience: int,
    progress: bool,
    desc: str,
) -> tuple[list[np.ndarray], float, int, int]:
    """(best weights, their validation loss (nan without validation), best step, steps run)."""
    # Biases carry the global fit; decaying them would drag the map back toward slope 0.7 / intercept 0.
    opt = torch.optim.AdamW(
        [
            {"params": [params[0], params[2]], "weight_decay": weight_decay},
            {"params": [params[1], params[3]], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    with torch.no_grad():
        best_val = float(loss(val)) if val is not None else float("nan")
    best, best_step, steps_run = _snapshot(params), 0, 0
    bar = tqdm(range(1, steps + 1), disable=not progress, desc=desc)
    for step in bar:
        opt.zero_grad()
        train_loss = loss(with_noise(train, query_noise))
        train_loss.backward()
        opt.step()
        steps_run = step
        if val is None:
            best_step = step
            continue
        with torch.no_grad():
            val_loss = float(loss(val))
        if val_loss < best_val:
            best, best_val, best_step = _snapshot(params), val_loss, step
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(train_loss):.4f}", val=f"{val_loss:.4f}", best=best_step)
        if step - best_step >= patience:
            break
    if val is None:
        best = _snapshot(params)
    return best, best_val, best_step, steps_run
