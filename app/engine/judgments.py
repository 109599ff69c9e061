"""Turns relevance judgments into adapter training data: the service's own candidates, labelled."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.engine import hybrid
from app.engine.collection import Collection
from app.engine.encoders import Encoder
from app.engine.fusion import rank_by
from app.engine.fusion_fit import SIGNIFICANCE, FusionCase
from app.engine.relevance import CosineAdapter, recalibrate
from app.engine.relevance.calibration import (
    Calibration,
    cross_validated_metrics,
    filter_metrics,
    pr_auc_difference_se,
    recall_se,
)
from app.engine.relevance.training import MIN_POSITIVE_QUERIES
from app.engine.types import SearchDefaults, SearchQuery, TrainingExample
from app.errors import InvalidInput

# The filter is measured on, and so trained on, the top-100 candidates of each retriever.
TRAINING_DEPTH = 100
# PR-AUC a collection's own adapter must gain over the default on its judgments to replace it: at least this,
# and SIGNIFICANCE standard errors of the difference when it is noisier (as the fusion's fit, fusion_fit).
SELECTION_MARGIN = 0.01
# How far the default's recall on a collection's judgments may stray from the target before its thresholds are
# chosen again on them: at least this, and RECALL_SIGNIFICANCE standard errors of that recall when it is noisier.
RECALL_MARGIN = 0.01
# Three, not the two of a fit's PR-AUC gain: thresholds the default chose on thousands of judged queries move on
# a hundred only on strong evidence. At two, 100 judged SciFact train queries whose 114 relevant candidates the
# default kept 0.991 of (2.0 standard errors above 0.95) re-chose them, and the other 709 queries kept 0.906 of
# theirs instead of 0.946 (scripts/judgment_trial.py, seed 0; seeds 1 and 2 and NFCorpus dev kept the default's).
RECALL_SIGNIFICANCE = 3.0
QUERY_CHUNK = 32  # judged queries a call to the encoder (up to 32K characters each, cut at its window)
# The training answer's `selection.kept` when the default serves on as it is, its thresholds too
# (`kept_as_it_serves`: the engine then copies nothing, and the collection goes on following the default).
KEPT_DEFAULT = "default"


@dataclass
class TrainingSet:
    query_embs: np.ndarray
    cosines: list[np.ndarray]
    labels: list[np.ndarray]
    lexical: list[np.ndarray]  # lexical evidence of each candidate (see hybrid.lexical_evidence)
    stats: np.ndarray  # one row of the adapter's STATS per query, from its candidates as a search sees them
    fusion_cases: list[FusionCase] = field(default_factory=list)  # the same candidates, to fit the fusion on
    # Each query's shown top-`depth` cosines, which a min-max scaling map reads its pool against, as a search
    # reads its candidates against its own top hits (hybrid.filter_by_relevance). Empty: each pool scales itself.
    references: list[np.ndarray] = field(default_factory=list)

    def reference(self, i: int) -> np.ndarray | None:
        return self.references[i] if self.references else None


def probabilities(adapter: CosineAdapter, data: TrainingSet) -> list[np.ndarray]:
    """The adapter's probabilities for every query's candidates in `data`."""
    return [adapter.probabilities(q, c, x, s, data.reference(i))
            for i, (q, c, x, s) in enumerate(zip(data.query_embs, data.cosines, data.lexical, data.stats,
                                                 strict=True))]


def _as_shipped(base: CosineAdapter, probs: list[np.ndarray], labels: list[np.ndarray],
                recall_target: float) -> Calibration | None:
    """The base's own thresholds, with the metrics they score on these judgments (which it never saw: held
    out, all of them); None for a base without thresholds."""
    if base.calibration is None:
        return None
    threshold = base.threshold_for(recall_target)
    metrics = filter_metrics(probs, labels, threshold)
    metrics.update({"folds": 0.0, "queries": float(len(labels)),
                    "positive_pairs": float(sum(float(np.sum(y)) for y in labels))})
    return Calibration(threshold, recall_target, {**base.calibration.thresholds, recall_target: threshold}, metrics)


def _thresholds_off(shipped: Calibration | None, recalibrated: Calibration, probs: list[np.ndarray],
                    labels: list[np.ndarray], recall_target: float) -> tuple[bool, float, str]:
    """Whether to serve thresholds re-chosen on these judgments (`recalibrated`, its recall measured on the queries
    each threshold was not chosen on) instead of the default's own (`shipped`): (re-choose, the margin, why).
    Only when the default's miss the target on them by more than the noise, and the re-chosen ones come nearer it
    (both recalls are held out: the default never saw these judgments). The noise is the larger of the
    bootstrap's standard error and the binomial one of a recall at the target over this many relevant
    candidates: where the default keeps every relevant candidate, every resample keeps them all and the
    bootstrap says 0 (6 judged SciFact queries, recall 1.0 on them: the thresholds were re-chosen on them, and
    the other queries' recall fell from 0.93 to 0.91 and their hits from 7.8 to 4.7)."""
    if shipped is None:
        return True, 0.0, "the default has no thresholds of its own"
    recall = shipped.metrics["recall"]
    positives = max(shipped.metrics["positive_pairs"], 1.0)  # the judgments' relevant candidates (_as_shipped)
    binomial = float(np.sqrt(recall_target * (1.0 - recall_target) / positives))
    margin = max(RECALL_MARGIN, RECALL_SIGNIFICANCE * max(recall_se(probs, labels, shipped.threshold), binomial))
    off = abs(recall - recall_target) > margin
    why = (f"the default's own threshold for recall {recall_target:g} kept {recall:.3f} of these judgments' "
           f"relevant candidates, {'more' if off else 'no more'} than {margin:.3f} off the target (the larger of "
           f"{RECALL_MARGIN} and {RECALL_SIGNIFICANCE:g} standard errors: a bootstrap over the judged queries, or a "
           f"binomial one over {positives:.0f} relevant candidates)")
    if not off:
        return False, margin, why
    nearer = abs(recalibrated.metrics["recall"] - recall_target) < \
        abs(recall - recall_target) - 1e-9  # a tie is no reason to move
    return nearer, margin, (f"{why}; re-chosen on them, recall {recalibrated.metrics['recall']:.3f} on the queries "
                            f"each threshold was not chosen on, {'nearer' if nearer else 'no nearer'} the target")


def better_of(base: CosineAdapter, tuned: CosineAdapter, tuned_out_of_fold: list[np.ndarray],
              data: TrainingSet, recall_target: float, *, warm: bool = True) -> CosineAdapter:
    """The fine-tuned adapter if its out-of-fold PR-AUC (`tuned_out_of_fold`: its probabilities on `data`)
    beats the base's on the same judgments (which the base never saw) by more than the noise; else the base
    network, with its own thresholds when they keep the target's recall on these judgments within the noise,
    and with thresholds chosen on them when not. So a small judgment set moves the threshold only when it shows
    the default's to be off, and never makes the ranking of candidates worse. (Re-chosen always, 50 judged
    SciFact queries moved a threshold the default had chosen on thousands: the other 250 queries kept 0.89 of
    their relevant documents instead of the default's 0.94.)"""
    base_probabilities = probabilities(base, data)
    shipped = _as_shipped(base, base_probabilities, data.labels, recall_target)
    recalibrated = recalibrate(base, base_probabilities, data.cosines, data.labels, recall_target)
    assert recalibrated.calibration is not None
    # Its metrics as new queries would see them: measured on the queries it was chosen on, a threshold meets the
    # target by construction.
    recalibrated.calibration.metrics.update(cross_validated_metrics(base_probabilities, data.labels, recall_target))
    off_target, recall_margin, why_thresholds = _thresholds_off(shipped, recalibrated.calibration,
                                                                base_probabilities, data.labels, recall_target)
    tuned_auc = tuned.calibration.metrics["pr_auc"] if tuned.calibration else 0.0
    base_auc = recalibrated.calibration.metrics["pr_auc"]  # the same network: thresholds do not move it
    needed = max(SELECTION_MARGIN, SIGNIFICANCE * pr_auc_difference_se(tuned_out_of_fold, base_probabilities,
                                                                        data.labels))
    keep_tuned = tuned_auc > base_auc + needed
    if keep_tuned:
        chosen = tuned
    elif off_target or shipped is None:  # (a default without thresholds is off target already; for the types)
        chosen = recalibrated
    else:
        chosen = base.with_calibration(shipped)
    then = (f"its thresholds were chosen on these judgments (recall {recalibrated.calibration.metrics['recall']:.3f}"
            " on the queries each threshold was not chosen on)" if off_target else "its thresholds were kept")
    # With the trained one kept, what the default's thresholds would have been read as serving (QA).
    thresholds = ("the trained one's own, chosen in its training on these judgments" if keep_tuned
                  else f"{why_thresholds}, so {then}")
    chosen.info["selection"] = {
        "kept": "trained" if keep_tuned else "default, recalibrated" if off_target else KEPT_DEFAULT,
        "why": f"out-of-sample PR-AUC on these judgments: trained {tuned_auc:.3f} (out of fold, "
               f"{'warm-started from the default' if warm else f'a {tuned.family} map fitted from scratch'}) vs "
               f"default {base_auc:.3f}; the trained one is kept only when it is better "
               f"by more than {needed:.3f} (the larger of {SELECTION_MARGIN} and {SIGNIFICANCE:g} standard "
               f"errors of the difference, by a bootstrap over the judged queries). Thresholds: {thresholds}",
        "margin": needed,
        "recall_margin": recall_margin,
        "trained": dict(tuned.calibration.metrics) if tuned.calibration else {},
        "default": {} if shipped is None else dict(shipped.metrics),
        "default_recalibrated": dict(recalibrated.calibration.metrics),
    }
    return chosen


def kept_as_it_serves(adapter: CosineAdapter, base: CosineAdapter | None) -> bool:
    """Whether a training (`better_of`, then the fusion's fit) kept `base` as it serves: its network, the threshold
    it serves and the default fusion."""
    selection = adapter.info.get("selection")
    return (base is not None and isinstance(selection, dict) and selection.get("kept") == KEPT_DEFAULT
            and adapter.fusion is None
            and adapter.calibration is not None and base.calibration is not None
            and adapter.calibration.threshold == base.calibration.threshold)


def merge_judgments(examples: Sequence[TrainingExample]) -> list[TrainingExample]:
    """One example a query text, its judgments merged (first-seen order), so that a query posted twice (or one
    row a judged document, a common export) is one query. Posted five times, a query had sat in every training
    fold and beside itself out of fold: the default's guard then kept a trained adapter that was worse on new
    queries (CISI: held-out AP 0.58 to 0.48), and a row a document labelled its siblings' documents irrelevant.
    An id judged both ways for one query is a 422. Texts that differ only in case and spacing are one query
    (the encoder and BM25 read them alike), under the first-seen text."""
    merged: dict[str, tuple[dict[str, None], dict[str, None]]] = {}
    texts: dict[str, str] = {}
    for ex in examples:
        key = " ".join(ex.query.split()).casefold()
        relevant, irrelevant = merged.setdefault(texts.setdefault(key, ex.query), ({}, {}))
        relevant.update(dict.fromkeys(ex.relevant_ids))
        irrelevant.update(dict.fromkeys(ex.irrelevant_ids))
    overlaps = {query: sorted(rel.keys() & irr.keys()) for query, (rel, irr) in merged.items()}
    both = {query: ids for query, ids in overlaps.items() if ids}
    if both:
        query, ids = next(iter(both.items()))
        raise InvalidInput(f"{len(both)} queries judge an id both relevant and irrelevant, e.g. {query[:80]!r}: "
                           f"{ids[:5]}", [{"query": q[:200], "ids": i[:20]} for q, i in list(both.items())[:20]])
    return [TrainingExample(query, tuple(rel), tuple(irr)) for query, (rel, irr) in merged.items()]


def check_enough_relevant(examples: Sequence[TrainingExample]) -> None:
    """A 422 before any work when fewer than MIN_POSITIVE_QUERIES queries name a relevant document: the training
    would fail the same way, but only once every query had been encoded and searched (20,000 examples, each
    without one: a job that failed after 95 s and held the collection's training meanwhile)."""
    named = sum(bool(example.relevant_ids) for example in examples)
    if named < MIN_POSITIVE_QUERIES:
        raise InvalidInput(f"need at least {MIN_POSITIVE_QUERIES} queries with a relevant document to train and "
                           f"calibrate an adapter, got {named}", [{"queries_with_relevant_ids": named}])


def resolve_ids(collection: Collection, examples: Sequence[TrainingExample]) -> dict[str, int]:
    """Labels of every judged id; unknown ids are a 422 that names them."""
    wanted = sorted({i for ex in examples for i in (*ex.relevant_ids, *ex.irrelevant_ids)})
    found = collection.store.labels_for_ids(collection.name, wanted)
    missing = [i for i in wanted if i not in found]
    if missing:
        raise InvalidInput(f"{len(missing)} judged {'id is' if len(missing) == 1 else 'ids are'} not in collection "
                           f"{collection.name!r}",
                           [{"unknown_ids": missing[:100]}])
    return found


def query_vectors(embedder: Encoder, queries: Sequence[str],
                  on_chunk: Callable[[float], None] | None = None) -> np.ndarray:
    """The queries' vectors as a search encodes them (`encode_queries`: the int8 encoder's alone, not
    batch-quantised with others as documents are), QUERY_CHUNK at a time; `on_chunk` hears the fraction done
    after each chunk (an exception it raises ends the encoding)."""
    if not queries:
        return np.empty((0, embedder.dim), dtype=np.float32)
    chunks = []
    for i in range(0, len(queries), QUERY_CHUNK):
        chunks.append(embedder.encode_queries(queries[i:i + QUERY_CHUNK]))
        if on_chunk is not None:
            on_chunk(min(1.0, (i + QUERY_CHUNK) / len(queries)))
    return np.vstack(chunks)


def build_training_set(collection: Collection, embedder: Encoder, examples: Sequence[TrainingExample],
                       defaults: SearchDefaults = SearchDefaults(), depth: int = TRAINING_DEPTH,
                       progress: Callable[[float], None] | None = None) -> TrainingSet:
    """For each query: its top-`depth` hits as the default hybrid search ranks them (fused with `defaults`)
    plus the documents judged irrelevant, with raw cosines and lexical evidence; label 1 for relevant ids, 0
    for the rest. (Over each retriever's whole top-`depth` instead, the deep lexical- or dense-only candidates
    that a search never shows outnumber the ones it does.)

    A relevant document the retrievers did not bring up is left out: the filter never sees it, and counting
    it would push the threshold for a recall target down to where no real candidate list reaches.

    `progress` hears the fraction done (the queries encoded: half; searched: the other half); an exception it
    raises ends the work. The collection's deletion ends it too, at the next query.
    """
    resolve_ids(collection, examples)  # unknown ids: a 422 before the encoder's work
    report = progress or (lambda fraction: None)
    query_embs = query_vectors(embedder, [ex.query for ex in examples], lambda done: report(done / 2))
    cosines, labels, lexical, stats, references = [], [], [], [], []
    cases: list[FusionCase] = []
    for n, (ex, query) in enumerate(zip(examples, query_embs, strict=True)):
        if n % QUERY_CHUNK == 0:
            report(0.5 + n / len(examples) / 2)
        request = SearchQuery(query=ex.query, k=1, offset=0, mode="hybrid", candidates=depth,
                              relevance_enabled=False)
        tokens = collection.tokenizer(ex.query)
        with collection.lock.read():
            collection.check_live()  # deleted meanwhile: the job ends now, not after every query (it held the name)
            # Resolved under the lock, as the indexes stand: a judged document deleted (or replaced: a new
            # label) since the request was checked is skipped (or followed), not a failed training.
            labels_of = collection.store.labels_for_ids(collection.name, [*ex.relevant_ids, *ex.irrelevant_ids])
            candidates = hybrid.retrieve(collection, request, tokens, query, depth)
            shown = candidates.labels[rank_by(hybrid.fuse(candidates, request, defaults), candidates.labels)[:depth]]
            judged = np.asarray([labels_of[i] for i in ex.irrelevant_ids if i in labels_of], dtype=np.int64)
            pool = np.union1d(shown, judged)
            pool_cosines = collection.dense.vectors(pool) @ query
            pool_bm25 = collection.lexical.scores(tokens, pool)
        stats.append(hybrid.candidate_stats(candidates, len(tokens)))
        relevant = {labels_of[i] for i in ex.relevant_ids if i in labels_of}
        assert candidates.cosine is not None  # the query vector was given
        cases.append(FusionCase(candidates.labels, candidates.bm25, candidates.cosine, candidates.bm25_rank,
                                candidates.dense_rank, np.isin(candidates.labels, list(relevant)), len(relevant)))
        cosines.append(pool_cosines.astype(np.float64))
        # Judged-irrelevant documents beyond the shown list must not stretch the scale a search never sees.
        references.append(cosines[-1][np.isin(pool, shown)])
        lexical.append(hybrid.lexical_evidence(pool_bm25))
        labels.append(np.fromiter((int(x) in relevant for x in pool), dtype=np.float64, count=len(pool)))
    return TrainingSet(np.asarray(query_embs, dtype=np.float32), cosines, labels, lexical,
                       np.asarray(stats, dtype=np.float64).reshape(len(examples), -1), cases, references)


def describe_adapter(adapter: CosineAdapter) -> dict[str, Any]:
    calibration = adapter.calibration
    return {
        "family": adapter.family,
        "dimension": adapter.dim,
        "inputs": list(adapter.inputs),
        "cosine_scale": adapter.cosine_scale,  # how its map reads a candidate's cosine (adapter.COSINE_SCALES)
        "threshold": None if calibration is None else calibration.threshold,
        "recall_target": None if calibration is None else calibration.recall_target,
        "thresholds": {} if calibration is None else {str(k): v for k, v in calibration.thresholds.items()},
        "metrics": {} if calibration is None else dict(calibration.metrics),
        "info": dict(adapter.info),
    }
