"""Cosine Adapter inference: a query-conditioned monotonic map from raw cosine to relevance probability."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.engine.relevance.calibration import Calibration
from app.engine.relevance.inputs import INPUTS, STATS, check_cosine_scale, scaled_cosines

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
    """One hidden tanh layer reads the query (its embedding, its candidates' STATS, or both) and emits
    (a, b[, k | c]) of a map with a > 0 (c > 0)."""

    def __init__(
        self,
        family: str,
        weights: dict[str, np.ndarray],
        calibration: Calibration | None = None,
        info: dict[str, object] | None = None,
        *,
        inputs: tuple[str, ...] = ("embedding",),
        stats_center: np.ndarray | None = None,
        stats_scale: np.ndarray | None = None,
        cosine_scale: str = "raw",
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
        if not inputs or any(i not in INPUTS for i in inputs) or len(set(inputs)) != len(inputs):
            raise ValueError(f"inputs must be some of {INPUTS}, got {inputs!r}")
        self.cosine_scale = check_cosine_scale(cosine_scale)
        self.inputs = tuple(i for i in INPUTS if i in inputs)
        n_stats = len(STATS) if "stats" in self.inputs else 0
        if n_stats:
            center = np.zeros(n_stats) if stats_center is None else np.asarray(stats_center, dtype=np.float64)
            scale = np.ones(n_stats) if stats_scale is None else np.asarray(stats_scale, dtype=np.float64)
            if center.shape != (n_stats,) or scale.shape != (n_stats,) or not np.all(scale > 0):
                raise ValueError(f"stats_center and stats_scale must be {n_stats} values (scale > 0)")
            self.stats_center, self.stats_scale = center, scale
        if w1.shape[1] < n_stats + (1 if "embedding" in self.inputs else 0):
            raise ValueError(f"w1 reads {w1.shape[1]} inputs, too few for {self.inputs}")
        self.family = family
        self.weights = arrays
        # Every member's hidden layer as one (dim, members*hidden) matmul: half the cost of a batched einsum.
        self._w1_flat = np.ascontiguousarray(w1.transpose(1, 0, 2).reshape(w1.shape[1], m * h))
        self._b1_flat = b1.reshape(m * h)
        self.calibration = calibration
        self.info: dict[str, object] = dict(info or {})
        # The fusion fitted on the same judgments as this adapter (SearchDefaults fields), served with it.
        self.fusion: dict[str, Any] | None = None

    @property
    def dim(self) -> int:
        """The query embedding's dimension it reads; 0 when it reads only the dimension-free STATS."""
        return int(self.weights["w1"].shape[1]) - (len(STATS) if "stats" in self.inputs else 0)

    @property
    def uses_stats(self) -> bool:
        return "stats" in self.inputs

    def features(self, query_emb: np.ndarray | None, stats: np.ndarray | None = None) -> np.ndarray:
        """The network's input for one query: the embedding and/or the standardised STATS."""
        parts = []
        if "embedding" in self.inputs:
            if query_emb is None:
                raise ValueError("this adapter reads the query embedding")
            parts.append(np.asarray(query_emb, dtype=np.float64).ravel())
        if self.uses_stats:
            if stats is None:
                raise ValueError("this adapter reads the query's candidate statistics")
            parts.append((np.asarray(stats, dtype=np.float64) - self.stats_center) / self.stats_scale)
        return np.concatenate(parts)

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
        first = parts[0]
        return cls(first.family, stacked, info=info, **first.input_spec())

    def input_spec(self) -> dict[str, Any]:
        """The keyword arguments that give another adapter the same inputs."""
        spec: dict[str, Any] = {"inputs": self.inputs, "cosine_scale": self.cosine_scale}
        if self.uses_stats:
            spec.update(stats_center=self.stats_center, stats_scale=self.stats_scale)
        return spec

    def with_calibration(self, calibration: Calibration) -> CosineAdapter:
        """The same network (weights shared, info copied) with other thresholds."""
        return CosineAdapter(self.family, self.weights, calibration, dict(self.info), **self.input_spec())

    def _raw_params(self, query_emb: np.ndarray | None, stats: np.ndarray | None = None) -> np.ndarray:
        """(members, n_params) raw outputs for one query."""
        q = self.features(query_emb, stats)
        if q.shape != (self.weights["w1"].shape[1],):
            got = None if query_emb is None else np.asarray(query_emb).shape
            raise ValueError(f"query embedding must have shape ({self.dim},), got {got}")
        h = np.tanh(q @ self._w1_flat + self._b1_flat).reshape(self.members, self.hidden)
        out: np.ndarray = np.einsum("mh,mhp->mp", h, self.weights["w2"]) + self.weights["b2"]
        return out

    @property
    def uses_lexical(self) -> bool:
        return self.family == "hybrid"

    def _member_params(self, query_emb: np.ndarray | None, stats: np.ndarray | None = None) -> dict[str, np.ndarray]:
        raw = self._raw_params(query_emb, stats)
        params = {"a": softplus(raw[:, 0]), "b": raw[:, 1]}
        if self.family == "power":
            params["k"] = POWER_MAX_EXPONENT * sigmoid(raw[:, 2])
        elif self.family == "hybrid":
            params["c"] = softplus(raw[:, 2])
        return params

    def map_params(self, query_emb: np.ndarray | None, stats: np.ndarray | None = None) -> dict[str, float]:
        """The map's parameters for this query (the members' means)."""
        return {name: float(values.mean()) for name, values in self._member_params(query_emb, stats).items()}

    def logits(self, query_emb: np.ndarray | None, cosines: np.ndarray, lexical: np.ndarray | None = None,
               stats: np.ndarray | None = None, reference: np.ndarray | None = None) -> np.ndarray:
        p = self._member_params(query_emb, stats)
        x = scaled_cosines(cosines, self.cosine_scale, reference)
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

    def probabilities(self, query_emb: np.ndarray | None, cosines: np.ndarray,
                      lexical: np.ndarray | None = None, stats: np.ndarray | None = None,
                      reference: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.logits(query_emb, cosines, lexical, stats, reference))

    def threshold_for(self, recall_target: float | None = None) -> float:
        if self.calibration is None:
            raise ValueError("adapter has no calibration; train_and_calibrate it first")
        if recall_target is None:
            return self.calibration.threshold
        if math.isnan(recall_target) or not (0.0 < recall_target <= 1.0):
            raise ValueError(f"recall target must be in (0, 1], got {recall_target!r}")
        table = dict(self.calibration.thresholds)
        table.setdefault(self.calibration.recall_target, self.calibration.threshold)
        # Rounding up to the next stored target keeps the promise of at least the requested recall. Above the
        # highest, only keeping every candidate keeps it (recall 1 of the unfiltered list): threshold 0, where a
        # 422 used to refuse a target the schema allows (1.0).
        candidates = [t for t in table if t >= recall_target - 1e-9]
        return table[min(candidates)] if candidates else 0.0

    # A folder holds an adapter as two files (JSON metadata, a pickle-free .npz), a store as their bytes: one
    # format and one loader, with its checks, for both.
    def to_bytes(self) -> tuple[str, bytes]:
        """(the JSON metadata, the .npz weights): what `save` writes and a store keeps."""
        meta = {
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "dim": self.dim,
            "hidden": self.hidden,
            "members": self.members,
            "activation": "tanh",
            "inputs": list(self.inputs),
            "cosine_scale": self.cosine_scale,
            "fusion": self.fusion,
            "stats_center": self.stats_center.tolist() if self.uses_stats else None,
            "stats_scale": self.stats_scale.tolist() if self.uses_stats else None,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "info": self.info,
        }
        try:
            text = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"adapter info is not JSON-serialisable: {exc}") from exc
        # np.savez pickles only object arrays; ours are all float64, so from_bytes() can refuse pickles.
        w, weights = self.weights, io.BytesIO()
        np.savez(weights, w1=w["w1"], b1=w["b1"], w2=w["w2"], b2=w["b2"])
        return text, weights.getvalue()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text, weights = self.to_bytes()
        (directory / WEIGHTS_FILE).write_bytes(weights)
        (directory / META_FILE).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> CosineAdapter:
        directory = Path(directory)
        try:
            text, weights = (directory / META_FILE).read_text(encoding="utf-8"), (directory / WEIGHTS_FILE).read_bytes()
        except (OSError, ValueError) as exc:  # (ValueError: metadata that is not UTF-8)
            raise ValueError(f"cannot load adapter from {directory}: {exc!r}") from exc
        return cls.from_bytes(text, weights, source=str(directory))

    @classmethod
    def from_bytes(cls, text: str, weights_npz: bytes, source: str = "the store") -> CosineAdapter:
        """The adapter `to_bytes` gave these of; ValueError, naming `source`, for anything else."""
        try:
            meta = json.loads(text)
            with np.load(io.BytesIO(weights_npz), allow_pickle=False) as npz:
                weights = {n: np.array(npz[n]) for n in WEIGHT_NAMES}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot load adapter from {source}: {exc!r}") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"the adapter metadata in {source} is not a JSON object")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported adapter format version {meta.get('format_version')!r}")
        if meta.get("activation") != "tanh":
            raise ValueError(f"unsupported activation {meta.get('activation')!r}")
        raw_cal = meta.get("calibration")
        calibration = None if raw_cal is None else Calibration.from_dict(raw_cal)
        info = meta.get("info") or {}
        if not isinstance(info, dict):
            raise ValueError("adapter info must be a JSON object")
        inputs = tuple(meta.get("inputs") or ("embedding",))  # adapters saved before STATS read the embedding
        adapter = cls(str(meta.get("family")), weights, calibration=calibration, info=info, inputs=inputs,
                      stats_center=meta.get("stats_center"), stats_scale=meta.get("stats_scale"),
                      cosine_scale=str(meta.get("cosine_scale") or "raw"))  # saved before scaling: raw
        fusion = meta.get("fusion")
        if fusion is not None and not isinstance(fusion, dict):
            raise ValueError("adapter fusion must be a JSON object")
        adapter.fusion = fusion
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
