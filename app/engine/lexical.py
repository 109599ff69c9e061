"""Incremental inverted index scoring Okapi BM25 exactly as rank_bm25.BM25Okapi does."""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import SupportsIndex

import numpy as np

from app.engine.lexical_scoring import LexicalScoring
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
# Completions read a sorted copy of the vocabulary and look through the terms added since linearly; the copy is
# sorted again once those are more than this many, or an eighth of the sorted ones.
_UNSORTED_TERMS = 1024
# How postings are stored (segments, merges, the forward index, deletes): see app/engine/postings.py;
# how queries read them (`top_k`, `scores`, inherited): app/engine/lexical_scoring.py.


def _label(x: SupportsIndex) -> int:
    value = operator.index(x)  # TypeError for anything but an integer
    if not 0 <= value < 2**63:
        raise ValueError(f"label {value} is outside the non-negative int64 range")
    return value


class LexicalIndex(LexicalScoring):
    """BM25 (Okapi, rank_bm25 flavour) over token lists keyed by caller-chosen int64 labels."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25) -> None:
        if not (k1 >= 0 and 0 <= b <= 1 and math.isfinite(epsilon)):
            raise ValueError(f"invalid BM25 parameters k1={k1}, b={b}, epsilon={epsilon}")
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._avg_idf = (-1, 0.0)  # (version it was computed for, value)
        self._min_len = (-1, 0.0)  # the same for the shortest document's length
        self._version = 0
        self._sorted: tuple[int, list[str], np.ndarray] = (0, [], np.zeros(0, np.int64))  # (install, terms, ids)
        self._sorting = threading.Lock()  # searches complete concurrently; one sorts, the others wait for it
        self._installs = 0
        empty = np.zeros(0, np.int32)
        self._install(empty, empty, [], from_sorted(empty, empty, empty))

    def _install(self, labels: np.ndarray, lens: np.ndarray, terms: list[str], seg: Segment) -> None:
        """Replace the whole state by a compact one: slots 0..n-1, every term live."""
        n, n_terms = len(labels), len(terms)
        self._vocab = defaultdict(None, zip(terms, range(n_terms), strict=True))
        self._df = np.zeros(n_terms, np.int64)
        self._df[seg.terms] = np.diff(seg.indptr)
        self._slot_of = dict(zip(labels.tolist(), range(n), strict=True))
        self._labels, self._lens = labels.astype(np.int64), lens.astype(np.float64)
        self._alive, self._n_slots = np.ones(n, bool), n
        # Sorting packed (slot, term) keys is several times faster than an argsort by slot.
        keys = np.sort(seg.slots.astype(np.int64) * max(n_terms, 1) + expand(seg))
        self._fwd = (keys % max(n_terms, 1)).astype(np.int32)
        self._fwd_start = np.append(0, np.cumsum(np.bincount(seg.slots, minlength=n)))
        self._segments = [seg] if len(seg.slots) else []
        self._total_tokens, self._live_postings = int(lens.sum()), len(seg.slots)
        self._version += 1
        self._installs += 1  # term ids renumbered: the sorted vocabulary is stale

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

    def document_frequency(self, term: str) -> int:
        """How many live documents hold `term`."""
        term_id = self._vocab.get(term)
        return 0 if term_id is None else int(self._df[term_id])

    def completions(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` terms that begin with `prefix` (itself included) and are in a live document, those in the
        most documents first: what a word being typed may become. Not thread-safe against writes (as reads)."""
        if not prefix or limit <= 0:
            return []
        terms, ids = self._sorted_vocabulary()
        low, high = bisect.bisect_left(terms, prefix), bisect.bisect_left(terms, prefix + "\U0010ffff")
        tail = itertools.islice(reversed(self._vocab.items()), len(self._vocab) - len(terms))  # added since
        added = [(term, i) for term, i in tail if term.startswith(prefix)]
        names = terms[low:high] + [term for term, _ in added]
        found = np.append(ids[low:high], [i for _, i in added]).astype(np.int64)
        df = self._df[found]
        live = np.flatnonzero(df > 0)  # a term whose documents were all deleted completes nothing
        if len(live) > limit:  # those at least as common as the limit-th (ties may be more), then in order
            live = live[df[live] >= np.partition(df[live], -limit)[-limit]]
        best = sorted(live.tolist(), key=lambda at: (-int(df[at]), names[at]))[:limit]
        return [names[at] for at in best]

    def _sorted_vocabulary(self) -> tuple[list[str], np.ndarray]:
        """The vocabulary sorted, with its term ids, as of the last sort (later terms are the dict's tail)."""
        with self._sorting:
            installs, terms, _ = self._sorted
            unsorted = len(self._vocab) - len(terms)
            if installs != self._installs or unsorted > max(_UNSORTED_TERMS, len(terms) // 8):
                terms = sorted(self._vocab)  # (the strings alone, then their ids: ~2x faster than pairs)
                self._sorted = (self._installs, terms, np.fromiter(map(self._vocab.__getitem__, terms), np.int64,
                                                                   len(terms)))
            return self._sorted[1], self._sorted[2]

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
