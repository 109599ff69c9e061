"""Self-tuned ef_search: the smallest ef at which the graph finds the exact neighbours of query-like probes.

Query-like probes made of the collection's own vectors (`probes`) are searched exactly (the int8 copy, re-scored
from float32) and through the graph at rising ef; the first ef whose mean recall@k meets the target, narrowed
down between it and the ef before it, wins. A fixed ef cannot be right for every collection: the benchmark
corpus's near-ties needed 512 at 100K, where smaller or better-separated collections meet the same recall with a
much shorter walk. The measurement holds the collection's read lock as a long reader: searches go on (between
walks of a few queries, which set the graph's global ef), writes wait until it ends (the benchmark reports how
long it takes at each size).
"""

import threading
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from app.engine.dense import DenseIndex

TUNE_K = 10
TUNE_SAMPLE = 200  # queries: recall@10 measured to about ±0.01
PROBE_MIX = 4  # of the collection's vectors in each probe query (see `probes`)
FIRST_TUNING_AT = 1_000  # graph vectors; below, the untuned ef walks most of a small graph anyway
# ef values tried, smallest first (hnswlib wants ef >= k; 4,000 is the settings' bound).
EF_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4000)
_WALK_CHUNK = 4  # queries a hold of the graph's ef
_NARROW_TO = 8  # ef: the narrowing between grid values stops at this gap


class ReadLock(Protocol):
    def read(self, long: bool = False) -> AbstractContextManager[None]: ...


class TuningCancelled(Exception):
    """The collection is closing or gone."""


@dataclass(frozen=True)
class Tuning:
    ef_search: int
    recall: float  # mean recall@k at ef_search
    target: float
    k: int
    sample: int  # queries measured
    measured_at: int  # vectors in the graph then; re-measured at twice as many
    trials: dict[int, float] = field(default_factory=dict)  # recall at each ef tried

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trials": {str(ef): r for ef, r in self.trials.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tuning":
        return cls(int(data["ef_search"]), float(data["recall"]), float(data["target"]), int(data["k"]),
                   int(data["sample"]), int(data["measured_at"]),
                   {int(ef): float(r) for ef, r in data.get("trials", {}).items()})


def due(graph_count: int, last: Tuning | None) -> bool:
    """First at FIRST_TUNING_AT vectors, then each time the graph has doubled since the last measurement."""
    return graph_count >= max(FIRST_TUNING_AT, 2 * last.measured_at if last else 0)


def probes(index: "DenseIndex", labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` query-like unit vectors: each a Gaussian-weighted sum of PROBE_MIX of the collection's vectors.
    A document's own vector is no stand-in for a query: its nearest neighbours are near-copies (cosine ~0.9 on the
    benchmark corpus) that the graph finds at any ef, so tuning on them chose ef 16 where the benchmark's real
    queries (nearest cosine ~0.37) had recall 0.77 at 10K. These mixtures lie in the span of the collection's
    vectors but away from any one of them (nearest cosine ~0.54), and their recall at each ef tracked the real
    queries' within 0.06 at 10K and 100K, below it where the target was crossed (docs/benchmarks.md)."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(labels, size=(count, PROBE_MIX), replace=True)
    vectors = index.vectors(picked.ravel()).reshape(count, PROBE_MIX, -1)
    mixed = (vectors * rng.standard_normal((count, PROBE_MIX, 1)).astype(np.float32)).sum(axis=1)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return (mixed / np.where(norms == 0, 1.0, norms)).astype(np.float32)


def measure(index: "DenseIndex", lock: ReadLock, target: float, cancelled: threading.Event | None = None,
            k: int = TUNE_K, sample: int = TUNE_SAMPLE, seed: int = 0) -> Tuning | None:
    """The smallest ef whose recall@k of `sample` probes meets `target`, found on EF_CANDIDATES and then
    narrowed between the last one that missed and the first that met it (else the largest, with the recall it
    reached); None when the graph has fewer than FIRST_TUNING_AT vectors."""
    stop = cancelled or threading.Event()
    # One consistent graph throughout (a vector added half-way would count as a miss): a long read, which lets
    # searches through and holds writers back until the measurement ends.
    with lock.read(long=True):
        labels = index.graph_labels()
        if len(labels) < max(FIRST_TUNING_AT, k):
            return None
        queries = probes(index, labels, sample, seed)
        truth = [set(row.tolist()) for row in index.exact_top(queries, k)]
        trials: dict[int, float] = {}

        def recall(ef: int) -> float:
            found = _walk_all(index, queries, k, ef, stop)
            trials[ef] = sum(len(set(row.tolist()) & t) for row, t in zip(found, truth, strict=True)) / (k * sample)
            return trials[ef]

        for ef in (ef for ef in EF_CANDIDATES if ef >= k):
            if recall(ef) >= target:
                break
        missed = [ef for ef, r in trials.items() if r < target]
        met = [ef for ef, r in trials.items() if r >= target]
        if met and missed:
            # The grid's steps are 1.5x apart; the walk's cost grows with ef, so halving the gap between the
            # last miss and the first hit, while it is above an eighth of the hit, saves up to a third of it.
            low, high = max(missed), min(met)
            while high - low > max(_NARROW_TO, high // 8):
                mid = (low + high) // 2
                low, high = (low, mid) if recall(mid) >= target else (mid, high)
    chosen = max(trials) if trials[max(trials)] < target else min(ef for ef, r in trials.items() if r >= target)
    return Tuning(chosen, trials[chosen], target, k, sample, len(labels), trials)


def _walk_all(index: "DenseIndex", queries: np.ndarray, k: int, ef: int, stop: threading.Event) -> np.ndarray:
    """A few queries at a time: searches wait for the graph's ef at most one such step."""
    parts = []
    for start in range(0, len(queries), _WALK_CHUNK):
        if stop.is_set():
            raise TuningCancelled
        parts.append(index.walk(queries[start:start + _WALK_CHUNK], k, ef))
    return np.concatenate(parts)
