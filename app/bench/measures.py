"""Measurements: the bare encoder in this process, and ingest, bulk load and query load over HTTP."""

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
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


async def _query_load(url: str, collection: str, queries: list[str], body: dict[str, Any], clients: int,
                      max_requests: int, max_seconds: float, offset: int) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    numbers = itertools.count()
    path = f"/v1/collections/{collection}/search"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(query: str) -> float | None:
            start = time.perf_counter()
            try:
                response = await client.post(path, json={"query": query, **body})
            except httpx.HTTPError:
                return None
            return (time.perf_counter() - start) * 1000 if response.status_code == 200 else None

        for query in queries[:clients]:  # open the connections and warm every code path first
            await one(query)
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal errors
            while (i := next(numbers)) < max_requests and time.perf_counter() < deadline:
                latency = await one(queries[(offset + i) % len(queries)])
                if latency is None:
                    errors += 1
                else:
                    latencies.append(latency)

        await asyncio.gather(*(worker() for _ in range(clients)))
        return LoadResult(latencies, errors, time.perf_counter() - started)


def query_load(url: str, collection: str, queries: list[str], body: dict[str, Any], clients: int,
               max_requests: int, max_seconds: float, offset: int = 0) -> LoadResult:
    """`clients` concurrent clients, each sending its next search as soon as the last one answered, until
    `max_requests` were sent or `max_seconds` passed."""
    return asyncio.run(_query_load(url, collection, queries, body, clients, max_requests, max_seconds, offset))
