"""DocumentEncoderPool: every text's own vector, in order, from threads that run below the searches' priority."""

import os
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from app.engine.batching import QueryBatcher
from app.engine.ingest_pool import INGEST_NICENESS, DocumentEncoderPool
from app.settings import Settings
from tests.engine.test_batching import AGREEMENT


class Recording:
    """Vectors that say which text they came from, and the nice value of each thread that encoded."""

    dim = 2

    def __init__(self) -> None:
        self.nice: list[int] = []

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return np.asarray([[float(len(t)), float(t.count("x"))] for t in texts], np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_documents(texts)


def test_chunks_come_back_in_order_from_low_priority_threads() -> None:
    encoder = Recording()
    queries = QueryBatcher(encoder, max_batch=4, max_wait=0.0)
    pool = DocumentEncoderPool(encoder, queries, workers=2, chunk=3)
    try:
        texts = ["x" * (i % 7 + 1) + "y" * i for i in range(20)]
        vectors = pool.encode(texts)
        np.testing.assert_array_equal(vectors, [[len(t), t.count("x")] for t in texts])
        assert len(encoder.nice) == 7  # 20 texts in chunks of 3
        assert set(encoder.nice) == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + INGEST_NICENESS)}
        assert pool.encode([]).shape == (0, 2)
    finally:
        pool.close()
        queries.close()


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "torch"])
def test_the_real_encoder_gives_the_vectors_of_one_batch(backend: str) -> None:
    """Chunks on the pool's threads, in the texts' order: the vectors of one batch (int8's depend a little on the
    batch, its activations taking one scale a batch: tests/engine/test_batching.py)."""
    embedder = Settings(encoder=backend).load_encoder()
    queries = QueryBatcher(embedder, max_batch=4, max_wait=0.0)
    pool = DocumentEncoderPool(embedder, queries, workers=2, chunk=2)
    try:
        texts = ["salmon swim upstream", "a much longer text about the os module and its file descriptors " * 3,
                 "x", "ünïcödé 数据", "rockets burn propellant"]
        pooled, whole = pool.encode(texts), embedder.encode_documents(texts)
        if backend == "onnx-int8":
            assert np.all(np.sum(pooled * whole, axis=1) >= AGREEMENT[backend])
        else:
            np.testing.assert_allclose(pooled, whole, atol=1e-5)
    finally:
        pool.close()
        queries.close()
