"""The query side of the lexical index: BM25 scores read from its postings, only the query terms' runs."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from app.engine.postings import Segment

# A query scores with at most this many distinct terms, its rarest: a pasted paragraph (32,768 characters
# are allowed) can hold thousands, and each costs a posting run in every segment and a pass in top-k, while
# the common ones it drops carry little idf. An ordinary query has far fewer and scores exactly as rank_bm25.
MAX_QUERY_TERMS = 1_024


class _Run(NamedTuple):
    seg: Segment
    weight: float  # idf * multiplicity in the query * (k1 + 1)
    lo: int
    hi: int
    term: int  # the term's id: a term has a run in each segment that holds it


def _splits(n_terms: int) -> list[int]:
    """How many of the rarest terms MaxScore tries to settle the top k with: each try re-scores those terms'
    postings, so every count up to 16 (as many as an ordinary query has), then doubling: a pasted paragraph's
    hundreds of rare terms would otherwise cost hundreds of tries (~90 ms at 300 terms, ~5 ms exhaustive)."""
    splits, split = list(range(1, min(n_terms, 17))), 32
    while split < n_terms:
        splits.append(split)
        split *= 2
    return splits


class LexicalScoring:
    """`top_k` and `scores` of `LexicalIndex` (app/engine/lexical.py), which owns and updates these arrays."""

    k1: float
    b: float
    epsilon: float
    _version: int  # bumped by every change; the caches below hold the version they were computed for
    _avg_idf: tuple[int, float]
    _min_len: tuple[int, float]
    _vocab: defaultdict[str, int]  # term -> id
    _df: np.ndarray  # document frequency by term id
    _slot_of: dict[int, int]  # live label -> slot
    _labels: np.ndarray  # by slot
    _lens: np.ndarray  # document length by slot
    _alive: np.ndarray  # by slot
    _n_slots: int
    _segments: list[Segment]
    _total_tokens: int  # of the live documents

    def _average_idf(self, n: int) -> float:
        version, value = self._avg_idf
        if version != self._version:
            # idf depends on df alone, so take logs once per distinct df value, not once per term.
            counts = np.bincount(self._df)
            df = np.flatnonzero(counts[1:]) + 1
            terms = int(counts[df].sum())
            value = float(counts[df] @ (np.log(n - df + 0.5) - np.log(df + 0.5))) / terms if terms else 0.0
            self._avg_idf = (self._version, value)  # one assignment: concurrent readers stay consistent
        return value

    def _query_terms(self, query: Sequence[str]) -> list[tuple[int, int]]:
        """(term id, multiplicity) of the query's indexed terms in query order: its MAX_QUERY_TERMS rarest
        (lowest document frequency, ties to the earlier term) when it has more."""
        if isinstance(query, str):
            raise TypeError("query must be a token sequence, not str")
        terms = [(tid, count) for term, count in Counter(query).items()
                 if (tid := self._vocab.get(term)) is not None and self._df[tid]]
        if len(terms) > MAX_QUERY_TERMS:
            df = self._df[np.fromiter((tid for tid, _ in terms), np.int64, count=len(terms))]
            rarest = np.sort(np.argsort(df, kind="stable")[:MAX_QUERY_TERMS])
            terms = [terms[i] for i in rarest.tolist()]
        return terms

    def _runs(self, query: Sequence[str]) -> list[_Run]:
        """Posting runs of the query's indexed terms (see `_query_terms`), by segment, then in query order."""
        n, tids, weights = len(self._slot_of), list[int](), list[float]()
        for tid, count in self._query_terms(query):
            df = int(self._df[tid])
            idf = math.log(n - df + 0.5) - math.log(df + 0.5)
            if idf < 0:  # rank_bm25 floors terms in over half the documents at a share of the mean
                idf = self.epsilon * self._average_idf(n)
            if idf <= 0:
                # Where that is no floor (a term in exactly half the documents, or a mean below zero: most terms of
                # a small collection are in most of its documents), a document holding the term scored 0 or below
                # (QA: "solar panels" -0.30 in a collection of two), and convex fusion's tm2c2 takes BM25 to be at
                # least 0. Lucene's idf instead, positive for every df: the only place the scores leave rank_bm25's.
                idf = math.log1p((n - df + 0.5) / (df + 0.5))
            tids.append(tid)
            weights.append(idf * count * (self.k1 + 1))
        runs = []
        for seg in self._segments if tids else []:
            pos = np.minimum(np.searchsorted(seg.terms, tids), len(seg.terms) - 1)
            for i in np.flatnonzero(seg.terms[pos] == tids).tolist():
                runs.append(_Run(seg, weights[i], int(seg.indptr[pos[i]]), int(seg.indptr[pos[i] + 1]), tids[i]))
        return runs

    def _saturate(self, num: np.ndarray, tfs: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """num / (tf + k1 * (1 - b + b * dl / avgdl)) in place (lens too); shared by both scoring paths
        so they agree to the bit."""
        lens *= self.k1 * self.b / (self._total_tokens / len(self._slot_of))
        lens += self.k1 * (1 - self.b)
        lens += tfs
        num /= lens
        return num

    def _accumulate(self, runs: list[_Run]) -> tuple[np.ndarray, np.ndarray]:
        """Sorted slots of the live documents holding a query term, and their scores."""
        if not runs:
            return np.zeros(0, np.int64), np.zeros(0)
        slots = np.concatenate([r.seg.slots[r.lo : r.hi] for r in runs], dtype=np.intp)  # index once
        tfs = np.concatenate([r.seg.tfs[r.lo : r.hi] for r in runs])
        num, at = np.empty(len(tfs)), 0
        for run in runs:
            np.multiply(tfs[at : at + run.hi - run.lo], run.weight, out=num[at : at + run.hi - run.lo])
            at += run.hi - run.lo
        if self._n_slots > len(self._slot_of):
            keep = self._alive[slots]
            slots, tfs, num = slots[keep], tfs[keep], num[keep]
        num = self._saturate(num, tfs, self._lens[slots])
        if len(slots) * 8 >= self._n_slots:  # reading much of the corpus anyway: dense beats sorting
            total = np.bincount(slots, weights=num, minlength=self._n_slots)
            if all(run.weight > 0 for run in runs):
                hits = np.flatnonzero(total > 0)  # on a bool array: ~7x faster than on the floats
            else:  # a match can score 0 or less; find matches by presence instead
                seen = np.zeros(self._n_slots, bool)
                seen[slots] = True
                hits = np.flatnonzero(seen)
            return hits, total[hits]
        hits, inverse = np.unique(slots, return_inverse=True)
        return hits, np.bincount(inverse, weights=num, minlength=len(hits))

    def _score_slots(self, runs: list[_Run], slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores and match flags of a few sorted live slots, by binary search in each run."""
        scores, matched = np.zeros(len(slots)), np.zeros(len(slots), bool)
        for seg, weight, lo, hi, _ in runs:
            run = seg.slots[lo:hi]
            pos = np.minimum(np.searchsorted(run, slots), hi - lo - 1)
            ok = run[pos] == slots
            if ok.any():
                tfs = seg.tfs[lo + pos[ok]]
                scores[ok] += self._saturate(tfs * weight, tfs, self._lens[slots[ok]])
                matched |= ok
        return scores, matched

    def _shortest(self) -> float:
        """Length of the shortest document indexed (deleted ones included: still a lower bound)."""
        version, value = self._min_len
        if version != self._version:
            value = float(self._lens[: self._n_slots].min()) if self._n_slots else 0.0
            self._min_len = (self._version, value)  # one assignment: concurrent readers stay consistent
        return value

    def _pruned(self, runs: list[_Run], k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact top k from the rarest terms' postings when they settle it (MaxScore, Turtle and Flood
        1995), else None. A document holding none of those terms scores at most the other terms' summed upper
        bounds; once k documents holding one score more than that, only candidates that can still make the
        cut are scored for the other terms, and the long postings lists of common terms, which make
        exhaustive scoring grow with the corpus, are only scanned for those candidates' flags."""
        if any(run.weight <= 0 for run in runs):
            return None
        by_term: dict[int, list[_Run]] = defaultdict(list)
        for run in runs:
            by_term[run.term].append(run)
        groups = sorted(by_term.values(), key=lambda g: sum(r.hi - r.lo for r in g))
        sizes = [sum(r.hi - r.lo for r in g) for g in groups]
        # tf / (tf + k1 (1 - b + b dl / avgdl)) grows with tf and shrinks with dl: bound it at the term's
        # largest tf and the shortest document, with a margin for rounding.
        floor = self.k1 * (1 - self.b + self.b * self._shortest() / (self._total_tokens / len(self._slot_of)))
        bounds = []
        for group in groups:
            top_tf = max(int(r.seg.tfs[r.lo : r.hi].max()) for r in group)
            bounds.append(group[0].weight * top_tf / (top_tf + floor) * (1 + 1e-9))
        for split in _splits(len(groups)):
            if 4 * sum(sizes[:split]) > sum(sizes):  # not rare enough to be worth a try
                break
            rest = sum(bounds[split:])
            slots, partial = self._accumulate([r for g in groups[:split] for r in g])
            if len(slots) < k:
                continue
            cut = np.partition(partial, len(partial) - k)[len(partial) - k]  # <= the k-th full score
            if rest >= cut:
                continue
            keep = partial + rest >= cut
            slots, partial = slots[keep], partial[keep]
            return self._best(slots, partial + self._score_among(slots, [r for g in groups[split:] for r in g]), k)
        return None

    def _score_among(self, slots: np.ndarray, runs: list[_Run]) -> np.ndarray:
        """Scores of sorted live `slots` from `runs`: a flag lookup per posting (~1 ns, the runs' slots
        ascend) finds the few postings that count; a binary search per run would cost ~50 ns per slot and
        run, and a long term has a run in every segment."""
        wanted = np.zeros(self._n_slots, bool)
        wanted[slots] = True
        scores = np.zeros(len(slots))
        for seg, weight, lo, hi, _ in runs:
            at = lo + np.flatnonzero(wanted[seg.slots[lo:hi]])
            found, tfs = seg.slots[at], seg.tfs[at]
            scores[np.searchsorted(slots, found)] += self._saturate(tfs * weight, tfs, self._lens[found])
        return scores

    def _best(self, slots: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(scores) > k:
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth  # every tie at the cut stays, so the smaller labels can win it
            slots, scores = slots[keep], scores[keep]
        labels = self._labels[slots]
        order = np.lexsort((labels, -scores))[:k]
        return labels[order], scores[order]

    def top_k(self, query: Sequence[str], k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best k (labels, scores) among documents holding a query term, only `allowed` ones (sorted
        int64 labels) if given; ties go to the smaller label."""
        runs = self._runs(query)
        if k <= 0 or not runs or (allowed is not None and not len(allowed)):
            return np.zeros(0, np.int64), np.zeros(0)
        if allowed is None:
            pruned = self._pruned(runs, k)
            return pruned if pruned is not None else self._best(*self._accumulate(runs), k)
        allowed = np.asarray(allowed, np.int64)
        if (allowed[1:] < allowed[:-1]).any():  # cheap next to the query; wrong answers are not
            allowed = np.sort(allowed)
        if len(allowed) * 16 < sum(r.hi - r.lo for r in runs):  # narrow filter: look its docs up
            wanted = {self._slot_of.get(label, -1) for label in allowed.tolist()} - {-1}
            slots = np.array(sorted(wanted), np.int64)
            scores, matched = self._score_slots(runs, slots)
            return self._best(slots[matched], scores[matched], k)
        slots, scores = self._accumulate(runs)
        labels = self._labels[slots]
        keep = allowed[np.minimum(np.searchsorted(allowed, labels), len(allowed) - 1)] == labels
        return self._best(slots[keep], scores[keep], k)

    def scores(self, query: Sequence[str], labels: np.ndarray) -> np.ndarray:
        """BM25 score of each label (0 for unknown or deleted labels)."""
        labels = np.asarray(labels, np.int64)
        out, runs = np.zeros(len(labels)), self._runs(query)
        slots = np.array([self._slot_of.get(label, -1) for label in labels.tolist()], np.int64)
        uniq, inverse = np.unique(slots[slots >= 0], return_inverse=True)
        if not runs or not len(uniq):
            return out
        if len(uniq) * 16 < sum(r.hi - r.lo for r in runs):
            found = self._score_slots(runs, uniq)[0]
        else:
            hits, hit_scores = self._accumulate(runs)
            pos = np.minimum(np.searchsorted(hits, uniq), max(len(hits) - 1, 0))
            found = np.where(hits[pos] == uniq, hit_scores[pos], 0.0) if len(hits) else np.zeros(len(uniq))
        out[slots >= 0] = found[inverse]
        return out
