"""One collection's live state: its lexical and dense indexes, kept in step with the document store."""

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from app.engine import index_snapshot
from app.engine.dense import DenseIndex
from app.engine.embedder import document_text
from app.engine.graph_upkeep import GraphUpkeep
from app.engine.lexical import LexicalIndex
from app.engine.relevance import CosineAdapter
from app.engine.rwlock import ReadWriteLock
from app.engine.tokenizer import Tokenizer
from app.engine.types import HNSW_RECALL_TARGET, CollectionSettings
from app.errors import CollectionNotFound, StoreUnavailable
from app.store.base import CollectionRecord, DocumentStore, NewDocument, StoredRow, WriteResult
from app.store.snapshots import SnapshotDir


class SharedWrites(Protocol):
    """How a collection over a shared store (PostgreSQL) writes: its indexes change only by following the
    store's change feed (app/engine/follower.py), so a write commits to the store and then waits until this
    replica has applied the store's changes up to it."""

    def sync(self, seq: int | None, own: "OwnWrite | None" = None) -> None: ...
    def writing(self) -> AbstractContextManager[None]:
        """Held from a write's store call to the end of its `sync`."""
        ...
    def noticing(self) -> AbstractContextManager[None]:
        """Around a write's other calls to the store: what they find of it is this replica's state."""
        ...
    def save_adapter(self, collection: str, adapter: CosineAdapter | None) -> None: ...

@dataclass
class OwnWrite:
    """A batch this replica just committed, tokenised and with its vectors: the follower applies it as it is
    when nothing else was committed before it, instead of reading it back from the store."""

    collection: "Collection"
    docs: list[NewDocument]
    tokens: list[list[str]]
    vectors: np.ndarray
    result: WriteResult

    def kept(self) -> list[int]:
        """Positions of the documents that hold their id at the end (a batch naming one id twice keeps the last;
        the earlier copy is already a tombstone)."""
        superseded = set(self.result.old_labels)
        return [i for i, label in enumerate(self.result.new_labels) if label not in superseded]


log = logging.getLogger("app.collection")
# A turn of the write lock moves staged vectors into the graph for about this long, so a search waits at
# most about this for a bulk load. Measured at 30K documents with a loader re-posting 1,000-document batches:
# turns of 8 vectors (~36 ms a turn there) gave hybrid search p50 45-48 ms, p99 65-150 ms; ~10 ms turns 29-32 ms,
# 48-65 ms.
SETTLE_TURN_SECONDS = 0.010
_MAX_TURN = 256
# A start that replayed this many writes (into the graph, ~1 ms each) snapshots at the next check.
SNAPSHOT_AFTER_REPLAYING = 1_000


def next_turn(count: int, seconds: float, budget: float = SETTLE_TURN_SECONDS) -> int:
    """Vectors for the next settle turn, scaled from the pace of the last (`count` in `seconds`) to take about
    `budget`: inserting costs from well under a millisecond a vector in a small graph to ~4.5 ms at 30K
    documents with searches running. At most twice the last turn, so one fast turn does not make the next
    one long."""
    if seconds <= 0:
        return min(2 * count, _MAX_TURN)
    return max(1, min(2 * count, _MAX_TURN, int(count * budget / seconds)))


@dataclass
class Collection(GraphUpkeep):
    """Readers hold `lock.read()` for a whole search; writers hold `lock.write()` from the store
    commit until both indexes have applied it, so no search sees half a batch. The dense index takes a
    batch's vectors as staged ones (scanned exactly), and the writer then settles them into the graph
    in short turns of the write lock, so a bulk load holds searches up for milliseconds, not seconds."""

    record: CollectionRecord
    settings: CollectionSettings
    store: DocumentStore
    snapshots: SnapshotDir
    tokenizer: Tokenizer
    lexical: LexicalIndex
    dense: DenseIndex
    adapter: CosineAdapter | None = None
    lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    snapshot_lock: threading.Lock = field(default_factory=threading.Lock)
    writes_since_snapshot: int = 0
    # Snapshot at the next check, whatever the writes since: work a start or the graph's upkeep did that a crash
    # would make the next start do again (a rebuild, a new analysis, an ef_search measurement; QA).
    snapshot_soon: bool = False
    dropped: bool = False  # set under the write lock when the collection is deleted
    shared: SharedWrites | None = None  # set when the store is shared by replicas
    applied_seq: int = 0  # shared store: every change up to this sequence is in the indexes (set under the lock)
    adapter_seq: int = 0  # shared store: the sequence of the trained adapter in use (0: none)
    recall_target: float = HNSW_RECALL_TARGET  # of the self-tuned ef_search
    _upkeeper: threading.Thread | None = None  # the graph's upkeep (app/engine/graph_upkeep.py)
    _upkeep_guard: threading.Lock = field(default_factory=threading.Lock)
    _measuring: bool = False
    _closing: threading.Event = field(default_factory=threading.Event)
    _failures: int = 0
    _retry_at: float = 0.0

    @property
    def name(self) -> str:
        return self.record.name

    @classmethod
    def open(cls, store: DocumentStore, record: CollectionRecord, index_root: Path, threads: int,
             shared: SharedWrites | None = None, recall_target: float = HNSW_RECALL_TARGET,
             tune: bool = True) -> "Collection":
        """Loads the latest snapshot and replays newer store rows; rebuilds from the store when needed. Over a
        shared store (`shared`) it only loads the snapshot, at `applied_seq`: the follower applies the rest. A
        self-tuned ef_search the snapshot lacks (or has outgrown) is measured in the background, unless not
        `tune` (an offline rebuild, whose service measures it)."""
        settings = CollectionSettings.from_dict(record.settings)
        snapshots, stored = SnapshotDir(index_root / record.uid), store.count(record.name)
        collection = cls(record, settings, store, snapshots, Tokenizer(),
                         LexicalIndex(settings.bm25.k1, settings.bm25.b),
                         DenseIndex(record.dimension, settings.hnsw, capacity=max(1024, stored), threads=threads),
                         shared=shared, recall_target=recall_target)
        if shared is not None:
            collection.applied_seq = collection._load_snapshot(threads)
            return collection  # measured once the follower has applied the store's rows
        collection.adapter = collection._stored_adapter()
        snapshots.remove_partial()  # a kill mid-snapshot leaves its half-written folder
        after = collection._load_snapshot(threads)
        collection._replay(after)
        if after and len(collection.lexical) != stored:  # nothing writes to a collection while it opens
            # The indexes restored from an older copy than the store: deletions between them are not replayed.
            log.warning("collection %s: %d documents indexed from the snapshot and its tail, %d in the store; "
                        "rebuilding from the store", record.name, len(collection.lexical), stored)
            collection.reset_indexes(threads)
            collection._replay(0)
        if tune:
            collection.upkeep()
        return collection

    def reset_indexes(self, threads: int) -> None:
        """Empty indexes, to be rebuilt from the store (a snapshot the store can no longer bring up to date)."""
        self.lexical = LexicalIndex(self.settings.bm25.k1, self.settings.bm25.b)
        self.dense = DenseIndex(self.record.dimension, self.settings.hnsw, capacity=1024, threads=threads)
        self.applied_seq = 0

    def _load_snapshot(self, threads: int) -> int:
        path = self.snapshots.current()
        if path is None:
            return 0
        try:
            # Over a shared store other replicas move its sequence: only the embedded store's bounds a snapshot.
            lexical, dense, seq = index_snapshot.read(
                path, uid=self.record.uid, store=self.store.identity(),
                store_seq=self.store.seq() if self.shared is None else None, hnsw=self.settings.hnsw, threads=threads,
                analysis=self.tokenizer.config())
        except Exception as exc:  # whatever is wrong with a cache, the store rebuilds it
            log.warning("collection %s: snapshot unusable (%r); rebuilding from the store", self.name, exc)
            return 0
        self.dense = dense
        if lexical is None:
            self._analyse_again(seq)
        else:
            self.lexical = lexical
        return seq

    def _analyse_again(self, seq: int) -> None:
        """The lexical index of the store's documents up to `seq`, from their texts: the snapshot's holds terms of
        another analysis (an upgrade changed the tokenizer). Its graph is kept, which is the costly part to build
        again. What the store wrote after `seq` is replayed after, as over any snapshot."""
        started, analysed = time.perf_counter(), 0
        self.lexical = LexicalIndex(self.settings.bm25.k1, self.settings.bm25.b)
        for rows, _ in self.store.iter_rows(self.name, 0):  # in label order
            covered = [row for row in rows if row.label <= seq]
            self.lexical.upsert([row.label for row in covered],
                                [self.tokenizer(document_text(row.title, row.text)) for row in covered])
            analysed += len(covered)
            if len(covered) < len(rows):  # the rest came after the snapshot: replayed with the store's tail
                break
        self.writes_since_snapshot += analysed
        self.snapshot_soon = True  # else only 20,000 more writes or a clean stop kept it: a crash analysed again
        log.info("collection %s: snapshot's lexical index held another analysis; %d documents analysed again in "
                 "%.1f s", self.name, analysed, time.perf_counter() - started)

    def _replay(self, after_seq: int) -> None:
        dead = self.store.tombstones_after(self.name, after_seq)
        self.lexical.delete(dead)
        self.dense.delete(dead)
        replayed = 0
        for rows, vectors in self.store.iter_rows(self.name, after_seq):
            self._index_rows(rows, vectors)
            replayed += len(rows)
        self.writes_since_snapshot += replayed + len(dead)
        # A long replay (no snapshot, or an old one) is work a crash would make the next start do again.
        self.snapshot_soon = self.snapshot_soon or replayed + len(dead) >= SNAPSHOT_AFTER_REPLAYING
        log.info("collection %s: %d documents (snapshot seq %d, replayed %d writes)",
                 self.name, len(self.lexical), after_seq, self.writes_since_snapshot)

    def _index_rows(self, rows: list[StoredRow], vectors: np.ndarray) -> None:
        labels = np.asarray([row.label for row in rows], dtype=np.int64)
        self.lexical.upsert(labels.tolist(), [self.tokenizer(document_text(r.title, r.text)) for r in rows])
        self.dense.upsert(labels, vectors)

    # --- writes -----------------------------------------------------------------------------

    def upsert(self, docs: list[NewDocument]) -> None:
        """Durably stores the batch, then applies it to both indexes, all under the write lock."""
        tokens = [self.tokenizer(document_text(d.title, d.text)) for d in docs]
        vectors = np.stack([d.vector for d in docs])
        if self.shared is not None:
            self.check_live()
            with self.shared.writing():
                result = self.store.upsert(self.name, docs)
                self.shared.sync(result.seq, OwnWrite(self, docs, tokens, vectors, result))
            return
        with self.lock.write():
            self.check_live()
            result = self.store.upsert(self.name, docs)
            keep = OwnWrite(self, docs, tokens, vectors, result).kept()
            self.lexical.delete(result.old_labels)
            self.dense.delete(result.old_labels)
            self.lexical.upsert([result.new_labels[i] for i in keep], [tokens[i] for i in keep])
            self.dense.stage(np.asarray([result.new_labels[i] for i in keep], dtype=np.int64), vectors[keep])
            self.writes_since_snapshot += len(docs)
        self.settle()
        self.upkeep()

    def settle(self) -> None:
        """Staged vectors into the graph in turns of the write lock of about SETTLE_TURN_SECONDS each; the
        readers that queued during a turn go before the next one."""
        count = 1
        while True:
            with self.lock.write():
                if self.dropped:
                    return
                start = time.perf_counter()
                left = self.dense.settle(count)
                seconds = time.perf_counter() - start
            if not left:
                return
            count = next_turn(count, seconds)

    def delete(self, doc_id: str) -> bool:
        return bool(self.delete_many([doc_id]))

    def delete_many(self, ids: Sequence[str]) -> list[str]:
        """Deletes those of `ids` that exist, in one store transaction; returns them."""
        if self.shared is not None:
            self.check_live()
            with self.shared.writing():
                found = self.store.delete_many(self.name, ids)
                if found:
                    self.shared.sync(None)  # the store's head: this delete's sequence or later
            return list(found)
        with self.lock.write():
            self.check_live()
            found = self.store.delete_many(self.name, ids)
            if not found:
                return []
            self.lexical.delete(list(found.values()))
            self.dense.delete(list(found.values()))
            self.writes_since_snapshot += 1
        self.upkeep()
        return list(found)

    def list_documents(self, after: str | None, limit: int, vectors: bool
                       ) -> tuple[list[StoredRow], np.ndarray | None]:
        """A page of the collection in id order (`DocumentStore.list_rows`), with each document's stored unit vector
        when asked, read from the dense index under the read lock, so that rows and vectors are one state (a
        replica's mirror keeps no vectors)."""
        with self.lock.read():
            self.check_live()
            rows = self.store.list_rows(self.name, after, limit)
            found = None
            if vectors:
                found = self.dense.vectors(np.asarray([row.label for row in rows], dtype=np.int64))
        return rows, found

    def check_live(self) -> None:
        """Under the lock: a write that waited on it while the collection was deleted must not resurrect it, and
        a search must not read the rows a deletion removed (their labels are still in the indexes)."""
        if self.dropped:
            raise CollectionNotFound(f"collection {self.name!r} was deleted")

    def set_adapter(self, adapter: CosineAdapter | None) -> None:
        """Stores a trained adapter in the store of record, then swaps it in for new searches (None: removes the
        collection's own, and the default serves again); CollectionNotFound once the collection is dropped."""
        if self.shared is not None:
            self.check_live()
            self.shared.save_adapter(self.name, adapter)
            return
        meta, weights = (None, None) if adapter is None else adapter.to_bytes()
        with self.lock.read():  # the save takes milliseconds
            self.check_live()  # a drop takes the write lock, then removes the store's row
            self.store.save_adapter(self.name, meta, weights)
            self.adapter = adapter

    def _stored_adapter(self) -> CosineAdapter | None:
        """The embedded store's trained adapter for this collection. One kept beside the snapshots (where
        versions before 2026-12-02 kept it, lost with the index cache) moves into the store first."""
        legacy = SnapshotDir(self.snapshots.root / "adapter")
        folder = legacy.current()
        try:
            if folder is not None and self.store.load_adapter(self.name) is None:
                self.store.save_adapter(self.name, *CosineAdapter.load(folder).to_bytes())
            stored = self.store.load_adapter(self.name)
            adapter = None if stored is None else CosineAdapter.from_bytes(*stored)
        except ValueError as exc:
            log.warning("collection %s: trained adapter unreadable (%s); using the default", self.name, exc)
            adapter = None
        legacy.remove()  # moved into the store, or unreadable (any other error leaves it for the next start)
        return adapter

    # --- snapshots --------------------------------------------------------------------------

    def snapshot(self) -> None:
        """Writes both indexes and the store sequence they cover; searches go on meanwhile."""
        with self.snapshot_lock, self.lock.read(long=True):
            if self.dropped:
                return
            # Over a shared store other replicas' writes move its sequence without this lock: what the
            # indexes hold is what was applied.
            seq = self.store.seq() if self.shared is None else self.applied_seq
            written = self.writes_since_snapshot
            self.snapshots.publish(partial(index_snapshot.write, lexical=self.lexical, dense=self.dense,
                                           uid=self.record.uid, seq=seq, store=self.store.identity(),
                                           analysis=self.tokenizer.config()))
            self.writes_since_snapshot -= written
            self.snapshot_soon = False
        try:
            self.store.prune_tombstones(self.name, seq)
        except StoreUnavailable as exc:  # only compaction is put off: the snapshot stands, the next one prunes
            log.warning("collection %s: tombstones not compacted: %s", self.name, exc.message)
