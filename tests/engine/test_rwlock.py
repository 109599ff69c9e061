"""The readers-writer lock: neither a stream of readers nor a writer coming straight back starves the other."""

import threading
import time

from app.engine.rwlock import ReadWriteLock


def test_a_writer_taking_turns_lets_waiting_readers_in_between() -> None:
    lock, events = ReadWriteLock(), list[str]()
    writing = threading.Event()

    def writer() -> None:
        for _ in range(20):
            with lock.write():
                writing.set()
                events.append("write")
                time.sleep(0.01)

    def reader() -> None:
        with lock.read():
            events.append("read")

    threads = [threading.Thread(target=writer)]
    threads[0].start()
    writing.wait()
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join()
    # The readers queued during an early turn go in before the writer's next one, not after all 20.
    assert events.count("read") == 3 and events.count("write") == 20
    assert max(i for i, e in enumerate(events) if e == "read") < 5


def test_a_waiting_writer_goes_before_readers_that_arrive_after_it() -> None:
    lock, events = ReadWriteLock(), list[str]()
    first_in, release = threading.Event(), threading.Event()

    def long_reader() -> None:
        with lock.read():
            first_in.set()
            release.wait()
            events.append("first read")

    def writer() -> None:
        with lock.write():
            events.append("write")

    def late_reader() -> None:
        with lock.read():
            events.append("late read")

    threads = [threading.Thread(target=long_reader)]
    threads[0].start()
    first_in.wait()
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    while not lock._waiting_writers:  # the writer is queued behind the first reader
        time.sleep(0.001)
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join()
    assert events == ["first read", "write", "late read"]


def test_readers_pass_a_writer_that_waits_on_a_long_reader() -> None:
    """A snapshot holds the read side for seconds at scale; searches must not queue behind the writer
    that waits on it, then wait for both."""
    lock, events = ReadWriteLock(), list[str]()
    snapshot_in, snapshot_done = threading.Event(), threading.Event()

    def snapshot() -> None:
        with lock.read(long=True):
            snapshot_in.set()
            snapshot_done.wait()
        events.append("snapshot done")

    def writer() -> None:
        with lock.write():
            events.append("write")

    threads = [threading.Thread(target=snapshot), threading.Thread(target=writer)]
    threads[0].start()
    snapshot_in.wait()
    threads[1].start()
    while not lock._waiting_writers:
        time.sleep(0.001)
    searched = threading.Event()

    def search() -> None:
        with lock.read():
            events.append("search")
            searched.set()

    threads.append(threading.Thread(target=search))
    threads[2].start()
    passed = searched.wait(timeout=10)  # while the snapshot still holds the lock
    snapshot_done.set()
    for thread in threads:
        thread.join()
    assert passed and events[0] == "search" and events.count("write") == 1
