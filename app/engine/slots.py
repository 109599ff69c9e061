"""Search slots: at most so many searches past their query encode at one time; the others wait their turn.

Past its encode a search is mostly Python holding the GIL, with the HNSW walk and numpy between: more of them at
once than there are cores only trade the GIL and the caches back and forth (README, "Search slots"). The
counts say how often and how long searches waited, which is how an operator sees that the cores are the limit.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class SearchSlots:
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)
        self._count = threading.Lock()
        self.waits = 0  # searches that found every slot taken
        self.wait_seconds = 0.0  # and how long they waited in all

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            start = time.perf_counter()
            self._free.acquire()
            waited = time.perf_counter() - start
            with self._count:
                self.waits += 1
                self.wait_seconds += waited
        try:
            yield
        finally:
            self._free.release()
