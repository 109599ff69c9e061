"""Reading the PostgreSQL store's change feed: one snapshot's view (FeedView), the LISTEN connection that wakes
a follower (Listener), and what both share with the store itself (app/store/postgres.py, whose docstring says
why a snapshot's sequence H covers exactly the changes numbered up to H): how errors map (`reachable`) and the
pooled connections with their circuit breaker (Connections), each waiting a bounded time for an answer
(AnsweringConnection, opened by `open_pool`), and why a connection fails (`why_unreachable`)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.abc import PQGen
from psycopg.errors import _WaitTimeout

from app.errors import InsufficientStorage, StoreUnavailable
from app.store.base import CollectionRecord, StoredRow

CHANNEL = "search_changes"


@dataclass
class CollectionState:
    """A collection as the store holds it at one sequence: what a follower reconciles against."""

    record: CollectionRecord
    pruned_through: int  # tombstones up to this sequence are gone: a replica behind it must rebuild
    changed_seq: int  # the sequence of its last document write: a replica past it has nothing to read
    adapter_seq: int  # 0: never trained (a reset keeps its sequence and clears the adapter)


@dataclass
class StoredAdapter:
    """A trained relevance adapter as its two files (JSON metadata and a pickle-free .npz)."""

    seq: int
    meta: str
    weights: bytes


# SQLSTATEs of an OperationalError that mean the server is gone or will not take connections: connection
# exceptions (class 08), the server shutting down or starting (57P01-57P03), too many connections. Any other
# OperationalError the server itself answered with (a statement or lock timeout an operator set): it is there.
_SERVER_GONE = ("08", "57P01", "57P02", "57P03", "53300")


def server_gone(exc: BaseException) -> bool:
    """Whether an error means the store cannot be reached (no SQLSTATE: the client lost or never had a
    connection), as opposed to an answer from a server that is up."""
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_SERVER_GONE)


@contextmanager
def reachable() -> Iterator[None]:
    """A lost connection or a pool that cannot connect is StoreUnavailable (503), not a bug (500); so is an
    operational refusal from a server that is up (a statement or lock timeout), said as such; a database out of
    disk space (an OperationalError too) is InsufficientStorage (507)."""
    try:
        yield
    except psycopg.errors.DiskFull as exc:
        raise InsufficientStorage(f"the PostgreSQL store is out of disk space: nothing of this write was stored "
                                  f"({str(exc).strip()})", [{"reason": "disk_full"}]) from exc
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        why = str(exc).strip() or type(exc).__name__
        state = "is unreachable" if server_gone(exc) else "refused the call; nothing of it was stored"
        raise StoreUnavailable(f"the PostgreSQL store {state}: {why}", [{"reason": type(exc).__name__}]) from exc


RV = TypeVar("RV")


class AnsweringConnection(psycopg.Connection[Any]):
    """A connection that waits at most `answer_seconds` for each answer (a statement's results, a chunk of COPY
    accepted, a commit), then closes itself and raises an OperationalError with no SQLSTATE: "unreachable", which
    opens the breaker. psycopg waits without end by default, and a frozen server (its process stopped, the
    kernel still acknowledging) or a network that drops packets held a write, and the follower's poll, for as
    long as it lasted while /ready said ready (QA). A bound given by the caller (`notifies(timeout=...)`) is
    kept as it is. Written here because psycopg offers no per-call client-side deadline: every synchronous
    operation waits in `Connection.wait`, whose own timeout this sets; `_WaitTimeout` is what that raises (a
    test fails if a psycopg upgrade changes this)."""

    answer_seconds: float  # set where one is made: open_pool's `configure`, Listener

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.answer_seconds)
        except _WaitTimeout:
            self.close()  # mid-statement: never handed out again (the pool discards a closed connection)
            raise psycopg.OperationalError(f"no answer within {self.answer_seconds:g} s "
                                           "(SEARCH_DATABASE_ANSWER_SECONDS); the connection was closed") from None


def why_unreachable(url: str, timeout: float) -> str:
    """Why a connection to `url` fails, from one attempt of its own: psycopg's message names the host and port
    and the cause (refused, no such socket, authentication), never the password."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))):
            return "a connection just made succeeded: it was unreachable for a moment"
    except psycopg.Error as exc:
        return " ".join(str(exc).split()) or type(exc).__name__


def open_pool(url: str, timeout: float, answer_seconds: float, size: int
              ) -> "psycopg_pool.ConnectionPool[AnsweringConnection]":
    """The store's pool of AnsweringConnections, opening in the background. `check`: a connection the server
    dropped (a restart) is replaced before use, not handed to a request; the check itself is answered within the
    pool's timeout (a frozen server would otherwise hold the caller answer_seconds before its call even starts).
    `reconnect_timeout`: the pool retries a failed connection with a doubling delay for this long, then gives up
    until the next request asks for one, which starts again at 1 s. At its default (5 min) the delay had grown to
    16-64 s by the end of a long outage, and a replica stayed degraded that long after PostgreSQL was back (QA:
    17-26 s after 100-320 s outages)."""

    def configure(conn: AnsweringConnection) -> None:
        conn.answer_seconds = answer_seconds

    def check(conn: AnsweringConnection) -> None:
        conn.answer_seconds = timeout
        try:
            psycopg_pool.ConnectionPool.check_connection(conn)
        finally:
            conn.answer_seconds = answer_seconds

    pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=size, open=False, timeout=timeout,
                                       reconnect_timeout=timeout, connection_class=AnsweringConnection,
                                       configure=configure, check=check,
                                       kwargs={"connect_timeout": max(1, round(timeout))}, name="search-store")
    pool.open(wait=False)
    return pool


class Connections:
    """The store's pooled connections, errors mapped (`reachable`), with a circuit breaker: once a call has found
    the store unreachable, one call at a time waits (up to the pool's timeout) to find out whether it is back,
    and the others fail at once with the same StoreUnavailable. Without it every write of an outage held a worker
    thread for the whole timeout, and those threads are the ones searches run on: 48 loaders posting to a replica
    whose PostgreSQL was down took a search's p50 from 6 ms to 215 ms (p99 4.3 s). Written here rather than taken
    from a breaker library: the probe is simply the next call, the pool's own timeout bounds it, and the
    follower's loop (every 0.5 s) is one such call, so the breaker closes as soon as the store answers again."""

    def __init__(self, pool: "psycopg_pool.ConnectionPool[Any]") -> None:
        self.pool = pool
        self.down: StoreUnavailable | None = None  # why the last call failed, until one succeeds
        self._probe = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        down = self.down
        probing = down is not None and self._probe.acquire(blocking=False)
        if down is not None and not probing:
            raise StoreUnavailable(f"{down.message} (refused at once: another call is finding out whether it is "
                                   "back)", down.details)
        try:
            with self.noticing(), self.pool.connection() as conn:
                self.down = None
                yield conn
        finally:
            if probing:
                self._probe.release()

    @contextmanager
    def noticing(self) -> Iterator[None]:
        """`reachable`, and a store found unreachable opens the breaker (a timeout the server answered with does
        not: it is up). The follower's LISTEN connection (outside the pool) reads through it too: it is the first
        to see a server go away, before any pooled call has waited its timeout."""
        try:
            with reachable():
                yield
        except StoreUnavailable as exc:
            if exc.__cause__ is None or server_gone(exc.__cause__):
                self.down = exc
            raise


def stored_row(label: int, doc_id: str, text: str, title: str | None, metadata: Any = None) -> StoredRow:
    return StoredRow(int(label), doc_id, text, title, metadata if metadata is not None else {})


class FeedView:
    """Reads of one store snapshot (FeedView objects come from PostgresStore.feed)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def seq(self) -> int:
        with reachable():
            return int(self._conn.execute("SELECT value FROM search_seq").fetchone()[0])  # type: ignore[index]

    def collections(self) -> list[CollectionState]:
        with reachable():
            return collection_states(self._conn)

    def adapter(self, collection: str) -> StoredAdapter | None:
        with reachable():
            row = self._conn.execute("SELECT adapter_seq, adapter_meta, adapter_weights FROM search_collections "
                                     "WHERE name = %s AND adapter_seq > 0 AND adapter_meta IS NOT NULL",
                                     (collection,)).fetchone()
        return None if row is None else StoredAdapter(int(row[0]), str(row[1]), bytes(row[2]))

    def tombstones_after(self, collection: str, after_seq: int) -> list[tuple[int, int]]:
        """(label, seq) of the tombstones numbered after `after_seq`."""
        with reachable():
            rows = self._conn.execute("SELECT label, seq FROM search_tombstones WHERE collection = %s AND seq > %s",
                                      (collection, after_seq)).fetchall()
        return [(int(label), int(seq)) for label, seq in rows]

    def iter_rows(self, collection: str, after_seq: int = 0, chunk: int = 2048
                  ) -> Iterator[tuple[list[StoredRow], np.ndarray]]:
        """Live documents written after `after_seq`, in label order, metadata included."""
        last = after_seq
        while True:
            with reachable():
                rows = self._conn.execute(
                    "SELECT label, id, text, title, metadata, vector FROM search_documents "
                    "WHERE collection = %s AND label > %s ORDER BY label LIMIT %s", (collection, last, chunk)
                ).fetchall()
            if not rows:
                return
            yield ([stored_row(*r[:5]) for r in rows],
                   np.stack([np.frombuffer(r[5], dtype=np.float32) for r in rows]))
            last = int(rows[-1][0])


class Listener:
    """A LISTEN connection of its own (autocommit, outside the pool): wakes a follower when a write commits."""

    def __init__(self, url: str, timeout: float, answer_seconds: float, connections: Connections) -> None:
        self._connections = connections  # a failure here opens the store's breaker too
        with connections.noticing():
            self._conn = AnsweringConnection.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)))
            self._conn.answer_seconds = answer_seconds
            self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))

    def wait(self, timeout: float) -> int | None:
        """The highest sequence announced within `timeout` seconds (all pending ones drained), else None."""
        best: int | None = None
        with self._connections.noticing():
            for notice in self._conn.notifies(timeout=timeout, stop_after=1):
                best = max(best or 0, int(notice.payload))
            # Others that arrived together with the first are read without waiting.
            for notice in self._conn.notifies(timeout=0):
                best = max(best or 0, int(notice.payload))
        return best

    def close(self) -> None:
        self._conn.close()


def collection_states(conn: psycopg.Connection[Any]) -> list[CollectionState]:
    rows = conn.execute("SELECT name, uid, dimension, settings, pruned_through, changed_seq, adapter_seq "
                        "FROM search_collections ORDER BY name").fetchall()
    return [CollectionState(CollectionRecord(name, uid, int(dim), settings), int(pruned), int(changed), int(adapter))
            for name, uid, dim, settings, pruned, changed, adapter in rows]
