"""A collection's graph upkeep, in one background thread: a rebuild without its deleted nodes (app/engine/dense.py,
VACUUM_RATIO says why) and the self-tuned ef_search (app/engine/hnsw_tuning.py)."""

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from app.engine.dense import VECTORS_CHUNK, DenseIndex, VacuumCancelled
from app.engine.hnsw_tuning import TuningCancelled, due, measure
from app.engine.rwlock import ReadWriteLock
from app.engine.types import CollectionSettings
from app.errors import CollectionNotFound
from app.store.base import CollectionRecord

log = logging.getLogger("app.collection")
# A rebuild adds what was settled meanwhile in rounds until at most VECTORS_CHUNK are left for the write lock; under
# a bulk load that outpaces it, the rest (read under the write lock) after this many.
_CATCH_UP_ROUNDS = 8
# After a rebuild or a measurement fails (out of memory, say), no upkeep starts for RETRY_FIRST seconds, doubling with
# each failure in a row up to RETRY_MAX: every write would otherwise start the same doomed rebuild again at once.
RETRY_FIRST, RETRY_MAX = 30.0, 3600.0


class GraphUpkeep:
    """Mixed into Collection, whose fields and `settle` these are."""

    record: CollectionRecord
    settings: CollectionSettings
    dense: DenseIndex
    lock: ReadWriteLock
    recall_target: float
    dropped: bool
    writes_since_snapshot: int
    snapshot_soon: bool
    settle: Callable[[], None]
    _upkeeper: threading.Thread | None
    _upkeep_guard: threading.Lock
    _measuring: bool
    _closing: threading.Event
    _failures: int  # rebuilds and measurements that failed in a row
    _retry_at: float  # time.monotonic() before which no upkeep starts after a failure

    def upkeep(self) -> None:
        """Starts the graph's upkeep in the background when some is due: a rebuild once deleted nodes are
        VACUUM_RATIO of the graph, a measurement of ef_search once the graph has reached its first size or doubled
        since the last one (never with an explicit ef_search in the settings); after a failure, not before
        RETRY_FIRST says."""
        if self._closing.is_set() or time.monotonic() < self._retry_at:
            return
        with self._upkeep_guard:
            if self.upkeeping and self._upkeeper is not threading.current_thread():
                return  # the running one checks again when it ends
            if not (self.dense.vacuum_due() or self._tuning_due()):
                return
            self._upkeeper = threading.Thread(target=self._upkeep, name=f"upkeep-{self.record.name}", daemon=True)
            self._upkeeper.start()

    @property
    def upkeeping(self) -> bool:
        upkeeper = self._upkeeper
        return upkeeper is not None and upkeeper.is_alive()

    @property
    def measuring(self) -> bool:
        """A measurement of ef_search is running."""
        return self._measuring and self.upkeeping

    def wait_upkeep(self, timeout: float | None = None) -> None:
        """Until no upkeep runs (one that ends may start the next), or `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (upkeeper := self._upkeeper) is not None and upkeeper.is_alive():
            upkeeper.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                return

    def stop_upkeep(self) -> None:
        """Ends the upkeep in progress at its next step and waits for it; none starts after this."""
        self._closing.set()
        self.wait_upkeep()

    def _tuning_due(self) -> bool:
        return self.settings.hnsw.ef_search is None and due(len(self.dense) - self.dense.staged, self.dense.tuning)

    def _upkeep(self) -> None:
        failures = self._failures
        try:
            rebuilt = self.dense.vacuum_due() and self._vacuum()
            tuned = self._tuning_due() and self._tune()
        except (VacuumCancelled, TuningCancelled, CollectionNotFound):
            return
        if self._failures == failures:
            self._failures = 0
        if rebuilt or tuned:
            self.upkeep()  # writes went on meanwhile: more may be due

    def _vacuum(self) -> bool:
        """Rebuilds the graph from its live vectors while searches and writes go on, then adds what was settled
        meanwhile, until little is left to take under the write lock, which swaps it in. False when the
        collection was dropped or the rebuild failed."""
        with self.lock.read():
            deleted, labels = self.dense.deleted_nodes, self.dense.graph_labels()
        start, graph, built = time.perf_counter(), None, np.empty(0, np.int64)
        try:
            for _ in range(_CATCH_UP_ROUNDS):
                if not len(labels):
                    break
                labels, vectors = self._read_vectors(labels)
                graph = self.dense.build_graph(labels, vectors, self._closing, graph)
                built = np.concatenate([built, labels])
                with self.lock.read():
                    labels = self.dense.added_since(built)
                if len(labels) <= VECTORS_CHUNK:
                    break
        except (VacuumCancelled, CollectionNotFound):
            raise
        except Exception:
            log.exception("collection %s: rebuilding the graph failed; it keeps its deleted nodes (tried again in "
                          "%.0f s)", self.record.name, self._failed())
            return False
        if graph is None:
            return False
        with self.lock.write():
            if self.dropped:
                return False
            self.dense.adopt(graph, built)
            self.writes_since_snapshot += 1
            self.snapshot_soon = True  # the smaller graph, at the next check: a crash would rebuild it again
        # `built` counts every node the rebuild inserted, some deleted again while it ran.
        log.info("collection %s: graph rebuilt without its %d deleted nodes (%d nodes inserted, %.1f s)",
                 self.record.name, deleted, len(built), time.perf_counter() - start)
        self.settle()  # what the old graph took during the rebuild, staged again
        return True

    def _failed(self) -> float:
        """Counts a failure and puts the next upkeep off; returns for how many seconds."""
        self._failures += 1
        wait = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + wait
        return wait

    def _read_vectors(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Those of `labels` still in the graph and their vectors, a few hundred under each hold of the read lock
        (CollectionNotFound once the collection is dropped)."""
        parts = []
        for start in range(0, len(labels), VECTORS_CHUNK):
            if self._closing.is_set():
                raise VacuumCancelled
            with self.lock.read():
                if self.dropped:
                    raise CollectionNotFound(self.record.name)
                parts.append(self.dense.live_vectors(labels[start:start + VECTORS_CHUNK]))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _tune(self) -> bool:
        self._measuring = True
        try:
            tuning = measure(self.dense, self.lock, self.recall_target, self._closing)
        except TuningCancelled:
            raise
        except Exception:
            log.exception("collection %s: measuring ef_search failed; it stays at %d (tried again in %.0f s)",
                          self.record.name, self.dense.ef_search, self._failed())
            return False
        finally:
            self._measuring = False
        if tuning is None:
            return False
        with self.lock.write():
            if self.dropped:
                return False
            self.dense.tuning = tuning
            self.writes_since_snapshot += 1
            self.snapshot_soon = True  # kept at the next check: a restart, a crash too, need not measure again
        log.info("collection %s: ef_search %d (recall@%d %.3f, target %.2f, %d vectors)", self.record.name,
                 tuning.ef_search, tuning.k, tuning.recall, tuning.target, tuning.measured_at)
        return True
