"""The store a replica's collections see over PostgreSQL: writes go to the shared store of record, reads to the
replica's local mirror of what it has applied (app/store/mirror.py)."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from app.engine.types import FilterCondition
from app.store.base import (
    CollectionRecord,
    DocumentStore,
    EncodedText,
    NewDocument,
    ReplacedVectors,
    StoredRow,
    WriteResult,
)
from app.store.mirror import MirrorStore
from app.store.postgres import PostgresStore


class ReplicaStore:
    """Reads answer from the mirror, so a replica serves searches and documents while PostgreSQL is down, and
    what a search ranks is what it reads (both are what this replica applied). Writes need PostgreSQL."""

    def __init__(self, shared: PostgresStore, mirror: MirrorStore) -> None:
        self.shared = shared
        self.mirror = mirror

    def close(self) -> None:
        self.shared.close()
        self.mirror.close()

    def identity(self) -> str:
        return self.shared.identity()

    # collections and writes: the shared store
    def collections(self) -> list[CollectionRecord]:
        return self.shared.collections()

    def create_collection(self, name: str, dimension: int, settings: dict[str, Any]) -> CollectionRecord:
        return self.shared.create_collection(name, dimension, settings)

    def drop_collection(self, name: str) -> None:
        self.shared.drop_collection(name)

    def replace_vectors(self, collection: str, batches: Iterable[tuple[Sequence[int], np.ndarray]],
                        dimension: int, settings: dict[str, Any]) -> ReplacedVectors:
        # Rewritten in place, the vectors would take no new sequence numbers: no other replica would see them.
        raise NotImplementedError("re-encoding in place needs the embedded store; over a shared store, ingest "
                                  "the documents into a new collection with the new encoder")

    def upsert(self, collection: str, docs: Sequence[NewDocument]) -> WriteResult:
        return self.shared.upsert(collection, docs)

    def delete(self, collection: str, doc_id: str) -> int | None:
        return self.shared.delete(collection, doc_id)

    def delete_many(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        return self.shared.delete_many(collection, ids)

    def prune_tombstones(self, collection: str, up_to_seq: int) -> None:
        self.shared.prune_tombstones(collection, up_to_seq)

    def seq(self) -> int:
        return self.shared.seq()

    def save_adapter(self, collection: str, meta: str | None, weights: bytes | None) -> int:
        return self.shared.save_adapter(collection, meta, weights)

    def load_adapter(self, collection: str) -> tuple[str, bytes] | None:
        return self.shared.load_adapter(collection)

    def iter_rows(self, collection: str, after_seq: int = 0, chunk: int = 2048
                  ) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
        return self.shared.iter_rows(collection, after_seq, chunk)

    def tombstones_after(self, collection: str, after_seq: int) -> list[int]:
        return self.shared.tombstones_after(collection, after_seq)

    def encoded_texts(self, collection: str, ids: Sequence[str]) -> dict[str, EncodedText]:
        # Asked by a write, which needs the shared store anyway; the mirror keeps no vectors.
        return self.shared.encoded_texts(collection, ids)

    # reads: the local mirror
    def count(self, collection: str) -> int:
        return self.mirror.count(collection)

    def get(self, collection: str, doc_id: str) -> StoredRow | None:
        return self.mirror.get(collection, doc_id)

    def get_by_labels(self, collection: str, labels: Sequence[int]) -> dict[int, StoredRow]:
        return self.mirror.get_by_labels(collection, labels)

    def labels_for_ids(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        return self.mirror.labels_for_ids(collection, ids)

    def list_rows(self, collection: str, after: str | None, limit: int) -> list[StoredRow]:
        return self.mirror.list_rows(collection, after, limit)

    def filter_labels(self, collection: str, conditions: Mapping[str, FilterCondition]) -> np.ndarray:
        return self.mirror.filter_labels(collection, conditions)


_satisfies_protocol: type[DocumentStore] = ReplicaStore  # mypy checks ReplicaStore against the Protocol
