"""A bounded mixed load on the real server: concurrent ingest, upsert of the same ids, delete, get and search.

Each thread owns its ids, so per id the order of writes is that thread's order and each thread can replay its
own acknowledged operations sequentially: every answer must be the one that replay predicts (no 5xx, no 4xx
but the 404 of an id the replay says is gone), a thread reads its own writes at once (by id and by a lexical
search on the token of the version it wrote last), and the final state equals the replay of every thread.
"""

import random
import threading
from collections import Counter
from pathlib import Path

import httpx

from tests.server import Server

SEED = 7
THREADS = 4
OPERATIONS = 150  # per thread
IDS_PER_THREAD = 12  # small, so that upserts replace and deletes hit often
COLLECTION = "load"
OFF = {"enabled": False}


def text(doc_id: str, version: int) -> str:
    return f"Load record {doc_id} version {version} has the token {token(doc_id, version)}."


def token(doc_id: str, version: int) -> str:
    return f"tok{doc_id.replace('-', 'x')}v{version}"


class Client(threading.Thread):
    """One thread's share of the load, and the sequential replay of what the server acknowledged."""

    def __init__(self, url: str, number: int) -> None:
        super().__init__(daemon=True)
        self.url, self.number = url, number
        self.rng = random.Random(SEED * 100 + number)
        self.ids = [f"t{number}-{i}" for i in range(IDS_PER_THREAD)]
        self.version = 0
        self.state: dict[str, int] = {}  # id -> version it holds, for the ids that exist
        self.written: set[tuple[str, int]] = set()  # every (id, version) acknowledged
        self.errors: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self.done = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            for _ in range(OPERATIONS):
                choice = self.rng.random()
                try:
                    if choice < 0.35:
                        self.ingest(http)
                    elif choice < 0.55:
                        self.delete(http)
                    elif choice < 0.85:
                        self.search(http)
                    else:
                        self.get(http)
                except httpx.TransportError as exc:
                    self.errors.append(f"transport error: {exc!r}")
                self.done += 1

    def expect(self, response: httpx.Response, status: int) -> bool:
        if response.status_code != status:
            self.errors.append(f"{response.request.method} {response.request.url.path}: expected {status}, "
                               f"got {response.status_code} {response.text[:200]}")
        return response.status_code == status

    def ingest(self, http: httpx.Client) -> None:
        self.version += 1
        batch = self.rng.sample(self.ids, self.rng.randint(1, 4))
        docs = [{"id": i, "text": text(i, self.version), "metadata": {"thread": self.number}} for i in batch]
        response = http.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": docs})
        if self.expect(response, 200):
            self.outcomes.update("replace" if doc_id in self.state else "insert" for doc_id in batch)
            self.state.update(dict.fromkeys(batch, self.version))
            self.written.update((doc_id, self.version) for doc_id in batch)

    def delete(self, http: httpx.Client) -> None:
        doc_id = self.rng.choice(self.ids)
        response = http.delete(f"/v1/collections/{COLLECTION}/documents/{doc_id}")
        if self.expect(response, 204 if doc_id in self.state else 404):
            self.outcomes["delete" if self.state.pop(doc_id, None) else "delete-absent"] += 1

    def get(self, http: httpx.Client) -> None:
        doc_id = self.rng.choice(self.ids)
        response = http.get(f"/v1/collections/{COLLECTION}/documents/{doc_id}")
        if self.expect(response, 200 if doc_id in self.state else 404):
            self.outcomes["get"] += 1
            if doc_id in self.state and response.json()["text"] != text(doc_id, self.state[doc_id]):
                self.errors.append(f"read {response.text[:200]}, replay says version {self.state[doc_id]}")

    def search(self, http: httpx.Client) -> None:
        doc_id = self.rng.choice(self.ids)
        version = self.state.get(doc_id, self.version)
        mode = self.rng.choice(["lexical", "lexical", "hybrid", "dense"])
        body = {"query": token(doc_id, version), "mode": mode, "k": 5, "relevance": OFF}
        response = http.post(f"/v1/collections/{COLLECTION}/search", json=body)
        self.outcomes["search"] += self.expect(response, 200)
        if response.status_code == 200 and mode == "lexical":
            hits = [hit["id"] for hit in response.json()["hits"]]
            if (doc_id in hits) != (self.state.get(doc_id) == version):
                self.errors.append(f"lexical search for {doc_id} v{version}: hits {hits}, replay {self.state}")


def lexical_hits(http: httpx.Client, query: str) -> list[str]:
    response = http.post(f"/v1/collections/{COLLECTION}/search",
                         json={"query": query, "mode": "lexical", "k": 5, "relevance": OFF})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


def test_mixed_concurrent_load_equals_sequential_replay(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", SEARCH_THREADS="1").start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.put(f"/v1/collections/{COLLECTION}").status_code == 201
        clients = [Client(server.url, n) for n in range(THREADS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=600)
        assert not any(client.is_alive() for client in clients)
        assert [error for client in clients for error in client.errors] == []
        outcomes = sum((client.outcomes for client in clients), Counter())
        assert sum(client.done for client in clients) == THREADS * OPERATIONS
        assert all(outcomes[kind] > 0 for kind in ("insert", "replace", "delete", "delete-absent", "get", "search"))

        print(f"\nconcurrency: {THREADS} clients, {sum(client.done for client in clients)} operations "
              f"({dict(outcomes)}), 0 errors")
        expected = {doc_id: text(doc_id, version) for client in clients for doc_id, version in client.state.items()}
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.get(f"/v1/collections/{COLLECTION}").json()["count"] == len(expected)
            for client in clients:
                for doc_id in client.ids:
                    response = http.get(f"/v1/collections/{COLLECTION}/documents/{doc_id}")
                    assert response.status_code == (200 if doc_id in expected else 404), doc_id
                    if doc_id in expected:
                        assert response.json()["text"] == expected[doc_id]
                # Every version ever written: only the surviving one is findable, no stale postings.
                for doc_id, version in sorted(client.written):
                    hits = lexical_hits(http, token(doc_id, version))
                    assert (doc_id in hits) == (client.state.get(doc_id) == version), (doc_id, version, hits)
    finally:
        assert server.stop()
