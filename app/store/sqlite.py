"""The embedded document store (SQLite, WAL): the source of truth that every index is rebuilt from.

Labels, sequence numbers and tombstones work as app/store/base.py describes.
"""

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.types import FilterCondition
from app.errors import CollectionNotFound, DataDirUnusable
from app.store.base import (
    CollectionRecord,
    DocumentStore,
    EncodedText,
    NewDocument,
    ReplacedVectors,
    StoredRow,
    WriteResult,
    checked_vectors,
)
from app.store.filters import METADATA_VALUES_FILL, METADATA_VALUES_SCHEMA, condition_queries
from app.store.sqlite_transaction import Transaction

# `encoded_labels` holds the labels of documents written with NewDocument.encoded. A table of its own rather than a
# column of `documents`, so that this service's earlier versions, which insert a document's seven values by
# position, can still write the file. Labels are never reused, so a flag left on the label of a document that such a
# version replaced names no live document and is never read.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, uid TEXT NOT NULL, dimension INTEGER NOT NULL, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL, id TEXT NOT NULL, label INTEGER NOT NULL UNIQUE,
    title TEXT, text TEXT NOT NULL, metadata TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (collection, id));
CREATE INDEX IF NOT EXISTS documents_by_label ON documents (collection, label);
CREATE TABLE IF NOT EXISTS tombstones (collection TEXT NOT NULL, label INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_by_seq ON tombstones (collection, seq);
CREATE TABLE IF NOT EXISTS adapters (collection TEXT PRIMARY KEY, meta TEXT NOT NULL, weights BLOB NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('seq', 0);
CREATE TABLE IF NOT EXISTS encoded_labels (label INTEGER PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS encoded_labels_delete AFTER DELETE ON documents BEGIN
    DELETE FROM encoded_labels WHERE label = OLD.label;
END;
""" + METADATA_VALUES_SCHEMA


class SqliteStore:
    """SQLite document store. Writes are serialised; each thread reads through its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        try:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._writer.commit()
            self._fill_metadata_values()
        except (sqlite3.Error, OSError) as exc:  # a traceback, not naming the file, at start (QA)
            raise DataDirUnusable(f"the store {path} cannot be opened for reading and writing: {exc} (its "
                                  "permissions, or a read-only or failing disk?)") from exc

    def _fill_metadata_values(self) -> None:
        """Flattens every document's metadata into `metadata_values` once: a store written before the table
        existed (its triggers keep it in step with `documents` from then on). Checked first without the write lock
        or a write transaction: once filled, a start takes neither."""
        def filled() -> bool:
            return self._writer.execute("SELECT 1 FROM meta WHERE key = 'metadata_values'").fetchone() is not None

        if filled():
            return
        with self._write_lock, self._transaction():
            if not filled():  # another process may have filled it meanwhile
                for statement in METADATA_VALUES_FILL:
                    self._writer.execute(statement)
                self._writer.execute("INSERT INTO meta VALUES ('metadata_values', 1)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives power loss too, not only a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    def identity(self) -> str:
        return ""  # the embedded store lives in the data dir beside its snapshots

    # --- collections ------------------------------------------------------------------------

    def collections(self) -> list[CollectionRecord]:
        rows = self._reader().execute("SELECT name, uid, dimension, settings FROM collections ORDER BY name")
        return [CollectionRecord(n, u, d, json.loads(s)) for n, u, d, s in rows]

    def create_collection(self, name: str, dimension: int, settings: dict[str, Any]) -> CollectionRecord:
        record = CollectionRecord(name, uuid.uuid4().hex, dimension, settings)
        # In a transaction of its own like every other write, so a full disk is a 507, not an unhandled 500 (QA)
        with self._write_lock, self._transaction():
            self._writer.execute(
                "INSERT INTO collections VALUES (?, ?, ?, ?)", (name, record.uid, dimension, json.dumps(settings))
            )
        return record

    def drop_collection(self, name: str) -> None:
        with self._write_lock, self._transaction():
            for table in ("collections", "documents", "tombstones", "adapters"):
                column = "name" if table == "collections" else "collection"
                self._writer.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))

    def replace_vectors(self, collection: str, batches: Iterable[tuple[Sequence[int], np.ndarray]],
                        dimension: int, settings: dict[str, Any]) -> ReplacedVectors:
        """Every vector and the collection's settings in one transaction (see DocumentStore.replace_vectors)."""
        written = brought = 0
        with self._write_lock, self._transaction():
            for labels, vectors in batches:
                self._writer.executemany(
                    "UPDATE documents SET vector = ? WHERE collection = ? AND label = ?",
                    [(v.tobytes(), collection, int(label))
                     for label, v in zip(labels, checked_vectors(labels, vectors, dimension), strict=True)])
                written += len(labels)
                # A label already there was the service's encoding; one inserted now had been the client's.
                marked = self._writer.executemany(
                    "INSERT OR IGNORE INTO encoded_labels SELECT label FROM documents WHERE collection = ? AND "
                    "label = ?", [(collection, int(label)) for label in labels])
                brought += marked.rowcount
            updated = self._writer.execute("UPDATE collections SET dimension = ?, settings = ? WHERE name = ?",
                                           (dimension, json.dumps(settings), collection))
            if updated.rowcount != 1:
                raise CollectionNotFound(f"collection {collection!r} does not exist")
        return ReplacedVectors(written, brought)

    def count(self, collection: str) -> int:
        row = self._reader().execute("SELECT count(*) FROM documents WHERE collection = ?", (collection,))
        return int(row.fetchone()[0])

    # --- writes -----------------------------------------------------------------------------

    def _transaction(self) -> Transaction:
        return Transaction(self._writer)

    def _next_seq(self, n: int) -> int:
        """Reserves n sequence numbers inside the open transaction; returns the first."""
        (last,) = self._writer.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        self._writer.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (last + n,))
        return int(last) + 1

    def upsert(self, collection: str, docs: Sequence[NewDocument]) -> WriteResult:
        """Writes the whole batch in one transaction: committed (durably) or not at all."""
        with self._write_lock, self._transaction():
            first = self._next_seq(len(docs))
            new_labels, old_labels = [], []
            for offset, doc in enumerate(docs):
                label = first + offset
                old = self._writer.execute(
                    "SELECT label FROM documents WHERE collection = ? AND id = ?", (collection, doc.id)
                ).fetchone()
                if old is not None:
                    old_labels.append(int(old[0]))
                    self._writer.execute("INSERT INTO tombstones VALUES (?, ?, ?)", (collection, old[0], label))
                    # A replacement fires no delete trigger (recursive_triggers is off).
                    self._writer.execute("DELETE FROM encoded_labels WHERE label = ?", (old[0],))
                self._writer.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (collection, doc.id, label, doc.title, doc.text, json.dumps(doc.metadata),
                     np.ascontiguousarray(doc.vector, dtype=np.float32).tobytes()),
                )
                if doc.encoded:
                    self._writer.execute("INSERT INTO encoded_labels VALUES (?)", (label,))
                new_labels.append(label)
        return WriteResult(new_labels, old_labels, first + len(docs) - 1)

    def delete(self, collection: str, doc_id: str) -> int | None:
        """Deletes one document; returns its label, or None when there was none."""
        return self.delete_many(collection, [doc_id]).get(doc_id)

    def delete_many(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        with self._write_lock, self._transaction():
            found: dict[str, int] = {}
            for start in range(0, len(ids), 500):  # SQLite bounds a statement's parameters (`_rows_in`)
                chunk, marks = list(ids[start:start + 500]), ",".join("?" * len(ids[start:start + 500]))
                found.update(self._writer.execute(  # (no RETURNING: SQLite before 3.35 lacks it)
                    f"SELECT id, label FROM documents WHERE collection = ? AND id IN ({marks})", (collection, *chunk)))
                self._writer.execute(f"DELETE FROM documents WHERE collection = ? AND id IN ({marks})",
                                     (collection, *chunk))
            if found:
                seq = self._next_seq(1)
                self._writer.executemany("INSERT INTO tombstones VALUES (?, ?, ?)",
                                         [(collection, label, seq) for label in found.values()])
        return {doc_id: int(label) for doc_id, label in found.items()}

    def prune_tombstones(self, collection: str, up_to_seq: int) -> None:
        """Tombstones covered by an index snapshot are no longer needed for replay."""
        with self._write_lock:
            self._writer.execute("DELETE FROM tombstones WHERE collection = ? AND seq <= ?", (collection, up_to_seq))

    def save_adapter(self, collection: str, meta: str | None, weights: bytes | None) -> int:
        """Stores (None: removes) a collection's trained adapter; the embedded store has no replicas to tell, so
        the sequence returned is the current one."""
        with self._write_lock, self._transaction():
            if self._writer.execute("SELECT 1 FROM collections WHERE name = ?", (collection,)).fetchone() is None:
                raise CollectionNotFound(f"collection {collection!r} was deleted")
            self._writer.execute("DELETE FROM adapters WHERE collection = ?", (collection,))
            if meta is not None and weights is not None:
                self._writer.execute("INSERT INTO adapters VALUES (?, ?, ?)", (collection, meta, weights))
        return self.seq()

    # --- reads ------------------------------------------------------------------------------

    def load_adapter(self, collection: str) -> tuple[str, bytes] | None:
        row = self._reader().execute("SELECT meta, weights FROM adapters WHERE collection = ?",
                                     (collection,)).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def seq(self) -> int:
        return int(self._reader().execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    def get(self, collection: str, doc_id: str) -> StoredRow | None:
        row = self._reader().execute(
            "SELECT label, id, text, title, metadata FROM documents WHERE collection = ? AND id = ?",
            (collection, doc_id),
        ).fetchone()
        return None if row is None else StoredRow(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def list_rows(self, collection: str, after: str | None, limit: int) -> list[StoredRow]:
        rows = self._reader().execute(
            "SELECT label, id, text, title, metadata FROM documents WHERE collection = ? AND id > ? ORDER BY id "
            "LIMIT ?", (collection, "" if after is None else after, limit)).fetchall()
        return [StoredRow(row[0], row[1], row[2], row[3], json.loads(row[4])) for row in rows]

    def _rows_in(self, select: str, collection: str, keys: Sequence[Any]) -> Iterator[Any]:
        """The rows of `select`, whose `{marks}` stands for the keys of one chunk (SQLite bounds a statement's
        parameters; 500 stays far below every build's limit) and whose first `?` is the collection."""
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            yield from self._reader().execute(select.format(marks=",".join("?" * len(chunk))), (collection, *chunk))

    def encoded_texts(self, collection: str, ids: Sequence[str]) -> dict[str, EncodedText]:
        rows = self._rows_in("SELECT d.id, d.title, d.text, d.vector FROM documents AS d JOIN encoded_labels AS e "
                             "ON e.label = d.label WHERE d.collection = ? AND d.id IN ({marks})", collection, ids)
        return {doc_id: EncodedText(title, text, np.frombuffer(blob, dtype=np.float32))
                for doc_id, title, text, blob in rows}

    def get_by_labels(self, collection: str, labels: Sequence[int]) -> dict[int, StoredRow]:
        rows = self._rows_in("SELECT label, id, text, title, metadata FROM documents "
                             "WHERE collection = ? AND label IN ({marks})", collection, [int(x) for x in labels])
        return {label: StoredRow(label, doc_id, text, title, json.loads(metadata))
                for label, doc_id, text, title, metadata in rows}

    def labels_for_ids(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        rows = self._rows_in("SELECT id, label FROM documents WHERE collection = ? AND id IN ({marks})",
                             collection, ids)
        return {doc_id: int(label) for doc_id, label in rows}

    def filter_labels(self, collection: str, conditions: Mapping[str, FilterCondition]) -> np.ndarray:
        """Sorted labels of the documents whose metadata matches every condition: one indexed lookup a
        condition, intersected here (at 100K documents 2-20 ms, where a json_each over every document's
        metadata took 200-300 ms)."""
        reader = self._reader()
        if not conditions:
            rows = reader.execute("SELECT label FROM documents WHERE collection = ? ORDER BY label", (collection,))
            return np.fromiter((r[0] for r in rows), dtype=np.int64)
        found: np.ndarray | None = None
        reader.execute("BEGIN")  # one read transaction: every condition sees the same committed documents
        try:
            for sql, params in condition_queries(collection, conditions):
                labels = np.unique(np.fromiter((r[0] for r in reader.execute(sql, params)), dtype=np.int64))
                found = labels if found is None else np.intersect1d(found, labels, assume_unique=True)
                if not len(found):
                    break
        finally:
            reader.execute("COMMIT")
        return np.zeros(0, np.int64) if found is None else found

    def iter_rows(self, collection: str, after_seq: int = 0, chunk: int = 2048
                  ) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
        """Documents written after `after_seq`, in chunks of (rows, vectors)."""
        last = after_seq
        while True:
            rows = self._reader().execute(
                "SELECT label, id, text, title, vector FROM documents WHERE collection = ? AND label > ? "
                "ORDER BY label LIMIT ?", (collection, last, chunk)).fetchall()
            if not rows:
                return
            docs = [StoredRow(r[0], r[1], r[2], r[3]) for r in rows]
            vectors = np.stack([np.frombuffer(r[4], dtype=np.float32) for r in rows])
            yield docs, vectors
            last = rows[-1][0]

    def tombstones_after(self, collection: str, after_seq: int) -> list[int]:
        rows = self._reader().execute(
            "SELECT label FROM tombstones WHERE collection = ? AND seq > ?", (collection, after_seq))
        return [int(r[0]) for r in rows]


_satisfies_protocol: type[DocumentStore] = SqliteStore  # mypy checks SqliteStore against the Protocol
