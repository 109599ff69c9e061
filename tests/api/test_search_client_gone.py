"""A search whose client closed its connection while it waited (for a worker thread or a search slot) is not run:
it counts as 499, and the searches still wanted go on in their order."""

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
import uvicorn

from app.engine import hybrid
from app.engine import slots as slots_module
from app.engine.encoders import Encoder
from app.main import create_app
from app.settings import Settings
from tests.server import free_port

SEARCH = json.dumps({"query": "cats", "k": 5}).encode()
CLOSED = 'search_http_requests_total{method="POST",route="/v1/collections/{name}/search",status="499"}'


@contextmanager
def _server(tmp_path: Path, embedder: Encoder, threads: int) -> Iterator[tuple[str, object]]:
    """A real uvicorn server in this process (one search slot; `threads` worker threads), so that a test can
    hold a search inside the engine and close a socket: (its URL, its app)."""
    app = create_app(Settings(data_dir=tmp_path / "data", search_slots=1), embedder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))

    async def serve() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.config.port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    try:
        assert httpx.put(f"{url}/v1/collections/c").status_code == 201
        documents = [{"id": "a", "text": "cats purr on warm windowsills"}, {"id": "b", "text": "dogs bark"}]
        assert httpx.post(f"{url}/v1/collections/c/documents", json={"documents": documents}).status_code == 200
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def _one_search_inside(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A first search held inside the engine (hybrid.search made to wait) while the block runs, then let go: it
    must answer 200. Yields how many searches reached hybrid.search (a one-element list)."""
    entered, release, runs = threading.Event(), threading.Event(), [0]
    search = hybrid.search

    def held(*args: object, **kwargs: object) -> hybrid.SearchOutcome:
        runs[0] += 1
        entered.set()
        assert release.wait(30)
        return search(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hybrid, "search", held)
    statuses: list[int] = []
    first = threading.Thread(target=lambda: statuses.append(
        httpx.post(f"{url}/v1/collections/c/search", content=SEARCH, timeout=60,
                   headers={"Content-Type": "application/json"}).status_code), daemon=True)
    first.start()
    assert entered.wait(30)
    try:
        yield runs
    finally:
        release.set()
        first.join(30)
    assert statuses == [200]


def _send_and_leave(url: str, until: Callable[[], bool]) -> None:
    """Sends a search on a raw socket, waits until `until()` (the search is waiting), and closes the socket."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/collections/c/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(SEARCH), SEARCH))
        deadline = time.monotonic() + 30
        while not until() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert until()


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 30
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_search_left_while_it_waited_for_a_slot_is_not_run(tmp_path: Path, embedder: Encoder,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "STILL_WANTED_EVERY", 0.05)
    with _server(tmp_path, embedder, threads=40) as (url, app):
        slots = app.state.engine.search_slots  # type: ignore[attr-defined]
        with _one_search_inside(url, monkeypatch) as runs:
            _send_and_leave(url, lambda: slots.waiting() == 1)
            assert _wait_for(lambda: slots.abandoned == 1)
            assert slots.waiting() == 0
        assert runs[0] == 1  # the search whose client left never reached the engine's retrieval
        assert _metric(url, CLOSED) == 1
        assert _metric(url, "search_slot_abandoned_total") == 1
        # and the slot it waited for is free: the next search runs
        assert httpx.post(f"{url}/v1/collections/c/search", json={"query": "cats"}).status_code == 200


def test_a_search_left_while_it_waited_for_a_worker_thread_is_not_run(tmp_path: Path, embedder: Encoder,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slots_module, "STILL_WANTED_EVERY", 0.05)
    with _server(tmp_path, embedder, threads=1) as (url, app):
        engine = app.state.engine  # type: ignore[attr-defined]
        with _one_search_inside(url, monkeypatch) as runs:
            encoded = engine.queries.texts
            # The one worker thread is held by the first search: the second waits for it, and its client leaves.
            sent = time.monotonic()
            _send_and_leave(url, lambda: time.monotonic() - sent > 0.1)  # past STILL_WANTED_EVERY since arrival
        assert _wait_for(lambda: _metric(url, CLOSED) == 1)
        assert runs[0] == 1 and engine.queries.texts == encoded  # not even encoded
        assert engine.search_slots.abandoned == 0  # it never reached the slots
