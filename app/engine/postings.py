"""Postings storage of the lexical index: immutable CSR segments, their merges, and snapshot files."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from app.store.snapshots import sha256_of

FORMAT, FORMAT_VERSION = "lexical-bm25", 1
_FILES = {"labels": np.int64, "doc_lens": np.int64, "term_bytes": np.uint8, "term_offsets": np.int64}
_FILES |= {"post_terms": np.int32, "post_indptr": np.int64, "post_slots": np.int32, "post_tfs": np.int32}

# Postings live in immutable CSR segments (sorted term ids; each term's run holds slots
# ascending and tfs). An upsert adds one segment; neighbours of similar size merge, log-structured, up
# to a cap (`_MAX_MERGE` in lexical.py), so segments stay few, a posting is rewritten O(log N) times and no single
# upsert does unbounded merge work. That is ~8 bytes a posting with no Python object per posting or per
# term (per-term arrays would add ~100 bytes of object overhead to every rare term). Each upsert gives a
# document a fresh dense slot (labels map to slots through a dict); a delete clears an alive flag, its
# postings drop out when their segment is next merged, or all at once (slots and term ids renumbered)
# once garbage outweighs live data. A forward index of each slot's term ids (4 bytes a posting) keeps
# document frequencies exact on delete without a scan.


class Segment(NamedTuple):
    terms: np.ndarray  # int32, sorted unique term ids
    indptr: np.ndarray  # int64, len(terms) + 1
    slots: np.ndarray  # int32, ascending within each term's run
    tfs: np.ndarray  # int32


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """Indices where a new value begins in a sorted array."""
    change = np.ones(len(ordered), bool)
    change[1:] = ordered[1:] != ordered[:-1]
    return np.flatnonzero(change)


def from_sorted(terms: np.ndarray, slots: np.ndarray, tfs: np.ndarray) -> Segment:
    starts = run_starts(terms)
    indptr = np.append(starts, len(terms)).astype(np.int64)
    return Segment(
        terms[starts].astype(np.int32), indptr, slots.astype(np.int32, copy=False), tfs.astype(np.int32, copy=False)
    )


def expand(seg: Segment) -> np.ndarray:
    return np.repeat(seg.terms, np.diff(seg.indptr))


def merge(segs: Sequence[Segment], alive: np.ndarray) -> Segment:
    """One segment with the live postings of `segs`, which must be in slot order."""
    empty = np.zeros(0, np.int32)
    terms = np.concatenate([empty, *(expand(s) for s in segs)])
    slots = np.concatenate([empty, *(s.slots for s in segs)])
    tfs = np.concatenate([empty, *(s.tfs for s in segs)])
    keep = alive[slots]
    terms, slots, tfs = terms[keep], slots[keep], tfs[keep]
    if len(segs) > 1:
        order = np.argsort(terms, kind="stable")  # timsort: near linear on a few pre-sorted runs
        terms, slots, tfs = terms[order], slots[order], tfs[order]
    return from_sorted(terms, slots, tfs)


def merge_tail(segments: list[Segment], alive: np.ndarray, max_postings: int) -> None:
    """Merge the newest segments in place while the older neighbour is not much bigger, so sizes stay
    geometric; `max_postings` caps the size of a merged segment, so the merge work (latency) one upsert
    can trigger is bounded, at the price of a few more segments."""
    while len(segments) >= 2:
        older, newer = len(segments[-2].slots), len(segments[-1].slots)
        if older > 2 * newer or older + newer > max_postings:
            break
        merged = merge(segments[-2:], alive)
        segments[-2:] = [merged] if len(merged.slots) else []


def reserve(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with room for `size` items (rows, for a 2-d array), grown geometrically so appends stay
    amortised O(1)."""
    if size <= len(array):
        return array
    grown = np.zeros((max(size, 2 * len(array)), *array.shape[1:]), array.dtype)
    grown[: len(array)] = array
    return grown


def write_snapshot(directory: Path, labels: np.ndarray, lens: np.ndarray, terms: list[str], seg: Segment,
                   params: dict[str, float]) -> None:
    """Write a compact snapshot into the existing `directory`; the manifest goes last."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in terms]
    offsets = np.append(0, np.cumsum([len(e) for e in encoded], dtype=np.int64))
    arrays = [labels, lens.astype(np.int64), np.frombuffer(b"".join(encoded), np.uint8), offsets, *seg]
    digests = {}
    for name, array in zip(_FILES, arrays, strict=True):
        np.save(directory / f"{name}.npy", array.astype(_FILES[name]), allow_pickle=False)
        digests[name] = sha256_of(directory / f"{name}.npy")
    counts = {"documents": len(labels), "terms": len(terms), "postings": len(seg.slots)}
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, **params, **counts, "sha256": digests}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))


def read_snapshot(directory: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray, list[str], Segment]:
    """(manifest, labels, doc lengths, terms, segment) of a snapshot written by `write_snapshot`;
    ValueError if it is missing, damaged or inconsistent."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("not a lexical index snapshot")
        if manifest.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported snapshot version {manifest.get('version')!r}")
        a = {}
        for name, dtype in _FILES.items():
            if sha256_of(directory / f"{name}.npy") != manifest["sha256"][name]:
                raise ValueError(f"{name}.npy is damaged (checksum mismatch)")
            a[name] = np.load(directory / f"{name}.npy", allow_pickle=False)
            if a[name].dtype != dtype or a[name].ndim != 1:
                raise ValueError(f"{name}.npy has dtype {a[name].dtype}, ndim {a[name].ndim}")
        blob, offs = a["term_bytes"].tobytes(), a["term_offsets"].tolist()
        terms = [blob[lo:hi].decode("utf-8", "surrogatepass") for lo, hi in itertools.pairwise(offs)]
        seg = Segment(a["post_terms"], a["post_indptr"], a["post_slots"], a["post_tfs"])
        _validate(a["labels"], a["doc_lens"], terms, seg, manifest)
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError) as exc:
        raise ValueError(f"cannot load lexical index from {directory}: {exc}") from exc
    return manifest, a["labels"], a["doc_lens"], terms, seg


def _validate(labels: np.ndarray, lens: np.ndarray, terms: list[str], seg: Segment, manifest: dict) -> None:
    """Refuse a snapshot that decodes but is inconsistent, rather than serve wrong scores from it."""
    n, nnz = len(labels), len(seg.slots)
    checks = {
        "counts": [n, len(terms), nnz] == [manifest["documents"], manifest["terms"], manifest["postings"]],
        "documents": len(lens) == n and len(set(labels.tolist())) == n and bool((labels >= 0).all()),
        "terms": len(set(terms)) == len(terms) == len(seg.terms),
        "term ids": bool((seg.terms == np.arange(len(terms))).all()),
        "indptr": len(seg.indptr) == len(terms) + 1 and seg.indptr[0] == 0 and seg.indptr[-1] == nnz,
        "runs": bool((np.diff(seg.indptr) > 0).all()) and len(seg.tfs) == nnz,
        "postings": bool(((seg.slots >= 0) & (seg.slots < n) & (seg.tfs > 0)).all()),
    }
    if all(checks.values()):
        same_term = np.diff(expand(seg)) == 0
        checks["order"] = bool((np.diff(seg.slots)[same_term] > 0).all())
        checks["lengths"] = bool((np.bincount(seg.slots, weights=seg.tfs, minlength=n) == lens).all())
    if bad := [name for name, ok in checks.items() if not ok]:
        raise ValueError(f"inconsistent snapshot ({', '.join(bad)})")
