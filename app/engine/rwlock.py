"""A phase-fair readers-writer lock.

Hand-written because the standard library has none and the one job here needs only these lines: many
concurrent searches, and writers that take the lock again and again in short turns (a bulk ingest settles
its vectors into the graph in ~10 ms turns). New readers wait behind a waiting writer, so writers are
not starved; and the readers that were already waiting when a writer leaves go in before the next writer,
so a writer that comes straight back does not starve searches either. A long reader (an index snapshot,
seconds at scale) lets other readers pass the writers waiting on it: they would wait for it anyway.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._waiting_readers = 0
        self._writes_done = 0  # write sections finished so far
        self._admitted = 0  # readers that were waiting when the last writer left and are yet to go in
        self._long_readers = 0

    @contextmanager
    def read(self, long: bool = False) -> Iterator[None]:
        with self._cond:
            since = self._writes_done
            self._waiting_readers += 1
            while self._writer or (self._waiting_writers and self._writes_done == since and not self._long_readers):
                self._cond.wait()
            self._waiting_readers -= 1
            if self._writes_done != since and self._admitted:
                self._admitted -= 1
            self._readers += 1
            self._long_readers += long
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._long_readers -= long
                if self._readers == 0 or long:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers or self._admitted:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._writes_done += 1
                self._admitted = self._waiting_readers
                self._cond.notify_all()
