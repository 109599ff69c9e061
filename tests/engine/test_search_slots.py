"""Past their encode, at most SEARCH_SEARCH_SLOTS searches retrieve, fuse and filter at once; the rest wait."""

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.engine import hybrid
from app.engine import slots as slots_module
from app.engine.encoders import Encoder, machine_cores
from app.engine.engine import SearchEngine
from app.engine.slots import SearchSlots
from app.engine.types import DocumentInput, SearchQuery
from app.errors import ClientGone
from app.settings import Settings


def _most_at_once(tmp_path: Path, embedder: Encoder, monkeypatch: pytest.MonkeyPatch, slots: int,
                  searches: int) -> int:
    """The most searches inside `hybrid.search` at one time, of `searches` sent together."""
    engine = SearchEngine(Settings(data_dir=tmp_path / f"data{slots}", search_slots=slots), embedder)
    try:
        engine.create_collection("c")
        engine.upsert("c", [DocumentInput("a", "cats purr on warm windowsills"), DocumentInput("b", "dogs bark")])
        inside, most, count = 0, 0, threading.Lock()
        search = hybrid.search

        def held(*args: object, **kwargs: object) -> hybrid.SearchOutcome:
            nonlocal inside, most
            with count:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.1)  # long enough that every thread has arrived while the first ones are inside
                return search(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                with count:
                    inside -= 1

        monkeypatch.setattr(hybrid, "search", held)
        failures: list[BaseException] = []

        def one() -> None:
            try:
                assert engine.search("c", SearchQuery("cats", 10, 0, "hybrid")).hits
            except BaseException as exc:  # reported by the test thread below
                failures.append(exc)

        threads = [threading.Thread(target=one, daemon=True) for _ in range(searches)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not failures, failures
        # every search past the first `slots` found them taken and waited (~0.1 s each at least)
        assert engine.search_slots.waits == searches - slots
        assert engine.search_slots.wait_seconds >= 0.09 * (searches - slots)
        return most
    finally:
        monkeypatch.undo()
        engine.close()


@pytest.mark.parametrize("slots", [1, 2])
def test_searches_take_turns_in_the_slots(tmp_path: Path, embedder: Encoder, monkeypatch: pytest.MonkeyPatch,
                                          slots: int) -> None:
    assert _most_at_once(tmp_path, embedder, monkeypatch, slots, searches=6) == slots


def test_slots_default_to_the_cores() -> None:
    assert Settings().search_slot_count() == machine_cores()
    assert Settings(search_slots=3).search_slot_count() == 3


def _holder(slots: SearchSlots) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread holding one of `slots` until `done` is set; `inside` is set once it holds it."""
    inside, done = threading.Event(), threading.Event()

    def hold() -> None:
        with slots.held():
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert inside.wait(10)
    return thread, inside, done


def test_waiting_searches_take_their_turns_in_order() -> None:
    slots = SearchSlots(1)
    holder, _, done = _holder(slots)
    order: list[int] = []

    def wait_turn(n: int) -> None:
        with slots.held():
            order.append(n)

    waiters = []
    for n in range(5):
        waiters.append(threading.Thread(target=wait_turn, args=(n,), daemon=True))
        waiters[-1].start()
        _until_waiting(slots, n + 1)  # queued before the next one comes
    done.set()
    for thread in [holder, *waiters]:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert slots.waits == 5 and slots.abandoned == 0


def test_a_search_whose_caller_left_gives_up_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "STILL_WANTED_EVERY", 0.01)
    slots = SearchSlots(1)
    holder, _, done = _holder(slots)
    asked = threading.Event()

    def gone() -> bool:
        asked.set()
        return False

    ran: list[str] = []

    def staying() -> None:
        with slots.held(lambda: True):
            ran.append("stayed")

    first, failures = _leaving(slots, gone, ran)
    assert asked.wait(10)
    first.join(10)
    second = threading.Thread(target=staying, daemon=True)
    second.start()
    _until_waiting(slots, 1)
    done.set()
    for thread in (holder, second):
        thread.join(10)
    assert [type(exc) for exc in failures] == [ClientGone]
    assert ran == ["stayed"] and slots.abandoned == 1 and slots.waits == 2
    assert _comes_free(slots)


def test_a_slot_handed_to_a_search_whose_caller_left_goes_on_to_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "STILL_WANTED_EVERY", 0.01)
    slots = SearchSlots(1)
    holder, _, done = _holder(slots)
    queued_behind = threading.Event()

    def gone_as_the_slot_comes() -> bool:
        # The slot comes free (and is handed to this search, first in line) between its wait's timeout and this
        # answer: the search must pass it on to the one behind it, not drop it.
        _until_waiting(slots, 2)
        done.set()
        holder.join(10)
        return False

    def behind() -> None:
        with slots.held():
            queued_behind.set()

    ran: list[str] = []
    leaving, failures = _leaving(slots, gone_as_the_slot_comes, ran)
    _until_waiting(slots, 1)
    second = threading.Thread(target=behind, daemon=True)
    second.start()
    leaving.join(10)
    second.join(10)
    assert [type(exc) for exc in failures] == [ClientGone]
    assert queued_behind.is_set() and slots.abandoned == 1 and ran == []
    assert _comes_free(slots)


def _leaving(slots: SearchSlots, still_wanted: Callable[[], bool],
             ran: list[str]) -> tuple[threading.Thread, list[BaseException]]:
    """A thread asking for a slot with `still_wanted` (it appends "left" to `ran` if it ever holds one), and the
    exceptions it ended with."""
    failures: list[BaseException] = []

    def leave() -> None:
        try:
            with slots.held(still_wanted):
                ran.append("left")
        except BaseException as exc:  # checked by the test
            failures.append(exc)

    thread = threading.Thread(target=leave, daemon=True)
    thread.start()
    return thread, failures


def _until_waiting(slots: SearchSlots, count: int) -> None:
    """Returns once `count` searches wait for a slot."""
    while slots.waiting() < count:
        time.sleep(0.001)


def _comes_free(slots: SearchSlots) -> bool:
    """Whether a search gets a slot at once: none was leaked."""
    taken = threading.Event()

    def take() -> None:
        with slots.held():
            taken.set()

    threading.Thread(target=take, daemon=True).start()
    return taken.wait(5)


def test_a_search_whose_check_fails_leaves_the_line_without_keeping_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """still_wanted hops to the event loop, which may be stopping: its error ends the search, not the slot."""
    monkeypatch.setattr(slots_module, "STILL_WANTED_EVERY", 0.01)
    slots = SearchSlots(1)
    holder, _, done = _holder(slots)

    def failing() -> bool:
        done.set()  # the slot comes free and is handed to this search as its check fails
        holder.join(10)
        raise RuntimeError("event loop is closed")

    with pytest.raises(RuntimeError), slots.held(failing):
        pass
    assert slots.waiting() == 0 and _comes_free(slots)
