"""Past their encode, at most SEARCH_SEARCH_SLOTS searches retrieve, fuse and filter at once; the rest wait."""

import threading
import time
from pathlib import Path

import pytest

from app.engine import hybrid
from app.engine.encoders import Encoder, machine_cores
from app.engine.engine import SearchEngine
from app.engine.types import DocumentInput, SearchQuery
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

        threads = [threading.Thread(target=one) for _ in range(searches)]
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
