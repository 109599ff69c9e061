"""An int8 copy of the dense index's vectors: cosines of arbitrary documents at memory speed.

Written by hand because the stored vectors are otherwise out of reach: hnswlib hands one out only as a
Python list of floats (~26 us a vector), which made a hybrid search's lexical-only candidates cost more
than its graph walk and an exact scan of 20,000 filtered documents take ~0.9 s. A float32 copy would add
1,536 bytes a 384-d document; int8 codes with one float32 scale add 388, and a cosine from them is within
~1e-3 of the exact one (each coordinate is off by at most half a step of max|x| / 127).
"""

from pathlib import Path

import numpy as np

from app.engine.embedder import normalise
from app.engine.postings import reserve

_LEVELS = 127


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scales) of the unit-normalised rows of `vectors`; code * scale ~ unit vector."""
    unit = normalise(np.asarray(vectors, np.float32))
    peak = np.abs(unit).max(axis=1, initial=0.0)
    scales = (peak / _LEVELS).astype(np.float32)
    codes = np.rint(unit / np.where(scales == 0, 1.0, scales)[:, None]).astype(np.int8)
    return codes, scales


class Int8Vectors:
    """Rows in label order (the store hands out labels from one increasing sequence, so appends keep the
    order and a lookup is a binary search); a delete marks its row, and rows of deleted labels are dropped
    once they outnumber the live ones."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._codes = np.zeros((capacity, dim), np.int8)
        self._scales = np.zeros(capacity, np.float32)
        self._labels = np.zeros(capacity, np.int64)
        self._alive = np.zeros(capacity, bool)
        self._rows = 0
        self._dead = 0

    def __len__(self) -> int:
        return self._rows - self._dead

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Rows for fresh labels (never one already held)."""
        labels = np.asarray(labels, np.int64)
        if not len(labels):
            return
        codes, scales = quantize(vectors)
        order = np.argsort(labels, kind="stable")
        start, stop = self._rows, self._rows + len(labels)
        self._codes, self._scales = reserve(self._codes, stop), reserve(self._scales, stop)
        self._labels = reserve(self._labels, stop)
        self._alive = reserve(self._alive, stop)
        self._codes[start:stop], self._scales[start:stop] = codes[order], scales[order]
        self._labels[start:stop], self._alive[start:stop] = labels[order], True
        self._rows = stop
        if start and labels[order[0]] <= self._labels[start - 1]:  # not after every held label: re-sort
            self._keep(np.argsort(self._labels[:stop], kind="stable"))

    def delete(self, labels: np.ndarray) -> None:
        """Marks the rows of `labels`; labels not held, or already deleted, are ignored."""
        rows, held = self._rows_of(np.asarray(labels, np.int64))
        rows = rows[held & self._alive[rows]]
        self._alive[rows] = False
        self._dead += len(rows)
        if self._dead > max(len(self), 4096):
            self._keep(np.flatnonzero(self._alive[: self._rows]))

    def cosines(self, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Approximate cosine of each label's vector (all must be live) with the unit vector `query`."""
        rows = self._find(np.asarray(labels, np.int64))
        if not self._alive[rows].all():
            raise KeyError("cosines asked for a label the index does not hold")
        return (self._codes[rows] @ np.asarray(query, np.float32)) * self._scales[rows]

    def labels(self) -> np.ndarray:
        """Every live label, ascending."""
        return self._labels[: self._rows][self._alive[: self._rows]]

    def top(self, queries: np.ndarray, count: int, exclude: np.ndarray, chunk: int = 16_384) -> np.ndarray:
        """(len(queries), count) labels of the best approximate cosines with each unit query among the live
        labels not in `exclude`, in no particular order; a matrix product a chunk of rows at a time."""
        queries = np.asarray(queries, np.float32)
        best = np.full((len(queries), count), -1, np.int64)
        best_sims = np.full((len(queries), count), -np.inf, np.float32)
        for start in range(0, self._rows, chunk):
            stop = min(start + chunk, self._rows)
            sims = (self._codes[start:stop].astype(np.float32) @ queries.T).T * self._scales[start:stop]
            labels = self._labels[start:stop]
            sims[:, ~self._alive[start:stop] | np.isin(labels, exclude)] = -np.inf
            merged = np.concatenate([best_sims, sims], axis=1)
            merged_labels = np.concatenate([best, np.broadcast_to(labels, sims.shape)], axis=1)
            keep = np.argpartition(-merged, count - 1, axis=1)[:, :count]
            best_sims = np.take_along_axis(merged, keep, axis=1)
            best = np.take_along_axis(merged_labels, keep, axis=1)
        return best

    def _rows_of(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each label, and whether the label has one."""
        held = self._labels[: self._rows]
        rows = np.minimum(np.searchsorted(held, labels), max(self._rows - 1, 0))
        return rows, (held[rows] == labels) if len(held) else np.zeros(len(labels), bool)

    def _find(self, labels: np.ndarray) -> np.ndarray:
        rows, held = self._rows_of(labels)
        if not held.all():
            raise KeyError("a label the index does not hold")
        return rows

    def _keep(self, rows: np.ndarray) -> None:
        """Keeps just `rows`, in that order."""
        n = len(rows)
        self._codes[:n], self._scales[:n] = self._codes[rows], self._scales[rows]
        self._labels[:n], self._alive[:n] = self._labels[rows], self._alive[rows]
        self._alive[n:] = False
        self._rows, self._dead = n, n - int(self._alive[:n].sum())

    def save(self, directory: Path) -> None:
        live = self._alive[: self._rows]
        for name, array in (("codes", self._codes[: self._rows][live]), ("scales", self._scales[: self._rows][live]),
                            ("labels", self._labels[: self._rows][live])):
            np.save(directory / f"int8-{name}.npy", array, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, dim: int) -> "Int8Vectors":
        """ValueError if the files are missing, damaged or disagree with each other."""
        try:
            codes, scales, labels = (np.load(directory / f"int8-{name}.npy", allow_pickle=False)
                                     for name in ("codes", "scales", "labels"))
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"int8 vectors unreadable: {exc}") from exc
        n = len(labels)
        if (codes.dtype != np.int8 or codes.shape != (n, dim) or scales.dtype != np.float32 or scales.shape != (n,)
                or labels.dtype != np.int64 or (n and (np.diff(labels) <= 0).any())):
            raise ValueError("int8 vectors are inconsistent")
        copy = cls(dim, capacity=0)  # the loaded arrays become the storage: no second copy while loading
        copy._codes, copy._scales, copy._labels, copy._alive = codes, scales, labels, np.ones(n, bool)
        copy._rows = n
        return copy
