"""kill -9 at random moments under a stream of bulk ingests and deletes; every acknowledged write survives.

A writer thread ingests batches of small documents (each with a unique token in its text) and now and then
deletes some it saw acknowledged; the test SIGKILLs the server at random moments and restarts it on the same
data dir. A 200 on ingest or a 204 on delete must hold after every restart: the document is there (by id and
by a lexical search on its token), or stays gone; at the end the dense index serves exactly the store's ids.
A request left unanswered by the kill may or may not have landed, so its ids are tracked apart and accepted
either way.
"""

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.server import Server

SEED = 20240611
KILLS = 20
BATCH = 20
MAX_BATCHES = 2_000  # a bound on the writer; it is stopped long before
MAX_DELAY = 1.5  # seconds of load between a restart and the next kill
COLLECTION = "crash"
OFF = {"enabled": False}


def token(doc_id: str) -> str:
    return "tok" + doc_id.replace("-", "x")


@dataclass
class Ledger:
    """What the server acknowledged, and what it may or may not have done (no answer before the kill)."""

    live: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    maybe: set[str] = field(default_factory=set)
    fresh: set[str] = field(default_factory=set)  # acknowledged since the last restart
    errors: list[str] = field(default_factory=list)
    batches: int = 0
    deletes: int = 0

    def bounds(self) -> tuple[int, int]:
        """The least and most documents the collection may hold."""
        maybe_added = len(self.maybe - self.live - self.deleted)
        maybe_removed = len(self.maybe & self.live)
        return len(self.live) - maybe_removed, len(self.live) + maybe_added


class Writer(threading.Thread):
    """Streams ingests and deletes while `up` is set; `gate` is held around each request."""

    def __init__(self, url: str, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.url, self.ledger = url, ledger
        self.rng = random.Random(SEED + 1)
        self.up, self.stop, self.gate = threading.Event(), threading.Event(), threading.Lock()

    def run(self) -> None:
        # No keep-alive: after a restart a pooled connection would point at the dead process.
        with httpx.Client(base_url=self.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            batch = 0
            while not self.stop.is_set() and batch < MAX_BATCHES:
                if not self.up.wait(timeout=0.1):
                    continue
                with self.gate:
                    if self.up.is_set():
                        self.step(http, batch)
                        batch += 1

    def step(self, http: httpx.Client, batch: int) -> None:
        ledger = self.ledger
        acknowledged = sorted(ledger.live - ledger.maybe)
        if acknowledged and self.rng.random() < 0.3:
            for doc_id in self.rng.sample(acknowledged, min(2, len(acknowledged))):
                self.request(http, "DELETE", f"/v1/collections/{COLLECTION}/documents/{doc_id}", [doc_id], 204)
            return
        ids = [f"{batch}-{i}" for i in range(BATCH)]
        docs = [{"id": i, "text": f"Crash record {i} carries the token {token(i)}.", "metadata": {"batch": batch}}
                for i in ids]
        self.request(http, "POST", f"/v1/collections/{COLLECTION}/documents", ids, 200, {"documents": docs})

    def request(self, http: httpx.Client, method: str, path: str, ids: list[str], ok: int,
                body: object = None) -> None:
        ledger = self.ledger
        try:
            response = http.request(method, path, json=body)
        except httpx.TransportError:
            ledger.maybe.update(ids)  # killed before it answered: it may or may not have landed
            return
        if response.status_code != ok:
            ledger.errors.append(f"{method} {path} -> {response.status_code} {response.text[:200]}")
        elif method == "DELETE":
            ledger.live.difference_update(ids)
            ledger.deleted.update(ids)
            ledger.deletes += 1
        else:
            ledger.live.update(ids)
            ledger.batches += 1
        ledger.fresh.update(ids)


def count(http: httpx.Client) -> int:
    response = http.get(f"/v1/collections/{COLLECTION}")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def present(http: httpx.Client, doc_id: str) -> bool:
    status = http.get(f"/v1/collections/{COLLECTION}/documents/{doc_id}").status_code
    assert status in (200, 404), (doc_id, status)
    return status == 200


def found(http: httpx.Client, doc_id: str) -> bool:
    body = {"query": token(doc_id), "mode": "lexical", "k": 5, "relevance": OFF}
    response = http.post(f"/v1/collections/{COLLECTION}/search", json=body)
    assert response.status_code == 200, response.text
    return doc_id in [hit["id"] for hit in response.json()["hits"]]


def dense_finds(http: httpx.Client, doc_id: str) -> bool:
    """A dense search for the document's own text finds it (among its near-identical neighbours)."""
    text = f"Crash record {doc_id} carries the token {token(doc_id)}."
    body = {"query": text, "mode": "dense", "k": 100, "relevance": OFF}
    response = http.post(f"/v1/collections/{COLLECTION}/search", json=body)
    assert response.status_code == 200, response.text
    return doc_id in [hit["id"] for hit in response.json()["hits"]]


def dense_ids(http: httpx.Client) -> set[str]:
    """Every id the HNSW index serves: a dense search as deep as the collection, in pages of 1,000."""
    ids: set[str] = set()
    for offset in range(0, 10_001, 1_000):
        body = {"query": "crash record", "mode": "dense", "k": 1_000, "offset": offset, "relevance": OFF}
        response = http.post(f"/v1/collections/{COLLECTION}/search", json=body)
        assert response.status_code == 200, response.text
        page = [hit["id"] for hit in response.json()["hits"]]
        ids.update(page)
        if len(page) < 1_000:
            return ids
    raise AssertionError("more documents than this check can page through")


def test_acknowledged_writes_survive_repeated_kill_9(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ledger = Ledger()
    server = Server(tmp_path / "data", SEARCH_THREADS="1").start()
    writer = Writer(server.url, ledger)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.put(f"/v1/collections/{COLLECTION}").status_code == 201
        writer.start()
        for _ in range(KILLS):
            writer.up.set()
            writer.stop.wait(rng.uniform(0.0, MAX_DELAY))
            writer.up.clear()
            server.kill()  # at a random moment: mid-request, mid-commit or between two requests
            server.start()
            with writer.gate, httpx.Client(base_url=server.url, timeout=60) as http:
                low, high = ledger.bounds()
                assert low <= count(http) <= high, (low, high)
                # The writes acknowledged just before this kill are the ones most at risk.
                for doc_id in sorted(ledger.fresh - ledger.maybe):
                    assert present(http, doc_id) == (doc_id in ledger.live), f"{doc_id} lost by the kill"
                ledger.fresh.clear()
        writer.stop.set()
        writer.join(timeout=120)
        assert not writer.is_alive()
        assert not ledger.errors, ledger.errors
        assert ledger.batches >= KILLS and ledger.deletes > 0, ledger

        with httpx.Client(base_url=server.url, timeout=60) as http:
            for doc_id in sorted(ledger.live - ledger.maybe):
                assert present(http, doc_id) and found(http, doc_id), f"acknowledged {doc_id} lost"
            for doc_id in sorted(ledger.deleted - ledger.maybe):
                assert not present(http, doc_id) and not found(http, doc_id), f"deleted {doc_id} came back"
            landed = {doc_id for doc_id in ledger.maybe if present(http, doc_id)}
            # Whatever landed is whole: in the store and in the index alike.
            assert all(found(http, doc_id) == (doc_id in landed) for doc_id in ledger.maybe)
            expected = (ledger.live - ledger.maybe) | landed
            assert count(http) == len(expected)
            # The dense index holds exactly the store's documents. Paging an approximate search can drop one that
            # sits at a page's edge in one walk and not in the next (these documents differ by a number: near-ties;
            # measured in process on 3,000 of them: 1 dropped, with PyTorch's vectors as with int8's), so each one
            # the pages missed must be found by its own text.
            served = dense_ids(http)
            assert served <= expected, served - expected
            assert all(dense_finds(http, doc_id) for doc_id in expected - served), expected - served
        print(f"\ncrash safety: {KILLS} kills, {ledger.batches} batches and {ledger.deletes} deletes acknowledged, "
              f"{len(expected)} documents checked by id, BM25 and HNSW ({len(expected - served)} missed by the "
              f"pages, found by their text), {len(ledger.deleted)} deletions held")
    finally:
        writer.stop.set()
        writer.up.clear()
        stopped = server.stop()  # SIGTERM after all those kills: a clean shutdown
    assert stopped
