"""The encoder: normalised vectors, and the query fast path equal to sentence-transformers' encode."""

import numpy as np
import pytest

from app.engine.embedder import Embedder
from app.settings import Settings

QUERIES = ["salmon swim upstream", "What does the os module do with file descriptors?", "x", "   ", "ünïcödé 数据"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The PyTorch backend whatever the default is (the session's may be int8, whose vectors depend on the batch)."""
    return Embedder(Settings().model_path(), threads=1)


def test_query_path_gives_the_vectors_of_encode(embedder: Embedder) -> None:
    batch = embedder.encode_documents(QUERIES)
    single = np.stack([embedder.encode_query(q) for q in QUERIES])
    assert single.dtype == np.float32 and single.shape == (len(QUERIES), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1.0, atol=1e-5)
    # Batched encoding pads to the longest text, which moves the last digits; the vectors are the same.
    np.testing.assert_allclose(single, batch, atol=1e-5)
    assert float(single[0] @ single[1]) < 0.9  # and they are not all one vector
