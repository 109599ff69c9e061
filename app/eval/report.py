"""`python -m app evaluate`: retrieval quality of every mode and the relevance filter's calibration."""

import json
import time
from pathlib import Path
from typing import Any

from app.client import SearchClient
from app.eval.beir import load_beir
from app.eval.relevance_report import relevance_report
from app.eval.runner import ensure_corpus, evaluate_runs, in_process_client

# Targets of the relevance filter (issue: PR-AUC >= 1.3x raw cosine, recall kept >= 0.90 with <= 25 kept a
# query, random non-word queries <= 1 hit on average). Queries of made-up words that read like English are
# reported beside them, not checked: the shipped default lets ~4 candidates of each through (README).
RELEVANCE_TARGETS = {"pr_auc_ratio": 1.3, "served_recall_kept": 0.90, "served_kept_per_query": 25.0,
                     "kept_ratio_to_raw_cosine": 0.5, "nonword_hits_per_query": 1.0}
_AT_MOST = ("served_kept_per_query", "kept_ratio_to_raw_cosine", "nonword_hits_per_query")


def evaluate_dataset(dataset_dir: Path, split: str, data_dir: Path, floors: dict[str, float],
                     relevance_checks: list[str] | None = None, plot: Path | None = None,
                     out: Path | None = None, url: str | None = None, api_key: str | None = None) -> list[str]:
    """Prints the figures; returns the checks that failed. With `url` (and its `api_key`), of that running
    server; else of an in-process app on `data_dir`."""
    dataset = load_beir(dataset_dir, split)
    collection = f"eval-{dataset.name}"
    figures: dict[str, Any] = {"dataset": dataset.name, "split": split, "queries": len(dataset.queries),
                               "documents": len(dataset.corpus)}
    with SearchClient(url, api_key=api_key) if url else in_process_client(data_dir) as client:
        figures["ingest_docs_per_s"] = ensure_corpus(client, collection, dataset.corpus)
        start = time.perf_counter()
        results = evaluate_runs(client, collection, dataset)
        print(f"\n{dataset.name} {split}: {len(dataset.queries)} queries ({time.perf_counter() - start:.0f} s)")
        print(f"{'run':<15}{'nDCG@10':>9}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>8}{'p99 ms':>8}")
        for r in results:
            print(f"{r.name:<15}{r.metrics['ndcg@10']:>9.3f}{r.metrics['recall@100']:>8.3f}"
                  f"{r.metrics['mrr@10']:>8.3f}{r.p50:>8.1f}{r.p99:>8.1f}")
        figures["runs"] = {r.name: {**r.metrics, "p50_ms": r.p50, "p99_ms": r.p99} for r in results}
        relevance = relevance_report(client, collection, dataset, plot)
        figures["relevance"] = relevance
    print_relevance(relevance)
    if out is not None:
        out.write_text(json.dumps(figures, indent=1))
    failures = [f"{name} nDCG@10 {figures['runs'][name]['ndcg@10']:.3f} < {floor}"
                for name, floor in floors.items() if figures["runs"][name]["ndcg@10"] < floor]
    missed = relevance_misses(relevance)
    for message in missed.values():
        print(f"relevance target NOT met: {message}")
    if relevance_checks is not None:
        failures += [missed[key] for key in relevance_checks if key in missed]
    return failures


def relevance_misses(relevance: dict[str, Any]) -> dict[str, str]:
    """The relevance targets that do not hold, by name."""
    if "adapter_metrics" not in relevance:
        return {key: "no relevance adapter to check" for key in RELEVANCE_TARGETS}
    missed = {}
    for key, target in RELEVANCE_TARGETS.items():
        value = relevance[key]
        at_most = key in _AT_MOST
        if (value > target) if at_most else (value < target):
            missed[key] = f"relevance {key} {value:.3f} {'>' if at_most else '<'} {target}"
    return missed


def print_relevance(relevance: dict[str, Any]) -> None:
    if "adapter_metrics" not in relevance:
        print(f"\nrelevance filter: {relevance.get('status')}")
        return
    a, r = relevance["adapter_metrics"], relevance["raw_cosine_metrics"]
    print(f"\nrelevance filter ({relevance['adapter']['family']} adapter, {relevance['adapter']['status']}), "
          f"hybrid top-100 candidates, thresholds chosen on the adapter's training split")
    print(f"{'':<16}{'PR-AUC':>8}{'P@R' + str(relevance['adapter']['recall_target']):>9}{'threshold':>10}"
          f"{'kept/q':>8}{'recall':>8}{'filtered':>9}{'empty':>7}")
    precision = relevance["precision_at_target"]
    for name, m, p in (("raw cosine", r, precision["raw_cosine"]), ("Cosine Adapter", a, precision["adapter"])):
        print(f"{name:<16}{m['pr_auc']:>8.3f}{p:>9.3f}{m['threshold']:>10.3f}{m['kept_per_query']:>8.1f}"
              f"{m['recall_kept']:>8.3f}{m['fraction_filtered']:>9.3f}{m['empty_query_rate']:>7.3f}")
    print(f"PR-AUC ratio {relevance['pr_auc_ratio']:.2f}; served: kept/q {relevance['served_kept_per_query']:.1f}, "
          f"recall kept {relevance['served_recall_kept']:.3f} (raw cosine keeps "
          f"{relevance['raw_cosine_kept_at_served_recall']:.1f}/q at that recall: ratio "
          f"{relevance['kept_ratio_to_raw_cosine']:.2f}), empty {relevance['served_empty_query_rate']:.3f}; "
          f"random non-word queries: {relevance['nonword_hits_per_query']:.2f} hits each, made-up words: "
          f"{relevance['pseudoword_hits_per_query']:.2f}, stop words and numbers: "
          f"{relevance['contentless_hits_per_query']:.2f}")
