"""Document encodes for ingest: a pool of low-priority threads, so that a bulk load does not slow searches down.

A search's encode and a bulk load's document batches compete for the same cores. Measured on 2 cores with two
threads encoding 8-document chunks: a single-query encode took 31 ms (p50) beside them, 14 ms idle, and 14 ms
beside them when they ran at nice 10. Linux schedules threads by their own nice value, so each worker lowers its
own priority once, at start: the cores go to searches whenever they need them, and to ingest otherwise.
Chunks are handed out longest first (less padding) and each waits, boundedly, for queued searches to pass
(QueryBatcher.yield_to_queries), for what the kernel does not see: an encoder's own thread pool, when a backend
runs one, was not created by these threads and keeps the normal priority.
"""

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from app.engine.batching import QueryBatcher

log = logging.getLogger("app.ingest")
INGEST_NICENESS = 10  # added to the process's nice value for the ingest threads (the measurement above)


class DocumentEncoder(Protocol):
    dim: int

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + INGEST_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: ingest then shares the cores evenly
        log.warning("could not lower the ingest threads' priority (%s): bulk loads may slow searches", exc)


class DocumentEncoderPool:
    def __init__(self, encoder: DocumentEncoder, queries: QueryBatcher, workers: int, chunk: int) -> None:
        self.encoder = encoder
        self.queries = queries
        self.chunk = chunk
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-encode",
                                        initializer=_lower_priority)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors, in the order of `texts`; chunks run on the pool's threads in parallel."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        chunks = [order[start:start + self.chunk] for start in range(0, len(order), self.chunk)]
        futures = [self._pool.submit(self._encode_chunk, [texts[i] for i in chunk]) for chunk in chunks]
        vectors = np.empty((len(texts), self.encoder.dim), dtype=np.float32)
        for chunk, future in zip(chunks, futures, strict=True):
            vectors[chunk] = future.result()
        return vectors

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        self.queries.yield_to_queries()
        return self.encoder.encode_documents(texts)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
