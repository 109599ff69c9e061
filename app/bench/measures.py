"""Measurements: the bare encoder in this process, and ingest, bulk load and query load over HTTP."""

import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from app.bench.corpus import Corpus
from app.client import SearchClient


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class BareEncoder:
    """SentenceTransformer.encode with no service around it, on the server's thread setting."""

    def __init__(self, model: str, threads: int, batch_size: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.threads, self.batch_size = threads, batch_size
        torch.set_num_threads(threads)
        self.model = SentenceTransformer(model, device="cpu", local_files_only=True)
        self.dim = int(np.asarray(self.model.encode(["warm up the encoder"] * 4, batch_size=batch_size)).shape[1])

    def encode(self, texts: list[str], threads: int | None = None) -> np.ndarray:
        import torch

        if not texts:
            return np.empty((0, self.dim), np.float32)
        torch.set_num_threads(threads or self.threads)
        try:
            vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        finally:
            torch.set_num_threads(self.threads)
        return np.asarray(vectors, np.float32)

    def docs_per_second(self, texts: list[str]) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        vectors = self.encode(texts)
        return len(texts) / (time.perf_counter() - start), vectors

    def query_latencies_ms(self, queries: list[str]) -> list[float]:
        """One query at a time, as the service encodes them."""
        latencies = []
        for query in queries:
            start = time.perf_counter()
            self.model.encode([query], batch_size=1, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies


def ingest_texts(url: str, collection: str, ids: list[str], texts: list[str], batch: int = 256) -> float:
    """Posts text-only documents (the server encodes them) in sequential batches; returns docs/s."""
    docs = ({"id": i, "text": t} for i, t in zip(ids, texts, strict=True))
    with SearchClient(url, timeout=3600) as client:
        start = time.perf_counter()
        client.ingest(collection, docs, batch=batch)
        return len(texts) / (time.perf_counter() - start)


def load_corpus(url: str, collection: str, corpus: Corpus, n: int, batch: int, in_flight: int = 2) -> float:
    """Loads documents 0..n-1 with their own vectors, `in_flight` requests at a time; returns docs/s."""
    vectors = corpus.vectors
    if vectors is None:
        raise ValueError("the corpus has no vectors")
    docs = ({"id": f"d{i}", "text": corpus.text(i), "vector": vectors[i].tolist()} for i in range(n))
    with SearchClient(url, timeout=3600) as client:
        start = time.perf_counter()
        client.ingest(collection, docs, batch=batch, concurrency=in_flight)
        return n / (time.perf_counter() - start)


@dataclass
class LoadResult:
    latencies_ms: list[float]
    errors: int
    seconds: float

    @property
    def qps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


class _Load:
    """What the clients of one query load share: the numbering of requests, the deadline and the answers."""

    def __init__(self, bodies: list[bytes], clients: int, max_requests: int, max_seconds: float, offset: int) -> None:
        self.bodies, self.max_requests, self.max_seconds, self.offset = bodies, max_requests, max_seconds, offset
        self.latencies: list[float] = []
        self.errors = 0
        self.started = self.deadline = 0.0
        self._sent = 0
        self._lock = threading.Lock()
        # Every client warms up first; the clock starts when the last one is ready.
        self.ready = threading.Barrier(clients, action=self._start)

    def _start(self) -> None:
        self.started = time.perf_counter()
        self.deadline = self.started + self.max_seconds

    def next_body(self) -> bytes | None:
        with self._lock:
            i, self._sent = self._sent, self._sent + 1
        if i >= self.max_requests or time.perf_counter() >= self.deadline:
            return None
        return self.bodies[(self.offset + i) % len(self.bodies)]

    def record(self, latency: float | None) -> None:
        with self._lock:
            if latency is None:
                self.errors += 1
            else:
                self.latencies.append(latency)


def _client(url: str, path: str, load: _Load, warm_up: bytes) -> None:
    """One keep-alive connection sending its next search as soon as the last one answered."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    headers = {"content-type": "application/json"}

    def one(body: bytes) -> float | None:
        start = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()  # the next request reconnects
            return None
        return (time.perf_counter() - start) * 1000 if response.status == 200 else None

    try:
        one(warm_up)  # opens the connection and warms every code path
        load.ready.wait(timeout=600)  # a client that never gets ready breaks the barrier for all
        while (body := load.next_body()) is not None:
            load.record(one(body))
    finally:
        conn.close()


def query_load(url: str | Sequence[str], collection: str, queries: list[str], body: dict[str, Any], clients: int,
               max_requests: int, max_seconds: float, offset: int = 0) -> LoadResult:
    """`clients` concurrent clients, dealt round-robin over the urls, each sending its next search as soon as
    the last one answered, until `max_requests` were sent or `max_seconds` passed.

    Each client is a thread with one keep-alive `http.client` connection: a lean generator, because it shares
    the machine's cores with the server. httpx's async client, used before, took ~1.4 ms of this process's CPU a
    search and added 0.5-2 ms to a 1-client p50 (against http.client on the same server)."""
    urls = [url] if isinstance(url, str) else list(url)
    bodies = [json.dumps({"query": query, **body}).encode() for query in queries]
    load = _Load(bodies, clients, max_requests, max_seconds, offset)
    path = f"/v1/collections/{collection}/search"
    threads = [threading.Thread(target=_client, args=(urls[n % len(urls)], path, load, bodies[n % len(bodies)]),
                                daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(load.latencies, load.errors, time.perf_counter() - load.started)
