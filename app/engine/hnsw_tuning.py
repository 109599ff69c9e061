"""Self-tuned ef_search: the smallest ef at which the graph finds a collection's own vectors' exact neighbours.

A sample of the collection's vectors, used as queries (each minus itself), is searched exactly (the int8 copy,
re-scored from float32) and through the graph at rising ef; the first ef whose mean recall@k meets the target
wins. A fixed ef cannot be right for every collection: the benchmark corpus's near-ties needed 512 at 100K,
where a collection of well-separated vectors meets the same recall with a much shorter walk. The measurement
holds the collection's read lock as a long reader: searches go on (between walks of a few queries, which set
the graph's global ef), writes wait until it ends (the benchmark reports how long it takes at each size).
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
FIRST_TUNING_AT = 1_000  # graph vectors; below, the untuned ef walks most of a small graph anyway
# ef values tried, smallest first (hnswlib wants ef >= k; 4,000 is the settings' bound).
EF_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4000)
_WALK_CHUNK = 4  # queries a hold of the graph's ef


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


def measure(index: "DenseIndex", lock: ReadLock, target: float, cancelled: threading.Event | None = None,
            k: int = TUNE_K, sample: int = TUNE_SAMPLE, seed: int = 0) -> Tuning | None:
    """The smallest EF_CANDIDATES ef whose recall@k meets `target` (else the largest, with the recall it
    reached); None when the graph has fewer than FIRST_TUNING_AT vectors."""
    stop = cancelled or threading.Event()
    # One consistent graph throughout (a vector added half-way would count as a miss): a long read, which lets
    # searches through and holds writers back until the measurement ends.
    with lock.read(long=True):
        labels = index.graph_labels()
        if len(labels) < max(FIRST_TUNING_AT, k + 1):
            return None
        picked = np.random.default_rng(seed).choice(labels, size=min(sample, len(labels)), replace=False)
        queries = index.vectors(picked)
        truth = [_without(row, own, k) for row, own in zip(index.exact_top(queries, k + 1), picked, strict=True)]
        trials: dict[int, float] = {}
        for ef in (ef for ef in EF_CANDIDATES if ef > k):
            found = _walk_all(index, queries, k + 1, ef, stop)
            hits = sum(len(set(_without(row, own, k).tolist()) & set(t.tolist()))
                       for row, own, t in zip(found, picked, truth, strict=True))
            trials[ef] = hits / (k * len(picked))
            if trials[ef] >= target:
                break
    chosen = max(trials) if trials[max(trials)] < target else min(ef for ef, r in trials.items() if r >= target)
    return Tuning(chosen, trials[chosen], target, k, len(picked), len(labels), trials)


def _walk_all(index: "DenseIndex", queries: np.ndarray, k: int, ef: int, stop: threading.Event) -> np.ndarray:
    """A few queries at a time: searches wait for the graph's ef at most one such step."""
    parts = []
    for start in range(0, len(queries), _WALK_CHUNK):
        if stop.is_set():
            raise TuningCancelled
        parts.append(index.walk(queries[start:start + _WALK_CHUNK], k, ef))
    return np.concatenate(parts)


def _without(row: np.ndarray, own: int, k: int) -> np.ndarray:
    """The first k labels of a k + 1 result, leaving out the query's own vector (found or not)."""
    return row[row != own][:k]
