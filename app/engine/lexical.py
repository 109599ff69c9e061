"""Incremental inverted index scoring Okapi BM25 exactly as rank_bm25.BM25Okapi does."""

from __future__ import annotations

import itertools
import math
import operator
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, SupportsIndex

import numpy as np

from app.engine.postings import (
    Segment,
    expand,
    from_sorted,
    merge,
    merge_tail,
    read_snapshot,
    reserve,
    run_starts,
    write_snapshot,
)

_MAX_SLOTS = 2**31 - 1  # slots are stored as int32
_MIN_GARBAGE = 4096  # dead postings or slots below which a full compaction is not worth it
_MAX_MERGE = 1 << 22  # postings; merges never build a bigger segment
# How postings are stored (segments, merges, the forward index, deletes): see app/engine/postings.py.


class _Run(NamedTuple):
    seg: Segment
    weight: float  # idf * multiplicity in the query * (k1 + 1)
    lo: int
    hi: int
    term: int  # the term's id: a term has a run in each segment that holds it


def _label(x: SupportsIndex) -> int:
    value = operator.index(x)  # TypeError for anything but an integer
    if not 0 <= value < 2**63:
        raise ValueError(f"label {value} is outside the non-negative int64 range")
    return value


class LexicalIndex:
    """BM25 (Okapi, rank_bm25 flavour) over token lists keyed by caller-chosen int64 labels."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        if not (k1 >= 0 and 0 <= b <= 1 and math.isfinite(epsilon)):
            raise ValueError(f"invalid BM25 parameters k1={k1}, b={b}, epsilon={epsilon}")
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._avg_idf: tuple[int, float] = (-1, 0.0)  # (version it was computed for, value)
        self._min_len: tuple[int, float] = (-1, 0.0)  # the same for the shortest document's length
        self._version = 0
        empty = np.zeros(0, np.int32)
        self._install(empty, empty, [], from_sorted(empty, empty, empty))

    def _install(self, labels: np.ndarray, lens: np.ndarray, terms: list[str], seg: Segment) -> None:
        """Replace the whole state by a compact one: slots 0..n-1, every term live."""
        n, n_terms = len(labels), len(terms)
        self._vocab: defaultdict[str, int] = defaultdict(None, zip(terms, range(n_terms), strict=True))
        self._df = np.zeros(n_terms, np.int64)
        self._df[seg.terms] = np.diff(seg.indptr)
        self._slot_of: dict[int, int] = dict(zip(labels.tolist(), range(n), strict=True))
        self._labels, self._lens = labels.astype(np.int64), lens.astype(np.float64)
        self._alive, self._n_slots = np.ones(n, bool), n
        # Sorting packed (slot, term) keys is several times faster than an argsort by slot.
        keys = np.sort(seg.slots.astype(np.int64) * max(n_terms, 1) + expand(seg))
        self._fwd = (keys % max(n_terms, 1)).astype(np.int32)
        self._fwd_start = np.append(0, np.cumsum(np.bincount(seg.slots, minlength=n)))
        self._segments = [seg] if len(seg.slots) else []
        self._total_tokens, self._live_postings = int(lens.sum()), len(seg.slots)
        self._version += 1

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, list[str], Segment]:
        """The live state in compact form, computed without touching `self`."""
        alive = self._alive[: self._n_slots]
        seg = merge(self._segments, alive)
        new_slot = np.cumsum(alive) - 1
        live_terms = self._df[: len(self._vocab)] > 0
        new_term = np.cumsum(live_terms) - 1
        terms = [t for t, keep in zip(self._vocab, live_terms.tolist(), strict=True) if keep]
        seg = seg._replace(terms=new_term[seg.terms].astype(np.int32), slots=new_slot[seg.slots].astype(np.int32))
        return self._labels[: self._n_slots][alive], self._lens[: self._n_slots][alive], terms, seg

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, int | np.integer) and label in self._slot_of

    def upsert(self, labels: Sequence[int], docs: Sequence[Sequence[str]]) -> None:
        """Index token lists under `labels`; an existing label is replaced, the last duplicate wins."""
        if len(labels) != len(docs):
            raise ValueError(f"{len(labels)} labels but {len(docs)} documents")
        if any(isinstance(doc, str) for doc in docs):
            raise TypeError("documents must be token sequences, not str")
        latest = dict(zip(map(_label, labels), docs, strict=True))
        if not latest:
            return
        self._collect_garbage(reserve=len(latest))  # it renumbers terms, so not after _term_ids
        texts, first = list(latest.values()), self._n_slots
        n_new, stop = len(texts), first + len(texts)
        lens = np.fromiter(map(len, texts), np.int64, n_new)
        tokens = self._term_ids(texts, int(lens.sum()))
        self._remove(latest)
        # One sort of packed (term, doc) keys gives term frequencies and the segment's order at once.
        keys = np.sort(tokens * max(n_new, 1) + np.repeat(np.arange(n_new), lens))
        starts = run_starts(keys)
        terms, docs_at = np.divmod(keys[starts], max(n_new, 1))
        seg = from_sorted(terms, docs_at + first, np.diff(np.append(starts, len(keys))))
        n_terms = len(self._vocab)
        self._df = reserve(self._df, n_terms)
        self._df[seg.terms] += np.diff(seg.indptr)
        self._labels = reserve(self._labels, stop)
        self._labels[first:stop] = list(latest)
        self._lens = reserve(self._lens, stop)
        self._lens[first:stop] = lens
        self._alive = reserve(self._alive, stop)
        self._alive[first:stop] = True
        self._fwd_start = reserve(self._fwd_start, stop + 1)
        fwd_from = int(self._fwd_start[first])
        self._fwd_start[first + 1 : stop + 1] = fwd_from + np.cumsum(np.bincount(docs_at, minlength=n_new))
        self._fwd = reserve(self._fwd, fwd_from + len(terms))
        self._fwd[fwd_from : fwd_from + len(terms)] = np.sort(docs_at * n_terms + terms) % n_terms
        self._slot_of.update(zip(latest, range(first, stop), strict=True))
        self._n_slots, self._total_tokens = stop, self._total_tokens + int(lens.sum())
        self._live_postings += len(terms)
        self._version += 1
        self._segments += [seg] if len(terms) else []
        merge_tail(self._segments, self._alive, _MAX_MERGE)

    def _term_ids(self, texts: list[Sequence[str]], total: int) -> np.ndarray:
        """Every token's term id, documents concatenated; new terms get the next ids. Done by a C-level
        map over a defaultdict: a Python loop per token used to dominate indexing time."""
        vocab, known = self._vocab, len(self._vocab)
        vocab.default_factory = itertools.count(known).__next__
        try:
            ids = np.fromiter(map(vocab.__getitem__, itertools.chain.from_iterable(texts)), np.int64, total)
            if not all(isinstance(t, str) for t in itertools.islice(reversed(vocab), len(vocab) - known)):
                raise TypeError("tokens must be str")
        except BaseException:
            for term in list(itertools.islice(reversed(vocab), len(vocab) - known)):
                del vocab[term]
            raise
        finally:
            vocab.default_factory = None
        return ids

    def delete(self, labels: Iterable[int]) -> None:
        """Remove documents; unknown labels are ignored."""
        self._remove(labels)
        self._collect_garbage()

    def _remove(self, labels: Iterable[int]) -> None:
        pop = self._slot_of.pop
        found = [slot for slot in (pop(label, None) for label in labels) if slot is not None]
        if not found:
            return
        slots = np.array(found, np.int64)
        self._alive[slots] = False
        starts, ends = self._fwd_start[slots], self._fwd_start[slots + 1]
        # Gather every removed document's term ids at once: concatenated aranges of [start, end).
        lens = ends - starts
        terms = self._fwd[np.arange(int(lens.sum())) + np.repeat(starts - np.cumsum(lens) + lens, lens)]
        np.subtract.at(self._df, terms, 1)
        self._total_tokens -= int(self._lens[slots].sum())
        self._live_postings -= len(terms)
        self._version += 1

    def _collect_garbage(self, reserve: int = 0) -> None:
        """Compact everything once dead data outweighs live data, so the cost amortises over deletes."""
        dead_postings = sum(len(s.slots) for s in self._segments) - self._live_postings
        dead_slots = self._n_slots - len(self._slot_of)
        garbage = max(dead_postings - self._live_postings, dead_slots - len(self._slot_of))
        if garbage > _MIN_GARBAGE or self._n_slots + reserve > _MAX_SLOTS:
            self._install(*self._snapshot())

    # -- querying: only the runs of the query's terms are read ---------------------------------------

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

    def _runs(self, query: Sequence[str]) -> list[_Run]:
        """Posting runs of the query's indexed terms, by segment, then in query order."""
        if isinstance(query, str):
            raise TypeError("query must be a token sequence, not str")
        n, tids, weights = len(self._slot_of), list[int](), list[float]()
        for term, count in Counter(query).items():
            tid = self._vocab.get(term)
            df = 0 if tid is None else int(self._df[tid])
            if tid is not None and df:
                idf = math.log(n - df + 0.5) - math.log(df + 0.5)
                if idf < 0:  # rank_bm25 floors terms in over half the documents at a share of the mean
                    idf = self.epsilon * self._average_idf(n)
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
        for split in range(1, len(groups)):
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

    # -- persistence ---------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write a compact snapshot into the existing `directory`; the manifest goes last."""
        labels, lens, terms, seg = self._snapshot()
        write_snapshot(directory, labels, lens, terms, seg, {"k1": self.k1, "b": self.b, "epsilon": self.epsilon})

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex:
        """Read a snapshot written by `save`; ValueError if it is missing, damaged or incompatible."""
        manifest, labels, lens, terms, seg = read_snapshot(directory)
        try:
            index = cls(manifest["k1"], manifest["b"], manifest["epsilon"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot load lexical index from {directory}: {exc}") from exc
        index._install(labels, lens, terms, seg)
        return index
