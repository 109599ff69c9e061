"""Retrieval evaluation through the HTTP API: ingest a BEIR dataset, run every mode, score with trec_eval."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.client import ApiError, SearchClient
from app.eval.beir import BeirDataset

if TYPE_CHECKING:
    from app.engine.engine import SearchEngine

Run = dict[str, dict[str, float]]

# The runs the evaluation reports: name -> the search body's settings.
RUNS: dict[str, dict[str, Any]] = {
    "lexical": {"mode": "lexical"},
    "dense": {"mode": "dense"},
    "hybrid-convex": {"mode": "hybrid", "fusion": {"method": "convex"}},
    "hybrid-rrf": {"mode": "hybrid", "fusion": {"method": "rrf"}},
}


@dataclass
class RunResult:
    name: str
    metrics: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))


@contextmanager
def in_process_client(data_dir: Path, **settings: Any) -> Iterator[SearchClient]:
    """A client of a fresh in-process app (same routes, validation and serialisation as a server). A start-up
    that fails raises NotReadyError with the reason (a server would exit instead)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(data_dir=data_dir, **settings))) as http:
        client = SearchClient(http=http)
        client.wait_ready()
        yield client


def no_adapter(data_dir: Path) -> Path:
    """An empty adapter folder in `data_dir`: `adapter_dir` for an app that serves no default adapter."""
    folder = data_dir / "no-adapter"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def engine_of(client: SearchClient) -> "SearchEngine":
    """The engine behind a client of `in_process_client` (training reads the indexes directly)."""
    engine: SearchEngine = client.http.app.state.engine  # type: ignore[attr-defined]  # Starlette's TestClient
    return engine


def beir_document(doc: dict[str, str]) -> dict[str, Any]:
    """A BEIR corpus line as the documents route takes it."""
    return {"id": doc["_id"], "title": doc.get("title") or None, "text": doc.get("text", "")}


def ensure_corpus(client: SearchClient, collection: str, corpus: list[dict[str, str]]) -> float | None:
    """Creates the collection and ingests the corpus unless it is already there; returns ingest docs/s. Asks
    first: a read key evaluating a server that holds the corpus got 403 for the creation it did not need (QA)."""
    try:
        if client.get_collection(collection)["count"] == len(corpus):
            return None
    except ApiError as error:
        if error.status != 404:
            raise
        client.create_collection(collection)
    start = time.perf_counter()
    client.ingest(collection, map(beir_document, corpus), batch=256)
    rate = len(corpus) / (time.perf_counter() - start)
    print(f"ingested {len(corpus)} documents at {rate:.1f} docs/s (text encoded by the service)")
    return rate


def run_queries(client: SearchClient, collection: str, queries: dict[str, str], body: dict[str, Any],
                name: str = "run", keep_responses: bool = False) -> tuple[Run, RunResult]:
    run: Run = {}
    result = RunResult(name, {})
    for qid, text in queries.items():
        start = time.perf_counter()
        answer = client.search(collection, text, **body)
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        # trec_eval ranks by score; rank-derived scores keep the service's own order, ties included.
        hits = answer["hits"]
        run[qid] = {hit["id"]: float(len(hits) - rank) for rank, hit in enumerate(hits)}
        if keep_responses:
            result.responses[qid] = dict(answer)
    return run, result


def score(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10, Recall@100 and MRR@10 averaged over the judged queries (trec_eval's definitions)."""
    import pytrec_eval

    judged = {q: r for q, r in qrels.items() if q in run}
    full = pytrec_eval.RelevanceEvaluator(judged, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:10]) for q, docs in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(judged, {"recip_rank"}).evaluate(top10)
    n = max(len(judged), 1)
    return {
        "ndcg@10": sum(m["ndcg_cut_10"] for m in full.values()) / n,
        "recall@100": sum(m["recall_100"] for m in full.values()) / n,
        "mrr@10": sum(m["recip_rank"] for m in mrr.values()) / n,
    }


def evaluate_runs(client: SearchClient, collection: str, dataset: BeirDataset,
                  runs: dict[str, dict[str, Any]] = RUNS) -> list[RunResult]:
    results = []
    for name, settings in runs.items():
        body = {"k": 100, "candidates": 100, "relevance": {"enabled": False}, **settings}
        run, result = run_queries(client, collection, dataset.queries, body, name)
        result.metrics = score(run, dataset.qrels)
        results.append(result)
    return results
