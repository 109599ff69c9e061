"""In-process measurements: the lexical index against rank-bm25 and bm25s, the dense index against exact search."""

import dataclasses
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.bench.corpus import Corpus
from app.bench.measures import median
from app.engine.dense import DenseIndex
from app.engine.hnsw_tuning import measure
from app.engine.lexical import LexicalIndex
from app.engine.rwlock import ReadWriteLock
from app.engine.tokenizer import Tokenizer
from app.engine.types import EF_SEARCH_UNTUNED, Bm25Settings, HnswSettings


def document_tokens(corpus: Corpus, stop: int) -> list[list[str]]:
    """The service's tokens of documents 0..stop-1. A document is sentences joined by spaces and no token
    spans a space, so tokenising each distinct sentence once gives the same lists (checked on a sample)."""
    tokenize = Tokenizer()
    by_sentence = [tokenize(s) for s in corpus.sentences]
    docs = [list(itertools.chain.from_iterable(by_sentence[s] for s in doc)) for doc in corpus.docs[:stop]]
    for i in range(0, stop, max(stop // 50, 1)):
        if tokenize(corpus.text(i)) != docs[i]:
            raise AssertionError(f"document {i}: sentence tokens differ from the document's tokens")
    return docs


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000


@dataclass
class LexicalFigures:
    docs: int
    ours_p50_ms: float  # over every query
    bm25s_p50_ms: float
    ours_vs_bm25s: float  # our p50 / bm25s p50, same queries interleaved
    rank_p50_ms: float  # over the first queries only (rank-bm25 is slow)
    rank_vs_ours: float  # rank-bm25 p50 / our p50 on those same queries
    max_score_diff: float  # top-10 scores, ours against rank-bm25's
    add_1000_s: float
    rank_rebuild_s: float
    bm25s_rebuild_s: float


def lexical_vs_peers(docs: list[list[str]], extra: list[list[str]], queries: list[list[str]],
                     bm25: Bm25Settings, rank_queries: int, rounds: int) -> LexicalFigures:
    """Top-10 latency of each index on the same token lists, one query at a time and interleaved; then the
    cost of taking 1,000 more documents (an incremental add for ours, a rebuild for the others)."""
    import bm25s
    from rank_bm25 import BM25Okapi

    ours = LexicalIndex(bm25.k1, bm25.b)
    ours.upsert(list(range(len(docs))), docs)
    rank = BM25Okapi(docs, k1=bm25.k1, b=bm25.b, epsilon=ours.epsilon)
    peer = bm25s.BM25(k1=bm25.k1, b=bm25.b)
    peer.index(docs, show_progress=False)
    t_ours, t_peer, t_rank, t_ours_sub, diffs = [], [], [], [], [0.0]
    for i, query in enumerate(queries):
        t_ours.append(_timed(ours.top_k, query, 10))
        t_peer.append(_timed(peer.retrieve, [query], k=10, show_progress=False))
        if i < rank_queries:
            t_ours_sub.append(t_ours[-1])
            start = time.perf_counter()
            scores = rank.get_scores(query)
            top = np.sort(scores[np.argpartition(-scores, 10)[:10]])[::-1] if len(scores) > 10 else np.sort(scores)
            t_rank.append((time.perf_counter() - start) * 1000)
            mine = ours.top_k(query, 10)[1]
            top = top[top > 0] if len(mine) < 10 else top  # ours lists matching documents only
            diffs.append(float(np.abs(top[:len(mine)] - mine).max()) if len(mine) else 0.0)
    del rank
    adds, rank_builds, peer_builds = [], [], []
    for r in range(rounds):
        batch = extra[r * 1000:(r + 1) * 1000]
        start = time.perf_counter()
        ours.upsert(list(range(len(docs) + r * 1000, len(docs) + (r + 1) * 1000)), batch)
        adds.append(time.perf_counter() - start)
        grown = docs + extra[:(r + 1) * 1000]
        start = time.perf_counter()
        peer = bm25s.BM25(k1=bm25.k1, b=bm25.b)
        peer.index(grown, show_progress=False)
        peer_builds.append(time.perf_counter() - start)
        if r < 2:  # a rank-bm25 rebuild of 100K documents takes tens of seconds: two are enough
            start = time.perf_counter()
            BM25Okapi(grown, k1=bm25.k1, b=bm25.b, epsilon=ours.epsilon)
            rank_builds.append(time.perf_counter() - start)
    return LexicalFigures(
        len(docs), median(t_ours), median(t_peer), median(t_ours) / median(t_peer), median(t_rank),
        median(t_rank) / median(t_ours_sub), max(diffs), median(adds), median(rank_builds), median(peer_builds))


@dataclass
class DenseFigures:
    docs: int
    tuned_ef: int  # self-tuned (EF_SEARCH_UNTUNED when the index is too small to measure)
    tuned_self_recall: float | None  # recall@10 the tuning measured, on its probe queries
    tune_seconds: float  # the measurement: what a collection's writes wait for once a doubling
    recall_at_10: float  # the benchmark's queries at tuned_ef
    p50_ms: float
    fixed_ef: int
    fixed_recall: float  # the same queries at fixed_ef (the earlier fixed default)
    fixed_p50_ms: float
    other_efs: dict[int, float]  # recall@10 at other ef, same graph


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    top: list[set[int]] = []
    for first in range(0, len(queries), 64):
        sims = queries[first:first + 64] @ unit.T
        top += [set(row.tolist()) for row in np.argpartition(-sims, k, axis=1)[:, :k]]
    return top


def _timed_search(index: DenseIndex, queries: np.ndarray, k: int) -> tuple[list[np.ndarray], float]:
    found, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        labels, _ = index.search(query, k)
        latencies.append((time.perf_counter() - start) * 1000)
        found.append(labels)
    return found, median(latencies)


def dense_recall(vectors: np.ndarray, queries: np.ndarray, hnsw: HnswSettings, recall_target: float,
                 efs: tuple[int, ...] = (256, 2048), k: int = 10) -> DenseFigures:
    """Recall@k of the HNSW index against exact search on the same vectors and its query p50: at the ef the
    collection tunes for itself (as the service does, with probes made of its vectors) and at the fixed
    EF_SEARCH_UNTUNED; then the recall at each of `efs` on the same graph."""
    n = len(vectors)
    settings = dataclasses.replace(hnsw, ef_search=None)
    index = DenseIndex(vectors.shape[1], settings, capacity=n, threads=os.cpu_count() or 1)
    index.upsert(np.arange(n, dtype=np.int64), vectors)  # the build is not timed: all cores
    start = time.perf_counter()
    index.tuning = measure(index, ReadWriteLock(), recall_target)
    tune_seconds = time.perf_counter() - start
    exact = _exact_top(vectors, queries, min(k, n - 1))
    found, p50 = _timed_search(index, queries, k)
    tuned_ef = index.ef_search
    index.settings = dataclasses.replace(hnsw, ef_search=EF_SEARCH_UNTUNED)
    fixed, fixed_p50 = _timed_search(index, queries, k)
    recall = {}
    for ef in efs:
        index.settings = dataclasses.replace(hnsw, ef_search=ef)
        recall[ef] = _recall([index.search(query, k)[0] for query in queries], exact)
    return DenseFigures(n, tuned_ef, index.tuning.recall if index.tuning else None, tune_seconds,
                        _recall(found, exact), p50, EF_SEARCH_UNTUNED, _recall(fixed, exact), fixed_p50, recall)


def _recall(found: list[np.ndarray], exact: list[set[int]]) -> float:
    hits = sum(len(e & set(f.tolist())) for f, e in zip(found, exact, strict=True))
    return hits / max(sum(len(e) for e in exact), 1)
