"""The benchmark run: corpus, encoder against ingest, every size over HTTP, the in-process indexes, one table."""

import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.bench.corpus import (
    NOISE_SIGMA,
    extend,
    make_long_queries,
    make_queries,
    real_documents,
    rounded,
    stdlib_sentences,
)
from app.bench.encoders import encoder_phase
from app.bench.inprocess import dense_recall, document_tokens, lexical_vs_peers
from app.bench.measures import BareEncoder
from app.bench.phases import LONG_QUERY_CHARS, LoadPlan, encoder_and_ingest, progress, restart_phase, size_phase
from app.bench.replicas import replica_phase
from app.bench.report import MemoryModel, build_rows, render, size_label
from app.engine.tokenizer import Tokenizer
from app.settings import load_settings

DEFAULT_SIZES = (10_000, 100_000)
QUICK_SIZES = (2_000,)


@dataclass
class BenchConfig:
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    rounds: int = 3  # every figure is the median of this many rounds
    pairs: int = 6  # encoder against ingest: pairs of one bare encode and one ingest of the same texts ...
    per_pair: int = 256  # ... of this many texts (one ingest batch): short pairs, less drift inside one
    real_docs: int = 3072  # distinct texts with real vectors; the rest derive from them
    queries: int = 300
    long_queries: int = 50  # of LONG_QUERY_CHARS characters: pasted paragraphs
    requests: int = 400  # per query run, at most ...
    seconds: float = 8.0  # ... and for at most this long
    sample: int = 40  # bare single-query encodes each round
    rank_queries: int = 30  # rank-bm25 takes ~0.1 s a query at 100K: it sees only the first ones
    batch: int = 1000  # documents a bulk-load request
    restarts: int = 3  # of the largest data dir, each beside a start on an empty one
    seed: int = 13
    # SEARCH_ENCODER of the encoder comparison's servers, the candidate (the default) first; compared with
    # "torch" when listed.
    encoders: list[str] = field(default_factory=lambda: ["onnx-int8", "torch"])
    keep: Path | None = None  # keep the data dirs and server logs here
    replica_texts: int = 1024  # server-encoded texts ingested through the replicas (a quarter at a time)
    database_url: str | None = None  # the replicas' (an empty database); by default a PostgreSQL of their own

    @classmethod
    def quick(cls, sizes: list[int] | None = None) -> "BenchConfig":
        """Tiny: a smoke test of every row in a minute or two, not a measurement."""
        return cls(sizes=sizes or list(QUICK_SIZES), pairs=3, per_pair=16, real_docs=48, queries=60, long_queries=10,
                   requests=30, seconds=0.8, sample=8, rank_queries=20, batch=500, restarts=1,
                   replica_texts=128)


def _lexical_size(sizes: list[int]) -> int:
    """The peers are compared at 100K documents, or the largest size under it (a quick run's)."""
    under = [s for s in sizes if s <= 100_000]
    return max(under) if under else min(sizes)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `with BenchServer`, which stops its server


def run(config: BenchConfig) -> str:
    """Runs every phase and returns the table; servers are always stopped, temp dirs removed unless kept."""
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        return _run(config)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(config: BenchConfig) -> str:
    if config.real_docs < config.pairs * config.per_pair:
        raise ValueError("real_docs must cover every pair's texts")
    settings = load_settings()
    threads, sizes = settings.threads, sorted(set(config.sizes))
    hnsw, bm25 = settings.collection_defaults.hnsw, settings.collection_defaults.bm25
    if config.keep:
        config.keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="search-bench-", dir=config.keep))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        sentences = stdlib_sentences()
        real = real_documents(sentences, config.real_docs, config.seed)
        queries = make_queries(sentences, config.queries, config.seed + 1)
        long_queries = make_long_queries(sentences, config.long_queries, LONG_QUERY_CHARS, config.seed + 3)
        progress(f"{len(sentences)} sentences, {config.real_docs} real documents; loading the encoder")
        encoder = BareEncoder(settings.model_path(), threads, settings.encode_batch_size)
        ingest, timed = encoder_and_ingest(encoder, real, queries, config.per_pair, config.pairs, config.sample,
                                           work)
        progress("encoding the remaining real documents and the queries (all cores, not timed)")
        cores = os.cpu_count() or 1
        rest = encoder.encode(real.texts(config.pairs * config.per_pair), threads=cores)
        real.vectors = rounded(np.concatenate([*timed, rest]))
        query_vectors = encoder.encode(queries, threads=cores)
        lex_size, extra = _lexical_size(sizes), config.rounds * 1000
        corpus = extend(real, max(max(sizes), lex_size + extra), config.seed + 2)
        plan = LoadPlan(config.rounds, config.requests, config.seconds, config.sample, config.batch)
        figures = [size_phase(encoder, corpus, size, queries, long_queries, plan, work) for size in sizes]
        compare = _lexical_size(sizes)
        progress(f"encoder backends {', '.join(config.encoders)} at {compare} documents")
        encoders = encoder_phase(config.encoders, encoder, corpus, compare, queries,
                                 real.texts(0, 2 * config.per_pair), plan, work)
        restart_phase(figures[-1], queries, config.restarts, threads, work)
        replica_texts = [corpus.text(i) for i in range(config.replica_texts)]
        replicas = replica_phase(corpus, sizes[0], replica_texts, queries, plan, threads, work, config.database_url)
        progress(f"lexical index against rank-bm25 and bm25s at {lex_size} documents")
        tokens = document_tokens(corpus, lex_size + extra)
        tokenize = Tokenizer()
        lexical = lexical_vs_peers(tokens[:lex_size], tokens[lex_size:], [tokenize(q) for q in queries], bm25,
                                   config.rank_queries, config.rounds)
        unique_terms = float(np.mean([len(set(t)) for t in tokens[:2000]]))
        del tokens
        dense, vectors = [], corpus.vectors if corpus.vectors is not None else np.zeros((0, 0), np.float32)
        for size in sizes:
            progress(f"dense index recall at {size} documents")
            dense.append(dense_recall(vectors[:size], query_vectors, hnsw, settings.hnsw_recall_target))
        control = dense_recall(real.vectors, query_vectors, hnsw, settings.hnsw_recall_target)
        rows = build_rows(ingest, config.per_pair, threads, settings.encode_batch_size, figures, lexical, dense,
                          control, MemoryModel(vectors.shape[1], hnsw.m, unique_terms), encoders, replicas)
    finally:
        if config.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    title = (f"hybrid-search benchmark: SEARCH_THREADS={threads}, {os.cpu_count()} CPUs, load average "
             f"{load_before:.1f} → {os.getloadavg()[0]:.1f}, {time.perf_counter() - started:.0f} s; sizes "
             f"{', '.join(size_label(s) for s in sizes)}; each figure the median of {config.rounds} rounds "
             f"({config.pairs} pairs for encoder against ingest, {config.restarts} for restarts).\n"
             f"Corpus: {len(sentences)} standard-library docstring sentences recombined into 100-200-word "
             f"documents; {config.real_docs} real MiniLM vectors, the rest those + Gaussian noise with the real "
             f"vectors' covariance ({NOISE_SIGMA} rms a dimension), re-normalised. "
             f"Queries: {config.queries} phrases of 2-6 words of those sentences, and {config.long_queries} of "
             f"{LONG_QUERY_CHARS:,} characters (random sentences run together); k=10, "
             f"relevance filter on (the default).")
    return render(rows, title)
