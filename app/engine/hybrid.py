"""Hybrid search over one collection: retrieve from both indexes, fuse, filter by relevance, page."""

from collections.abc import Callable
from concurrent.futures import Executor, wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from app.engine.collection import Collection
from app.engine.facets import count_facets
from app.engine.fusion import DENSE_FLOOR, convex_fusion, normalize, rank_by, rrf_fusion
from app.engine.highlight import highlight
from app.engine.prefix import completed
from app.engine.relevance import CosineAdapter
from app.engine.relevance.inputs import STATS_DEPTH, query_stats
from app.engine.tokenizer import names_a_topic
from app.engine.types import SearchDefaults, SearchQuery
from app.errors import InvalidInput
from app.store.base import StoredRow

_EMPTY_LABELS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float64)


@dataclass
class ScoredHit:
    row: StoredRow
    score: float
    relevance: float | None
    explain: dict[str, Any] | None
    highlights: dict[str, list[str]] | None = None


@dataclass
class SearchOutcome:
    hits: list[ScoredHit]
    total: int
    filtered_out: int
    facets: dict[str, list[dict[str, Any]]] | None = None


@dataclass
class Candidates:
    """Every candidate either retriever returned, with both raw scores and both ranks (0: not retrieved)."""

    labels: np.ndarray
    bm25: np.ndarray
    cosine: np.ndarray | None
    bm25_rank: np.ndarray
    dense_rank: np.ndarray


def _ranks(labels: np.ndarray, retrieved: np.ndarray) -> np.ndarray:
    """The 1-based rank of each of `labels` (sorted, unique, holding every one of `retrieved`) in `retrieved` (a
    ranked list without repeats), 0 where it is not there."""
    ranks = np.zeros(len(labels), dtype=np.int64)
    ranks[np.searchsorted(labels, retrieved)] = np.arange(1, len(retrieved) + 1)
    return ranks


def lexical_evidence(bm25: np.ndarray, best: float | None = None) -> np.ndarray:
    """Each candidate's BM25 over the best candidate's (tm2c2 with floor 0): what the hybrid adapter reads.
    `best`: the best of the query's whole list, when `bm25` is a part of it."""
    top = best if best is not None else float(bm25.max()) if bm25.size else 0.0
    return bm25 / top if top > 0 else np.zeros_like(bm25, dtype=np.float64)


def _filled(labels: np.ndarray, known: np.ndarray, values: np.ndarray, rest_of: Callable[[np.ndarray], np.ndarray],
            dtype: type) -> np.ndarray:
    """A score for each of `labels` (sorted, holding every one of `known`): `values` for the `known` labels, and
    `rest_of` the others for the others."""
    out: np.ndarray = np.empty(len(labels), dtype=dtype)
    at = np.searchsorted(labels, known)
    out[at] = values
    rest = np.ones(len(labels), dtype=bool)
    rest[at] = False
    out[rest] = rest_of(labels[rest])
    return out


def _cosines(collection: Collection, query: np.ndarray, labels: np.ndarray, dense_labels: np.ndarray,
             dense_sims: np.ndarray) -> np.ndarray:
    """Cosine of every candidate: the dense search's own (exact) for its hits; from the index's int8 copy
    for the rest (within ~1e-3; a float32 vector out of hnswlib costs ~26 us)."""
    return _filled(labels, dense_labels, dense_sims, lambda rest: collection.dense.cosines(rest, query), np.float32)


def retrieve(collection: Collection, request: SearchQuery, tokens: list[str], query: np.ndarray | None,
             depth: int, beside: Executor | None = None) -> Candidates:
    """Runs under the caller's read lock. With `beside`, a hybrid search's BM25 top-k runs there while this
    thread walks the graph: hnswlib walks without the GIL and numpy scores without it much of the time, so
    the two overlap (in-process at 100K documents, p50 5.0 ms one after the other, 3.8 ms side by side)."""
    allowed = collection.store.filter_labels(collection.name, request.filter) if request.filter else None
    lex_labels, lex_scores, dense_labels, dense_sims = _EMPTY_LABELS, _EMPTY_SCORES, _EMPTY_LABELS, _EMPTY_SCORES
    lexical = None
    if request.mode != "dense":
        if beside is not None and request.mode == "hybrid" and query is not None:
            lexical = beside.submit(collection.lexical.top_k, tokens, depth, allowed)
        else:
            lex_labels, lex_scores = collection.lexical.top_k(tokens, depth, allowed)
    try:
        if request.mode != "lexical" and query is not None:
            dense_labels, dense_sims = collection.dense.search(query, depth, allowed)
    finally:
        if lexical is not None:  # it reads the index under this thread's read lock: never leave it running
            wait([lexical])
    if lexical is not None:
        lex_labels, lex_scores = lexical.result()
    labels = np.unique(np.concatenate([lex_labels, dense_labels]))
    cosine = None if query is None else _cosines(collection, query, labels, dense_labels, dense_sims)
    return Candidates(labels, _bm25(collection, tokens, labels, lex_labels, lex_scores), cosine,
                      _ranks(labels, lex_labels), _ranks(labels, dense_labels))


def _bm25(collection: Collection, tokens: list[str], labels: np.ndarray, lex_labels: np.ndarray,
          lex_scores: np.ndarray) -> np.ndarray:
    """BM25 of every candidate: the lexical top-k's own scores for its hits (the same terms summed in another
    order: within 4e-16 relative, measured), the index's for the rest (at 100K documents the dense candidates
    alone took 0.26 ms, all of them 0.49)."""
    return _filled(labels, lex_labels, lex_scores, lambda rest: collection.lexical.scores(tokens, rest), np.float64)


def within_depth(candidates: Candidates, depth: int) -> Candidates:
    """The candidates as a `depth`-deep retrieval has them: those that either retriever ranked in its top
    `depth`, each rank beyond it 0 (not retrieved; ranks are 1-based), so that RRF fuses them alike."""
    lexical_in, dense_in = candidates.bm25_rank <= depth, candidates.dense_rank <= depth
    if lexical_in.all() and dense_in.all():  # (a search at the depth it retrieved: nothing to cut)
        return candidates
    bm25_rank = np.where(lexical_in, candidates.bm25_rank, 0)
    dense_rank = np.where(dense_in, candidates.dense_rank, 0)
    keep = (bm25_rank > 0) | (dense_rank > 0)
    return Candidates(candidates.labels[keep], candidates.bm25[keep],
                      None if candidates.cosine is None else candidates.cosine[keep], bm25_rank[keep],
                      dense_rank[keep])


def as_listed(collection: Collection, candidates: Candidates, context: Candidates, query: np.ndarray) -> Candidates:
    """The candidates with the cosines the query's own list (`context`: the unfiltered STATS_DEPTH-deep retrieval
    the adapter reads) gives them: the graph's for its dense hits, the int8 copy's for every other. A deeper or
    filtered walk has the exact cosine of others (and, approximate, a slightly different top), and with it a hit's
    probability moved with the depth asked for or the filter (QA: by up to 0.003 on SciFact between candidates
    100 and 1000, where the default threshold is 0.005; 0.00015 with a filter)."""
    if candidates is context or candidates.cosine is None or context.cosine is None:
        return candidates
    walked = context.dense_rank > 0
    cosine = _filled(candidates.labels, *_within(candidates.labels, context.labels[walked], context.cosine[walked]),
                     lambda rest: collection.dense.cosines(rest, query), np.float32)
    return Candidates(candidates.labels, candidates.bm25, cosine, candidates.bm25_rank, candidates.dense_rank)


def _within(labels: np.ndarray, known: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Those of `known` (sorted) that are among `labels` (sorted), with their `values`."""
    inside = np.isin(known, labels, assume_unique=True)
    return known[inside], values[inside]


def fuse(candidates: Candidates, request: SearchQuery, defaults: SearchDefaults) -> np.ndarray:
    if request.mode == "lexical" or candidates.cosine is None:
        return candidates.bm25.astype(np.float64)
    if request.mode == "dense":
        return candidates.cosine.astype(np.float64)
    if (request.fusion_method or defaults.method) == "rrf":
        return rrf_fusion([candidates.bm25_rank, candidates.dense_rank], request.rrf_k or defaults.rrf_k)
    alpha = defaults.alpha if request.alpha is None else request.alpha
    return convex_fusion(candidates.bm25, candidates.cosine, alpha, request.normalization or defaults.normalization)


def boost_base(candidates: Candidates, scores: np.ndarray, request: SearchQuery, defaults: SearchDefaults
               ) -> np.ndarray:
    """The fused scores on the scale boosts are added to, so that a weight means the same for every method:
    convex scores as they are (tm2c2 and minmax lie in [0, 1]; zscore's are in standard deviations); RRF's over
    the most a candidate can get, 1 / (rrf_k + 1) from each retriever, so in [0, 1] with 1 for first in both;
    lexical-only and dense-only scores normalised by tm2c2 as convex fusion normalises them."""
    if request.mode == "lexical" or candidates.cosine is None:
        return normalize(candidates.bm25, "tm2c2", 0.0)
    if request.mode == "dense":
        return normalize(candidates.cosine, "tm2c2", DENSE_FLOOR)
    if (request.fusion_method or defaults.method) == "rrf":
        return scores * ((request.rrf_k or defaults.rrf_k) + 1) / 2
    return scores


def boost_weights(collection: Collection, labels: np.ndarray, request: SearchQuery) -> np.ndarray:
    """Each candidate's sum of the weights of the boosts whose filter its metadata matches."""
    total = np.zeros(len(labels), dtype=np.float64)
    for boost in request.boosts:
        total += boost.weight * np.isin(labels, collection.store.filter_labels(collection.name, boost.filter))
    return total


@dataclass
class Relevance:
    """The ranked candidates that pass the relevance filter, every candidate's probability of relevance
    (None without an adapter or a query vector), and the threshold applied (None when the filter is off)."""

    order: np.ndarray
    probabilities: np.ndarray | None
    threshold: float | None


def _threshold(adapter: CosineAdapter, recall_target: float | None) -> float:
    try:
        return adapter.threshold_for(recall_target)
    except ValueError as exc:  # a recall target above every calibrated one
        raise InvalidInput(str(exc), field="recall_target") from None


def candidate_stats(candidates: Candidates, n_terms: int) -> np.ndarray | None:
    """The query's `STATS` (what a stats-reading adapter reads of it), from its candidates."""
    return None if candidates.cosine is None else query_stats(candidates.cosine, candidates.bm25, n_terms)


def reads_the_list(adapter: CosineAdapter | None) -> bool:
    """Whether the adapter reads a query's list as a whole (its STATS, or the min-max scale of its top hits),
    which it was trained on at STATS_DEPTH candidates a retriever."""
    return adapter is not None and (adapter.uses_stats or adapter.cosine_scale == "minmax")


def scale_reference(candidates: Candidates, fused: np.ndarray) -> np.ndarray | None:
    """The cosines a min-max scaling map reads each candidate against: the query's top STATS_DEPTH hits as its
    fusion ranks them (`fused`: the candidates' fused scores; build_training_set's pool), not every candidate
    either retriever brought, and before any boost: a boost reorders what a page shows, not how relevant a
    document is."""
    if candidates.cosine is None or candidates.labels.size == 0:
        return None
    return candidates.cosine[rank_by(fused, candidates.labels)[:STATS_DEPTH]]


def filter_by_relevance(candidates: Candidates, order: np.ndarray, request: SearchQuery, query: np.ndarray | None,
                        adapter: CosineAdapter | None, stats: np.ndarray | None = None,
                        reference: np.ndarray | None = None, best_bm25: float | None = None,
                        topic: bool = True) -> Relevance:
    """Scores every candidate with the adapter and, when the filter is on, keeps those of `order` at or above
    the request's threshold (else the one calibrated for its recall target, else the adapter's own).
    `reference`: the cosines a min-max map scales over (`scale_reference`); by default the top of `order`.
    `best_bm25`: the query's best BM25 score (by default the candidates').
    `topic`: False for a query whose terms are only numbers, or none (stop words alone: "the", "what is it";
    `names_a_topic`). Its embedding still lands somewhere, and the adapter, which never saw such queries, kept
    every candidate of them (50-100 a query on the shared collections; README, "queries with no topic"); so a
    candidate it does not match lexically gets probability 0: a number finds the documents that hold it, and
    stop words alone find nothing, as Elasticsearch's match query answers them (`zero_terms_query: none`)."""
    if adapter is None or query is None or candidates.cosine is None:
        return Relevance(order, None, None)
    if reference is None and order.size:
        reference = candidates.cosine[order[:STATS_DEPTH]]
    probabilities = adapter.probabilities(query, candidates.cosine, lexical_evidence(candidates.bm25, best_bm25),
                                          stats, reference)
    if not topic:
        probabilities = np.where(candidates.bm25 != 0, probabilities, 0.0)
    if not request.relevance_enabled:
        return Relevance(order, probabilities, None)
    threshold = request.threshold
    if threshold is None:
        threshold = _threshold(adapter, request.recall_target)
    return Relevance(order[probabilities[order] >= threshold], probabilities, threshold)


def explain(candidates: Candidates, scores: np.ndarray, page: np.ndarray, relevance: Relevance,
            adapter: CosineAdapter | None, query: np.ndarray | None, stats: np.ndarray | None = None,
            boosts: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """How each candidate on the page was scored: both retrievers' scores and ranks, the fused score, the
    boost added to it (with `boosts`: the normalised fused score and the weights, whose sum is the score), the
    adapter's map for this query and the candidate's margin over the threshold."""
    adapter_explain = None
    if adapter is not None and query is not None:
        adapter_explain = {"family": adapter.family, "params": adapter.map_params(query, stats)}
    threshold, probabilities = relevance.threshold, relevance.probabilities
    return [{
        "bm25": float(candidates.bm25[i]),
        "bm25_rank": int(candidates.bm25_rank[i]) or None,
        "cosine": None if candidates.cosine is None else float(candidates.cosine[i]),
        "dense_rank": int(candidates.dense_rank[i]) or None,
        "fused": float(scores[i]),
        **({} if boosts is None else {"before_boost": float(boosts[0][i]), "boost": float(boosts[1][i])}),
        "adapter": adapter_explain,
        "threshold": threshold,
        "margin": None if threshold is None or probabilities is None else float(probabilities[i] - threshold),
    } for i in page]


def search(collection: Collection, request: SearchQuery, query: np.ndarray | None,
           adapter: CosineAdapter | None, defaults: SearchDefaults, beside: Executor | None = None) -> SearchOutcome:
    # Not deepened by the offset: every page of a query (same candidates and k) is a slice of one list, and a
    # page past its end is empty (with k + offset, a deep page ranked a longer list: overlapping pages, a
    # total that grew page by page).
    depth = max(request.candidates or defaults.candidates, request.k)
    tokens = collection.tokenizer(request.query)
    # An adapter that reads the query's list as a whole reads it as it was trained: STATS_DEPTH deep, whatever
    # depth the request asks for (shallower, the scale's worst hit would sit higher and the filter cut harder).
    listed = reads_the_list(adapter) and query is not None
    with collection.lock.read():
        collection.check_live()  # deleted while this search waited: a 404, not a KeyError on its vanished rows
        searched = completed(collection, request.query, tokens, depth) if request.prefix else tokens
        retrieved = retrieve(collection, request, searched, query, max(depth, STATS_DEPTH) if listed else depth,
                             beside)
        candidates = within_depth(retrieved, depth)
        fused = fuse(candidates, request, defaults)
        boosts = None
        if request.boosts:
            boosts = boost_base(candidates, fused, request, defaults), boost_weights(collection, candidates.labels,
                                                                                    request)
        scores = fused if boosts is None else boosts[0] + boosts[1]
        # What the adapter reads of the query's list (its STATS, its scale, BM25's best, each candidate's cosine)
        # is the list the query has in the whole collection, STATS_DEPTH deep as it was trained: a metadata
        # filter restricts which hits show, and `candidates` how many, never a hit's probability (filtered, a hit
        # that passed unfiltered was dropped: the best of a restricted list is lower).
        context = retrieved
        if adapter is not None and query is not None and (request.filter or (listed and depth > STATS_DEPTH)):
            context = retrieve(collection, replace(request, filter=None), searched, query,
                               STATS_DEPTH if listed else depth, beside)
        judged = candidates if adapter is None or query is None else as_listed(collection, candidates, context, query)
        stats = candidate_stats(context, len(tokens)) if adapter is not None and adapter.uses_stats else None
        reference = None
        if listed:  # the deeper list, fused alike; at the default depth it is the candidates themselves
            fused_context = fused if context is candidates else fuse(context, request, defaults)
            reference = scale_reference(context, fused_context)
        relevance = filter_by_relevance(judged, rank_by(scores, candidates.labels), request, query, adapter, stats,
                                        reference, float(context.bm25.max()) if context.bm25.size else 0.0,
                                        names_a_topic(tokens))
        page = relevance.order[request.offset:request.offset + request.k]
        # Facets count every hit that passed (what the pages hold), so then every passing row is read.
        wanted = relevance.order if request.facets else page
        rows = collection.store.get_by_labels(collection.name, candidates.labels[wanted].tolist())
    explanations = explain(candidates, fused, page, relevance, adapter, query, stats, boosts) \
        if request.explain else None
    probabilities = relevance.probabilities
    hits = [ScoredHit(rows[int(candidates.labels[i])], float(scores[i]),
                      None if probabilities is None else float(probabilities[i]),
                      None if explanations is None else explanations[n])
            for n, i in enumerate(page)]
    if request.highlight is not None:
        terms, options = frozenset(searched), request.highlight
        for hit in hits:
            fields: dict[str, str | None] = {name: getattr(hit.row, name) for name in options.fields}
            hit.highlights = highlight(fields, terms, collection.tokenizer.spans, options.fragment_chars,
                                       options.fragments)
    facets = None
    if request.facets:
        facets = count_facets((rows[int(label)].metadata for label in candidates.labels[wanted]), request.facets)
    passed = len(relevance.order)
    return SearchOutcome(hits, total=passed, filtered_out=len(candidates.labels) - passed, facets=facets)
