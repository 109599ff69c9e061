"""The shared document store (PostgreSQL): the store of record that any number of replicas write and follow.

Labels, sequence numbers and tombstones work as app/store/base.py describes, with one more promise that
replicas rely on: **sequence order is commit order**. Every write (documents, a collection created or
dropped, an adapter trained) takes its numbers with `UPDATE search_seq ... RETURNING` on the one counter
row, whose row lock it then holds until it commits; the next writer waits on that lock. So when a reader's
snapshot shows the counter at H, every change numbered up to H is committed and visible in that snapshot,
and no change numbered H or below can commit later: a follower that reads "after my last sequence, up to
H" in one REPEATABLE READ snapshot never skips a transaction (tests/store/test_feed.py races writers to
show it). The price is that writes to the whole database are serialised from their numbering to their
commit; the slow part of an ingest, encoding, happens before that.

Each write also sends NOTIFY search_changes (delivered at commit) so followers wake at once.
"""

import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from app.engine.types import FilterCondition
from app.errors import CollectionConflict, CollectionNotFound, InvalidInput, StoreUnavailable
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
from app.store.filters import compile_jsonb_filter
from app.store.jsonb import metadata_json
from app.store.postgres_feed import (
    CHANNEL,
    Connections,
    FeedView,
    Listener,
    collection_states,
    open_pool,
    stored_row,
    why_unreachable,
)
from app.store.postgres_jobs import JobBoardTables
from app.store.postgres_schema import ensure_schema

log = logging.getLogger("app.store.postgres")


_DOCUMENT_TYPES = ["text", "text", "int8", "text", "text", "jsonb", "bytea", "bool"]


def _already_json(text: str) -> str:
    """Metadata is serialised before the transaction (so a TypeError fails the batch before it takes the lock);
    COPY then takes that text as it is."""
    return text


class PostgresStore(JobBoardTables):
    """PostgreSQL document store over a psycopg connection pool; safe to share between threads. The training
    jobs' board is its mixin's (app/store/postgres_jobs.py)."""

    def __init__(self, url: str, *, tombstone_retention: int = 0, timeout: float = 5.0, answer_seconds: float = 60.0,
                 pool_size: int = 8) -> None:
        """`tombstone_retention`: `prune_tombstones` keeps the tombstones of this many latest sequences, so
        replicas that are that far behind can still catch up without a rebuild. `timeout`: how long a call
        waits for a connection before the store counts as unreachable. `answer_seconds`: how long a connection
        waits for each answer (AnsweringConnection) before the store counts as unreachable."""
        self.url = url
        self.tombstone_retention = tombstone_retention
        self.timeout = timeout
        self.answer_seconds = answer_seconds
        self._pool = open_pool(url, timeout, answer_seconds, pool_size)
        self._connections = Connections(self._pool)
        self._identity: str | None = None
        self._identity_lock = threading.Lock()
        try:
            with self._connections.connection() as conn:
                ensure_schema(conn)
        except StoreUnavailable as exc:
            self._pool.close()
            # The pool says only that no connection came in time; its reasons went to its own warnings (QA).
            raise StoreUnavailable(f"{exc.message} ({why_unreachable(url, timeout)})", exc.details) from None
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def identity(self) -> str:
        """A random id fixed when the schema was created: a snapshot made against another database is refused."""
        with self._identity_lock:
            if self._identity is None:
                with self._connections.connection() as conn:
                    row = conn.execute("SELECT value FROM search_meta WHERE key = 'identity'").fetchone()
                self._identity = str(row[0]) if row else ""
            return self._identity

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction, committed on leaving (rolled back on an exception), with errors mapped."""
        with self._connections.connection() as conn, conn.transaction():
            yield conn

    @staticmethod
    def _take_seq(conn: psycopg.Connection[Any], n: int) -> int:
        """Reserves n sequence numbers and holds the counter's row lock until commit (the module docstring
        says why); returns the last; announces it to followers at commit."""
        row = conn.execute("UPDATE search_seq SET value = value + %s RETURNING value", (n,)).fetchone()
        assert row is not None
        last = int(row[0])
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))
        return last

    # --- collections ------------------------------------------------------------------------

    def collections(self) -> list[CollectionRecord]:
        with self._connections.connection() as conn:
            return [state.record for state in collection_states(conn)]

    def create_collection(self, name: str, dimension: int, settings: dict[str, Any]) -> CollectionRecord:
        with self._write() as conn:
            # Every write takes the counter first: one lock order, so writers never deadlock on each other.
            self._take_seq(conn, 1)
            row = conn.execute(
                "INSERT INTO search_collections (name, uid, dimension, settings) "
                "VALUES (%s, replace(gen_random_uuid()::text, '-', ''), %s, %s::jsonb) "
                "ON CONFLICT (name) DO NOTHING RETURNING uid", (name, dimension, json.dumps(settings))).fetchone()
            if row is None:
                # Another replica created it since this one last caught up.
                raise CollectionConflict(f"collection {name!r} was just created through another replica; retry")
        return CollectionRecord(name, str(row[0]), dimension, settings)

    def drop_collection(self, name: str) -> None:
        with self._write() as conn:
            self._take_seq(conn, 1)
            for table, column in (("search_collections", "name"), ("search_documents", "collection"),
                                  ("search_tombstones", "collection")):
                conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table),
                                                                          sql.Identifier(column)), (name,))

    def count(self, collection: str) -> int:
        with self._connections.connection() as conn:
            row = conn.execute("SELECT count(*) FROM search_documents WHERE collection = %s", (collection,))
            return int(row.fetchone()[0])  # type: ignore[index]

    # --- writes -----------------------------------------------------------------------------

    def upsert(self, collection: str, docs: Sequence[NewDocument]) -> WriteResult:
        """The whole batch in one transaction: committed or not at all. Everything that can fail on the input
        is prepared before the transaction, which then holds the sequence lock only for the inserts."""
        prepared = [(doc.id, doc.title, doc.text, Jsonb(metadata_json(doc.metadata), dumps=_already_json),
                     np.ascontiguousarray(doc.vector, dtype=np.float32).tobytes(), doc.encoded) for doc in docs]
        try:
            with self._write() as conn:
                last = self._take_seq(conn, len(docs))
                _mark_changed(conn, collection, last)
                first = last - len(docs) + 1
                # Looked up under the sequence lock, so no other writer replaces these ids meanwhile.
                current = dict(conn.execute(
                    "SELECT id, label FROM search_documents WHERE collection = %s AND id = ANY(%s)",
                    (collection, [doc.id for doc in docs])).fetchall())
                replaced = set(current)
                new_labels, old_labels, tombstones, final = [], [], [], {}
                for offset, (doc_id, *fields) in enumerate(prepared):
                    label = first + offset
                    if doc_id in current:
                        old_labels.append(int(current[doc_id]))
                        tombstones.append((collection, current[doc_id], label))
                    current[doc_id] = label
                    final[doc_id] = (collection, doc_id, label, *fields)
                    new_labels.append(label)
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO search_tombstones VALUES (%s, %s, %s)", tombstones)
                    # Replaced rows out, then every row in by COPY: several times faster than upserting row by row.
                    cur.execute("DELETE FROM search_documents WHERE collection = %s AND id = ANY(%s)",
                                (collection, [doc_id for doc_id in final if doc_id in replaced]))
                    with cur.copy("COPY search_documents (collection, id, label, title, text, metadata, vector, "
                                  "encoded) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(_DOCUMENT_TYPES)
                        for row in final.values():
                            copy.write_row(row)
        except psycopg.DataError as exc:  # e.g. a NUL character, which PostgreSQL's text cannot hold
            raise InvalidInput(f"the store refused the batch: {str(exc).strip()}") from None
        return WriteResult(new_labels, old_labels, last)

    def delete(self, collection: str, doc_id: str) -> int | None:
        return self.delete_many(collection, [doc_id]).get(doc_id)

    def delete_many(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._write() as conn:
            # The lock first, then the look-up: no other writer can change these ids in between.
            seq = self._take_seq(conn, 1)
            _mark_changed(conn, collection, seq)
            found = {doc_id: int(label) for doc_id, label in conn.execute(
                "DELETE FROM search_documents WHERE collection = %s AND id = ANY(%s) RETURNING id, label",
                (collection, list(ids))).fetchall()}
            if not found:
                raise psycopg.Rollback()  # nothing to delete: give the sequence number back
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO search_tombstones VALUES (%s, %s, %s)",
                                [(collection, label, seq) for label in found.values()])
        return found

    def replace_vectors(self, collection: str, batches: Iterable[tuple[Sequence[int], np.ndarray]],
                        dimension: int, settings: dict[str, Any]) -> ReplacedVectors:
        """Every vector and the settings in one transaction (DocumentStore.replace_vectors). No sequence is taken,
        so followers do not see it: `reencode` refuses a shared store and this serves the store contract only."""
        written = brought = 0
        with self._write() as conn:
            for labels, vectors in batches:
                rows = [(int(label), vector.tobytes())
                        for label, vector in zip(labels, checked_vectors(labels, vectors, dimension), strict=True)]
                row = conn.execute("SELECT count(*) FROM search_documents WHERE collection = %s AND label = ANY(%s) "
                                   "AND NOT encoded", (collection, [label for label, _ in rows])).fetchone()
                brought += int(row[0])  # type: ignore[index]
                with conn.cursor() as cur:
                    cur.executemany("UPDATE search_documents SET vector = %s, encoded = true WHERE collection = %s "
                                    "AND label = %s", [(vector, collection, label) for label, vector in rows])
                written += len(rows)
            done = conn.execute("UPDATE search_collections SET dimension = %s, settings = %s::jsonb WHERE name = %s",
                                (dimension, json.dumps(settings), collection))
            if done.rowcount == 0:
                raise CollectionNotFound(f"collection {collection!r} does not exist")
        return ReplacedVectors(written, brought)

    def prune_tombstones(self, collection: str, up_to_seq: int) -> None:
        """Drops the tombstones up to `up_to_seq`, less the retention window that replicas behind may still need,
        and records how far it went, so that a replica behind that point rebuilds instead of missing deletes."""
        with self._write() as conn:
            row = conn.execute("SELECT value FROM search_seq").fetchone()
            through = min(up_to_seq, int(row[0]) - self.tombstone_retention)  # type: ignore[index]
            if through <= 0:
                return
            conn.execute("DELETE FROM search_tombstones WHERE collection = %s AND seq <= %s", (collection, through))
            conn.execute("UPDATE search_collections SET pruned_through = greatest(pruned_through, %s) "
                         "WHERE name = %s", (through, collection))

    def save_adapter(self, collection: str, meta: str | None, weights: bytes | None) -> int:
        """Stores a collection's trained adapter (replacing any; None: removes it, so the default serves again);
        returns the sequence followers load it at."""
        with self._write() as conn:
            seq = self._take_seq(conn, 1)
            done = conn.execute("UPDATE search_collections SET adapter_seq = %s, adapter_meta = %s, "
                                "adapter_weights = %s WHERE name = %s", (seq, meta, weights, collection))
            if done.rowcount == 0:
                raise CollectionNotFound(f"collection {collection!r} was deleted")
        return seq

    # --- reads ------------------------------------------------------------------------------

    def seq(self) -> int:
        with self._connections.connection() as conn:
            return int(conn.execute("SELECT value FROM search_seq").fetchone()[0])  # type: ignore[index]

    def load_adapter(self, collection: str) -> tuple[str, bytes] | None:
        with self._connections.connection() as conn:
            row = conn.execute("SELECT adapter_meta, adapter_weights FROM search_collections "
                               "WHERE name = %s AND adapter_meta IS NOT NULL", (collection,)).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def get(self, collection: str, doc_id: str) -> StoredRow | None:
        with self._connections.connection() as conn:
            row = conn.execute("SELECT label, id, text, title, metadata FROM search_documents "
                               "WHERE collection = %s AND id = %s", (collection, doc_id)).fetchone()
        return None if row is None else stored_row(*row)

    def list_rows(self, collection: str, after: str | None, limit: int) -> list[StoredRow]:
        with self._connections.connection() as conn:
            rows = conn.execute("SELECT label, id, text, title, metadata FROM search_documents "
                                "WHERE collection = %s AND id > %s ORDER BY id LIMIT %s",
                                (collection, "" if after is None else after, limit)).fetchall()
        return [stored_row(*row) for row in rows]

    def encoded_texts(self, collection: str, ids: Sequence[str]) -> dict[str, EncodedText]:
        with self._connections.connection() as conn:
            rows = conn.execute("SELECT id, title, text, vector FROM search_documents "
                                "WHERE collection = %s AND id = ANY(%s) AND encoded",
                                (collection, list(ids))).fetchall()
        return {doc_id: EncodedText(title, text, np.frombuffer(blob, dtype=np.float32))
                for doc_id, title, text, blob in rows}

    def get_by_labels(self, collection: str, labels: Sequence[int]) -> dict[int, StoredRow]:
        with self._connections.connection() as conn:
            rows = conn.execute("SELECT label, id, text, title, metadata FROM search_documents "
                                "WHERE collection = %s AND label = ANY(%s)",
                                (collection, [int(x) for x in labels])).fetchall()
        return {int(r[0]): stored_row(*r) for r in rows}

    def labels_for_ids(self, collection: str, ids: Sequence[str]) -> dict[str, int]:
        with self._connections.connection() as conn:
            rows = conn.execute("SELECT id, label FROM search_documents WHERE collection = %s AND id = ANY(%s)",
                                (collection, list(ids))).fetchall()
        return {doc_id: int(label) for doc_id, label in rows}

    def filter_labels(self, collection: str, conditions: Mapping[str, FilterCondition]) -> np.ndarray:
        where, params = compile_jsonb_filter(conditions)
        with self._connections.connection() as conn:
            rows = conn.execute(f"SELECT label FROM search_documents WHERE collection = %s AND {where} "
                                "ORDER BY label", (collection, *params)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_rows(self, collection: str, after_seq: int = 0, chunk: int = 2048
                  ) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
        with self.feed() as view:
            yield from view.iter_rows(collection, after_seq, chunk)

    def tombstones_after(self, collection: str, after_seq: int) -> list[int]:
        with self.feed() as view:
            return [label for label, _ in view.tombstones_after(collection, after_seq)]

    # --- following --------------------------------------------------------------------------

    @contextmanager
    def feed(self) -> Iterator["FeedView"]:
        """A read-only REPEATABLE READ snapshot of the store: its `seq()` is H, and it shows exactly the
        changes numbered up to H (see the module docstring)."""
        with self._connections.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield FeedView(conn)
            conn.rollback()

    def listener(self) -> "Listener":
        return Listener(self.url, self.timeout, self.answer_seconds, self._connections)


def _mark_changed(conn: psycopg.Connection[Any], collection: str, seq: int) -> None:
    """Records the collection's last write, inside the write's transaction; CollectionNotFound when another
    replica has deleted it meanwhile (its documents would otherwise outlive it)."""
    done = conn.execute("UPDATE search_collections SET changed_seq = %s WHERE name = %s", (seq, collection))
    if done.rowcount == 0:
        raise CollectionNotFound(f"collection {collection!r} was deleted")


_satisfies_protocol: type[DocumentStore] = PostgresStore  # mypy checks PostgresStore against the Protocol
