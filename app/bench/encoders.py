"""Encoder backends side by side (SEARCH_ENCODER of the server process), each against the bare PyTorch encode of
the same run: hybrid p50 at 1 client, QPS and p99 at 8, server-encoded ingest, and hybrid p50 during a bulk
ingest of text against idle."""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.bench.corpus import Corpus
from app.bench.measures import BareEncoder, LoadResult, ingest_texts, load_corpus, median, query_load
from app.bench.phases import COLLECTION, LoadPlan, progress, wait_for_tuning
from app.bench.server import BenchServer
from app.client import SearchClient

BASELINE = "torch"  # the backend every other one is compared with
LOADED_CLIENTS = 8


@dataclass
class EncoderFigures:
    backend: str
    size: int
    ingest_rate: float = 0.0  # docs/s, text only, encoded by the server
    tuned_ef: int | None = None  # the server's self-tuned ef_search for the loaded collection
    tuned_recall: float | None = None
    bare_p50s: list[float] = field(default_factory=list)  # bare PyTorch single-query encode per round, ms
    single: list[LoadResult] = field(default_factory=list)  # hybrid, 1 client, one per round
    loaded: list[LoadResult] = field(default_factory=list)  # hybrid, LOADED_CLIENTS clients, one per round
    per_pass: list[float] = field(default_factory=list)  # queries a forward pass of the server's encoder, loaded
    cpu_ms: list[float] = field(default_factory=list)  # the server's CPU a search (all threads), loaded, per round
    during_ingest: LoadResult | None = None  # hybrid, 1 client, while text is bulk-ingested
    ingested_during: float = 0.0  # docs/s of that ingest

    @property
    def errors(self) -> int:
        during = self.during_ingest.errors if self.during_ingest else 0
        return during + sum(run.errors for run in [*self.single, *self.loaded])


def encoder_phase(backends: list[str], encoder: BareEncoder, corpus: Corpus, size: int, queries: list[str],
                  texts: list[str], plan: LoadPlan, work: Path) -> list[EncoderFigures]:
    """One fresh server per backend on its own data dir (a collection keeps the encoder that made it)."""
    return [_one_backend(backend, encoder, corpus, size, queries, texts, plan, work) for backend in backends]


def _one_backend(backend: str, encoder: BareEncoder, corpus: Corpus, size: int, queries: list[str],
                 texts: list[str], plan: LoadPlan, work: Path) -> EncoderFigures:
    figures = EncoderFigures(backend, size)
    with BenchServer(work / f"encoder-{backend}", work, encoder.threads, {"SEARCH_ENCODER": backend}) as server:
        server.start()
        server.client.create_collection("ingest")
        figures.ingest_rate = ingest_texts(server.url, "ingest", [f"t{i}" for i in range(len(texts))], texts)
        progress(f"encoder {backend}: ingest {figures.ingest_rate:.1f} docs/s; loading {size} docs with vectors")
        server.client.create_collection(COLLECTION)
        load_corpus(server.url, COLLECTION, corpus, size, plan.batch)
        figures.tuned_ef, figures.tuned_recall = wait_for_tuning(server.client)
        for r in range(plan.rounds):
            figures.bare_p50s.append(median(encoder.query_latencies_ms(
                [queries[(r * 11 + i) % len(queries)] for i in range(plan.sample)])))
            body = {"mode": "hybrid", "k": 10}
            offset = r * plan.requests
            figures.single.append(query_load(server.url, COLLECTION, queries, body, 1, plan.requests, plan.seconds,
                                             offset=offset))
            passes, encoded, cpu = *_encoder_counts(server.client), server.cpu_seconds()
            loaded = query_load(server.url, COLLECTION, queries, body, LOADED_CLIENTS, plan.requests, plan.seconds,
                                offset=offset)
            figures.loaded.append(loaded)
            figures.cpu_ms.append((server.cpu_seconds() - cpu) * 1000 / max(len(loaded.latencies_ms), 1))
            passes_after, encoded_after = _encoder_counts(server.client)
            figures.per_pass.append((encoded_after - encoded) / max(passes_after - passes, 1))
            progress(f"encoder {backend}: round {r + 1}/{plan.rounds} done")
        _searches_during_ingest(server.url, queries, texts, plan, figures)
    return figures


def _encoder_counts(client: SearchClient) -> tuple[float, float]:
    """(forward passes, queries encoded) of the server's query encoder so far, from /metrics."""
    found = {sample.name: sample.value for family in text_string_to_metric_families(client.metrics())
             for sample in family.samples}
    return found["search_query_encoder_passes_total"], found["search_query_encoder_queries_total"]


def _searches_during_ingest(url: str, queries: list[str], texts: list[str], plan: LoadPlan,
                            figures: EncoderFigures) -> None:
    """Hybrid searches from one client while a loader posts text (the server encodes it) batch after batch,
    two requests in flight, for as long as the searches run."""
    stop, posted, failures, started = threading.Event(), [0], list[BaseException](), time.perf_counter()

    def load(worker: int) -> None:
        try:
            with SearchClient(url, timeout=3600) as client:
                batch = 0
                while not stop.is_set():
                    chunk = [texts[(batch * 64 + i) % len(texts)] for i in range(64)]
                    client.upsert("ingest", [{"id": f"w{worker}-{i}", "text": t} for i, t in enumerate(chunk)])
                    posted[0] += len(chunk)
                    batch += 1
        except BaseException as exc:  # reported below: a loader that died would make the row a lie
            failures.append(exc)

    loaders = [threading.Thread(target=load, args=(w,), daemon=True) for w in range(2)]
    for loader in loaders:
        loader.start()
    try:
        figures.during_ingest = query_load(url, COLLECTION, queries, {"mode": "hybrid", "k": 10}, 1, plan.requests,
                                           plan.seconds)
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
    if failures:
        raise RuntimeError("the loader failed during the searches") from failures[0]
    figures.ingested_during = posted[0] / (time.perf_counter() - started)
