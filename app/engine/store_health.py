"""Whether a replica reaches its shared store and can apply what it reads: the `degraded` that /ready reports.

Every call to the store that fails says so (`failed`); a call that began after the last failure and succeeded
clears it (`reached`). One that began before a later failure says nothing of it: a catch-up that started before
the store stopped answering, and ended after a write had found it gone, said "ready" again (a flaky test under
load)."""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.errors import StoreUnavailable

log = logging.getLogger("app.follower")


class StoreHealth:
    def __init__(self, applied: Callable[[], int]) -> None:
        self.degraded: str | None = None  # why, while the store or the data dir fails
        self._failures = 0
        self._applied = applied  # the sequence the replica has applied, for the log

    def mark(self) -> int:
        """Taken before a call to the store, for `reached` after it."""
        return self._failures

    def failed(self, why: str) -> None:
        if self.degraded is None:
            log.error("following stopped: %s; serving reads from memory, retrying", why)
        self.degraded = why
        self._failures += 1

    def reached(self, mark: int) -> None:
        """A call to the store that began at `mark` succeeded."""
        if self.degraded is not None and mark == self._failures:
            log.warning("following resumed at sequence %d (the store reachable, the data dir writable)",
                        self._applied())
            self.degraded = None

    @contextmanager
    def noticing(self) -> Iterator[None]:
        """Around a write's calls to the store: one that finds it unreachable makes the replica degraded, one it
        answers ready again. A text write reads the store before its write (its stored texts, not to encode them
        again): through a paused database those writes answered 503 while `/ready` said ready (QA)."""
        mark = self.mark()
        try:
            yield
        except StoreUnavailable as exc:
            self.failed(exc.message)
            raise
        else:
            self.reached(mark)
