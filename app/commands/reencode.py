"""`python -m app reencode`: re-encode collections' stored texts with the configured encoder, the service stopped.

Crash-safe by construction: the collection's index snapshots are discarded first (so nothing loads stale vectors),
then every new vector and the collection's new encoder are written in one store transaction (a kill mid-way leaves
the old vectors and the old encoder, which the next start rebuilds its indexes from), then the indexes are rebuilt
from the store and snapshotted, so the next start is quick.
"""

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from app.engine.collection import Collection
from app.engine.embedder import document_text
from app.engine.encoders import Encoder, recorded_encoder
from app.engine.storage import embedded_store_path, index_root, open_store
from app.errors import SearchServiceError
from app.settings import Settings
from app.store.base import CollectionRecord, DocumentStore
from app.store.lock import DataDirLock
from app.store.snapshots import SnapshotDir

log = logging.getLogger("app.reencode")
# Documents read, encoded and written at a time (and the progress bar's step).
CHUNK = 256


@dataclass
class Outcome:
    collection: str
    before: str
    after: str
    documents: int
    brought: int = 0  # documents whose own vectors (the client's) were replaced by the encoder's of their text
    skipped: bool = False
    adapter_removed: bool = False
    snapshotted: bool = False  # its rebuilt indexes written (else the service's next start rebuilds them)


class ReencodeFailed(Exception):
    """A collection's re-encoding failed on the disk or the store (a full disk): `done` holds the outcomes of the
    collections before it, and its own when its new vectors were committed before the failure."""

    def __init__(self, done: list[Outcome], collection: str, cause: BaseException) -> None:
        super().__init__(collection, cause)
        self.done, self.collection, self.cause = done, collection, cause

    def __str__(self) -> str:
        cause = getattr(self.cause, "message", None) or str(self.cause)
        if self.done and self.done[-1].collection == self.collection:
            return (f"{self.collection!r} is re-encoded in the store, but its index snapshots could not be written "
                    f"({cause}); the service's next start rebuilds them from the store")
        return (f"{self.collection!r} was not re-encoded ({cause}): it keeps its old vectors and encoder, as nothing "
                "of it was written; mend that (free space) and run reencode again for the collections not done")


def reencode(settings: Settings, names: Sequence[str] | None, encoder: Encoder | None = None,
             progress: bool = True) -> list[Outcome]:
    """Re-encodes the named collections (all when None) whose recorded encoder differs from the configured one,
    under the data directory's lock (DataDirLocked while a server holds it). KeyError for an unknown name,
    FileNotFoundError for a data directory with no store (it is not created: QA ran it in the wrong folder)."""
    if not embedded_store_path(settings).is_file():
        raise FileNotFoundError(f"no store in {settings.data_dir} (SEARCH_DATA_DIR): nothing to re-encode")
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    store = open_store(settings)
    try:
        records = {record.name: record for record in store.collections()}
        unknown = sorted(set(names or ()) - set(records))
        if unknown:
            raise KeyError(f"no collection {', '.join(map(repr, unknown))}; there are: {', '.join(sorted(records))}")
        encoder = encoder or settings.load_encoder(document_threads=settings.ingest_thread_count())
        done: list[Outcome] = []
        # Each once: a name given twice was re-encoded twice (the records are read before the first).
        for name in dict.fromkeys(names or sorted(records)):
            try:
                _reencode_one(settings, store, records[name], encoder, progress, done)
            except (SearchServiceError, OSError, sqlite3.Error) as exc:  # a full disk was a 42-line traceback (QA)
                raise ReencodeFailed(done, name, exc) from exc
        return done
    finally:
        store.close()
        lock.release()


def _reencode_one(settings: Settings, store: DocumentStore, record: CollectionRecord, encoder: Encoder,
                  progress: bool, done: list[Outcome]) -> None:
    """Re-encodes one collection; its outcome goes into `done` once its new vectors are committed (or it had
    nothing to do)."""
    before = recorded_encoder(record.settings, encoder.model_name)
    outcome = Outcome(record.name, str(before), str(encoder.identity), store.count(record.name))
    if before == encoder.identity:
        outcome.skipped = True
        done.append(outcome)
        return
    snapshots = SnapshotDir(index_root(settings) / record.uid)
    snapshots.discard()
    new_settings = {**record.settings, "encoder": encoder.identity.to_dict()}
    with tqdm(total=outcome.documents, unit="doc", desc=f"re-encoding {record.name}", disable=not progress) as bar:
        replaced = store.replace_vectors(record.name, _encoded(store, record.name, encoder, bar), encoder.dim,
                                         new_settings)
    outcome.brought = replaced.brought
    done.append(outcome)
    if before.model != encoder.model_name:
        # The collection's own relevance adapter read the old model's query embeddings.
        legacy = SnapshotDir(snapshots.root / "adapter")  # where versions before 2026-12-02 kept it
        outcome.adapter_removed = store.load_adapter(record.name) is not None or legacy.root.exists()
        store.save_adapter(record.name, None, None)
        legacy.remove()
    # The indexes rebuilt from the new vectors and snapshotted, so the service's next start loads them.
    rebuilt = replace(record, dimension=encoder.dim, settings=new_settings)
    # Its tuned ef_search is measured by the service, not here (started and cancelled, the measurement's exact
    # top-k alone cost seconds at 100K).
    rebuilt_collection = Collection.open(store, rebuilt, index_root(settings), settings.ingest_thread_count(),
                                         recall_target=settings.hnsw_recall_target, tune=False)
    rebuilt_collection.snapshot()
    outcome.snapshotted = True


def _encoded(store: DocumentStore, name: str, encoder: Encoder, bar: tqdm
             ) -> Iterator[tuple[list[int], np.ndarray]]:
    for rows, _ in store.iter_rows(name, chunk=CHUNK):
        vectors = encoder.encode_documents([document_text(row.title, row.text) for row in rows])
        yield [row.label for row in rows], vectors
        bar.update(len(rows))
