"""kill -9 of a replica while an ingest streams through it: the other replica keeps answering reads and writes,
nothing acknowledged is lost, and the killed one restarts and catches up (real processes, a real PostgreSQL)."""

import threading
from pathlib import Path

import httpx
import numpy as np

from app.client import SearchClient
from tests.server import Server

COLLECTION = "crash"
DIM = 384  # the bundled encoder's; the documents bring their own vectors, so the test does not wait on encoding


def _batch(start: int, rng: np.random.Generator) -> list[dict[str, object]]:
    vectors = rng.normal(size=(20, DIM)).astype(np.float32)
    return [{"id": f"d{start + i}", "text": f"token{start + i} text", "vector": vectors[i].tolist()}
            for i in range(20)]


def test_kill_9_of_a_replica_during_an_ingest_through_it(tmp_path: Path, database_url: str) -> None:
    a = Server(tmp_path / "a", SEARCH_DATABASE_URL=database_url).start()
    b = Server(tmp_path / "b", SEARCH_DATABASE_URL=database_url).start()
    acknowledged: list[str] = []
    enough = threading.Event()

    def ingest() -> None:
        rng = np.random.default_rng(7)
        with httpx.Client(base_url=a.url, timeout=30) as http:
            for n in range(0, 100_000, 20):
                batch = _batch(n, rng)
                try:
                    response = http.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": batch})
                except httpx.TransportError:
                    return  # killed: this batch may or may not have landed
                assert response.status_code == 200, response.text
                acknowledged.extend(doc["id"] for doc in batch)  # type: ignore[misc]
                if len(acknowledged) >= 200:
                    enough.set()

    try:
        with SearchClient(a.url, timeout=30) as ca, SearchClient(b.url, timeout=30) as cb:
            ca.create_collection(COLLECTION)
            writer = threading.Thread(target=ingest)
            writer.start()
            assert enough.wait(120), "the ingest did not get going"
            a.kill()
            writer.join(60)
            assert not writer.is_alive()
            # The other replica goes on answering reads and writes.
            assert cb.search(COLLECTION, "token1", mode="lexical", relevance={"enabled": False})["hits"]
            cb.upsert(COLLECTION, [{"id": "after-kill", "text": "written through b"}])
            # Every acknowledged document is in the store, and served by b (it applied its own write last).
            for doc_id in acknowledged:
                assert cb.get(COLLECTION, doc_id)["id"] == doc_id
            count = cb.get_collection(COLLECTION)["count"]
            assert count >= len(acknowledged) + 1
            # The killed replica restarts on its data dir and catches up before it says it is ready.
            a.start()
            info = ca.get_collection(COLLECTION)
            assert info["count"] == count and info["applied_seq"] >= cb.get_collection(COLLECTION)["applied_seq"]
            assert ca.get(COLLECTION, "after-kill")["id"] == "after-kill"
            assert ca.get(COLLECTION, acknowledged[-1])["id"] == acknowledged[-1]
    finally:
        a.stop()
        b.stop()
