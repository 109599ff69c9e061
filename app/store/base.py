"""The document store's interface: what the engine needs from a backend (SQLite today, PostgreSQL next).

A backend keeps, per collection, documents keyed by id, each written with a fresh integer label taken from
one monotonically increasing sequence; that label is also the document's key in the lexical and dense
indexes. Replacing or deleting a document records a tombstone for its old label at the new sequence number,
so an index snapshot covering sequence S is brought up to date by replaying the documents and tombstones with
sequence > S. Every write is atomic and durable when it returns.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from app.engine.types import FilterCondition


@dataclass
class NewDocument:
    id: str
    text: str
    title: str | None
    metadata: dict[str, Any]
    vector: np.ndarray  # float32, unit length
    # The vector is the service's own encoding of this title and text (not one the client brought), so a later
    # upsert of the same title and text may take it again instead of encoding it anew.
    encoded: bool = False


@dataclass
class EncodedText:
    """A stored document whose vector the service's encoder made from exactly this title and text."""
    title: str | None
    text: str
    vector: np.ndarray


@dataclass
class StoredRow:
    label: int
    id: str
    text: str
    title: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReplacedVectors:
    written: int
    brought: int  # of those, how many replaced a vector the client had brought rather than the service's encoding


@dataclass
class CollectionRecord:
    name: str
    uid: str
    dimension: int
    settings: dict[str, Any]


@dataclass
class WriteResult:
    new_labels: list[int]
    old_labels: list[int]  # labels that no longer hold a live document
    seq: int


def checked_vectors(labels: Sequence[int], vectors: np.ndarray, dimension: int) -> np.ndarray:
    """A `replace_vectors` batch's vectors as float32 rows, or ValueError when they are not one `dimension`-d
    vector per label (every backend refuses the same batches)."""
    array = np.asarray(vectors)
    if array.shape != (len(labels), dimension):
        raise ValueError(f"vectors of shape {array.shape} for {len(labels)} {dimension}-d documents")
    return np.ascontiguousarray(array, dtype=np.float32)


class DocumentStore(Protocol):
    """Safe to call from many threads at once; writes are serialised by the backend."""

    def close(self) -> None: ...

    def identity(self) -> str:
        """Names the database an index snapshot was made against ("" for the embedded one, which lives beside
        its snapshots): a snapshot of another database's collection is rebuilt, not served."""
        ...

    # collections
    def collections(self) -> list[CollectionRecord]: ...
    def create_collection(self, name: str, dimension: int, settings: dict[str, Any]) -> CollectionRecord: ...
    def drop_collection(self, name: str) -> None: ...
    def count(self, collection: str) -> int: ...

    def replace_vectors(self, collection: str, batches: Iterable[tuple[Sequence[int], np.ndarray]],
                        dimension: int, settings: dict[str, Any]) -> ReplacedVectors:
        """Overwrites the vectors of existing documents (by label, from each batch as it comes), then the
        collection's dimension and settings, all in ONE transaction: a crash or an exception from `batches` leaves
        the old vectors and settings, never a mix. Labels and sequence numbers do not change, so the caller
        discards the collection's index snapshots first. The new vectors are the service's encoding of the stored
        texts (`reencode`), so each is marked `NewDocument.encoded` from then on. Returns how many were written and
        how many of those replaced a vector the client had brought. ValueError for a batch that is not one
        `dimension`-d vector per label (`checked_vectors`), CollectionNotFound for an unknown collection; either way
        nothing is written."""
        ...

    # writes
    def upsert(self, collection: str, docs: Sequence[NewDocument]) -> WriteResult:
        """The whole batch in one transaction: committed (durably) or not at all."""
        ...

    def delete(self, collection: str, doc_id: str) -> int | None:
        """Deletes one document; returns its label, or None when there was none."""
        ...

    def delete_many(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        """Deletes the documents of `ids` that exist, in ONE transaction (committed durably, or not at all);
        returns the label of each one deleted, by id."""
        ...

    def prune_tombstones(self, collection: str, up_to_seq: int) -> None:
        """Tombstones covered by an index snapshot are no longer needed for replay."""
        ...

    # reads
    def seq(self) -> int:
        """The last sequence number written."""
        ...

    def get(self, collection: str, doc_id: str) -> StoredRow | None: ...

    def encoded_texts(self, collection: str, ids: Sequence[str]) -> dict[str, EncodedText]:
        """Of these ids, the stored documents written with `encoded` set, by id (the others are left out)."""
        ...

    def get_by_labels(self, collection: str, labels: Sequence[int]) -> dict[int, StoredRow]: ...

    def list_rows(self, collection: str, after: str | None, limit: int) -> list[StoredRow]:
        """Up to `limit` documents in id order (the store's collation), those after the id `after` (from the
        first without): a page of a listing that a write between pages neither repeats nor skips past."""
        ...

    def labels_for_ids(self, collection: str, ids: Sequence[str]) -> dict[str, int]: ...

    def filter_labels(self, collection: str, conditions: Mapping[str, FilterCondition]) -> np.ndarray:
        """Sorted labels (int64) of the documents whose metadata matches every condition."""
        ...

    def iter_rows(self, collection: str, after_seq: int = 0, chunk: int = 2048
                  ) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
        """Documents written after `after_seq`, in label order, in chunks of (rows, float32 vectors)."""
        ...

    def tombstones_after(self, collection: str, after_seq: int) -> list[int]: ...

    # a collection's trained relevance adapter, as the bytes of its files (CosineAdapter.to_bytes)
    def save_adapter(self, collection: str, meta: str | None, weights: bytes | None) -> int:
        """Stores it durably, replacing any (None: removes it, so the default serves again); returns the
        sequence replicas load it at. CollectionNotFound for an unknown collection."""
        ...

    def load_adapter(self, collection: str) -> tuple[str, bytes] | None: ...
