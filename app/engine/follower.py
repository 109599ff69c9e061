"""A replica following the shared store's change feed: its collections, indexes, mirror and adapters kept equal
to the store's at the last sequence it applied.

Each catch-up reads one REPEATABLE READ snapshot of the store at its head sequence H (which, because the store
numbers writes in commit order, holds every change up to H; see app/store/postgres.py) and reconciles: a
collection gone from the store, or replaced by another of the same name, is dropped here; a new one is opened
from its index snapshot if one fits, else built; each collection then applies the tombstones and live documents
numbered after its applied sequence, and loads its trained adapter when the store holds a newer one. A replica
whose snapshot is older than the store's tombstone compaction rebuilds that collection, since it cannot learn
which of its documents were deleted. A background thread waits on LISTEN/NOTIFY (or a poll, if a notification
is lost with a connection) and catches up; a write through this replica calls `sync` before it is answered,
which applies the write's own batch as it is when nothing else was committed before it (no read-back), else
catches up; while such writes are under way the background thread leaves catching up to them.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.engine.collection import Collection, OwnWrite
from app.engine.embedder import document_text
from app.engine.encoders import recorded_encoder
from app.engine.relevance import CosineAdapter
from app.engine.store_health import StoreHealth
from app.errors import InsufficientStorage, StoreUnavailable
from app.store.base import StoredRow
from app.store.postgres_feed import CollectionState, FeedView, Listener
from app.store.replica import ReplicaStore

if TYPE_CHECKING:
    from app.engine.engine import SearchEngine

log = logging.getLogger("app.follower")
# With no notification, the follower still looks at the store this often: a NOTIFY lost with a dropped
# connection then costs at most this much lag.
POLL_SECONDS = 1.0
# While PostgreSQL is unreachable, the follower retries this often.
RETRY_SECONDS = 0.5
# Staged vectors a catch-up lets build up before it settles them into the graph on the way: searches score the
# staged ones exactly (10,000 x 384 dimensions: a few ms), and a rebuild from the store may stage millions.
SETTLE_DURING_CATCH_UP = 10_000


@dataclass
class ReplicationStatus:
    applied_seq: int
    store_seq: int  # the latest sequence this replica knows the store has reached
    lag_seconds: float  # since it first knew of a change it has not applied yet (0 when caught up)
    degraded: str | None  # why the store is unreachable, while it is


class Follower:
    def __init__(self, engine: "SearchEngine", store: ReplicaStore) -> None:
        self.engine = engine
        self.store = store
        self._catch_up_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied = 0
        self._store_seq = 0
        self._behind_since: float | None = None
        self.health = StoreHealth(lambda: self._applied)
        self._refused: dict[str, str] = {}  # collections another encoder made, not served here: why (logged once)
        self._received: list[Collection] = []  # given documents by the catch-up under way: to settle after it
        self._own_writes = 0  # upserts through this replica between their store call and the end of their sync
        self._own_writes_done = threading.Condition()

    # --- status -----------------------------------------------------------------------------

    def status(self) -> ReplicationStatus:
        behind = self._behind_since
        lag = 0.0 if behind is None or self._applied >= self._store_seq else time.monotonic() - behind
        return ReplicationStatus(self._applied, max(self._store_seq, self._applied), lag, self.health.degraded)

    def _saw(self, seq: int) -> None:
        if seq > self._store_seq:
            self._store_seq = seq
            if seq > self._applied and self._behind_since is None:
                self._behind_since = time.monotonic()

    def _advance(self, seq: int) -> None:
        self._applied = seq
        if seq >= self._store_seq:
            self._behind_since = None

    # --- the background loop ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._own_writes_done:
            self._own_writes_done.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        listener: Listener | None = None
        while not self._stop.is_set():
            try:
                if listener is None:
                    # Listening before catching up: a change committed meanwhile is announced, not missed.
                    listener = self.store.shared.listener()
                self._await_own_writes()
                mark = self.health.mark()
                self.catch_up()
                self.health.reached(mark)
                announced = listener.wait(POLL_SECONDS)
                if announced is not None:
                    self._saw(announced)
            except InsufficientStorage as exc:  # its own disk: behind until there is room (/ready says so), and
                self.health.failed(f"this replica cannot apply the store's changes: {exc.message}")  # one log line
                self._stop.wait(RETRY_SECONDS)
            except StoreUnavailable as exc:
                self.health.failed(exc.message)
                if listener is not None:
                    with suppress(Exception):
                        listener.close()
                    listener = None
                self._stop.wait(RETRY_SECONDS)
            except Exception:
                log.exception("applying the store's changes failed; retrying")
                self._stop.wait(RETRY_SECONDS)
        if listener is not None:
            listener.close()

    def _await_own_writes(self) -> None:
        """Waits while writes through this replica are under way. Each one's `sync` applies its batch as it is;
        a catch-up woken by that batch's NOTIFY and taking the lock first would read it back from the store
        instead (every other batch of a bulk load with two requests in flight did). Nothing committed waits
        for long: a write's `sync` catches up on whatever was committed before it, and the last one to
        finish lets this loop go on."""
        with self._own_writes_done:
            while self._own_writes and not self._stop.is_set():
                self._own_writes_done.wait(POLL_SECONDS)

    # --- catching up ------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Held by an upsert through this replica from its store call to the end of its `sync`. What the write
        finds of the store is this replica's state too: while writes are under way the loop waits for them and
        does not reach the store, so under a steady load a store that stopped answering (its server paused) was
        seen only by the writes, which answered 503 while `/ready` said ready (QA)."""
        with self._own_writes_done:
            self._own_writes += 1
        try:
            with self.health.noticing():
                yield
        finally:
            with self._own_writes_done:
                self._own_writes -= 1
                self._own_writes_done.notify_all()

    def noticing(self) -> AbstractContextManager[None]:
        """Around a write's other calls to the store (StoreHealth.noticing)."""
        return self.health.noticing()

    def sync(self, seq: int | None, own: OwnWrite | None = None) -> None:
        """Returns once this replica has applied every change up to `seq` (a write it just committed; None: the
        store's head, which holds it). `own`, that write's batch, is applied as it is when it is the only change
        since the last one applied. The write is committed in the store whatever happens here, so a failure says
        so: "nothing was stored" would be false (QA: a 507, and a 503 when the store or the data dir failed
        between the commit and the catch-up)."""
        try:
            with self._catch_up_lock:
                if seq is not None and self._applied >= seq:
                    return
                if own is not None and self._applied == own.result.new_labels[0] - 1:
                    self._apply_own(own)
                    return
            self.catch_up(at_least=seq)
        except InsufficientStorage as exc:
            raise InsufficientStorage(_stored_not_applied(exc, "once its data dir has room"),
                                      [{"reason": "replica_disk_full"}]) from exc
        except StoreUnavailable as exc:
            raise StoreUnavailable(_stored_not_applied(exc, "once the store and its data dir answer again"),
                                   [{"reason": "replica_behind"}]) from exc

    def _apply_own(self, own: OwnWrite) -> None:
        collection, result, kept = own.collection, own.result, own.kept()
        labels = np.asarray([result.new_labels[i] for i in kept], dtype=np.int64)
        rows = [StoredRow(int(label), own.docs[i].id, own.docs[i].text, own.docs[i].title, own.docs[i].metadata)
                for i, label in zip(kept, labels, strict=True)]
        with collection.lock.write():
            self._remove(collection, result.old_labels)
            self.store.mirror.apply(collection.name, (), rows)
            collection.lexical.upsert(labels.tolist(), [own.tokens[i] for i in kept])
            collection.dense.stage(labels, own.vectors[kept])
            collection.applied_seq = result.seq
            collection.writes_since_snapshot += len(own.docs)
        # Applied once searchable: staged vectors are searched exactly until they settle into the graph.
        self.store.mirror.mark_applied(collection.name, collection.record.uid, result.seq)
        self._advance(result.seq)
        collection.settle()
        collection.upkeep()

    def catch_up(self, at_least: int | None = None) -> int:
        """Applies the store's changes up to its current head; returns the sequence applied."""
        with self._catch_up_lock:
            if at_least is not None and self._applied >= at_least:
                return self._applied
            with self.store.shared.feed() as view:
                head = view.seq()
                self._saw(head)
                states = {state.record.name: state for state in view.collections()}
                self._drop_missing(states)
                for state in states.values():
                    self._follow_collection(state, view, head)
            self._advance(head)
            # Applied (and counted so in the lag) once searchable; then into the graphs. QA: with the settles
            # first, a replica reported seconds of lag for 500-document batches it had served within 100 ms.
            received, self._received = self._received, []
            for collection in received:
                collection.settle()
                collection.upkeep()
            return head

    def _drop_missing(self, states: dict[str, CollectionState]) -> None:
        for collection in self.engine.list_collections():
            state = states.get(collection.name)
            if state is None or state.record.uid != collection.record.uid:
                self._forget(collection)

    def _forget(self, collection: Collection) -> None:
        self.engine.forget_collection(collection.name)
        self.store.mirror.forget(collection.name)
        collection.snapshots.remove()

    def _follow_collection(self, state: CollectionState, view: FeedView, head: int) -> None:
        name, uid = state.record.name, state.record.uid
        collection = self.engine.local_collection(name)
        if collection is None and not self._same_encoder(state):
            return
        if collection is None:
            collection = Collection.open(self.store, state.record, self.engine.index_root, self.engine.settings.threads,
                                         shared=self, recall_target=self.engine.settings.hnsw_recall_target)
            snapshot_seq = collection.applied_seq
            # The snapshot is usable only if the store still holds every tombstone after it and the mirror
            # (written before any snapshot) is at least as far.
            mirrored = self.store.mirror.applied(name, uid)
            if snapshot_seq and (snapshot_seq < state.pruned_through or mirrored < snapshot_seq):
                why = (f"older than the store's tombstone compaction ({state.pruned_through})"
                       if snapshot_seq < state.pruned_through else f"ahead of its local copy of the rows ({mirrored})")
                log.warning("collection %s: its snapshot at %d is %s; rebuilding from the store", name, snapshot_seq,
                            why)
                collection.reset_indexes(self.engine.settings.threads)
            if not collection.applied_seq:
                self.store.mirror.forget(name)  # rows the store may have deleted since: rebuilt in full
            self._apply(collection, state, view, head)
            self.engine.adopt_collection(collection)
        elif 0 < collection.applied_seq < state.pruned_through:
            log.warning("collection %s fell behind the store's tombstone compaction (%d < %d); rebuilding",
                        name, collection.applied_seq, state.pruned_through)
            self._forget(collection)
            self._follow_collection(state, view, head)
            return
        else:
            self._apply(collection, state, view, head)
        if state.adapter_seq != collection.adapter_seq:
            stored = view.adapter(name)
            collection.adapter = None if stored is None else CosineAdapter.from_bytes(stored.meta, stored.weights)
            collection.adapter_seq = state.adapter_seq

    def _same_encoder(self, state: CollectionState) -> bool:
        """A collection another replica created with another encoder is not served here: its queries would be
        encoded unlike its documents (the start-up check covers the collections that existed at start)."""
        ours = self.engine.embedder.identity
        made_by = recorded_encoder(state.record.settings, ours.model)
        if made_by == ours:
            return True
        if state.record.name not in self._refused:
            self._refused[state.record.name] = (
                f"collection {state.record.name!r} exists, made by another encoder ({made_by}), and this replica "
                f"encodes with {ours}, so it does not serve it; every replica over one store must run one encoder "
                "(SEARCH_ENCODER, SEARCH_MODEL)")
            log.error(self._refused[state.record.name])
        return False

    def refused(self, name: str) -> str | None:
        """Why this replica does not serve collection `name`, which the store holds; None if it is not refused."""
        return self._refused.get(name)

    def _apply(self, collection: Collection, state: CollectionState, view: FeedView, head: int) -> None:
        """The tombstones and live documents numbered after the collection's applied sequence, into the mirror
        and both indexes; the tombstones go with the first documents, so a replaced document never vanishes."""
        name, after = collection.name, collection.applied_seq
        if after >= head:
            return
        if after and state.changed_seq <= after:  # no document written since: nothing to read
            with collection.lock.write():
                collection.applied_seq = head
            self.store.mirror.mark_applied(name, collection.record.uid, head)
            return
        dead = [label for label, _ in view.tombstones_after(name, after)] if after else []
        applied = len(dead)
        for rows, vectors in view.iter_rows(name, after):
            tokens = [collection.tokenizer(document_text(r.title, r.text)) for r in rows]
            labels = np.asarray([r.label for r in rows], dtype=np.int64)
            with collection.lock.write():
                self._remove(collection, dead)
                self.store.mirror.apply(name, (), rows)
                collection.lexical.upsert(labels.tolist(), tokens)
                collection.dense.stage(labels, vectors)
            dead = []
            applied += len(rows)
            if collection.dense.staged >= SETTLE_DURING_CATCH_UP:  # a long catch-up: not all of it searched exactly
                collection.settle()
        with collection.lock.write():
            self._remove(collection, dead)
            collection.applied_seq = head
            collection.writes_since_snapshot += applied
        self.store.mirror.mark_applied(name, collection.record.uid, head)
        self._received.append(collection)

    def _remove(self, collection: Collection, labels: list[int]) -> None:
        if labels:
            self.store.mirror.apply(collection.name, labels, ())
            collection.lexical.delete(labels)
            collection.dense.delete(labels)

    # --- adapters ---------------------------------------------------------------------------

    def save_adapter(self, collection: str, adapter: CosineAdapter | None) -> None:
        """Stores a trained adapter in the store of record (None: removes it); every replica (this one first)
        then loads it (or goes back to the default)."""
        meta, weights = (None, None) if adapter is None else adapter.to_bytes()
        self.sync(self.store.shared.save_adapter(collection, meta, weights))


def _stored_not_applied(exc: InsufficientStorage | StoreUnavailable, when: str) -> str:
    """What a write through this replica that committed in the store but could not be applied here answers: its
    cause, without the cause's own "nothing of this write was stored"."""
    cause = exc.message if exc.__cause__ is None else f"{type(exc.__cause__).__name__}: {str(exc.__cause__).strip()}"
    return (f"the write is stored in PostgreSQL (the other replicas serve it), but this replica could not apply it "
            f"({cause}); it catches up by itself {when}. The write need not be sent again")
