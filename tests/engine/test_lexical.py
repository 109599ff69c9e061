"""LexicalIndex: BM25 identical to rank_bm25, incremental updates, filtered top-k and snapshots."""

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from app.engine import lexical, lexical_scoring
from app.engine.lexical import LexicalIndex
from app.engine.tokenizer import Tokenizer
from app.store.snapshots import sha256_of
from tests.helpers import stdlib_docstrings


@pytest.fixture(scope="module")
def stdlib_docs() -> list[str]:
    docs = stdlib_docstrings()
    assert len(docs) >= 300
    return docs


def _queries(corpus: list[list[str]], seed: int) -> list[list[str]]:
    """Rare, mid and very common terms, repeats, and tokens no document has."""
    rng = random.Random(seed)
    df: dict[str, int] = {}
    for doc in corpus:
        for term in set(doc):
            df[term] = df.get(term, 0) + 1
    by_df = sorted(df, key=lambda t: (-df[t], t))
    common, vocab = by_df[:5], by_df
    queries = [[t] for t in common] + [common[:3], [common[0], common[0]], ["zzzunknown"], []]
    for _ in range(60):
        query = rng.sample(vocab, rng.randint(1, 10))
        if rng.random() < 0.3:
            query.append(rng.choice(common))
        if rng.random() < 0.2:
            query += [*query[:2], "nosuchtokenxyz"]
        queries.append(query)
    return queries


def _check_equal(index: LexicalIndex, corpus: dict[int, list[str]], queries: list[list[str]]) -> None:
    labels = np.array(sorted(corpus), np.int64)
    docs = [corpus[int(label)] for label in labels]
    reference = BM25Okapi(docs, k1=index.k1, b=index.b, epsilon=index.epsilon)
    for query in queries:
        expected = reference.get_scores(query)
        np.testing.assert_allclose(index.scores(query, labels), expected, rtol=0, atol=1e-6)
        # top_k agrees too: every matching document, by score then label.
        matching = np.array([bool(set(query) & set(corpus[int(label)])) for label in labels])
        got_labels, got_scores = index.top_k(query, len(labels))
        assert sorted(got_labels.tolist()) == labels[matching].tolist()
        np.testing.assert_allclose(got_scores, expected[np.searchsorted(labels, got_labels)], atol=1e-6)
        assert (np.diff(got_scores) <= 1e-9).all()
        # A short top k (where the rarest terms may settle it without scoring the common ones) is the
        # head of the same ranking, up to the order of near-ties.
        best = np.sort(expected[matching])[::-1]
        for k in (1, 10):
            short_labels, short_scores = index.top_k(query, k)
            np.testing.assert_allclose(short_scores, best[:k], atol=1e-6)
            if len(best):
                assert (expected[np.searchsorted(labels, short_labels)] >= best[:k][-1] - 1e-6).all()
            else:
                assert len(short_labels) == 0


@pytest.mark.parametrize("stopwords", [True, False])
def test_scores_equal_rank_bm25(stdlib_docs: list[str], stopwords: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    pruned = _count_pruned(monkeypatch)
    tokenize = Tokenizer(stopwords=stopwords)
    corpus = {i: tokenize(text) for i, text in enumerate(stdlib_docs)}
    corpus[len(corpus)] = []  # an empty document still counts in N and the average length
    index = LexicalIndex()
    index.upsert(list(corpus), list(corpus.values()))
    queries = _queries(list(corpus.values()), seed=1)
    if not stopwords:  # with stop words kept, "the" is in most documents: the negative-idf floor
        assert sum("the" in doc for doc in corpus.values()) > len(corpus) / 2
        queries += [["the"], ["the", "of", "module"], ["the", "the", "zzz"]]
    _check_equal(index, corpus, queries)
    assert pruned[-1] > 10  # the short top-k checks went through the pruned path


def _count_pruned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the top-k searches that pruning answered (the last item is the running count)."""
    counts, original = [0], LexicalIndex._pruned

    def counting(self: LexicalIndex, *args: object) -> object:
        answer = original(self, *args)  # type: ignore[arg-type]
        counts.append(counts[-1] + (answer is not None))
        return answer

    monkeypatch.setattr(LexicalIndex, "_pruned", counting)
    return counts


# Defaults, then frequent full compactions, then a merge cap small enough to keep many segments.
@pytest.mark.parametrize("min_garbage, max_merge", [(4096, 1 << 22), (0, 1 << 22), (4096, 300)])
def test_incremental_changes_match_a_rebuild(
    stdlib_docs: list[str], min_garbage: int, max_merge: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical, "_MIN_GARBAGE", min_garbage)
    monkeypatch.setattr(lexical, "_MAX_MERGE", max_merge)
    rng = random.Random(7)
    tokenize = Tokenizer(stopwords=False)
    texts = [tokenize(text) for text in stdlib_docs]
    index, corpus = LexicalIndex(k1=1.2, b=0.6, epsilon=0.3), dict[int, list[str]]()
    labels = rng.sample(range(2**40), len(texts))
    position = 0
    while position < len(texts):  # batches of mixed sizes, including single documents
        size = rng.choice([1, 1, 3, 17, 60])
        batch = labels[position : position + size]
        index.upsert(batch, texts[position : position + size])
        corpus.update(zip(batch, texts[position : position + size], strict=True))
        position += size
        if rng.random() < 0.3:  # interleave deletes and replacements with the inserts
            victim = rng.choice(list(corpus))
            index.delete([victim, 12345])
            del corpus[victim]
            target = rng.choice(list(corpus))
            corpus[target] = rng.choice(texts)
            index.upsert([target], [corpus[target]])
    for victim in rng.sample(list(corpus), len(corpus) // 2):
        del corpus[victim]
        index.delete([victim])
    replaced = rng.sample(list(corpus), 40)
    for target in replaced:
        corpus[target] = [*rng.choice(texts), "replacedmarker"]
    index.upsert([*replaced, replaced[0]], [*(corpus[t] for t in replaced), ["lastwins"]])
    corpus[replaced[0]] = ["lastwins"]
    assert len(index) == len(corpus)
    assert all(label in index for label in corpus) and 12345 not in index
    pruned = _count_pruned(monkeypatch)
    _check_equal(index, corpus, [*_queries(list(corpus.values()), seed=2), ["replacedmarker", "the"]])
    assert pruned[-1] > 10


def _small() -> LexicalIndex:
    index = LexicalIndex()
    index.upsert(
        [10, 3, 7, 2**40, 5, 6],
        [["apple", "pie"], ["apple", "tart"], ["apple", "tart"], ["banana"], ["cherry"], []],
    )
    return index


def test_top_k_orders_by_score_then_smaller_label() -> None:
    index = _small()
    labels, scores = index.top_k(["apple", "tart"], 10)
    assert labels.dtype == np.int64 and scores.dtype == np.float64
    # 3 and 7 are identical documents: equal scores, the smaller label first; 10 only has "apple".
    assert labels.tolist() == [3, 7, 10]
    assert scores[0] == scores[1] > scores[2]
    assert index.top_k(["apple", "tart"], 2)[0].tolist() == [3, 7]
    assert index.top_k(["banana"], 5)[0].tolist() == [2**40]


def test_top_k_returns_only_matching_documents() -> None:
    index = _small()
    assert index.top_k(["cherry"], 100)[0].tolist() == [5]  # k larger than the matches
    for query in ([], ["durian"], ["durian", "durian"]):
        labels, scores = index.top_k(query, 5)
        assert labels.dtype == np.int64 and len(labels) == len(scores) == 0
    assert len(index.top_k(["apple"], 0)[0]) == 0


def test_a_match_scores_above_zero_where_rank_bm25s_idf_has_no_floor() -> None:
    """rank_bm25 gives a term in exactly half the documents idf 0, and floors a term in more at a share of the
    mean idf, which is below zero when most terms are in most documents (a small collection): a document holding
    every query term scored 0 or below (QA: "solar panels" -0.30 and -0.34 in a collection of two). There the idf
    is Lucene's, log(1 + (N - df + 0.5) / (df + 0.5)), positive for every df."""
    index = LexicalIndex()
    index.upsert([1, 2], [["a"], ["b"]])  # df = N/2: rank_bm25's idf = log(1.5) - log(1.5) = 0
    labels, scores = index.top_k(["a"], 5)
    assert labels.tolist() == [1] and scores.tolist() == [pytest.approx(math.log(2))]
    two = LexicalIndex()
    two.upsert([1, 2], [["solar", "panel", "convert", "sunlight"], ["solar", "panel", "solar", "roof"]])
    labels, scores = two.top_k(["solar", "panel"], 5)
    assert labels.tolist() == [2, 1] and all(score > 0 for score in scores)  # more "solar", higher
    assert two.scores(["solar", "panel"], np.array([1, 2])).min() > 0


@pytest.mark.parametrize("n_allowed", [5, 40, 300])  # narrow filters take the lookup path
def test_allowed_restricts_to_the_filter_and_still_fills_k(n_allowed: int) -> None:
    rng = random.Random(n_allowed)
    corpus = {i * 3: ["common"] * rng.randint(1, 5) + ["pad"] * rng.randint(0, 9) for i in range(400)}
    corpus.update({i * 3 + 1: ["other"] for i in range(100)})
    index = LexicalIndex()
    index.upsert(list(corpus), list(corpus.values()))
    allowed = np.array(sorted(rng.sample(sorted(corpus), n_allowed)), np.int64)
    labels, scores = index.top_k(["common", "missing"], 5, allowed)
    matching = [label for label in allowed.tolist() if "common" in corpus[label]]
    everything = index.scores(["common", "missing"], np.array(matching, np.int64))
    expected = sorted(zip((-everything).tolist(), matching, strict=True))[:5]
    assert labels.tolist() == [label for _, label in expected]
    np.testing.assert_array_equal(scores, [-score for score, _ in expected])
    assert len(labels) == min(5, len(matching))
    assert len(index.top_k(["common"], 5, np.zeros(0, np.int64))[0]) == 0


def test_scores_of_unknown_and_deleted_labels_are_zero() -> None:
    index = _small()
    index.delete([7, 999])
    assert 7 not in index and len(index) == 5 and "x" not in index
    scores = index.scores(["apple"], np.array([3, 7, 999, 5, 3], np.int64))
    assert scores[0] > 0 and scores[0] == scores[4]
    assert scores[1:4].tolist() == [0.0, 0.0, 0.0]
    index.upsert([7], [["tart"]])
    assert index.top_k(["tart"], 5)[0].tolist() == [7, 3]


def test_rejects_bad_input() -> None:
    index = LexicalIndex()
    with pytest.raises(ValueError):
        index.upsert([1, 2], [["a"]])
    with pytest.raises(ValueError):
        index.upsert([-1], [["a"]])
    with pytest.raises(TypeError):
        index.upsert([1], ["not tokens"])
    with pytest.raises(ValueError):
        LexicalIndex(b=2.0)


def test_save_load_round_trip(tmp_path: Path, stdlib_docs: list[str]) -> None:
    tokenize = Tokenizer()
    index = LexicalIndex(k1=1.3, b=0.7, epsilon=0.2)
    corpus = {i * 1000: tokenize(text) for i, text in enumerate(stdlib_docs[:200])}
    index.upsert(list(corpus), list(corpus.values()))
    index.delete(list(corpus)[::3])  # leaves dead postings and dead terms behind
    index.save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert (loaded.k1, loaded.b, loaded.epsilon) == (1.3, 0.7, 0.2)
    assert len(loaded) == len(index)
    labels = np.array(sorted(corpus), np.int64)
    for query in _queries([corpus[int(label)] for label in labels if label in index], seed=3):
        np.testing.assert_array_equal(loaded.scores(query, labels), index.scores(query, labels))
        for got, want in zip(loaded.top_k(query, 7), index.top_k(query, 7), strict=True):
            np.testing.assert_array_equal(got, want)
    loaded.upsert([1], [["still", "writable"]])
    assert loaded.top_k(["writable"], 1)[0].tolist() == [1]
    assert not list(tmp_path.glob("*.pkl"))


def test_empty_index_round_trips(tmp_path: Path) -> None:
    LexicalIndex().save(tmp_path)
    loaded = LexicalIndex.load(tmp_path)
    assert len(loaded) == 0 and len(loaded.top_k(["a"], 3)[0]) == 0


def _damage_bytes(directory: Path) -> None:
    path = directory / "post_tfs.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(directory: Path) -> None:
    path = directory / "labels.npy"
    path.write_bytes(path.read_bytes()[:60])


def _bump_version(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["version"] += 1
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _inconsistent(directory: Path) -> None:
    # Valid files and checksums, but term frequencies no longer add up to the document lengths.
    path = directory / "post_tfs.npy"
    np.save(path, np.load(path) + 1, allow_pickle=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["sha256"]["post_tfs"] = sha256_of(path)
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "manifest.json").unlink(),
        lambda d: (d / "post_slots.npy").unlink(),
        lambda d: (d / "manifest.json").write_text("{not json"),
        _damage_bytes,
        _truncate,
        _bump_version,
        _inconsistent,
    ],
)
def test_load_refuses_damaged_snapshots(tmp_path: Path, damage: Callable[[Path], object]) -> None:
    _small().save(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError):
        LexicalIndex.load(tmp_path)


def test_load_of_a_missing_directory_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LexicalIndex.load(tmp_path / "nope")


def test_a_query_with_more_distinct_terms_than_the_bound_scores_with_its_rarest() -> None:
    """1,024 terms in at most one document each, 76 in 30 or more: the common ones are dropped, every kept
    term counts as often as the query repeats it, and tokens no document holds take no place in the bound."""
    assert lexical_scoring.MAX_QUERY_TERMS == 1_024
    n_docs, rare, common = 200, [f"rare{j}" for j in range(1_024)], [f"common{k}" for k in range(76)]
    docs: list[list[str]] = [[] for _ in range(n_docs)]
    for j, term in enumerate(rare):
        docs[j % n_docs].append(term)
    for k, term in enumerate(common):
        for d in range(30 + k):
            docs[d].append(term)
    index = LexicalIndex()
    index.upsert(list(range(n_docs)), docs)
    rng = random.Random(5)
    query = [*rare, *rare[:40], *common, *common[:3], *common[:3], *(f"unknown{i}" for i in range(300))]
    rng.shuffle(query)
    kept = [t for t in query if t.startswith("rare")]
    labels = np.arange(n_docs, dtype=np.int64)
    expected = BM25Okapi(docs, k1=index.k1, b=index.b, epsilon=index.epsilon).get_scores(kept)
    np.testing.assert_allclose(index.scores(query, labels), expected, rtol=0, atol=1e-6)
    got_labels, got_scores = index.top_k(query, n_docs)
    assert sorted(got_labels.tolist()) == list(range(n_docs))  # every document holds a rare term
    np.testing.assert_allclose(got_scores, expected[got_labels], atol=1e-6)
    # Not what the whole query would score: the common terms were dropped, not just reordered.
    everything = BM25Okapi(docs, k1=index.k1, b=index.b, epsilon=index.epsilon).get_scores(query)
    assert np.abs(everything - expected).max() > 1.0
    # At the bound itself nothing is dropped.
    at_bound = [*rare[:1_000], *common[:24]]
    np.testing.assert_allclose(
        index.scores(at_bound, labels),
        BM25Okapi(docs, k1=index.k1, b=index.b, epsilon=index.epsilon).get_scores(at_bound), rtol=0, atol=1e-6)


def test_completions_are_the_live_terms_a_prefix_begins_commonest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical, "_UNSORTED_TERMS", 2)  # so that some terms come after the sort, some before
    index = LexicalIndex()
    index.upsert([1, 2, 3], [["vital", "x"], ["vitamin", "vital"], ["vitro", "vitamin", "vital"]])
    assert index.completions("vit", 10) == ["vital", "vitamin", "vitro"]  # 3, 2 and 1 documents
    assert index.completions("vit", 2) == ["vital", "vitamin"]
    assert index.completions("vitamin", 10) == ["vitamin"] and index.completions("vitamins", 10) == []
    assert index.completions("", 10) == [] and index.completions("z", 10) == []
    index.upsert([4], [["vitals", "vivid"]])  # added after the sort: looked through until the next one
    assert index.completions("vit", 10) == ["vital", "vitamin", "vitals", "vitro"]
    index.upsert([5, 6, 7], [["vitrea"], ["vitreb"], ["vitrec"]])  # past the unsorted bound: sorted again
    assert index.completions("vitr", 10) == ["vitrea", "vitreb", "vitrec", "vitro"]
    index.delete([3])  # "vitro" is in no live document now
    assert "vitro" not in index.completions("vit", 10)
    monkeypatch.setattr(lexical, "_MIN_GARBAGE", 0)  # a compaction renumbers the terms: the copy is made again
    index.delete(list(range(1, 8)))
    index.upsert([10, 11], [["vitality", "a"], ["b", "c", "d", "vitamin"]])
    assert index.completions("vit", 10) == ["vitality", "vitamin"]
    assert index.completions("b", 10) == ["b"]
