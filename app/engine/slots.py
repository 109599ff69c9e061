"""Search slots: at most so many searches past their query encode at one time; the others wait their turn.

Past its encode a search is mostly Python holding the GIL, with the HNSW walk and numpy between: more of them at
once than there are cores only trade the GIL and the caches back and forth (README, "Search slots"). The
counts say how often and how long searches waited, which is how an operator sees that the cores are the limit.

A waiting search asks now and then whether its caller still wants it (`still_wanted`), and gives up its turn
when not: under overload, clients that time out and ask again would otherwise have each abandoned search run to
the end ahead of the ones still waited for. Waiting searches take their turns in the order they came, and one
that leaves keeps no one else from their place: a semaphore polled with a timeout sends each poller to the back
of its queue (p99 at 64 clients rose from 0.67-0.72 s to 0.81-0.86 s), and none in the standard library lets a
waiter leave its queue. Hence this small queue of events, each handed a slot by the search that frees it: at 8
clients, p99 50-53 ms against the semaphore's 75-85, where a search that had just encoded could take a slot
ahead of those waiting. (Handing over wakes a sleeping thread: with 1 slot under 64 clients that costs ~10% of
the searches a second; README "Search slots".)
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.errors import ClientGone

# How often a waiting search asks whether its caller is still there. Each ask is a hop to the event loop, so not
# often: a search that waits less than this is never asked.
STILL_WANTED_EVERY = 0.25


class SearchSlots:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._lock = threading.Lock()
        self._free = slots
        self._queue: deque[threading.Event] = deque()  # the waiting searches' turns, first come first
        self.waits = 0  # searches that found every slot taken
        self.wait_seconds = 0.0  # and how long they waited in all
        self.abandoned = 0  # of those, the ones whose caller had left before their turn came

    @contextmanager
    def held(self, still_wanted: Callable[[], bool] | None = None) -> Iterator[None]:
        """Holds a slot while the block runs. Raises ClientGone, without running it, when `still_wanted` (asked
        every STILL_WANTED_EVERY seconds of waiting) says the caller has left."""
        with self._lock:
            turn = None
            if self._free and not self._queue:
                self._free -= 1
            else:
                turn = threading.Event()
                self._queue.append(turn)
        if turn is not None:
            self._wait(turn, still_wanted)
        try:
            yield
        finally:
            self._release()

    def waiting(self) -> int:
        """Searches waiting for a slot now."""
        with self._lock:
            return len(self._queue)

    def _release(self) -> None:
        """Hands the slot to the first waiting search, else frees it."""
        with self._lock:
            if self._queue:
                self._queue.popleft().set()
            else:
                self._free += 1

    def _wait(self, turn: threading.Event, still_wanted: Callable[[], bool] | None) -> None:
        start = time.perf_counter()
        gone = False
        try:
            while not turn.wait(STILL_WANTED_EVERY if still_wanted else None):
                if still_wanted is not None and not still_wanted():
                    gone = True
                    break
        except BaseException:  # still_wanted failed (the event loop stopping): leave the line, lose no slot
            self._leave(turn)
            raise
        with self._lock:
            self.waits += 1
            self.wait_seconds += time.perf_counter() - start
            self.abandoned += gone
        if gone:
            self._leave(turn)
            raise ClientGone("the client closed its connection while the search waited for a search slot")

    def _leave(self, turn: threading.Event) -> None:
        """Takes a waiting search out of the line; a slot handed to it meanwhile goes on to the next."""
        with self._lock:
            handed = turn.is_set()
            if not handed:
                self._queue.remove(turn)
        if handed:
            self._release()
