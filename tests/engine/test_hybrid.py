"""Hybrid retrieval: BM25 run beside the graph walk finds exactly what it finds run first."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.engine import hybrid
from app.errors import CollectionNotFound
from app.schemas.search import SearchRequest


@pytest.mark.parametrize("body", [{"query": "animal that hunts"},
                                  {"query": "animal", "filter": {"kind": "mammal"}},
                                  {"query": "rocket engine thrust", "mode": "lexical"},
                                  {"query": "kitten", "mode": "dense"}])
def test_bm25_beside_the_walk_finds_the_same_candidates(animals: TestClient, body: dict[str, object]) -> None:
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("animals")
    request = SearchRequest.model_validate(body).to_engine()
    tokens, query = collection.tokenizer(request.query), engine.embedder.encode_query(request.query)
    with collection.lock.read():
        serial = hybrid.retrieve(collection, request, tokens, query, 100)
        with ThreadPoolExecutor(1) as beside:
            side = hybrid.retrieve(collection, request, tokens, query, 100, beside)
    assert len(serial.labels) > 0
    for field in ("labels", "bm25", "cosine", "bm25_rank", "dense_rank"):
        assert np.array_equal(getattr(serial, field), getattr(side, field)), field


def test_a_failed_walk_still_waits_for_bm25(animals: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """BM25 reads the index under the caller's read lock, so the caller must not leave before it ends.

    BM25 is held running until the caller waits for it (hybrid's `wait`, watched here), so when the walk fails
    BM25 is certainly still running: a caller that left without waiting would leave it unfinished."""
    collection = animals.app.state.engine.collection("animals")  # type: ignore[attr-defined]
    top_k, submitted = collection.lexical.top_k, []
    caller_waits = threading.Event()
    real_wait = hybrid.wait

    def held_top_k(*args: object) -> tuple[np.ndarray, np.ndarray]:
        assert caller_waits.wait(timeout=30), "the caller never waited for BM25"
        return top_k(*args)

    def watched_wait(futures, *args, **kwargs):  # type: ignore[no-untyped-def]
        caller_waits.set()
        return real_wait(futures, *args, **kwargs)

    def failed_walk(*args: object) -> None:
        raise RuntimeError("walk failed")

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            submitted.append(super().submit(fn, *args, **kwargs))
            return submitted[-1]

    monkeypatch.setattr(collection.lexical, "top_k", held_top_k)
    monkeypatch.setattr(collection.dense, "search", failed_walk)
    monkeypatch.setattr(hybrid, "wait", watched_wait)
    request = SearchRequest(query="animal").to_engine()
    beside = Recording(1)
    try:
        with pytest.raises(RuntimeError, match="walk failed"):
            hybrid.retrieve(collection, request, ["animal"], np.ones(384, np.float32) / np.sqrt(384), 10, beside)
        done = [f.done() for f in submitted]  # before shutdown(), which would wait for it anyway
    finally:
        caller_waits.set()  # a caller that did not wait must not leave BM25 held for the timeout
        beside.shutdown()
    assert done == [True]


def test_a_shallow_search_reads_the_list_as_the_adapter_was_trained(animals: TestClient) -> None:
    """The shipped adapter reads each query's list 100 deep (its STATS, and its min-max scale). A request for
    fewer candidates must not move that: the hits it shows get the probabilities they get at the default depth,
    where before, scaled over 3 candidates a retriever, the third hit read as the list's worst."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    assert hybrid.reads_the_list(engine.adapter_for(engine.collection("animals")))

    def relevance(candidates: int) -> dict[str, float]:
        body = {"query": "pets with fur", "k": candidates, "candidates": candidates, "relevance": {"enabled": False}}
        response = animals.post("/v1/collections/animals/search", json=body)
        assert response.status_code == 200, response.text
        return {hit["id"]: hit["relevance"] for hit in response.json()["hits"]}

    shallow, deep = relevance(3), relevance(100)  # deep: every document of the collection
    assert len(shallow) == 3 and len(deep) > 3
    assert shallow == pytest.approx({i: deep[i] for i in shallow})


def test_a_search_that_waited_while_its_collection_was_deleted_is_a_404(animals: TestClient) -> None:
    """The engine looks the collection up before taking its read lock; a deletion in between removed the rows
    its indexes still pointed at, and the search failed with a KeyError (a 500, ~30 in a load test)."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("animals")
    request = SearchRequest.model_validate({"query": "animal that hunts"}).to_engine()
    query = engine.embedder.encode_query(request.query)
    engine.drop_collection("animals")
    with pytest.raises(CollectionNotFound):
        hybrid.search(collection, request, query, engine.adapter_for(collection), engine.search_defaults(None))


@pytest.mark.parametrize(("mode", "depth"), [("hybrid", 1), ("hybrid", 100), ("lexical", 100)])
def test_each_candidates_bm25_is_the_indexs_score_after_deletes_and_replacements(animals: TestClient, mode: str,
                                                                                 depth: int) -> None:
    """A hybrid search takes the lexical top-k's own scores for its hits and asks the index only for the rest:
    every candidate must still carry the index's score for it (up to the order of the sums), also once documents
    were deleted or replaced (their old labels gone from both indexes). One deep, the dense side brings matching
    documents that the lexical top-1 left out, whose scores come from the index."""
    for doc in ("cat", "dog"):
        assert animals.delete(f"/v1/collections/animals/documents/{doc}").status_code == 204
    replaced = {"documents": [{"id": "eagle", "text": "Eagles hunt animals from the sky; an animal bird of prey."}]}
    assert animals.post("/v1/collections/animals/documents", json=replaced).status_code == 200
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("animals")
    scored_by_lexical = scored_by_the_index = 0
    for text in ("animal that hunts", "animals hunt mice", "bird of prey", "rocket engine thrust", "purr",
                 "yeast in the ocean", "space animals"):
        request = SearchRequest.model_validate({"query": text, "mode": mode}).to_engine()
        tokens, query = collection.tokenizer(request.query), engine.embedder.encode_query(request.query)
        with collection.lock.read(), ThreadPoolExecutor(1) as beside:
            candidates = hybrid.retrieve(collection, request, tokens, query, depth, beside)
            expected = collection.lexical.scores(tokens, candidates.labels)
        np.testing.assert_allclose(candidates.bm25, expected, rtol=1e-12, atol=0)
        matched = candidates.bm25 > 0
        scored_by_lexical += int((matched & (candidates.bm25_rank > 0)).sum())
        scored_by_the_index += int((matched & (candidates.bm25_rank == 0)).sum())
    assert scored_by_lexical > 0
    assert scored_by_the_index > 0 if depth == 1 else scored_by_the_index == 0
