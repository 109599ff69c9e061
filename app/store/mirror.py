"""A replica's local copy of the documents its indexes hold (SQLite in its data dir), so that searches read hits
from the state they were ranked on, and go on answering while PostgreSQL is unreachable."""

import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from app.store.base import StoredRow
from app.store.sqlite import SqliteStore

log = logging.getLogger("app.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_applied (collection TEXT PRIMARY KEY, uid TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mirror_of (identity TEXT NOT NULL);
"""


class MirrorStore(SqliteStore):
    """Written only by the follower, with the labels the shared store gave, without vectors (its `iter_rows` and
    `vectors` are not to be used); a cache, so `synchronous=NORMAL`
    (WAL: a killed process loses nothing, a power cut may lose the last writes, which `applied` then shows)."""

    def __init__(self, path: Path, identity: str) -> None:
        """`identity`: the shared store's; a copy of another database's documents is emptied."""
        super().__init__(path)
        self._writer.executescript(_SCHEMA)
        row = self._writer.execute("SELECT identity FROM mirror_of").fetchone()
        if row is not None and row[0] != identity:  # it was silent, and a rebuild of everything followed (QA)
            log.warning("%s is a copy of another PostgreSQL store (%s, this one is %s): emptied; every collection is "
                        "built again from this store", path, row[0], identity)
        if row is None or row[0] != identity:
            with self._transaction():
                for table in ("documents", "tombstones", "collections", "mirror_applied", "mirror_of"):
                    self._writer.execute(f"DELETE FROM {table}")
                self._writer.execute("INSERT INTO mirror_of VALUES (?)", (identity,))

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def applied(self, collection: str, uid: str) -> int:
        """The sequence this copy of the collection is complete up to (0 for another collection of that name)."""
        row = self._reader().execute("SELECT uid, seq FROM mirror_applied WHERE collection = ?",
                                     (collection,)).fetchone()
        return int(row[1]) if row is not None and row[0] == uid else 0

    def apply(self, collection: str, dead: Sequence[int], rows: Sequence[StoredRow]) -> None:
        """Removes the dead labels and writes the rows (the live version of each id), in one transaction. No
        vectors: the indexes hold them, and a rebuild reads them from the shared store."""
        with self._write_lock, self._transaction():
            self._writer.executemany("DELETE FROM documents WHERE collection = ? AND label = ?",
                                     [(collection, int(label)) for label in dead])
            self._writer.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(collection, row.id, row.label, row.title, row.text, json.dumps(row.metadata), b"")
                 for row in rows])

    def mark_applied(self, collection: str, uid: str, seq: int) -> None:
        with self._write_lock:
            self._writer.execute("INSERT OR REPLACE INTO mirror_applied VALUES (?, ?, ?)", (collection, uid, seq))

    def forget(self, collection: str) -> None:
        with self._write_lock, self._transaction():
            for table in ("documents", "tombstones", "mirror_applied"):
                self._writer.execute(f"DELETE FROM {table} WHERE collection = ?", (collection,))
