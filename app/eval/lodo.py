"""`python -m app lodo`: leave-one-domain-out runs of the relevance filter over BEIR datasets.

For each dataset left out, an adapter is trained and calibrated (thresholds out of fold) exactly as the shipped
default is, on the other datasets only, and measured on the one left out: the recall its threshold keeps there
against the target it was chosen for, what it keeps, PR-AUC and precision at 95% recall beside raw cosine's, raw
cosine's kept set at the same recall, and random non-word queries. Then the remedy for a new collection: the same
adapter with its threshold re-chosen on a few judged queries of the left-out dataset, measured on the rest of them.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.judgments import TrainingSet, build_training_set, probabilities
from app.engine.relevance import (
    DEFAULT_FAMILY,
    DEFAULT_RECALL_TARGET,
    average_precision,
    filter_metrics,
    kept_at_recall,
    precision_at_recall,
    recalibrate,
    train_and_calibrate,
)
from app.engine.types import TrainingExample
from app.eval.adapter_training import TRAINING_CONTENTLESS, TRAINING_NONWORDS, TRAINING_PSEUDOWORDS, collect
from app.eval.relevance_report import evaluation_junk
from app.eval.runner import engine_of, in_process_client, no_adapter

RECALIBRATION_QUERIES = (10, 25, 50)
RECALIBRATION_DRAWS = 5


def _subset(data: TrainingSet, idx: Sequence[int]) -> TrainingSet:
    return TrainingSet(data.query_embs[list(idx)], [data.cosines[i] for i in idx], [data.labels[i] for i in idx],
                       [data.lexical[i] for i in idx], data.stats[list(idx)],
                       references=[data.references[i] for i in idx] if data.references else [])


def _recalibrated(adapter: Any, held: TrainingSet, probs: list[np.ndarray], target: float,
                  n: int) -> dict[str, float] | None:
    """Mean (and worst) recall and kept/q on the rest of the held-out queries, the threshold re-chosen on n; None
    unless at least as many are left to measure on and some draw of n holds a relevant candidate (a left-out
    set of 50 judged queries or fewer ended the run in a traceback, QA)."""
    if n > len(held.cosines) // 2:
        return None
    recalls, kept = [], []
    for draw in range(RECALIBRATION_DRAWS):
        order = np.random.default_rng(100 + draw).permutation(len(held.cosines))
        cal, rest = order[:n], order[n:]
        if not any(held.labels[i].any() for i in cal):
            continue
        tuned = recalibrate(adapter, [probs[i] for i in cal], [held.cosines[i] for i in cal],
                            [held.labels[i] for i in cal], target)
        assert tuned.calibration is not None
        m = filter_metrics([probs[i] for i in rest], [held.labels[i] for i in rest], tuned.calibration.threshold)
        recalls.append(m["recall_kept"])
        kept.append(m["kept_per_query"])
    if not recalls:
        return None
    return {"recall": float(np.mean(recalls)), "worst_recall": float(np.min(recalls)),
            "kept_per_query": float(np.mean(kept))}


def _measure(adapter: Any, held: TrainingSet, junk: dict[str, TrainingSet], target: float) -> dict[str, Any]:
    assert adapter.calibration is not None
    threshold = adapter.calibration.threshold
    probs = probabilities(adapter, held)
    m = filter_metrics(probs, held.labels, threshold)
    pooled_labels = np.concatenate(held.labels)
    hits = {kind: filter_metrics(probabilities(adapter, queries), queries.labels, threshold)["kept_per_query"]
            for kind, queries in junk.items()}
    return {
        "target": target, "recall": m["recall_kept"], "kept_per_query": m["kept_per_query"],
        "raw_cosine_kept_at_that_recall": kept_at_recall(held.cosines, held.labels, m["recall_kept"]),
        "pr_auc": m["pr_auc"], "raw_cosine_pr_auc": average_precision(np.concatenate(held.cosines), pooled_labels),
        # precision at 95% recall with the threshold chosen on the left-out collection itself (for both)
        "precision_at_95": precision_at_recall(np.concatenate(probs), pooled_labels, 0.95),
        "raw_cosine_precision_at_95": precision_at_recall(np.concatenate(held.cosines), pooled_labels, 0.95),
        "nonword_kept_per_query": hits["nonword"], "pseudoword_kept_per_query": hits["pseudoword"],
        "contentless_kept_per_query": hits["contentless"],
        "recalibrated": {n: figures for n in RECALIBRATION_QUERIES
                         if (figures := _recalibrated(adapter, held, probs, target, n)) is not None},
    }


def leave_one_domain_out(datasets: Sequence[tuple[Path, str]], data_dir: Path, *,
                         inputs: tuple[str, ...] = ("embedding", "stats"), folds: int = 3, repeats: int = 1,
                         recall_target: float = DEFAULT_RECALL_TARGET, threads: int = 2,
                         contentless: int = TRAINING_CONTENTLESS, pseudowords: int = TRAINING_PSEUDOWORDS,
                         fit: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
    """Per left-out dataset, the figures of an adapter trained without it (see the module docstring); the
    non-word, pseudo-word and contentless queries it is measured on are the evaluation's (another seed than
    training's)."""
    measured_junk = evaluation_junk()
    with in_process_client(data_dir, adapter_dir=no_adapter(data_dir)) as client:
        collected = collect(client, datasets, TRAINING_NONWORDS, seed=0, contentless=contentless,
                            pseudowords=pseudowords)
        engine = engine_of(client)
        junk = {name: {kind: build_training_set(engine.collection(f"eval-{name}"), engine.embedder,
                                                [TrainingExample(q, ()) for q in queries],
                                                engine.settings.search_defaults)
                       for kind, queries in measured_junk.items()}
                for name in dict.fromkeys(collected.sources)}
    data, sources, groups = collected.data, collected.sources, collected.groups
    results = {}
    for held_out in dict.fromkeys(sources):
        others = [i for i, s in enumerate(sources) if s != held_out]
        held = [i for i, (s, k) in enumerate(zip(sources, collected.kinds, strict=True))
                if s == held_out and k == "judged"]
        train = _subset(data, others)
        adapter = train_and_calibrate(train.query_embs, train.cosines, train.labels, lexical=train.lexical,
                                      stats=train.stats, references=train.references,
                                      inputs=inputs, groups=[groups[i] for i in others],
                                      family=DEFAULT_FAMILY, recall_target=recall_target, folds=folds,
                                      repeats=repeats, threads=threads, **(fit or {}))
        results[held_out] = _measure(adapter, _subset(data, held), junk[held_out], recall_target)
        print(held_out, results[held_out], flush=True)
    return results
