"""Calibration report of the relevance filter: raw cosine vs the Cosine Adapter over top-100 candidates."""

import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.client import SearchClient
from app.engine.relevance import (
    DEFAULT_RECALL_TARGET,
    choose_threshold,
    filter_metrics,
    kept_at_recall,
    precision_at_recall,
)
from app.engine.tokenizer import ENGLISH_STOPWORDS
from app.eval.beir import BeirDataset
from app.eval.runner import run_queries

DEPTH = 100
NONWORD_QUERIES = 50


@dataclass
class Judged:
    """Per query: the candidates' adapter probabilities, raw cosines and 0/1 relevance."""

    probabilities: list[np.ndarray]
    cosines: list[np.ndarray]
    labels: list[np.ndarray]
    responses: dict[str, dict[str, Any]]


def judged_candidates(client: SearchClient, collection: str, dataset: BeirDataset) -> Judged:
    body = {"k": DEPTH, "candidates": DEPTH, "mode": "hybrid", "relevance": {"enabled": False}, "explain": True}
    _, result = run_queries(client, collection, dataset.queries, body, "unfiltered", keep_responses=True)
    judged = Judged([], [], [], result.responses)
    for qid, answer in result.responses.items():
        relevant = {d for d, grade in dataset.qrels[qid].items() if grade > 0}
        hits = answer["hits"]
        judged.probabilities.append(np.asarray([h["relevance"] for h in hits], dtype=np.float64))
        judged.cosines.append(np.asarray([h["explain"]["cosine"] for h in hits], dtype=np.float64))
        judged.labels.append(np.asarray([h["id"] in relevant for h in hits], dtype=np.float64))
    return judged


def nonword_queries(n: int, seed: int) -> list[str]:
    """Queries of 1-4 random lower-case non-words of 5-10 letters."""
    rng = random.Random(seed)
    return [" ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 10)))
                     for _ in range(rng.randint(1, 4))) for _ in range(n)]


# Syllables of made-up words that read like English ("florbix", "snoobrak"): the encoder's word pieces make
# them look like real words (a random string of letters does not), so a filter trained on random strings alone
# let ~2-7 of them through a query on the four collections (whole top-100, the shipped default of 2026-12-03).
_ONSETS = ("b", "bl", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p",
           "pl", "qu", "r", "s", "sh", "sk", "sn", "st", "t", "th", "tr", "v", "w", "z")
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "ai", "ou")
_CODAS = ("", "", "b", "ck", "ft", "l", "m", "n", "nk", "p", "r", "rb", "sh", "t", "x", "z")


def pseudoword_queries(n: int, seed: int) -> list[str]:
    """Queries of 1-2 pronounceable made-up words of 2-3 syllables (one word in three queries of four)."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.randint(2, 3)))

    return [" ".join(word() for _ in range(rng.choice((1, 1, 1, 2)))) for _ in range(n)]


def contentless_queries(n: int, seed: int) -> list[str]:
    """Queries with no topic: 1-4 English stop words ("of the", "what is it"), a number of 1-4 digits, or a
    number among stop words. Their BM25 terms are none or a number, and the encoder still places them
    somewhere: a filter never trained on them kept every candidate (100 a query on all four collections). The
    service now keeps only their lexical matches (`names_a_topic`): none for stop words alone."""
    rng, words = random.Random(seed), sorted(ENGLISH_STOPWORDS)
    queries = []
    for i in range(n):
        stop = [rng.choice(words) for _ in range(rng.randint(1, 4))]
        number = str(rng.randint(0, 10 ** rng.randint(1, 4) - 1))
        queries.append(" ".join(stop) if i % 3 == 0 else number if i % 3 == 1 else " ".join([*stop[:2], number]))
    return queries


def evaluation_junk() -> dict[str, list[str]]:
    """The queries with nothing relevant that every evaluation (`evaluate`, `lodo`) measures the filter on, by
    kind; seed 0, another than training's."""
    return {"nonword": nonword_queries(NONWORD_QUERIES, 0), "pseudoword": pseudoword_queries(NONWORD_QUERIES, 0),
            "contentless": contentless_queries(NONWORD_QUERIES, 0)}


def junk_hits(client: SearchClient, collection: str, queries: list[str]) -> float:
    """Mean hits for queries with nothing relevant, through the real (filtered) search."""
    total = 0
    for query in queries:
        answer = client.search(collection, query, k=DEPTH, candidates=DEPTH)
        total += len(answer["hits"])
    return total / len(queries)


def relevance_report(client: SearchClient, collection: str, dataset: BeirDataset,
                     plot: Path | None = None) -> dict[str, Any]:
    adapter = client.relevance(collection)
    if adapter.get("status") == "none":
        return {"status": "no adapter"}
    threshold = float(adapter["threshold"])
    target = float(adapter["recall_target"] or DEFAULT_RECALL_TARGET)
    judged = judged_candidates(client, collection, dataset)
    pooled_labels = np.concatenate(judged.labels)
    # The raw-cosine baseline gets the same treatment as the adapter: one global threshold chosen on the
    # adapter's training judgments (stored with it), not on these.
    raw_threshold = adapter["metrics"].get("raw_cosine_threshold")
    if raw_threshold is None:
        raw_threshold = choose_threshold(np.concatenate(judged.cosines), pooled_labels, target)
    adapter_metrics = filter_metrics(judged.probabilities, judged.labels, threshold)
    raw_metrics = filter_metrics(judged.cosines, judged.labels, float(raw_threshold))
    # The real filtered search: what users get by default.
    _, filtered = run_queries(client, collection, dataset.queries, {"k": DEPTH, "candidates": DEPTH}, "filtered",
                              keep_responses=True)
    kept = [len(a["hits"]) for a in filtered.responses.values()]
    found = kept_relevant = 0
    for qid, answer in filtered.responses.items():
        relevant = {d for d, grade in dataset.qrels[qid].items() if grade > 0}
        found += len(relevant & {h["id"] for h in judged.responses[qid]["hits"]})
        kept_relevant += len(relevant & {h["id"] for h in answer["hits"]})
    served_recall = kept_relevant / max(found, 1)
    # Raw cosine with one global threshold put where it keeps the same recall on these queries: what the
    # adapter's kept set is measured against ("keep at most half of what raw cosine keeps at that recall").
    raw_kept = kept_at_recall(judged.cosines, judged.labels, served_recall)
    report = {
        "adapter": {"family": adapter["family"], "status": adapter["status"], "threshold": threshold,
                    "recall_target": target},
        "adapter_metrics": adapter_metrics,
        "raw_cosine_metrics": raw_metrics,
        "pr_auc_ratio": adapter_metrics["pr_auc"] / max(raw_metrics["pr_auc"], 1e-12),
        "precision_at_target": {
            "adapter": precision_at_recall(np.concatenate(judged.probabilities), pooled_labels, target),
            "raw_cosine": precision_at_recall(np.concatenate(judged.cosines), pooled_labels, target),
        },
        "served_kept_per_query": float(np.mean(kept)),
        "served_recall_kept": served_recall,
        "raw_cosine_kept_at_served_recall": raw_kept,
        "kept_ratio_to_raw_cosine": float(np.mean(kept)) / max(raw_kept, 1e-9),
        "served_empty_query_rate": float(np.mean(np.asarray(kept) == 0)),
        **{f"{kind}_hits_per_query": junk_hits(client, collection, queries)
           for kind, queries in evaluation_junk().items()},
    }
    if plot is not None:
        plot_curves(judged, pooled_labels, threshold, float(raw_threshold), plot)
        report["plot"] = str(plot)
    return report


def _pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(labels[order])
    precision = hits / np.arange(1, len(order) + 1)
    recall = hits / max(labels.sum(), 1)
    return recall, precision, scores[order]


def plot_curves(judged: Judged, labels: np.ndarray, threshold: float, raw_threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for name, scores, cut in (("raw cosine", np.concatenate(judged.cosines), raw_threshold),
                              ("Cosine Adapter", np.concatenate(judged.probabilities), threshold)):
        recall, precision, ordered = _pr_curve(scores, labels)
        (line,) = ax.plot(recall, precision, label=name)
        at = min(int(np.searchsorted(-ordered, -cut, side="right")), len(ordered)) - 1
        if at >= 0:
            ax.plot(recall[at], precision[at], "o", color=line.get_color(),
                    label=f"{name} threshold {cut:.3f}: R={recall[at]:.2f} P={precision[at]:.2f}")
    ax.set_xlabel("recall (of relevant among the top-100 hybrid candidates)")
    ax.set_ylabel("precision")
    ax.set_title("Relevance filter: precision-recall over candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
