"""The readers-writer lock: neither a stream of readers nor a writer coming straight back starves the other.

Each test forces its interleaving: threads are released by events, and the test waits until the lock counts a
thread as queued (through a watched condition) before it lets the next step happen. No sleeps, no timing.
"""

import threading

from app.engine.rwlock import ReadWriteLock


class _WatchedCondition(threading.Condition):
    """The lock's own condition, which also tells the test each time a thread starts waiting on it."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.queued = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self.queued:
            self.queued.notify_all()
        return super().wait(timeout)


def watched() -> ReadWriteLock:
    lock = ReadWriteLock()
    lock._cond = _WatchedCondition()
    return lock


def until_queued(lock: ReadWriteLock, readers: int = 0, writers: int = 0) -> None:
    """Returns once `readers` readers and `writers` writers wait on the lock. A thread counts itself as
    waiting and then waits on the condition while holding it, so once counted it is parked in the lock."""
    assert isinstance(lock._cond, _WatchedCondition)
    with lock._cond.queued:
        assert lock._cond.queued.wait_for(
            lambda: lock._waiting_readers >= readers and lock._waiting_writers >= writers, timeout=30), \
            f"waiting on the lock: {lock._waiting_readers} readers, {lock._waiting_writers} writers; " \
            f"expected {readers} and {writers}"


def test_a_writer_taking_turns_lets_waiting_readers_in_between() -> None:
    lock, events = watched(), list[str]()
    in_first_turn, readers_queued = threading.Event(), threading.Event()

    def writer() -> None:
        for turn in range(20):
            with lock.write():
                events.append("write")
                if turn == 0:
                    in_first_turn.set()
                    assert readers_queued.wait(timeout=30)

    def reader() -> None:
        with lock.read():
            events.append("read")

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    assert in_first_turn.wait(timeout=30)
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads[1:]:
        thread.start()
    until_queued(lock, readers=3)
    readers_queued.set()
    for thread in threads:
        thread.join()
    # The readers queued during the first turn go in before the writer's second one, not after all 20.
    assert events == ["write", "read", "read", "read"] + ["write"] * 19


def test_a_waiting_writer_goes_before_readers_that_arrive_after_it() -> None:
    lock, events = watched(), list[str]()
    first_in, release = threading.Event(), threading.Event()

    def long_reader() -> None:
        with lock.read():
            first_in.set()
            assert release.wait(timeout=30)
            events.append("first read")

    def writer() -> None:
        with lock.write():
            events.append("write")

    def late_reader() -> None:
        with lock.read():
            events.append("late read")

    threads = [threading.Thread(target=long_reader)]
    threads[0].start()
    assert first_in.wait(timeout=30)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    until_queued(lock, writers=1)  # the writer is queued behind the first reader
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    until_queued(lock, readers=1)  # and the late reader behind the writer
    release.set()
    for thread in threads:
        thread.join()
    assert events == ["first read", "write", "late read"]


def test_readers_pass_a_writer_that_waits_on_a_long_reader() -> None:
    """A snapshot holds the read side for seconds at scale; searches must not queue behind the writer
    that waits on it, then wait for both."""
    lock, events = watched(), list[str]()
    snapshot_in, snapshot_done = threading.Event(), threading.Event()

    def snapshot() -> None:
        with lock.read(long=True):
            snapshot_in.set()
            assert snapshot_done.wait(timeout=30)
        events.append("snapshot done")

    def writer() -> None:
        with lock.write():
            events.append("write")

    threads = [threading.Thread(target=snapshot), threading.Thread(target=writer)]
    threads[0].start()
    assert snapshot_in.wait(timeout=30)
    threads[1].start()
    until_queued(lock, writers=1)
    searched = threading.Event()

    def search() -> None:
        with lock.read():
            events.append("search")
            searched.set()

    threads.append(threading.Thread(target=search))
    threads[2].start()
    passed = searched.wait(timeout=30)  # while the snapshot still holds the lock
    snapshot_done.set()
    for thread in threads:
        thread.join()
    assert passed and events[0] == "search" and events.count("write") == 1
