"""Retrieval evaluation through the HTTP API: ingest a BEIR dataset, run every mode, score with trec_eval."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.eval.beir import BeirDataset

Run = dict[str, dict[str, float]]
# An httpx.Client on a server's URL, or Starlette's TestClient on an in-process app (built on httpx2):
# the same calls, two client libraries, so no one nominal type fits both.
HttpClient = Any

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
def in_process_client(data_dir: Path, **settings: Any) -> Iterator[HttpClient]:
    """A client bound to a fresh in-process app (same routes, validation and serialisation as a server)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(data_dir=data_dir, **settings))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def wait_ready(client: HttpClient, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/ready").status_code == 200:
                return
        except Exception:  # not accepting connections yet
            pass
        time.sleep(0.2)
    raise TimeoutError("the service did not become ready")


def check(response: Any) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def ingest(client: HttpClient, collection: str, corpus: list[dict[str, str]], batch: int = 256,
           vectors: np.ndarray | None = None, progress: Callable[[int], None] | None = None) -> float:
    """Posts the corpus in batches; returns the seconds it took."""
    start = time.perf_counter()
    for first in range(0, len(corpus), batch):
        docs = []
        for i, doc in enumerate(corpus[first:first + batch], start=first):
            item: dict[str, Any] = {"id": doc["_id"], "title": doc.get("title") or None, "text": doc.get("text", "")}
            if vectors is not None:
                item["vector"] = vectors[i].tolist()
            docs.append(item)
        check(client.post(f"/v1/collections/{collection}/documents", json={"documents": docs}))
        if progress:
            progress(len(docs))
    return time.perf_counter() - start


def ensure_corpus(client: HttpClient, collection: str, corpus: list[dict[str, str]]) -> float | None:
    """Creates the collection and ingests the corpus unless it is already there; returns ingest docs/s."""
    check(client.put(f"/v1/collections/{collection}"))
    if check(client.get(f"/v1/collections/{collection}"))["count"] == len(corpus):
        return None
    rate = len(corpus) / ingest(client, collection, corpus)
    print(f"ingested {len(corpus)} documents at {rate:.1f} docs/s (text encoded by the service)")
    return rate


def run_queries(client: HttpClient, collection: str, queries: dict[str, str], body: dict[str, Any],
                name: str = "run", keep_responses: bool = False) -> tuple[Run, RunResult]:
    run: Run = {}
    result = RunResult(name, {})
    for qid, text in queries.items():
        start = time.perf_counter()
        answer = check(client.post(f"/v1/collections/{collection}/search", json={"query": text, **body}))
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        # trec_eval ranks by score; rank-derived scores keep the service's own order, ties included.
        hits = answer["hits"]
        run[qid] = {hit["id"]: float(len(hits) - rank) for rank, hit in enumerate(hits)}
        if keep_responses:
            result.responses[qid] = answer
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


def evaluate_runs(client: HttpClient, collection: str, dataset: BeirDataset,
                  runs: dict[str, dict[str, Any]] = RUNS) -> list[RunResult]:
    results = []
    for name, settings in runs.items():
        body = {"k": 100, "candidates": 100, "relevance": {"enabled": False}, **settings}
        run, result = run_queries(client, collection, dataset.queries, body, name)
        result.metrics = score(run, dataset.qrels)
        results.append(result)
    return results
