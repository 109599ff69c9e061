"""The phases against a real server: encoder against ingest, then each corpus size loaded, queried and restarted."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.bench.corpus import Corpus
from app.bench.measures import (
    BareEncoder,
    LoadResult,
    ingest_texts,
    load_corpus,
    median,
    query_load,
)
from app.bench.server import BenchServer
from app.client import SearchClient

MODES = ("hybrid", "lexical", "dense")
CLIENTS = (1, 4)
COLLECTION = "bench"
LONG_QUERY_CHARS = 5_000  # a pasted paragraph (queries may be up to 32,768 characters)
TUNING_WAIT_S = 600.0  # for a collection's ef_search measurement after a load


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class IngestFigures:
    encode_rates: list[float] = field(default_factory=list)  # bare encoder, docs/s, one per pair
    ingest_rates: list[float] = field(default_factory=list)  # POST /documents, same texts, same pair
    query_p50s: list[float] = field(default_factory=list)  # bare single-query encode, ms

    @property
    def ratio(self) -> float:
        return median([i / e for i, e in zip(self.ingest_rates, self.encode_rates, strict=True)])


def encoder_and_ingest(encoder: BareEncoder, real: Corpus, queries: list[str], per_pair: int, pairs: int,
                       sample: int, work: Path) -> tuple[IngestFigures, list[np.ndarray]]:
    """Each pair encodes its own texts bare, then posts the same texts to the server, side by side.
    Returns the figures and the bare vectors of every text encoded (they become the real vectors)."""
    figures, vectors = IngestFigures(), list[np.ndarray]()
    with BenchServer(work / "ingest", work, encoder.threads) as server:
        server.start()
        server.client.create_collection("ingest")
        for r in range(pairs):
            first, stop = r * per_pair, (r + 1) * per_pair
            texts = real.texts(first, stop)
            rate, encoded = encoder.docs_per_second(texts)
            vectors.append(encoded)
            figures.encode_rates.append(rate)
            figures.query_p50s.append(median(encoder.query_latencies_ms(_rotate(queries, r * sample, sample))))
            ids = [f"r{i}" for i in range(first, stop)]
            figures.ingest_rates.append(ingest_texts(server.url, "ingest", ids, texts))
            progress(f"pair {r + 1}/{pairs}: bare encode {rate:.1f} docs/s, "
                     f"ingest {figures.ingest_rates[-1]:.1f} docs/s")
    return figures, vectors


@dataclass
class RestartFigures:
    ready_s: list[float]  # process start to /ready on the loaded data dir, one per restart
    empty_s: list[float]  # the same on an empty data dir, alternating with those
    rss: int  # after the first restart and one search


@dataclass
class SizeFigures:
    size: int
    load_rate: float
    rss_empty: int
    rss_loaded: int
    batch: int  # documents a bulk-load request
    encode_p50s: list[float] = field(default_factory=list)  # bare query encode per round, ms
    runs: dict[tuple[str, int], list[LoadResult]] = field(default_factory=dict)  # one per round
    long_runs: list[LoadResult] = field(default_factory=list)  # hybrid, 1 client, LONG_QUERY_CHARS queries
    during_load: LoadResult | None = None  # hybrid, 1 client, while a loader re-posts documents
    reposted: int = 0  # documents re-posted meanwhile
    shutdown_s: float = 0.0  # SIGTERM to exit, with the snapshot of every index
    restart: RestartFigures | None = None

    @property
    def errors(self) -> int:
        during = self.during_load.errors if self.during_load else 0
        long = sum(run.errors for run in self.long_runs)
        return during + long + sum(run.errors for runs in self.runs.values() for run in runs)


@dataclass
class LoadPlan:
    rounds: int
    requests: int  # per run, at most
    seconds: float  # per run, at most
    sample: int  # bare query encodes per round
    batch: int  # documents per bulk-load request


def wait_for_tuning(client: SearchClient) -> tuple[int | None, float | None]:
    """The collection's first ef_search measurement runs in the background after the load: the query rounds
    wait for it, so they measure the ef the collection will keep (a bench polls; tests never do)."""
    deadline = time.monotonic() + TUNING_WAIT_S
    while time.monotonic() < deadline:
        tuning = client.get_collection(COLLECTION).get("hnsw_tuning") or {}
        if tuning.get("source") != "untuned" and not tuning.get("measuring"):
            return tuning.get("ef_search"), tuning.get("recall")
        time.sleep(0.2)
    raise TimeoutError(f"ef_search not measured in {TUNING_WAIT_S:.0f} s")


def _rotate(items: list[str], start: int, count: int) -> list[str]:
    return [items[(start + i) % len(items)] for i in range(count)]


def size_phase(encoder: BareEncoder, corpus: Corpus, size: int, queries: list[str], long_queries: list[str],
               plan: LoadPlan, work: Path) -> SizeFigures:
    """A fresh server: RSS empty, bulk load with vectors, RSS loaded, then rounds of every mode at every
    concurrency and of long hybrid queries, each round beside a bare query-encode sample; then a clean stop
    (SIGTERM)."""
    with BenchServer(work / f"size-{size}", work, encoder.threads) as server:
        server.start()
        server.client.create_collection(COLLECTION)
        server.client.search(COLLECTION, queries[0])
        rss_empty = server.rss_bytes()
        progress(f"{size} docs: loading with vectors, {plan.batch} a request")
        load_rate = load_corpus(server.url, COLLECTION, corpus, size, plan.batch)
        count = server.client.get_collection(COLLECTION)["count"]
        if count != size:
            raise RuntimeError(f"the collection holds {count} documents, not {size}")
        figures = SizeFigures(size, load_rate, rss_empty, server.rss_bytes(), plan.batch)
        wait_for_tuning(server.client)  # so that no measurement in the background shares the cores with a round
        progress(f"{size} docs: loaded at {load_rate:.0f} docs/s; querying")
        for r in range(plan.rounds):
            figures.encode_p50s.append(median(encoder.query_latencies_ms(_rotate(queries, r * 7, plan.sample))))
            for mode in MODES:
                for clients in CLIENTS:
                    # relevance left out: the default (enabled) path, what users get
                    run = query_load(server.url, COLLECTION, queries, {"mode": mode, "k": 10}, clients,
                                     plan.requests, plan.seconds, offset=r * plan.requests)
                    figures.runs.setdefault((mode, clients), []).append(run)
            figures.long_runs.append(query_load(server.url, COLLECTION, long_queries, {"mode": "hybrid", "k": 10}, 1,
                                                plan.requests, plan.seconds, offset=r * plan.requests))
            progress(f"{size} docs: round {r + 1}/{plan.rounds} done")
        searches_during_load(server.url, corpus, queries, plan, figures)
        figures.shutdown_s = server.stop()
    return figures


def searches_during_load(url: str, corpus: Corpus, queries: list[str], plan: LoadPlan, figures: SizeFigures) -> None:
    """Hybrid searches from one client while a loader re-posts (replaces) the first documents, 2 requests in
    flight: what a frontend sees during a bulk load."""
    figures.reposted = min(figures.size, 8 * plan.batch)
    progress(f"{figures.size} docs: hybrid searches while {figures.reposted} documents are re-posted")
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(load_corpus, url, COLLECTION, corpus, figures.reposted, plan.batch)
        figures.during_load = query_load(url, COLLECTION, queries, {"mode": "hybrid", "k": 10}, 1, plan.requests,
                                         plan.seconds)
        loading.result()
    with SearchClient(url) as client:
        count = client.get_collection(COLLECTION)["count"]
    if count != figures.size:
        raise RuntimeError(f"after re-posting, the collection holds {count} documents, not {figures.size}")


def restart_phase(figures: SizeFigures, queries: list[str], restarts: int, threads: int, work: Path) -> None:
    """Restarts on the data dir `size_phase` left, alternating with starts on an empty data dir."""
    ready, empty, rss = [], [], 0
    for r in range(restarts):
        with BenchServer(work / f"empty-{r}", work, threads) as server:
            empty.append(server.start())
        with BenchServer(work / f"size-{figures.size}", work, threads) as server:
            ready.append(server.start())
            count = server.client.get_collection(COLLECTION)["count"]
            if count != figures.size:
                raise RuntimeError(f"after a restart the collection holds {count} documents, not {figures.size}")
            server.client.search(COLLECTION, queries[r])
            rss = rss or server.rss_bytes()
        progress(f"restart {r + 1}/{restarts}: {ready[-1]:.1f} s to ready (empty data dir: {empty[-1]:.1f} s)")
    figures.restart = RestartFigures(ready, empty, rss)
