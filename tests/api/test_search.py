"""Search: modes, fusion, filters, paging, explain, and bad requests."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.engine.embedder import Embedder, normalise
from app.main import create_app
from app.settings import Settings
from tests.helpers import ANIMALS, ids, search

OFF = {"enabled": False}


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_each_mode_finds_the_obvious_document(animals: TestClient, mode: str) -> None:
    assert ids(search(animals, "rocket engine thrust", mode=mode, relevance=OFF))[0] == "rocket"


def test_dense_finds_paraphrases_lexical_cannot(animals: TestClient) -> None:
    assert ids(search(animals, "kitten", mode="dense", k=1, relevance=OFF)) == ["cat"]
    assert ids(search(animals, "kitten", mode="lexical", relevance=OFF)) == []


def test_a_word_typed_without_its_accents_or_spaces_finds_the_text(client: TestClient) -> None:
    """"cafe" found nothing in "Das Café …", nor "東京" in "東京は日本の首都です" (a run of Chinese or Japanese
    characters was one term), nor "finding" in a PDF's "ﬁnding" or "abc" in a full-width "ＡＢＣ"; a highlight marks
    the word as the text writes it."""
    client.put("/v1/collections/intl")
    texts = {"de": "Das Café in der Straße ist groß", "ja": "東京は日本の首都です", "fr": "naïve résumé",
             "en": "A plain English sentence about ferries", "pdf": "A ﬁnding on ＡＢＣ kinase"}
    documents = [{"id": doc_id, "text": text} for doc_id, text in texts.items()]
    assert client.post("/v1/collections/intl/documents", json={"documents": documents}).status_code == 200
    for query, doc_id in (("cafe", "de"), ("STRASSE", "de"), ("東京", "ja"), ("首都", "ja"), ("resume", "fr"),
                          ("Café", "de"), ("naïve", "fr"), ("findings", "pdf"), ("ABC", "pdf")):
        assert ids(search(client, query, "intl", mode="lexical", relevance=OFF)) == [doc_id], query
    versions = [{"id": "old", "text": "Python 11.3 notes"}, {"id": "new", "text": "Python 3.11 notes"}]
    assert client.post("/v1/collections/intl/documents", json={"documents": versions}).status_code == 200
    assert ids(search(client, "python 3.11", "intl", mode="lexical", relevance=OFF)) == ["new", "old"]
    marked = search(client, "finding abc", "intl", mode="lexical", relevance=OFF, highlight={"fields": ["text"]})
    assert marked["hits"][0]["highlights"] == {"text": ["A <mark>ﬁnding</mark> on <mark>ＡＢＣ</mark> kinase"]}
    marked = search(client, "日本", "intl", mode="lexical", relevance=OFF, highlight={"fields": ["text"]})
    assert marked["hits"][0]["highlights"] == {"text": ["東京は<mark>日本</mark>の首都です"]}


@pytest.mark.parametrize("fusion", [{"method": "convex", "alpha": 0.3, "normalization": "minmax"},
                                    {"method": "convex", "normalization": "zscore"},
                                    {"method": "convex", "normalization": "tm2c2", "alpha": 1.0},
                                    {"method": "rrf", "rrf_k": 10}])
def test_fusion_variants(animals: TestClient, fusion: dict[str, object]) -> None:
    result = search(animals, "bread yeast baking", fusion=fusion, relevance=OFF)
    assert ids(result)[0] == "bread"
    scores = [h["score"] for h in result["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_filters_exact_in_range_and_bool(animals: TestClient) -> None:
    def found(flt: dict[str, object]) -> set[str]:
        return set(ids(search(animals, "animal", filter=flt, k=10, relevance=OFF)))

    assert found({"kind": "mammal"}) == {"cat", "dog"}
    assert found({"tags": "wild"}) == {"eagle", "salmon"}
    assert found({"tags": {"in": ["space", "baking"]}}) == {"rocket", "bread"}
    assert found({"year": {"gte": 2021}}) == {"dog", "rocket", "bread"}
    assert found({"year": {"gt": 2018, "lt": 2021}}) == {"cat", "salmon"}
    assert found({"edible": True}) == {"salmon", "bread"}
    assert found({"legs": 4, "year": {"lte": 2020}}) == {"cat"}
    assert found({"kind": "unicorn"}) == set()


def test_integer_range_bounds_stay_integers(client: TestClient) -> None:
    """Range bounds were read as floats, so 2**53 + 1 became 2**53: {"gte": 2**53 + 1} matched 2**53 too."""
    client.put("/v1/collections/big")
    docs = [{"id": str(n), "text": "a note", "metadata": {"n": n}} for n in (2**53, 2**53 + 1, 2**63 - 1)]
    assert client.post("/v1/collections/big/documents", json={"documents": docs}).status_code == 200

    def found(condition: dict[str, object]) -> set[str]:
        return set(ids(search(client, "a note", "big", k=10, mode="lexical", filter={"n": condition},
                              relevance=OFF)))

    assert found({"gte": 2**53 + 1}) == {str(2**53 + 1), str(2**63 - 1)}
    assert found({"lt": 2**53 + 1}) == {str(2**53)}
    assert found({"lt": 2**63 - 1}) == {str(2**53), str(2**53 + 1)}
    assert found({"gt": 2.5e15, "lte": 9.0072e15}) == {str(2**53), str(2**53 + 1)}  # floats still compare
    too_big = client.post("/v1/collections/big/search", json={"query": "x", "filter": {"n": {"gte": 2**63}}})
    assert too_big.status_code == 422 and "64 bits" in too_big.text


def test_selective_filter_still_returns_k_hits(client: TestClient) -> None:
    client.put("/v1/collections/many")
    docs = [{"id": f"d{i}", "text": f"note number {i} about gardening and tomatoes",
             "metadata": {"bucket": i % 50}} for i in range(400)]
    client.post("/v1/collections/many/documents", json={"documents": docs})
    for mode in ("hybrid", "lexical", "dense"):
        result = search(client, "gardening tomatoes", "many", k=5, mode=mode, filter={"bucket": 7}, relevance=OFF,
                        candidates=5)
        assert len(result["hits"]) == 5, mode
        assert all(h["metadata"]["bucket"] == 7 for h in result["hits"])


def test_pages_are_stable_slices(animals: TestClient) -> None:
    everything = ids(search(animals, "animals that live in the wild", k=6, relevance=OFF))
    assert len(everything) == len(ANIMALS)
    pages = [ids(search(animals, "animals that live in the wild", k=2, offset=o, relevance=OFF)) for o in (0, 2, 4)]
    assert [doc for page in pages for doc in page] == everything
    assert search(animals, "animals that live in the wild", k=2, offset=4, relevance=OFF)["total"] == len(ANIMALS)


def test_every_hit_carries_its_cosine(client: TestClient, embedder: Embedder) -> None:
    """Dense hits carry the graph's exact cosine; lexical-only candidates the int8 copy's, within ~1e-3."""
    client.put("/v1/collections/cos")
    rng = np.random.default_rng(3)
    vectors = normalise(rng.standard_normal((300, embedder.dim)).astype(np.float32))
    docs = [{"id": f"d{i}", "text": f"garden note {i} " + ("tomatoes " * (i % 5)), "vector": v.tolist()}
            for i, v in enumerate(vectors)]
    client.post("/v1/collections/cos/documents", json={"documents": docs})
    query = embedder.encode_query("garden tomatoes")
    hits = search(client, "garden tomatoes", "cos", k=150, explain=True, relevance=OFF)["hits"]
    dense = [h for h in hits if h["explain"]["dense_rank"]]
    lexical_only = [h for h in hits if not h["explain"]["dense_rank"]]
    assert dense and lexical_only
    for hit in hits:
        exact = float(vectors[int(hit["id"][1:])] @ query)
        assert hit["explain"]["cosine"] == pytest.approx(exact, abs=1e-5 if hit in dense else 3e-3), hit["id"]


def test_explain_reports_both_retrievers(animals: TestClient) -> None:
    hit = search(animals, "salmon rivers", explain=True, relevance=OFF)["hits"][0]
    assert hit["id"] == "salmon"
    explain = hit["explain"]
    assert explain["bm25"] > 0 and explain["bm25_rank"] == 1
    assert 0 < explain["cosine"] <= 1 and explain["dense_rank"] == 1
    assert "explain" not in search(animals, "salmon")["hits"][0]  # API.md: it appears only when asked for


@pytest.mark.parametrize("body", [
    {"query": ""}, {"query": "x" * 32_769}, {"query": "x", "k": 0}, {"query": "x", "k": 100000},
    {"query": "x", "mode": "sparse"}, {"query": "x", "fusion": {"method": "max"}},
    {"query": "x", "fusion": {"alpha": 1.5}}, {"query": "x", "offset": -1},
    {"query": "x", "k": True}, {"query": "x", "k": "5"}, {"query": "x", "k": 2.5},
    {"query": "x", "fusion": {"alpha": False}}, {"query": "x", "candidates": "100"},
    {"query": "x", "relevance": {"threshold": 2}}, {"query": "x", "filter": {"year": {"between": [1, 2]}}},
    {"query": "x", "filter": {"year": {}}}, {"query": "x", "unknown": True}, {"k": 3},
    {"query": " \t\n"}, {"query": "x", "filter": {"year": 2**63}},
    {"query": "x", "filter": {"y": {"in": [-2**63 - 1]}}}, {"query": "x", "filter": {"y": {"gt": True}}},
    {"query": "x", "boosts": [{"filter": {"y": {"in": [10**20]}}, "weight": 0.1}]},
    {"query": "x", "explain": "yes"}, {"query": "x", "explain": 1}, {"query": "x", "relevance": {"enabled": "false"}},
    {"query": "x", "relevance": {"enabled": 0}},
])
def test_bad_search_requests_are_422(animals: TestClient, body: dict[str, object]) -> None:
    response = animals.post("/v1/collections/animals/search", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["message"] and isinstance(error["details"], list)


@pytest.mark.parametrize(("condition", "message"), [
    ({}, "a range filter needs at least one of gt, gte, lt, lte"), ({"foo": 1}, "Extra inputs are not permitted"),
    ("v" * 2049, "a metadata string is at most 2048 characters"), ({"in": []}, "at least 1 item"),
    ({"gt": [1]}, "a range bound is a number or a string, not an array"),
])
def test_a_bad_filter_condition_gets_its_own_form_s_error_first(animals: TestClient, condition: object,
                                                                 message: str) -> None:
    """A filter condition is a value, {"in": [...]} or a range. As a plain union, each got every form's errors
    (`{}`: "should be a valid boolean", "must be a JSON integer", ... before the range's own; QA)."""
    body = {"query": "x", "filter": {"year": condition}}
    details = animals.post("/v1/collections/animals/search", json=body).json()["error"]["details"]
    assert message in details[0]["msg"], details
    assert all(detail["type"] != "bool_type" for detail in details)


@pytest.mark.parametrize("bound", [[1], {"a": 1}, True, "v" * 2049])
def test_a_bad_range_bound_gets_one_error_at_its_own_place(animals: TestClient, bound: object) -> None:
    """Not also "Input should be None" from the union with a bound left out, nor a location naming pydantic's
    union of the bound's kinds (QA)."""
    body = {"query": "x", "filter": {"year": {"gte": bound}}}
    details = animals.post("/v1/collections/animals/search", json=body).json()["error"]["details"]
    assert [d["loc"] for d in details] == [["body", "filter", "year", "gte"]], details


@pytest.mark.parametrize(("condition", "message", "loc"), [
    (["bone"], 'to match any of several, write {"in": [...]}', ["year"]),
    (None, "a string, a number or a boolean, not null", ["year"]),
    (1e400, "a number must be finite", ["year"]),
    ({"in": [1, 1e400]}, "a number must be finite", ["year", "in", 1]),
])
def test_a_bad_filter_value_gets_one_error_that_says_what_to_send(animals: TestClient, condition: object,
                                                                 message: str, loc: list[object]) -> None:
    """A list, null or 1e400 got one error per kind a value may be, at locations naming pydantic's union members
    ("function-before[_json_integer(), int]"), and none said to write {"in": [...]} (QA)."""
    body = json.dumps({"query": "x", "filter": {"year": condition}}).replace("Infinity", "1e400")
    answer = animals.post("/v1/collections/animals/search", content=body, headers={"content-type": "application/json"})
    details = answer.json()["error"]["details"]
    assert len(details) == 1 and message in details[0]["msg"], details
    assert details[0]["loc"] == ["body", "filter", *loc]


@pytest.mark.parametrize(("method", "path"), [("post", "/v1/collections/animals/search"),
                                            ("post", "/v1/collections/animals/relevance/train"),
                                            ("put", "/v1/collections/other")])
def test_a_json_route_refuses_another_content_type_with_415(animals: TestClient, method: str, path: str) -> None:
    """As the documents route does; FastAPI alone answered that the body was missing (422)."""
    response = animals.request(method.upper(), path, content=b'{"query": "cat"}',
                               headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    untyped = animals.request(method.upper(), path, content=b'{"query": "cat"}', headers={"content-type": ""})
    assert untyped.status_code == 415, untyped.text  # a cross-site page may send it without a preflight
    assert animals.get("/v1/collections/other").status_code == 404  # nothing was created
    charset = animals.post("/v1/collections/animals/search", content=b'{"query": "cat"}',
                           headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200
    nothing = animals.put("/v1/collections/other", content=b"",  # `curl -X PUT -d ''`: no settings
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert nothing.status_code == 201


def test_a_body_that_is_not_json_says_why_and_where(animals: TestClient) -> None:
    """It said "JSON decode error" alone (QA), where the documents route names the line and column."""
    response = animals.post("/v1/collections/animals/search", content=b'{"query": "x",, }',
                            headers={"content-type": "application/json"})
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["msg"] == "JSON decode error: Expecting property name enclosed in double quotes at character 14"


def test_a_body_that_is_not_utf8_is_422(animals: TestClient) -> None:
    response = animals.post("/v1/collections/animals/search", content=b'{"query": "\xff\xfe"}',
                            headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


def test_integral_floats_are_integers_and_threshold_beats_recall_target(animals: TestClient) -> None:
    body = {"query": "salmon", "k": 3.0, "relevance": {"threshold": 1.0, "recall_target": 0.5}}
    response = animals.post("/v1/collections/animals/search", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == []  # threshold 1.0 keeps nothing; the recall target alone would keep some
    body["relevance"] = {"recall_target": 0.5}
    assert animals.post("/v1/collections/animals/search", json=body).json()["hits"]


def test_every_hit_carries_its_probability_even_unfiltered(animals: TestClient) -> None:
    """API.md: `relevance` is the adapter's probability "for every hit". An unfiltered lexical search used to
    skip the encoder and answer null; it is still ranked by BM25 alone."""
    off = {"enabled": False}
    lexical = search(animals, "salmon", mode="lexical", relevance=off, explain=True)["hits"]
    assert lexical and all(isinstance(hit["relevance"], float) and hit["explain"]["cosine"] for hit in lexical)
    assert [h["score"] for h in lexical] == [h["explain"]["bm25"] for h in lexical]
    filtered = {h["id"]: h["relevance"] for h in search(animals, "salmon", mode="lexical", relevance=None)["hits"]}
    assert filtered and filtered == pytest.approx({h["id"]: h["relevance"] for h in lexical if h["id"] in filtered})
    hybrid = search(animals, "salmon", relevance=off)["hits"]
    assert hybrid and all(isinstance(hit["relevance"], float) for hit in hybrid)  # still reported, not applied


def _long_query(chars: int) -> str:
    """A pasted page: the topic first, then thousands of distinct filler words, exactly `chars` long."""
    words, size = ["rocket engine thrust propellant"], len("rocket engine thrust propellant")
    for i in itertools.count():
        word = f"filler{i}"
        if size + 1 + len(word) > chars:
            break
        words.append(word)
        size += 1 + len(word)
    return " ".join(words).ljust(chars, "x")


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_a_query_of_32768_characters_is_answered(animals: TestClient, mode: str) -> None:
    query = _long_query(32_768)
    assert len(query) == 32_768
    result = search(animals, query, mode=mode, relevance={"enabled": True})
    unfiltered = search(animals, query, mode=mode, relevance=OFF)
    assert ids(unfiltered)[0] == "rocket"  # the encoder reads the start; BM25 the terms the collection holds
    assert set(ids(result)) <= set(ids(unfiltered))


def test_a_query_of_32769_characters_is_422(animals: TestClient) -> None:
    response = animals.post("/v1/collections/animals/search", json={"query": _long_query(32_769)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["details"][0]["loc"] == ["body", "query"]


def test_search_before_ready_is_503_and_the_key_check_comes_first(tmp_path: Path) -> None:
    # No lifespan (no `with`): the engine never loads, as in the seconds after a start.
    open_app = TestClient(create_app(Settings(data_dir=tmp_path / "open")))
    response = open_app.post("/v1/collections/k/search", json={"query": "q"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert response.headers["retry-after"] == "1"  # the client backs off by it (and so may a proxy's)
    keyed = TestClient(create_app(Settings(data_dir=tmp_path / "keyed", api_keys=["read-key-123"])))
    assert keyed.post("/v1/collections/k/search", json={"query": "q"}).status_code == 401
    response = keyed.post("/v1/collections/k/search", json={"query": "q"},
                          headers={"Authorization": "Bearer read-key-123"})
    assert response.status_code == 503


def test_deep_pages_are_slices_of_one_list(client: TestClient) -> None:
    """Pages past the candidate depth rank the same list: before, offset 140 deepened the retrievers, the
    total grew page by page (137, then 197) and pages overlapped."""
    client.put("/v1/collections/deep")
    docs = [{"id": f"d{i}", "text": f"note {i} about gardening, tomatoes and {'soil ' * (i % 9)}"} for i in range(400)]
    client.post("/v1/collections/deep/documents", json={"documents": docs})
    pages = [search(client, "gardening tomatoes soil", "deep", k=20, offset=o, relevance=OFF)
             for o in range(0, 420, 20)]
    totals = {page["total"] for page in pages}
    assert len(totals) == 1, totals
    listed = [doc for page in pages for doc in ids(page)]
    assert len(listed) == len(set(listed)) == totals.pop() < 400
    # A depth that is sent must reach the page (API.md: "at least k + offset"): it was an empty page (QA).
    deep = [search(client, "gardening tomatoes soil", "deep", k=20, offset=o, candidates=240, relevance=OFF)
            for o in range(0, 240, 20)]
    assert [doc for page in deep for doc in ids(page)] == ids(search(client, "gardening tomatoes soil", "deep", k=240,
                                                                     candidates=240, relevance=OFF))
    for k, offset, candidates in ((20, 240, 240), (20, 20, 30), (10, 0, 5)):
        response = client.post("/v1/collections/deep/search", json={"query": "gardening", "k": k, "offset": offset,
                                                                    "candidates": candidates})
        assert response.status_code == 422, (k, offset, candidates)
        error = response.json()["error"]
        assert error["details"][0]["loc"] == ["body", "candidates"]
        assert f"at least {k + offset}" in error["message"]


def test_null_means_the_default(animals: TestClient) -> None:
    """A client generated from the OpenAPI document sends null for what it leaves unset: every option then
    takes its default, as if left out (k, mode, relevance.enabled... were a 422 while threshold was not)."""
    nulls = {"k": None, "offset": None, "mode": None, "candidates": None, "filter": None, "explain": None,
             "highlight": None, "facets": None, "boosts": None,
             "fusion": {"method": None, "alpha": None, "normalization": None, "rrf_k": None},
             "relevance": {"enabled": None, "threshold": None, "recall_target": None}}
    for query in ("pets with fur", "rocket engine thrust"):
        left_out = animals.post("/v1/collections/animals/search", json={"query": query}).json()
        sent_null = animals.post("/v1/collections/animals/search", json={"query": query, **nulls}).json()
        assert sent_null["hits"] == left_out["hits"] and sent_null["total"] == left_out["total"] > 0
    missing = animals.post("/v1/collections/animals/search", json={"query": None})
    assert missing.status_code == 422 and missing.json()["error"]["details"][0]["loc"] == ["body", "query"]
    created = animals.put("/v1/collections/nulls", json={"hnsw": {"m": None, "ef_search": None}, "bm25": None})
    assert created.status_code == 201
    assert created.json()["settings"] == animals.get("/v1/collections/animals").json()["settings"]


@pytest.mark.parametrize("mode", ["hybrid", "lexical", "dense"])
def test_a_metadata_filter_restricts_the_hits_and_leaves_their_probabilities(animals: TestClient, mode: str) -> None:
    """The adapter reads the query's list (its best scores, its spread, BM25's best). Read from the filtered
    list, a filter raised or lowered every hit's probability, so a hit that passed unfiltered could be dropped
    by asking only for its own kind. Now it reads the query's list in the whole collection."""
    queries = ["animals that hunt", "wild creatures", "cats and dogs", "animals with fur", "wild yeast"]
    for query, flt in itertools.product(queries, [{"kind": "mammal"}, {"tags": {"in": ["wild"]}}]):
        everything = search(animals, query, mode=mode)["hits"]
        only = search(animals, query, mode=mode, filter=flt)["hits"]
        matching = {h["id"] for h in search(animals, query, mode="lexical", filter=flt, k=100)["hits"]} | {
            h["id"] for h in search(animals, query, mode="dense", filter=flt, k=100)["hits"]}
        unfiltered = {h["id"]: h["relevance"] for h in everything}
        assert {h["id"]: h["relevance"] for h in only} == pytest.approx(
            {i: p for i, p in unfiltered.items() if i in matching}, abs=1e-6), (query, flt)
        passed = set(ids(search(animals, query, mode=mode, relevance=None)))
        assert set(ids(search(animals, query, mode=mode, relevance=None, filter=flt))) == passed & matching


@pytest.mark.parametrize("body", [{"mode": "lexical"}, {"mode": "dense"}, {},
                                  {"fusion": {"method": "rrf"}}, {"fusion": {"normalization": "minmax"}}])
def test_a_hits_relevance_does_not_depend_on_how_deep_the_request_looks(client: TestClient, embedder: Embedder,
                                                                        body: dict) -> None:
    """The filter reads the query's list 100 deep whatever `candidates` or `k` asks for (README): asking for a
    deeper list must keep the hits a shallower one passed, with the same probabilities. Through depth 300 the
    lexical mode's statistics read the cosines of 300 BM25 hits, and RRF's top 100 moved with both lists'
    depth (QA: 23 of 30 SciFact queries lost hits in lexical mode at `candidates` 300), and a deeper walk gave
    more of the list the graph's exact cosine where a 100-deep one had the int8 copy's (QA)."""
    client.put("/v1/collections/deep")
    rng = np.random.default_rng(5)
    query = embedder.encode_query("garden tomatoes soil")
    noise = rng.standard_normal((400, len(query))).astype(np.float32) / np.sqrt(len(query))
    vectors = normalise(query + noise * rng.uniform(0.2, 4, 400)[:, None])  # cosines to the query 0.25-0.98
    docs = [{"id": f"d{i}", "text": f"garden note {i} " + ("tomatoes " * (i % 7)) + ("soil " * (i % 3)),
             "vector": v.tolist(), "metadata": {"grp": i % 5}} for i, v in enumerate(vectors)]
    assert client.post("/v1/collections/deep/documents", json={"documents": docs}).status_code == 200
    shallow = search(client, "garden tomatoes soil", "deep", k=100, **body)["hits"]  # filter off: every hit
    assert len(shallow) == 100
    for deeper in ({"k": 101}, {"k": 300, "candidates": 300}):
        found = {h["id"]: h["relevance"] for h in search(client, "garden tomatoes soil", "deep",
                                                         **{**body, **deeper})["hits"]}
        for hit in shallow:  # the same cosines (QA: the graph's for a hit a deeper walk reached, moving it ~1%)
            assert found[hit["id"]] == pytest.approx(hit["relevance"], rel=1e-6), (deeper, hit["id"])
    # Nor on a metadata filter: its exact search gave the graph's cosine to hits the unfiltered list had the int8
    # copy's for (QA: 0.0183864 against 0.0182343, across the threshold for one SciFact document).
    for only in ({"grp": 1}, {"grp": {"in": [0, 3]}}, {"grp": {"lt": 4}}):
        found = {h["id"]: h["relevance"] for h in search(client, "garden tomatoes soil", "deep", k=100, filter=only,
                                                         **body)["hits"]}
        both = [hit for hit in shallow if hit["id"] in found]
        assert len(both) >= 10, only
        for hit in both:
            assert found[hit["id"]] == pytest.approx(hit["relevance"], rel=1e-6), (only, hit["id"])
