"""Benchmark corpus: standard-library sentences recombined into documents, with real and derived vectors."""

import contextlib
import importlib
import inspect
import io
import random
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Importing these opens a browser, prints, or drags in a GUI toolkit.
_SKIP_MODULES = {"antigravity", "this", "idlelib", "turtle", "turtledemo", "tkinter"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]+")
NOISE_SIGMA = 0.025  # root mean square a dimension: a derived vector keeps a cosine of ~0.9 to its source
VECTOR_DECIMALS = 6  # what goes over the wire; the in-process indexes use the same rounded vectors


def _docstrings() -> Iterator[str]:
    """Docstrings of standard-library modules, their public members and those members' methods."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names - _SKIP_MODULES):
            if name.startswith("_"):
                continue
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            yield inspect.getdoc(module) or ""
            for member in sorted(vars(module)):
                obj = getattr(module, member, None)
                if member.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                yield inspect.getdoc(obj) or ""
                if inspect.isclass(obj):
                    yield from (inspect.getdoc(v) or "" for a, v in vars(obj).items()
                                if not a.startswith("_") and callable(v))


def stdlib_sentences() -> list[str]:
    """Distinct prose sentences (5-50 words, mostly letters) of the standard library's docstrings, sorted."""
    found: set[str] = set()
    for doc in _docstrings():
        prose = " ".join(line for line in doc.splitlines() if not line.lstrip().startswith(">>>"))
        for sentence in _SENTENCE_END.split(" ".join(prose.split())):
            words = len(sentence.split())
            letters = sum(c.isalpha() or c == " " for c in sentence)
            if 5 <= words <= 50 and letters >= 0.85 * len(sentence):
                found.add(sentence)
    return sorted(found)


@dataclass
class Corpus:
    """Documents as lists of sentence indices; `vectors` unit float32 rows, rounded as sent."""

    sentences: list[str]
    docs: list[list[int]]
    vectors: np.ndarray | None = None

    def text(self, i: int) -> str:
        return " ".join(self.sentences[s] for s in self.docs[i])

    def texts(self, start: int = 0, stop: int | None = None) -> list[str]:
        return [self.text(i) for i in range(start, len(self.docs) if stop is None else stop)]


def _compose(rng: random.Random, sentences: list[str], lengths: list[int], keep: list[int]) -> list[int]:
    """`keep`, then random sentences until the document holds 100-200 words."""
    target, doc = rng.randint(100, 200), list(keep)
    words = sum(lengths[s] for s in doc)
    while words < target:
        doc.append(rng.randrange(len(sentences)))
        words += lengths[doc[-1]]
    return doc


def real_documents(sentences: list[str], n: int, seed: int) -> Corpus:
    """`n` documents of random sentences: the ones encoded for real vectors."""
    rng, lengths = random.Random(seed), [len(s.split()) for s in sentences]
    return Corpus(sentences, [_compose(rng, sentences, lengths, []) for _ in range(n)])


def shaped_noise(vectors: np.ndarray, count: int, sigma: float, seed: int) -> np.ndarray:
    """`count` draws of Gaussian noise with the covariance of `vectors`, scaled to `sigma` rms a dimension.

    Isotropic noise spreads a derived vector over all 384 dimensions, which real embeddings do not use
    alike; a real vector's hundreds of isotropic copies then form a high-dimensional simplex of near-ties
    that the graph walks poorly (HNSW recall@10 at 1M: 0.287 with isotropic noise, 0.592 with this).
    Noise along the directions real texts vary in keeps the derived vectors embedding-like.
    """
    covariance = np.cov(np.asarray(vectors, np.float64), rowvar=False)
    values, axes = np.linalg.eigh(covariance)
    variances = values.clip(0.0)  # eigh of a covariance can return tiny negative eigenvalues
    scale = np.sqrt(variances * vectors.shape[1] * sigma**2 / variances.sum())
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((count, len(values))) * scale) @ axes.T).astype(np.float32)


def extend(real: Corpus, n: int, seed: int, sigma: float = NOISE_SIGMA) -> Corpus:
    """`n` documents: the real ones, then derived ones. A derived document keeps half the sentences of a
    random real one (plus fresh sentences) and that document's vector plus Gaussian noise shaped like the
    real vectors' covariance, re-normalised."""
    if real.vectors is None:
        raise ValueError("the real documents need their vectors first")
    rng, lengths = random.Random(seed), [len(s.split()) for s in real.sentences]
    bases = np.random.default_rng(seed).integers(0, len(real.docs), max(n - len(real.docs), 0))
    docs = list(real.docs[:n])
    for base in bases.tolist():
        source = real.docs[base]
        keep = sorted(rng.sample(range(len(source)), len(source) // 2))
        docs.append(_compose(rng, real.sentences, lengths, [source[i] for i in keep]))
    derived = real.vectors[bases] + shaped_noise(real.vectors, len(bases), sigma, seed + 1)
    vectors = np.concatenate([real.vectors[:n], derived / np.linalg.norm(derived, axis=1, keepdims=True)])
    return Corpus(real.sentences, docs, rounded(vectors))


def rounded(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors rounded to what the benchmark sends (and so what the server stores)."""
    return np.round(np.asarray(vectors, np.float32), VECTOR_DECIMALS).astype(np.float32)


def make_long_queries(sentences: list[str], n: int, chars: int, seed: int) -> list[str]:
    """Pasted-paragraph queries: random sentences run together, cut at exactly `chars` characters."""
    rng, queries = random.Random(seed), list[str]()
    for _ in range(n):
        parts, size = list[str](), 0
        while size < chars:
            parts.append(rng.choice(sentences))
            size += len(parts[-1]) + 1
        queries.append(" ".join(parts)[:chars])
    return queries


def make_queries(sentences: list[str], n: int, seed: int) -> list[str]:
    """Query-like phrases: 2-6 consecutive words of random sentences, each with some non-stop word."""
    from app.engine.tokenizer import Tokenizer

    rng, tokenize, queries = random.Random(seed), Tokenizer(), list[str]()
    while len(queries) < n:
        words = _WORD.findall(rng.choice(sentences))
        size = rng.randint(2, 6)
        if len(words) < size:
            continue
        start = rng.randrange(len(words) - size + 1)
        query = " ".join(words[start:start + size]).lower()
        if tokenize(query):
            queries.append(query)
    return queries
