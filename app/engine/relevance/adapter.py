"""Cosine Adapter inference: a query-conditioned monotonic map from raw cosine to relevance probability."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from app.engine.relevance.calibration import Calibration

FORMAT_VERSION = 2  # 2: weights carry a leading axis of ensemble members
# family -> number of raw map parameters. "hybrid" goes beyond the paper: the map also reads the candidate's
# lexical evidence y in [0, 1] (its BM25 score over the best candidate's): logit = a*x + c*y + b, a, c > 0.
# (A cosine-gap-to-the-best feature measured better on SciFact but kept the head of every list, nonsense
# queries included: 35 hits per random non-word query at the 95%-recall threshold.)
FAMILIES: dict[str, int] = {"linear": 2, "power": 3, "hybrid": 3}
Family = Literal["hybrid", "linear", "power"]
# The family the service fits when a caller names none (chosen on SciFact train; README).
DEFAULT_FAMILY: Family = "hybrid"
WEIGHT_NAMES: tuple[str, ...] = ("w1", "b1", "w2", "b2")
WEIGHTS_FILE = "weights.npz"
META_FILE = "adapter.json"
POWER_MAX_EXPONENT = 2.0
ABS_FLOOR = 1e-12  # keeps |x|**k and its k-gradient finite at x == 0


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def softplus_inverse(y: float) -> float:
    if not y > 0.0:
        raise ValueError(f"softplus inverse needs a positive value, got {y!r}")
    return y + math.log(-math.expm1(-y))


def sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form never overflows and stays monotone in floating point.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class CosineAdapter:
    """One hidden tanh layer reads the query embedding and emits (a, b[, k | c]) of a map with a > 0 (c > 0)."""

    def __init__(
        self,
        family: str,
        weights: dict[str, np.ndarray],
        calibration: Calibration | None = None,
        info: dict[str, object] | None = None,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
        missing = [n for n in WEIGHT_NAMES if n not in weights]
        if missing:
            raise ValueError(f"missing weight arrays: {missing}")
        arrays = {n: np.asarray(weights[n], dtype=np.float64) for n in WEIGHT_NAMES}
        if arrays["w1"].ndim == 2:  # one network: a one-member ensemble
            arrays = {n: a[None] for n, a in arrays.items()}
        w1, b1, w2, b2 = (arrays[n] for n in WEIGHT_NAMES)
        n_out = FAMILIES[family]
        m, _, h = w1.shape if w1.ndim == 3 else (0, 0, 0)
        if w1.ndim != 3 or b1.shape != (m, h) or w2.shape != (m, h, n_out) or b2.shape != (m, n_out):
            raise ValueError(
                f"inconsistent weight shapes for family {family!r}: "
                + ", ".join(f"{n}={arrays[n].shape}" for n in WEIGHT_NAMES)
            )
        if not all(np.all(np.isfinite(a)) for a in arrays.values()):
            raise ValueError("weights contain non-finite values")
        self.family = family
        self.weights = arrays
        # Every member's hidden layer as one (dim, members*hidden) matmul: half the cost of a batched einsum.
        self._w1_flat = np.ascontiguousarray(w1.transpose(1, 0, 2).reshape(w1.shape[1], m * h))
        self._b1_flat = b1.reshape(m * h)
        self.calibration = calibration
        self.info: dict[str, object] = dict(info or {})

    @property
    def dim(self) -> int:
        return int(self.weights["w1"].shape[1])

    @property
    def hidden(self) -> int:
        return int(self.weights["w1"].shape[2])

    @property
    def members(self) -> int:
        return int(self.weights["w1"].shape[0])

    @classmethod
    def ensemble(cls, parts: list[CosineAdapter], info: dict[str, object] | None = None) -> CosineAdapter:
        """Averages the members' logits. For the linear and hybrid maps that is one map of the same
        family whose parameters are the members' averages, so monotonicity and `explain` carry over."""
        if not parts or len({(p.family, p.dim, p.hidden) for p in parts}) != 1:
            raise ValueError("an ensemble needs adapters of one family and shape")
        stacked = {n: np.concatenate([p.weights[n] for p in parts]) for n in WEIGHT_NAMES}
        return cls(parts[0].family, stacked, info=info)

    def _raw_params(self, query_emb: np.ndarray) -> np.ndarray:
        """(members, n_params) raw outputs for one query."""
        q = np.asarray(query_emb, dtype=np.float64)
        if q.shape != (self.dim,):
            raise ValueError(f"query embedding must have shape ({self.dim},), got {q.shape}")
        h = np.tanh(q @ self._w1_flat + self._b1_flat).reshape(self.members, self.hidden)
        out: np.ndarray = np.einsum("mh,mhp->mp", h, self.weights["w2"]) + self.weights["b2"]
        return out

    @property
    def uses_lexical(self) -> bool:
        return self.family == "hybrid"

    def _member_params(self, query_emb: np.ndarray) -> dict[str, np.ndarray]:
        raw = self._raw_params(query_emb)
        params = {"a": softplus(raw[:, 0]), "b": raw[:, 1]}
        if self.family == "power":
            params["k"] = POWER_MAX_EXPONENT * sigmoid(raw[:, 2])
        elif self.family == "hybrid":
            params["c"] = softplus(raw[:, 2])
        return params

    def map_params(self, query_emb: np.ndarray) -> dict[str, float]:
        """The map's parameters for this query (the members' means)."""
        return {name: float(values.mean()) for name, values in self._member_params(query_emb).items()}

    def logits(self, query_emb: np.ndarray, cosines: np.ndarray, lexical: np.ndarray | None = None) -> np.ndarray:
        p = self._member_params(query_emb)
        x = np.asarray(cosines, dtype=np.float64)
        if self.family == "linear":
            return np.asarray(p["a"].mean() * x + p["b"].mean())
        if self.family == "hybrid":
            if lexical is None:
                raise ValueError("the hybrid adapter needs each candidate's lexical evidence")
            return np.asarray(p["a"].mean() * x + p["c"].mean() * np.asarray(lexical, dtype=np.float64)
                              + p["b"].mean())
        magnitude = np.power(np.maximum(np.abs(x), ABS_FLOOR)[None, :], p["k"][:, None])
        member_logits = np.sign(x)[None, :] * (p["a"][:, None] * magnitude) + p["b"][:, None]
        return np.asarray(member_logits.mean(axis=0))

    def probabilities(self, query_emb: np.ndarray, cosines: np.ndarray,
                      lexical: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.logits(query_emb, cosines, lexical))

    def threshold_for(self, recall_target: float | None = None) -> float:
        if self.calibration is None:
            raise ValueError("adapter has no calibration; train_and_calibrate it first")
        if recall_target is None:
            return self.calibration.threshold
        if math.isnan(recall_target) or not (0.0 < recall_target <= 1.0):
            raise ValueError(f"recall target must be in (0, 1], got {recall_target!r}")
        table = dict(self.calibration.thresholds)
        table.setdefault(self.calibration.recall_target, self.calibration.threshold)
        # Rounding up to the next stored target keeps the promise of at least the requested recall.
        candidates = [t for t in table if t >= recall_target - 1e-9]
        if not candidates:
            raise ValueError(
                f"no calibrated threshold for recall target {recall_target}; stored targets: {sorted(table)}"
            )
        return table[min(candidates)]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "dim": self.dim,
            "hidden": self.hidden,
            "members": self.members,
            "activation": "tanh",
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "info": self.info,
        }
        try:
            text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"adapter info is not JSON-serialisable: {exc}") from exc
        # np.savez pickles only object arrays; ours are all float64, so load() can refuse pickles.
        w = self.weights
        with open(directory / WEIGHTS_FILE, "wb") as fh:
            np.savez(fh, w1=w["w1"], b1=w["b1"], w2=w["w2"], b2=w["b2"])
        (directory / META_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> CosineAdapter:
        directory = Path(directory)
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as npz:
                weights = {n: np.array(npz[n]) for n in WEIGHT_NAMES}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot load adapter from {directory}: {exc!r}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{directory / META_FILE} is not a JSON object")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported adapter format version {meta.get('format_version')!r}")
        if meta.get("activation") != "tanh":
            raise ValueError(f"unsupported activation {meta.get('activation')!r}")
        raw_cal = meta.get("calibration")
        calibration = None if raw_cal is None else Calibration.from_dict(raw_cal)
        info = meta.get("info") or {}
        if not isinstance(info, dict):
            raise ValueError("adapter info must be a JSON object")
        adapter = cls(str(meta.get("family")), weights, calibration=calibration, info=info)
        if (adapter.dim, adapter.hidden, adapter.members) != (meta.get("dim"), meta.get("hidden"), meta.get("members")):
            raise ValueError(
                f"weights are {adapter.members}x{adapter.dim}x{adapter.hidden} but metadata says "
                f"{meta.get('members')}x{meta.get('dim')}x{meta.get('hidden')}"
            )
        return adapter

    @classmethod
    def identity_like(cls, dim: int, slope: float, intercept: float) -> CosineAdapter:
        """Query-independent ``slope * x + intercept``; slope must be positive to keep the order."""
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        weights = {
            "w1": np.zeros((dim, 1)),
            "b1": np.zeros(1),
            "w2": np.zeros((1, 2)),
            "b2": np.array([softplus_inverse(float(slope)), float(intercept)]),
        }
        return cls("linear", weights, info={"kind": "identity_like", "slope": slope, "intercept": intercept})
