"""The search engine: the store, the encoder and every collection's indexes, composed."""

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import hybrid
from app.engine.batching import QueryBatcher
from app.engine.collection import Collection
from app.engine.embedder import document_text, unit_rows
from app.engine.encoders import Encoder, check_encoders
from app.engine.follower import Follower
from app.engine.ingest_pool import DocumentEncoderPool
from app.engine.jobs import TrainingJobs
from app.engine.judgments import check_enough_relevant, kept_as_it_serves, merge_judgments, resolve_ids
from app.engine.own_adapter import fit_own_adapter
from app.engine.relevance import CosineAdapter, Family
from app.engine.shipped_adapters import fits_encoder, load_default_adapter, load_fallback_adapter
from app.engine.slots import SearchSlots
from app.engine.storage import index_root, open_store, remove_orphan_indexes
from app.engine.types import (
    CollectionSettings,
    DocumentInput,
    SearchDefaults,
    SearchQuery,
    TrainingExample,
)
from app.errors import (
    CollectionConflict,
    CollectionNotFound,
    DimensionMismatch,
    DocumentNotFound,
    EncoderMismatch,
    InvalidInput,
    TrainingInProgress,
)
from app.settings import Settings
from app.store.base import DocumentStore, NewDocument, StoredRow
from app.store.replica import ReplicaStore

log = logging.getLogger("app.engine")

class SearchEngine:
    """Works on a data directory whose DataDirLock the caller holds."""

    def __init__(self, settings: Settings, embedder: Encoder, store: DocumentStore | None = None) -> None:
        """`store`: any DocumentStore backend, which the engine then owns (closes); by default the SQLite one in
        the data directory, or with `settings.database_url` the shared PostgreSQL one, which this engine then
        follows as one replica among any number (app/engine/follower.py). EncoderMismatch when a collection's
        vectors were made by another encoder."""
        self.settings = settings
        self.embedder = embedder
        self.store: DocumentStore = open_store(settings) if store is None else store
        self.index_root = index_root(settings)
        try:
            check_encoders(self.store.collections(), embedder.identity, shared=isinstance(self.store, ReplicaStore))
        except EncoderMismatch:
            self.store.close()
            raise
        self.default_adapter = load_default_adapter(Path(settings.adapter_dir), embedder)
        self.fallback_adapter = load_fallback_adapter(Path(settings.fallback_adapter_dir))
        self._collections_lock = threading.Lock()
        # Runs a hybrid search's BM25 top-k while the request's own thread walks the HNSW graph.
        self._beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bm25")
        self._collections: dict[str, Collection] = {}
        # Over the shared store, any replica answers for any replica's job (app/engine/jobs.py).
        self.training_jobs = TrainingJobs(board=self.store.shared, owner=f"{socket.gethostname()}:{os.getpid()}") \
            if isinstance(self.store, ReplicaStore) else TrainingJobs()
        # At 100K documents, 8 clients on 2 cores, 2 slots answered 203-224 hybrid searches a second against 156-189
        # unbounded (README, "Search slots").
        self.search_slots = SearchSlots(settings.search_slot_count())
        self.queries = QueryBatcher(embedder, settings.query_batch_size if embedder.batch_invariant else 1,
                                    settings.query_batch_wait_ms / 1000)
        self.documents = DocumentEncoderPool(embedder, self.queries, settings.ingest_thread_count(),
                                             settings.encode_batch_size)
        self.follower: Follower | None = None
        if isinstance(self.store, ReplicaStore):
            # Ready only once caught up to (at least) the store's sequence at start; then followed in the background.
            self.follower = Follower(self, self.store)
            self.follower.catch_up()
            self.follower.start()
            return
        for record in self.store.collections():
            self._collections[record.name] = Collection.open(self.store, record, self.index_root, settings.threads,
                                                             recall_target=settings.hnsw_recall_target)
        remove_orphan_indexes(self.index_root, {c.record.uid for c in self._collections.values()})

    # --- collections ------------------------------------------------------------------------

    def collection(self, name: str) -> Collection:
        try:
            return self._collections[name]
        except KeyError:
            raise CollectionNotFound(f"collection {name!r} does not exist") from None

    def list_collections(self) -> list[Collection]:
        """A snapshot, sorted by name: safe to iterate while collections are created or dropped."""
        with self._collections_lock:
            return [self._collections[name] for name in sorted(self._collections)]

    def create_collection(self, name: str, hnsw: Mapping[str, Any] | None = None,
                          bm25: Mapping[str, Any] | None = None) -> tuple[Collection, bool]:
        """Returns (collection, created). `hnsw` and `bm25`: the settings given (validated); each one left out
        takes the configured default. The same settings again is a no-op, other settings conflict."""
        defaults = self.settings.collection_defaults
        settings = CollectionSettings(hnsw=replace(defaults.hnsw, **(hnsw or {})),
                                      bm25=replace(defaults.bm25, **(bm25 or {})))
        # What the store keeps: the settings and the encoder that will make the collection's vectors.
        stored = {**settings.to_dict(), "encoder": self.embedder.identity.to_dict()}
        if self.follower is not None:
            return self._create_shared(name, settings, stored, self.follower)
        with self._collections_lock:
            existing = self._collections.get(name)
            if existing is not None:
                if existing.settings != settings:
                    raise CollectionConflict(
                        f"collection {name!r} exists with other settings",
                        [{"existing": existing.settings.to_dict(), "requested": settings.to_dict()}])
                return existing, False
            record = self.store.create_collection(name, self.embedder.dim, stored)
            collection = Collection.open(self.store, record, self.index_root, self.settings.threads,
                                         recall_target=self.settings.hnsw_recall_target)
            self._collections[name] = collection
            return collection, True

    def _create_shared(self, name: str, settings: CollectionSettings, stored: dict[str, Any],
                       follower: Follower) -> tuple[Collection, bool]:
        """Over the shared store: created there, then this replica follows up to it (as every other does)."""
        follower.catch_up()  # another replica may have created it since
        existing = self._collections.get(name)
        if existing is None:
            try:
                self.store.create_collection(name, self.embedder.dim, stored)
            except CollectionConflict:
                # Another replica created it between that catch-up and this insert (two loaders starting at
                # once): then it exists, and the answer is the one a PUT of an existing collection gets.
                follower.catch_up()
                existing = self._collections.get(name)
                if existing is None:
                    why = follower.refused(name)  # (it said "just created through another replica; retry", QA)
                    if why is not None:
                        raise CollectionConflict(why) from None
                    raise
            follower.catch_up()
        collection = self.collection(name)
        if existing is not None and collection.settings != settings:
            raise CollectionConflict(f"collection {name!r} exists with other settings",
                                     [{"existing": collection.settings.to_dict(), "requested": settings.to_dict()}])
        return collection, existing is None

    def local_collection(self, name: str) -> Collection | None:
        with self._collections_lock:
            return self._collections.get(name)

    def adopt_collection(self, collection: Collection) -> None:
        """The follower's: a collection it opened from the store starts serving."""
        with self._collections_lock:
            self._collections[collection.name] = collection

    def forget_collection(self, name: str) -> None:
        """The follower's: a collection the store no longer holds stops serving (writes waiting on it fail)."""
        with self._collections_lock:
            collection = self._collections.pop(name, None)
        if collection is not None:
            collection.stop_upkeep()  # first: a measurement holds the read lock until it ends
            with collection.lock.write():
                collection.dropped = True
            self.training_jobs.drop(name)

    def drop_collection(self, name: str) -> None:
        if self.follower is not None:
            self.collection(name)  # 404 if unknown here
            self.store.drop_collection(name)
            self.follower.catch_up()
            return
        with self._collections_lock:
            collection = self.collection(name)
            collection.stop_upkeep()  # first: a measurement holds the read lock until it ends
            with collection.lock.write():
                self.store.drop_collection(name)
                collection.dropped = True
                del self._collections[name]
            collection.snapshots.remove()
        self.training_jobs.drop(name)

    def adapter_for(self, collection: Collection) -> CosineAdapter | None:
        """The collection's own adapter, else the default, else (another encoder) the dimension-free fallback."""
        own = collection.adapter
        if own is not None and fits_encoder(own, self.embedder):
            return own
        return self.default_adapter or self.fallback_adapter

    # --- documents --------------------------------------------------------------------------

    def upsert(self, name: str, documents: Sequence[DocumentInput]) -> list[str]:
        collection = self.collection(name)
        dim = collection.record.dimension
        for position, doc in enumerate(documents):
            if doc.vector is not None and len(doc.vector) != dim:
                raise DimensionMismatch(
                    f"document {doc.id!r} has a {len(doc.vector)}-d vector; collection {name!r} takes {dim}-d",
                    [{"loc": ["documents", position, "vector"], "expected": dim, "got": len(doc.vector)}])
        vectors = np.zeros((len(documents), dim), dtype=np.float32)
        to_encode = [i for i, d in enumerate(documents) if d.vector is None]
        given = [i for i, d in enumerate(documents) if d.vector is not None]
        if given:
            vectors[given], flat = unit_rows(np.asarray([documents[i].vector for i in given], dtype=np.float64))
            if flat.size:
                raise InvalidInput(
                    f"document {documents[given[flat[0]]].id!r} has a vector of zeros, which has no direction to "
                    f"search by", [{"loc": ["documents", given[i], "vector"]} for i in flat.tolist()])
        if to_encode:
            self._encode_texts(collection, documents, to_encode, vectors)
        encoded = set(to_encode)
        collection.upsert([NewDocument(d.id, d.text, d.title, dict(d.metadata), vectors[i], encoded=i in encoded)
                           for i, d in enumerate(documents)])
        return [d.id for d in documents]

    def _encode_texts(self, collection: Collection, documents: Sequence[DocumentInput], positions: list[int],
                      vectors: np.ndarray) -> None:
        """Fills `vectors` at `positions` with the encodings of those documents' titles and texts. A document
        stored with this very title and text, and a vector the service made from them, takes that vector again:
        a loader that re-posts a whole collection waits for the encoder only for what changed (the collection's
        encoder is the one that made its vectors, app/engine/encoders.py)."""
        with nullcontext() if collection.shared is None else collection.shared.noticing():
            stored = self.store.encoded_texts(collection.name, [documents[i].id for i in positions])
        fresh = []
        for i in positions:
            doc, same = documents[i], stored.get(documents[i].id)
            if same is not None and same.text == doc.text and same.title == doc.title:
                vectors[i] = same.vector
            else:
                fresh.append(i)
        if fresh:
            vectors[fresh] = self.documents.encode([document_text(documents[i].title, documents[i].text)
                                                    for i in fresh])
        if len(fresh) < len(positions):
            log.debug("%d of %d texts posted to %r were stored unchanged with their vectors: not encoded again",
                      len(positions) - len(fresh), len(positions), collection.name)

    def get(self, name: str, doc_id: str) -> StoredRow:
        row = self.store.get(self.collection(name).name, doc_id)
        if row is None:
            raise DocumentNotFound(f"document {doc_id!r} not found in collection {name!r}")
        return row

    def delete(self, name: str, doc_id: str) -> None:
        if not self.collection(name).delete(doc_id):
            raise DocumentNotFound(f"document {doc_id!r} not found in collection {name!r}")

    # --- search -----------------------------------------------------------------------------

    def search(self, name: str, request: SearchQuery,
               still_wanted: Callable[[], bool] | None = None) -> hybrid.SearchOutcome:
        """`still_wanted`: asked while the search waits for a search slot; once it says False, the search gives
        up its turn (ClientGone)."""
        collection = self.collection(name)
        adapter = self.adapter_for(collection)
        # A lexical search needs the query's vector for the relevance filter, and for the probability every hit
        # carries (API.md) even when the filter is off.
        wants_vector = request.mode != "lexical" or adapter is not None
        query = self.queries.encode(request.query) if wants_vector else None
        # The encode stays outside the slot: the encoder shares its forward passes among the queries waiting for it,
        # and a query encodes while others search.
        with self.search_slots.held(still_wanted):
            return hybrid.search(collection, request, query, adapter, self.search_defaults(adapter), self._beside)

    def search_defaults(self, adapter: CosineAdapter | None) -> SearchDefaults:
        """The settings' fusion defaults, or the fusion fitted with the collection's own adapter."""
        defaults = self.settings.search_defaults
        return defaults if adapter is None or not adapter.fusion else replace(defaults, **adapter.fusion)

    # --- relevance --------------------------------------------------------------------------

    def check_judgments(self, name: str, examples: Sequence[TrainingExample]) -> None:
        """Fails (InvalidInput naming them) when a judged id is not in the collection, or is judged both ways
        for one query, or when too few queries name a relevant document: before any work."""
        merged = merge_judgments(examples)
        resolve_ids(self.collection(name), merged)
        check_enough_relevant(merged)

    def train_relevance(self, name: str, examples: Sequence[TrainingExample], recall_target: float,
                        family: Family | None, *, progress: Callable[[float], None] | None = None) -> CosineAdapter:
        """Fits this collection's own adapter on its own candidates, warm-started from the default (or the
        fallback), keeps whichever of that fine-tuned adapter and the default (its own thresholds, or recalibrated
        on these judgments) does better out of sample, fits its fusion the same way (app/engine/own_adapter.py),
        and swaps them in; searches go on. The choices are in info["selection"] and info["fusion_selection"].

        `progress`, if given, hears the fraction done (0 to 1) at coarse steps; an exception it raises ends the
        training, and before the swap it leaves the current adapter in place."""
        collection = self.collection(name)
        base = self.default_adapter or self.fallback_adapter
        adapter = fit_own_adapter(collection, self.embedder, self.settings, base, examples, recall_target, family,
                                  progress or (lambda fraction: None))
        # Kept as it is, the default is not copied: the collection goes on following it (a later default reaches it).
        collection.set_adapter(None if kept_as_it_serves(adapter, base) else adapter)
        return adapter

    def reset_relevance(self, name: str) -> None:
        """Removes the collection's own adapter (and the fusion fitted with it): the default serves it again, on
        every replica. A training running on it (on any replica) is a 409: it would swap its adapter in after."""
        collection = self.collection(name)
        running = self.training_jobs.running_anywhere(name)  # on any replica (QA: through another, it was undone)
        if running is not None:
            raise TrainingInProgress(f"collection {name!r} is training (job {running}); reset it once the job "
                                     "has finished", [{"job": running}])
        collection.set_adapter(None)

    # --- lifecycle --------------------------------------------------------------------------

    def snapshot_due(self) -> None:
        self._snapshot([collection for collection in self.list_collections()
                        if collection.writes_since_snapshot >= self.settings.snapshot_every_writes
                        or collection.snapshot_soon], "periodic")

    @staticmethod
    def _snapshot(collections: list[Collection], when: str) -> None:
        """Snapshots each collection; one that cannot be written (a full disk, say) is logged in one line, not a
        traceback at every check, and the others are still tried."""
        for collection in collections:
            try:
                collection.snapshot()
            except OSError as exc:
                log.error("collection %s: no %s snapshot (%s); the store holds every write, and the next start "
                          "replays them", collection.name, when, exc)

    def close(self) -> None:
        """Ends the training jobs, snapshots every collection that changed and closes the store."""
        if self.follower is not None:
            self.follower.stop()
        self.training_jobs.stop()
        self.queries.close()
        self.documents.close()
        for collection in self.list_collections():
            collection.stop_upkeep()
        self._snapshot([collection for collection in self.list_collections() if collection.writes_since_snapshot],
                       "shutdown")
        self._beside.shutdown()
        self.store.close()
