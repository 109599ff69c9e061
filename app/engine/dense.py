"""Dense index: hnswlib HNSW graph in cosine space, with exact search for small filtered subsets."""

import json
import threading
from dataclasses import asdict
from pathlib import Path

import hnswlib
import numpy as np

from app.engine.hnsw_tuning import Tuning
from app.engine.quantized import Int8Vectors
from app.engine.types import EF_SEARCH_UNTUNED, HnswSettings
from app.store.snapshots import sha256_of

_FORMAT = 2  # 2 adds the int8 copy; a format-1 snapshot loads and rebuilds the copy from the graph
# Below this many allowed documents a filtered query is answered exactly: scanning the int8 copy of
# 20,000 vectors takes a few ms, less than an HNSW walk through a graph whose neighbours are mostly
# filtered out, and it always finds k hits when k documents match.
EXACT_SEARCH_LIMIT = 20_000
# The exact scan ranks by the int8 cosines, then re-scores this many more than k from the float32 vectors.
_RESCORE_MARGIN = 16
_EMPTY_LABELS = np.empty(0, dtype=np.int64)
# hnswlib reuses a deleted node's slot (`replace_deleted`) by repairing the links of its old neighbours: on
# SciFact's vectors that took 5.8x a fresh insert (2.68 against 0.46 s for 1,000 re-posted of 5,183; ~20x on
# noise-like vectors) and left recall@100 lower after half were re-posted (0.966 against 0.993). So a re-posted
# document takes a fresh node, and once deleted nodes are VACUUM_RATIO of the graph (and at least VACUUM_MIN),
# the collection rebuilds the graph from its live vectors in the background (`build_graph`, `adopt`), as
# Qdrant's optimizer vacuums a segment at 20% deleted. Until then searches walk the deleted nodes without
# returning them: a walk took ~1.9x as long with a third of the graph deleted.
VACUUM_RATIO = 0.2
VACUUM_MIN = 1_000
_BUILD_CHUNK = 1_000  # vectors a step of a rebuild: a cancel waits at most one (well under a second)
VECTORS_CHUNK = 256  # vectors read from the graph under one hold of the read lock (~6 ms with the GIL held)


class VacuumCancelled(Exception):
    """The collection is closing or gone."""


class DenseIndex:
    """Cosine-similarity HNSW index keyed by integer labels.

    hnswlib's contract: `add_items` and `resize_index` are not safe alongside queries, so the caller holds
    a readers-writer lock and calls `upsert`, `stage`, `settle` and `delete` only under its write side. Inserting
    into the graph is slow (~2-4 ms a vector at 100K-1M), so a collection `stage`s a batch, which searches
    scan exactly, and `settle`s it into the graph a few vectors at a time, letting searches in between.
    `ef` is global state on the graph, so queries serialise on a small mutex. With `settings.ef_search` None the
    ef comes from `tuning` (app/engine/hnsw_tuning.py measures it), kept with the snapshot.
    """

    def __init__(self, dim: int, settings: HnswSettings, capacity: int = 1024, threads: int = 1, *,
                 graph: hnswlib.Index | None = None, int8: Int8Vectors | None = None, live: int = 0,
                 tuning: Tuning | None = None) -> None:
        """An empty index, or (from `load`) one over a graph, its int8 copy and live count read from disk."""
        self.dim = dim
        self.settings = settings
        self.threads = threads
        self._query_lock = threading.Lock()
        self.tuning = tuning
        if graph is None:
            graph = _new_graph(dim, settings, capacity)
        self._index = graph
        graph.set_ef(self.ef_search)
        self._int8 = Int8Vectors(dim, capacity) if int8 is None else int8
        self._live = live
        self._staged = _EMPTY_LABELS
        self._staged_vectors = np.empty((0, dim), np.float32)

    def __len__(self) -> int:
        return self._live

    @property
    def ef_search(self) -> int:
        """The collection's explicit ef_search, else the tuned one, else EF_SEARCH_UNTUNED."""
        if self.settings.ef_search is not None:
            return self.settings.ef_search
        return EF_SEARCH_UNTUNED if self.tuning is None else self.tuning.ef_search

    @property
    def staged(self) -> int:
        """Vectors upserted but not yet in the graph."""
        return len(self._staged)

    def upsert(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Adds fresh labels (the store never reuses one) to the graph at once."""
        self.stage(labels, vectors)
        self.settle()

    def stage(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Stages fresh labels: searchable at once, in the graph after `settle`."""
        if len(labels) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        self._int8.add(labels, vectors)
        self._staged = np.concatenate([self._staged, np.asarray(labels, dtype=np.int64)])
        self._staged_vectors = np.concatenate([self._staged_vectors, vectors])
        self._live += len(labels)

    def settle(self, limit: int | None = None) -> int:
        """Moves up to `limit` staged vectors (all by default) into the graph; returns how many stay staged."""
        count = len(self._staged) if limit is None else min(limit, len(self._staged))
        if count:
            needed = self._index.element_count + count
            if needed > self._index.max_elements:
                self._index.resize_index(max(needed, 2 * self._index.max_elements))
            # Fresh nodes, never a deleted one's slot (VACUUM_RATIO says why).
            self._index.add_items(self._staged_vectors[:count], self._staged[:count], num_threads=self.threads)
            self._staged, self._staged_vectors = self._staged[count:], self._staged_vectors[count:]
        return len(self._staged)

    @property
    def deleted_nodes(self) -> int:
        """Nodes of the graph whose documents were deleted or replaced: walked by searches, never returned."""
        return int(self._index.element_count) - (self._live - len(self._staged))

    def vacuum_due(self) -> bool:
        deleted = self.deleted_nodes
        return deleted >= VACUUM_MIN and deleted >= VACUUM_RATIO * self._index.element_count

    def build_graph(self, labels: np.ndarray, vectors: np.ndarray, cancelled: threading.Event,
                    graph: hnswlib.Index | None = None) -> hnswlib.Index:
        """A new graph of `labels` (the live graph's, with their `vectors` from `live_vectors`), or `graph` with
        them added, built without any lock: hnswlib releases the GIL while it inserts. Raises VacuumCancelled
        once `cancelled` is set."""
        if graph is None:
            graph = _new_graph(self.dim, self.settings, max(1024, len(labels) + len(labels) // 4))
        elif graph.element_count + len(labels) > graph.max_elements:
            graph.resize_index(max(graph.element_count + len(labels), 2 * graph.max_elements))
        for start in range(0, len(labels), _BUILD_CHUNK):
            if cancelled.is_set():
                raise VacuumCancelled
            stop = start + _BUILD_CHUNK
            graph.add_items(vectors[start:stop], labels[start:stop], num_threads=self.threads)
        return graph

    def live_vectors(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Those of `labels` still live in the graph, and their vectors. hnswlib hands them over as Python floats
        (~22 us a vector, holding the GIL): callers read a few hundred at a time, under the read lock."""
        try:
            return labels, self._items(labels)
        except RuntimeError:  # deleted since the caller listed them
            labels = labels[np.isin(labels, self.graph_labels())]
            return labels, self._items(labels)

    def _items(self, labels: np.ndarray) -> np.ndarray:
        if not len(labels):
            return np.empty((0, self.dim), np.float32)  # hnswlib's answer to none is 1-d
        return np.asarray(self._index.get_items(labels.tolist()), dtype=np.float32)

    def added_since(self, built: np.ndarray) -> np.ndarray:
        """Labels settled into the graph that are not among `built`."""
        return np.setdiff1d(self.graph_labels(), built, assume_unique=True)

    def adopt(self, graph: hnswlib.Index, built: np.ndarray) -> None:
        """Swaps in a graph `build_graph` made of the labels `built`, under the write lock: the labels deleted
        since are deleted in it, and those settled into the old graph since (a few: `added_since`) are staged
        again, to be settled."""
        now = self.graph_labels()
        for label in np.setdiff1d(built, now, assume_unique=True).tolist():
            graph.mark_deleted(label)
        added, vectors = self.live_vectors(np.setdiff1d(now, built, assume_unique=True))
        staged, staged_vectors = np.concatenate([added, self._staged]), np.concatenate([vectors, self._staged_vectors])
        graph.set_ef(self.ef_search)
        self._index, self._staged, self._staged_vectors = graph, staged, staged_vectors

    def delete(self, labels: list[int]) -> None:
        deleted, staged = [], np.isin(self._staged, np.asarray(labels, dtype=np.int64))
        if staged.any():
            deleted = self._staged[staged].tolist()
            self._staged, self._staged_vectors = self._staged[~staged], self._staged_vectors[~staged]
        for label in labels:
            try:
                self._index.mark_deleted(int(label))
            except RuntimeError:  # unknown, staged or already deleted: nothing to do
                continue
            deleted.append(int(label))
        self._int8.delete(np.asarray(deleted, dtype=np.int64))
        self._live -= len(deleted)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (labels, cosine similarities), best first."""
        if allowed is not None and len(allowed) <= EXACT_SEARCH_LIMIT:
            return self._exact(query, k, allowed)
        k = min(k, self._live if allowed is None else len(allowed))
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        in_filter = slice(None) if allowed is None else np.isin(self._staged, allowed)
        staged, staged_vectors = self._staged[in_filter], self._staged_vectors[in_filter]
        walk = min(k, self._live - len(self._staged))
        allowed_set = None if allowed is None else set(allowed.tolist())
        labels: np.ndarray | None = np.empty((1, 0), dtype=np.int64)
        distances = np.empty((1, 0), dtype=np.float32)
        if walk > 0:
            with self._query_lock:
                self._index.set_ef(max(self.ef_search, walk))
                try:
                    labels, distances = self._index.knn_query(
                        query, k=walk, num_threads=1,
                        filter=None if allowed_set is None else allowed_set.__contains__)
                except RuntimeError:
                    # hnswlib raises when the walk finds fewer than k; the exact scan always can.
                    labels = None
        if labels is None:
            candidates = np.asarray(sorted(allowed_set), dtype=np.int64) if allowed_set else self._live_labels()
            return self._exact(query, k, candidates)
        found, sims = labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)
        if len(staged):
            found = np.concatenate([found, staged])
            sims = np.concatenate([sims, staged_vectors @ query])
            top = np.lexsort((found, -sims))[:k]
            found, sims = found[top], sims[top]
        return found, sims

    def graph_labels(self) -> np.ndarray:
        """Live labels in the graph (not staged), ascending."""
        labels = self._int8.labels()
        return labels[~np.isin(labels, self._staged)] if len(self._staged) else labels

    def walk(self, queries: np.ndarray, k: int, ef: int) -> np.ndarray:
        """(len(queries), k) labels from the graph alone at this ef: what a tuning measures. The caller holds the
        collection's read lock."""
        with self._query_lock:
            self._index.set_ef(max(ef, k))
            try:
                labels, _ = self._index.knn_query(queries, k=k, num_threads=1)
            finally:
                self._index.set_ef(self.ef_search)
        return labels.astype(np.int64)

    def exact_top(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(len(queries), k) labels of each unit query's exact top k among the graph's vectors, best first: the
        int8 copy's best k + a margin, re-scored from the float32 vectors. The caller holds the read lock."""
        rough = self._int8.top(queries, k + _RESCORE_MARGIN, exclude=self._staged)
        out = np.empty((len(queries), k), np.int64)
        for row, (query, head) in enumerate(zip(queries, rough, strict=True)):
            out[row] = self._rescored(query, head[head >= 0], k)[0]
        return out

    def _exact(self, query: np.ndarray, k: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among `labels`, which must all be live (the store's filter guarantees it): ranked by
        the int8 cosines, the best k + a margin re-scored from the float32 vectors."""
        if len(labels) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        rough = self._int8.cosines(labels, query)
        return self._rescored(query, labels[np.argsort(-rough, kind="stable")[:k + _RESCORE_MARGIN]], k)

    def _rescored(self, query: np.ndarray, head: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best k of `head` (the int8 copy's best candidates) by their float32 cosines, ties by label."""
        sims = self.vectors(head) @ query.astype(np.float32)
        top = np.lexsort((head, -sims))[:k]
        return head[top], sims[top]

    def cosines(self, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Cosines of live labels with the unit vector `query`, from the int8 copy (within ~1e-3)."""
        if len(labels) == 0:
            return np.empty(0, dtype=np.float32)
        return self._int8.cosines(labels, query)

    def _live_labels(self) -> np.ndarray:
        """All live labels. Slow (hnswlib lists deleted labels too): only for the rare fallback."""
        live = []
        for label in self._index.get_ids_list():
            try:
                self._index.get_items([label])
            except RuntimeError:
                continue
            live.append(label)
        return np.sort(np.concatenate([np.asarray(live, dtype=np.int64), self._staged]))

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Stored (unit) vectors of live labels."""
        out = np.empty((len(labels), self.dim), dtype=np.float32)
        staged = np.isin(labels, self._staged)
        if staged.any():
            order = np.argsort(self._staged)
            at = order[np.searchsorted(self._staged, labels[staged], sorter=order)]
            out[staged] = self._staged_vectors[at]
        if not staged.all():
            out[~staged] = self._index.get_items(labels[~staged].tolist())
        return out

    def save(self, directory: Path) -> None:
        self._index.save_index(str(directory / "hnsw.bin"))
        self._int8.save(directory)
        np.save(directory / "staged-labels.npy", self._staged, allow_pickle=False)
        np.save(directory / "staged-vectors.npy", self._staged_vectors, allow_pickle=False)
        # Every file's checksum, checked before loading: hnswlib reads a damaged graph without complaint and then
        # crashes the process at its first search (a start-up crash loop), or answers other neighbours.
        digests = {path.name: sha256_of(path) for path in sorted(directory.iterdir()) if path.name != "dense.json"}
        (directory / "dense.json").write_text(json.dumps(
            {"format": _FORMAT, "dim": self.dim, "live": self._live, "settings": asdict(self.settings),
             "tuning": None if self.tuning is None else self.tuning.to_dict(), "sha256": digests}))

    @classmethod
    def load(cls, directory: Path, settings: HnswSettings, threads: int = 1) -> "DenseIndex":
        try:
            manifest = json.loads((directory / "dense.json").read_text())
            if manifest["format"] not in (1, _FORMAT) or manifest["settings"] != asdict(settings):
                raise ValueError("dense snapshot format or settings differ")
            for name, digest in manifest.get("sha256", {}).items():  # absent from snapshots before checksums
                if sha256_of(directory / name) != digest:
                    raise ValueError(f"{name} is damaged (checksum mismatch)")
            dim = int(manifest["dim"])
            graph = hnswlib.Index(space="cosine", dim=dim)
            graph.load_index(str(directory / "hnsw.bin"))
            format_1 = manifest["format"] == 1
            int8 = Int8Vectors(dim) if format_1 else Int8Vectors.load(directory, dim)
            tuning = manifest.get("tuning")  # absent from snapshots older than self-tuning
            index = cls(dim, settings, threads=threads, graph=graph, int8=int8, live=int(manifest["live"]),
                        tuning=None if tuning is None else Tuning.from_dict(tuning))
            if format_1:
                live = index._live_labels()
                for start in range(0, len(live), 10_000):
                    index._int8.add(live[start:start + 10_000], index.vectors(live[start:start + 10_000]))
            if len(index._int8) != index._live:
                raise ValueError(f"the int8 copy holds {len(index._int8)} vectors, the graph {index._live}")
            if (directory / "staged-labels.npy").exists():  # staged when the snapshot was taken: into the graph
                staged = np.load(directory / "staged-labels.npy", allow_pickle=False)
                vectors = np.load(directory / "staged-vectors.npy", allow_pickle=False)
                if staged.dtype != np.int64 or vectors.shape != (len(staged), dim) or vectors.dtype != np.float32:
                    raise ValueError("staged vectors are inconsistent")
                index._staged, index._staged_vectors = staged, vectors
                index.settle()
        except Exception as exc:  # numpy's reader alone raises EOFError, TokenError...: all mean "damaged"
            raise ValueError(f"damaged dense snapshot in {directory}: {exc!r}") from exc
        return index


def _new_graph(dim: int, settings: HnswSettings, capacity: int) -> hnswlib.Index:
    graph = hnswlib.Index(space="cosine", dim=dim)
    graph.init_index(max_elements=capacity, ef_construction=settings.ef_construction, M=settings.m)
    return graph
