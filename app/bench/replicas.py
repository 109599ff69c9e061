"""Replicas over PostgreSQL, beside the embedded store in the same run: query and ingest throughput of two
replicas against one, replication lag during an ingest, and one replica on PostgreSQL against one server on SQLite
loaded with the same corpus in the same phase (their single-client searches alternate)."""

import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app.bench.corpus import Corpus
from app.bench.measures import LoadResult, load_corpus, median, percentile, query_load
from app.bench.phases import COLLECTION, LoadPlan, progress, wait_for_tuning
from app.bench.server import BenchServer
from app.client import SearchClient

CLIENTS = 4  # hybrid searches in flight, spread round-robin over the replicas
SCALE_TARGET, LAG_TARGET_MS, STORE_TARGET = 1.7, 1000.0, 1.2
LAG_POLL_SECONDS = 0.005  # how often the lag watcher asks the other replica how far it has applied
PINNED_CORES = ({0}, {1})  # replica a's core and replica b's, for the pinned QPS rows (on 2 or more cores)


@dataclass
class ReplicaFigures:
    size: int
    load_rate: float  # bulk load with vectors through one replica on PostgreSQL, docs/s
    sqlite_load_rate: float = 0.0  # the same bulk load into a server on SQLite, in the same phase
    hybrid_p50s: list[float] = field(default_factory=list)  # 1 client, one replica on PostgreSQL, per round
    sqlite_p50s: list[float] = field(default_factory=list)  # 1 client, the SQLite server, right after each
    one: list[LoadResult] = field(default_factory=list)  # CLIENTS clients on one replica, per round
    two: list[LoadResult] = field(default_factory=list)  # CLIENTS clients round-robin over two, per round
    # The same with each replica's threads held to a core of its own (PINNED_CORES), as containers given one CPU
    # each would be: one replica alone otherwise borrows the other's core (1.3-1.4 cores at 4 clients).
    one_pinned: list[LoadResult] = field(default_factory=list)
    two_pinned: list[LoadResult] = field(default_factory=list)
    ingest_one: float = 0.0  # server-encoded text through one replica, docs/s
    ingest_two: float = 0.0  # the same spread over two
    lags_ms: list[float] = field(default_factory=list)  # acknowledged on one replica → applied on the other
    catch_up_s: float = 0.0  # the second replica, on an empty disk: process start → /ready (built from the store)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in (*self.one, *self.two, *self.one_pinned, *self.two_pinned))


@contextmanager
def postgres_url(given: str | None, work: Path) -> Iterator[str]:
    """`given`, or a PostgreSQL of its own (pgserver, the `bench` extra) in `work`, stopped afterwards."""
    if given:
        yield given
        return
    import pgserver

    # Reachable by the server's own user when run as root (pgserver then runs PostgreSQL as `pgserver`).
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=work))
    root.chmod(0o755)
    server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def replica_phase(corpus: Corpus, size: int, texts: list[str], queries: list[str], plan: LoadPlan, threads: int,
                  work: Path, database_url: str | None) -> ReplicaFigures:
    """Two replicas (SEARCH_THREADS=`threads` each) over one fresh database."""
    with ExitStack() as stack:
        url = stack.enter_context(postgres_url(database_url, work))
        env = {"SEARCH_DATABASE_URL": url}
        a, b = (stack.enter_context(BenchServer(work / f"replica-{n}", work, threads, env)) for n in "ab")
        sqlite = stack.enter_context(BenchServer(work / "replica-sqlite", work, threads))
        progress("replicas: starting one over a PostgreSQL database")
        a.start()
        a.client.create_collection(COLLECTION)
        progress(f"replicas: {size} docs with vectors through one replica on PostgreSQL, then into SQLite")
        # Each alone, the SQLite server as the replica: a second replica following meanwhile would build its own
        # indexes on the same 2 cores.
        figures = ReplicaFigures(size, load_corpus(a.url, COLLECTION, corpus, size, plan.batch))
        wait_for_tuning(a.client)
        sqlite.start()
        sqlite.client.create_collection(COLLECTION)
        figures.sqlite_load_rate = load_corpus(sqlite.url, COLLECTION, corpus, size, plan.batch)
        wait_for_tuning(sqlite.client)
        progress("replicas: a second one, built from the store")
        figures.catch_up_s = b.start()
        _wait_applied(b.client, _applied(a.client))
        wait_for_tuning(b.client)
        body = {"mode": "hybrid", "k": 10}
        for r in range(plan.rounds):
            offset = r * plan.requests
            for url, p50s in ((a.url, figures.hybrid_p50s), (sqlite.url, figures.sqlite_p50s)):
                p50s.append(query_load(url, COLLECTION, queries, body, 1, plan.requests, plan.seconds, offset).p50)
            _scale_round(a, b, queries, body, plan, offset, figures.one, figures.two)
            if len(os.sched_getaffinity(0)) >= 2:
                for server, cores in zip((a, b), PINNED_CORES, strict=True):
                    server.pin(cores)
                try:
                    _scale_round(a, b, queries, body, plan, offset, figures.one_pinned, figures.two_pinned)
                finally:
                    for server in (a, b):
                        server.pin(None)
            progress(f"replicas: round {r + 1}/{plan.rounds} done")
        # Four quarters in the order one, two, two, one: a drift during the phase (the graph and the store
        # growing, the machine warming) weighs on both alike. One at a time, the 2-replica figure went 1.63x in
        # a whole run and 1.80-2.00x in runs of the ingest alone.
        quarter, seconds = len(texts) // 4, {"one": 0.0, "two": 0.0}
        for n, way in enumerate(("one", "two", "two", "one")):
            part, prefix = texts[n * quarter:(n + 1) * quarter], f"{way}{n}-"
            if way == "one":
                rate, lags = _ingest_watching_lag(a, b, part, prefix)
                figures.lags_ms += lags
            else:
                rate = _ingest_spread([a, b], part, prefix)
            seconds[way] += len(part) / rate
        figures.ingest_one, figures.ingest_two = 2 * quarter / seconds["one"], 2 * quarter / seconds["two"]
        progress(f"replicas: ingest {figures.ingest_one:.1f} docs/s on one, {figures.ingest_two:.1f} on two")
    return figures


def _scale_round(a: BenchServer, b: BenchServer, queries: list[str], body: dict[str, object], plan: LoadPlan,
                 offset: int, one: list[LoadResult], two: list[LoadResult]) -> None:
    """CLIENTS clients on replica a, then spread round-robin over a and b."""
    one.append(query_load(a.url, COLLECTION, queries, body, CLIENTS, plan.requests, plan.seconds, offset))
    two.append(query_load([a.url, b.url], COLLECTION, queries, body, CLIENTS, plan.requests, plan.seconds, offset))


def _applied(client: SearchClient) -> int:
    return int(client.get_collection(COLLECTION)["applied_seq"])


def _wait_applied(client: SearchClient, seq: int, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while _applied(client) < seq:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the replica did not apply sequence {seq} in {timeout:.0f} s")
        time.sleep(LAG_POLL_SECONDS)


def _batches(texts: list[str], prefix: str, size: int = 32) -> list[list[dict[str, str]]]:
    docs = [{"id": f"{prefix}{i}", "text": text} for i, text in enumerate(texts)]
    return [docs[i:i + size] for i in range(0, len(docs), size)]


def _ingest_watching_lag(writer: BenchServer, other: BenchServer, texts: list[str],
                         prefix: str) -> tuple[float, list[float]]:
    """Server-encoded text through `writer`, one batch at a time; a watcher times how long after each
    acknowledgement `other` has applied it. Returns docs/s and the lags in ms."""
    acked: queue.Queue[tuple[float, int] | None] = queue.Queue()
    lags: list[float] = []

    def watch() -> None:
        with SearchClient(other.url, timeout=60) as client:
            while (item := acked.get()) is not None:
                at, seq = item
                _wait_applied(client, seq)
                lags.append((time.perf_counter() - at) * 1000)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with SearchClient(writer.url, timeout=600) as client:
        for batch in _batches(texts, prefix):
            client.upsert(COLLECTION, batch)
            acked.put((time.perf_counter(), _applied(client)))
    rate = len(texts) / (time.perf_counter() - start)
    acked.put(None)
    watcher.join()
    return rate, lags


def _ingest_spread(servers: list[BenchServer], texts: list[str], prefix: str) -> float:
    """The batches dealt round-robin over the replicas, one writer a replica, all at once; docs/s overall."""
    batches, failures = _batches(texts, prefix), list[BaseException]()

    def send(n: int) -> None:
        try:
            with SearchClient(servers[n].url, timeout=600) as client:
                for batch in batches[n::len(servers)]:
                    client.upsert(COLLECTION, batch)
        except BaseException as exc:  # re-raised below, in the benchmark's thread
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(servers))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return len(texts) / (time.perf_counter() - start)


def lag_summary(figures: ReplicaFigures) -> tuple[float, float]:
    return percentile(figures.lags_ms, 50), percentile(figures.lags_ms, 99)



def replica_rows(figures: ReplicaFigures, label: str) -> list[tuple[str, str, str, str, bool | None]]:
    """(measure, value, comparison, target, met) for the table; the SQLite figures are its server's, loaded and
    searched in the same phase."""
    one, two = (median([r.qps for r in runs]) for runs in (figures.one, figures.two))
    pinned = []
    if figures.one_pinned:
        one_p, two_p = (median([r.qps for r in runs]) for runs in (figures.one_pinned, figures.two_pinned))
        pinned = [(f"hybrid @{label}, {CLIENTS} clients round-robin over 2 replicas, each held to its own core",
                   f"{two_p:.1f} QPS", f"{two_p / one_p:.2f}x 1 replica on 1 core ({one_p:.1f} QPS)",
                   f"≥ {SCALE_TARGET}x", two_p / one_p >= SCALE_TARGET)]
    p50_pg, sqlite_hybrid_p50 = median(figures.hybrid_p50s), median(figures.sqlite_p50s)
    sqlite_load_rate = figures.sqlite_load_rate
    lag50, lag99 = lag_summary(figures)
    ingest = figures.ingest_two / figures.ingest_one if figures.ingest_one else float("nan")
    load = sqlite_load_rate / figures.load_rate if figures.load_rate else float("nan")
    return [
        (f"hybrid @{label}, {CLIENTS} clients round-robin over 2 replicas", f"{two:.1f} QPS",
         f"{two / one:.2f}x 1 replica ({one:.1f} QPS; alone it uses more than 1 core)", f"≥ {SCALE_TARGET}x",
         two / one >= SCALE_TARGET),
        *pinned,
        ("ingest, text only, 32 a batch, over 2 replicas", f"{figures.ingest_two:.1f} docs/s",
         f"{ingest:.2f}x 1 replica ({figures.ingest_one:.1f} docs/s)", f"≥ {SCALE_TARGET}x", ingest >= SCALE_TARGET),
        ("replication lag on the other replica during that ingest", f"p50 {lag50:.0f} ms, p99 {lag99:.0f} ms",
         f"{len(figures.lags_ms)} batches", f"p99 ≤ {LAG_TARGET_MS:.0f} ms", lag99 <= LAG_TARGET_MS),
        (f"a second replica on an empty disk @{label}: start → /ready (built from the store)",
         f"{figures.catch_up_s:.1f} s", "", "", None),
        (f"bulk load @{label} with vectors, 1 replica on PostgreSQL", f"{figures.load_rate:.0f} docs/s",
         f"SQLite {sqlite_load_rate:.0f} docs/s: {load:.2f}x slower", f"≤ {STORE_TARGET}x", load <= STORE_TARGET),
        (f"hybrid @{label}, 1 client, 1 replica on PostgreSQL", f"p50 {p50_pg:.1f} ms",
         f"SQLite p50 {sqlite_hybrid_p50:.1f} ms (alternating): {p50_pg / sqlite_hybrid_p50:.2f}x",
         f"≤ {STORE_TARGET}x",
         p50_pg / sqlite_hybrid_p50 <= STORE_TARGET),
    ]
