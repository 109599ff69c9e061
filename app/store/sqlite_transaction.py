"""An embedded store's write transaction, and what its failures mean: a full disk, a data dir that cannot be
written."""

import errno
import sqlite3

from app.errors import InsufficientStorage, StoreUnavailable


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception so a failed batch leaves nothing. A full disk (or
    a database at its page limit) is InsufficientStorage (507), not a bug (500), whether the batch's writes or
    its commit found it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: BaseException | None, _: object) -> None:
        if exc is None:
            try:
                self.conn.execute("COMMIT")
                return
            except (sqlite3.OperationalError, OSError) as failed:
                exc = failed
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if _is_full(exc):
            raise InsufficientStorage(f"the data dir's disk is full: nothing of this write was stored ({exc})",
                                      [{"reason": "disk_full"}]) from exc
        if _is_unwritable(exc):  # a filesystem remounted read-only after a disk error: a 500 "internal error" (QA)
            raise StoreUnavailable(f"the data dir cannot be written ({exc}; a read-only or failing disk?): nothing "
                                   "of this write was stored; searches go on", [{"reason": "data_dir_unwritable"}]) \
                from exc
        if exc_type is None:  # the commit failed otherwise
            raise exc


def _is_unwritable(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        # (the primary code: SQLite's extended ones, such as SQLITE_IOERR_WRITE, carry it in their low byte)
        return ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY)
    return isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EIO, errno.EACCES)


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
