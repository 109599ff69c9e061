"""`python -m app bench --quick` end to end: a real server, every row of the table, no error."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.store.lock import DataDirLock

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    "bare SentenceTransformer.encode", "bare single-query encode p50", "POST /documents, text only",
    "bulk load @2K", *(f"{mode} @2K, {n} client" for mode in ("hybrid", "lexical", "dense") for n in (1, 4)),
    "hybrid @2K, 1 client, 5,000-character queries",
    "hybrid @2K, 1 client, while", "HTTP errors in every query run",
    "hybrid @2K, 1 client, SEARCH_ENCODER=torch", "hybrid @2K, 8 clients, SEARCH_ENCODER=torch",
    "POST /documents, text only, encoded by the server, SEARCH_ENCODER=torch",
    "hybrid @2K, 1 client, during a bulk text ingest, SEARCH_ENCODER=torch", "self-tuned ef_search @2K over HTTP",
    "HTTP errors in the encoder runs", "LexicalIndex top-10 p50 @2K",
    "rank_bm25.BM25Okapi top-10 p50",
    "top-10 scores, LexicalIndex vs BM25Okapi", "bm25s", "add 1,000 docs to the 2K index",
    "HNSW recall@10 vs exact @2K", "server RSS per doc @2K after load", "server RSS per doc @2K after restart",
    "process start → /ready, empty data dir", "process start → /ready @2K",
    "hybrid @2K, 4 clients round-robin over 2 replicas",
    "hybrid @2K, 4 clients round-robin over 2 replicas, each held to its own core",
    "ingest, text only, 32 a batch, over 2 replicas",
    "replication lag on the other replica", "bulk load @2K with vectors, 1 replica on PostgreSQL",
    "hybrid @2K, 1 client, 1 replica on PostgreSQL", "HTTP errors in the replicas' query runs",
]


@pytest.mark.slow  # two to three minutes: four server starts and the encoder on a small machine
def test_quick_bench_prints_every_row(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "bench", "--quick", "--keep", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    lines = {line.split(" | ")[1].strip(): line for line in table.splitlines() if line.count(" | ") >= 3}
    for row in ROWS:
        assert any(measure.startswith(row) for measure in lines), f"no row {row!r} in\n{table}"
    for errors in (line for measure, line in lines.items() if measure.startswith("HTTP errors")):
        assert errors.split(" | ")[2].strip() == "0", errors
    assert "nan" not in table and "Traceback" not in table
    assert "identical to 1e-6" in table and "≤ 1e-6 met" in table  # our BM25 scores equal rank_bm25's
    for lock_file in tmp_path.glob("*/*/LOCK"):  # a server still running would hold its data dir's lock
        lock = DataDirLock(lock_file.parent)
        lock.acquire()
        lock.release()


def test_derived_vectors_noise_follows_the_real_vectors_spread() -> None:
    from app.bench.corpus import shaped_noise

    rng = np.random.default_rng(3)
    spread = np.array([1.0, 0.5, 0.1, 0.0])  # a corpus that varies along few directions, not at all along one
    vectors = rng.standard_normal((4000, 4)) * spread
    noise = shaped_noise(vectors, 20_000, sigma=0.05, seed=1)
    assert noise.shape == (20_000, 4) and noise.dtype == np.float32
    assert np.mean(noise.astype(np.float64) ** 2) == pytest.approx(0.05**2, rel=0.05)  # rms 0.05 a dimension
    stds = noise.std(axis=0)
    assert stds[3] < 1e-6  # none where the real vectors never vary
    assert stds[0] / stds[1] == pytest.approx(2.0, rel=0.1) and stds[1] / stds[2] == pytest.approx(5.0, rel=0.1)
    assert np.array_equal(noise, shaped_noise(vectors, 20_000, sigma=0.05, seed=1))  # seeded
