"""Search additions over HTTP: highlighted fragments, facet counts and metadata boosts."""

from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import ANIMALS, ids, search

OFF = {"enabled": False}
WILD = "animals that live in the wild"

# --- highlights ---------------------------------------------------------------------------------


def test_highlights_mark_the_query_terms_in_title_and_text(animals: TestClient) -> None:
    hit = search(animals, "rocket engines", highlight={"fields": ["title", "text"]})["hits"][0]
    assert hit["id"] == "rocket"
    assert hit["highlights"] == {
        "title": ["<mark>Rocket</mark> <mark>engines</mark>"],
        "text": ["A <mark>rocket</mark> <mark>engine</mark> burns propellant to produce thrust in space."]}
    assert "highlights" not in search(animals, "rocket engines")["hits"][0]  # only when asked for


def test_highlights_match_stems_skip_stop_words_and_escape_the_rest(client: TestClient) -> None:
    client.put("/v1/collections/notes")
    text = ("Intro words that say nothing much at all. " * 4 + "In this trial, <script>alert('x')</script> "
            "vitamin D supplements cut the risk of a hip fracture in older women. " + "Closing words. " * 6)
    client.post("/v1/collections/notes/documents",
                json={"documents": [{"id": "n1", "title": "A <b>bold</b> claim", "text": text}]})
    hit = search(client, "the fractures and vitamin supplements", "notes",
                 highlight={"fields": ["text", "title"], "fragment_chars": 80, "fragments": 1})["hits"][0]
    [fragment] = hit["highlights"]["text"]
    assert fragment.startswith("… ") and fragment.endswith(" …")
    assert "<mark>vitamin</mark> D <mark>supplements</mark>" in fragment  # "d" is a stop word
    assert "<mark>fracture</mark>" in fragment  # "fractures" matches as BM25 would match it
    assert "&lt;/script&gt;" in fragment
    assert "<" not in fragment.replace("<mark>", "").replace("</mark>", "")  # no markup but the marks
    assert "<mark>the</mark>" not in fragment and "the" in fragment
    # The title has no query term: its leading fragment, escaped.
    assert hit["highlights"]["title"] == ["A &lt;b&gt;bold&lt;/b&gt; claim"]


def test_a_hit_without_a_matching_term_gets_its_leading_fragment(animals: TestClient) -> None:
    hit = search(animals, "kitten", mode="dense", k=1, highlight={"fields": ["text"], "fragment_chars": 30})["hits"][0]
    assert hit["id"] == "cat"
    assert hit["highlights"] == {"text": ["Cats are small domesticated …"]}


# --- facets -------------------------------------------------------------------------------------


def _expected(docs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    counts = Counter(v for d in docs for v in set(d["metadata"][key] if isinstance(d["metadata"][key], list)
                                                  else [d["metadata"][key]]))
    return [{"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda vn: (-vn[1], vn[0]))]


def test_facets_count_every_hit_that_passed_not_only_the_page(animals: TestClient) -> None:
    result = search(animals, WILD, k=2, facets=["tags", "kind", "colour"])
    assert result["total"] == len(ANIMALS) and len(result["hits"]) == 2
    assert result["facets"] == {"tags": _expected(ANIMALS, "tags"), "kind": _expected(ANIMALS, "kind"),
                                "colour": []}
    assert result["facets"]["tags"][:3] == [{"value": "fur", "count": 2}, {"value": "pet", "count": 2},
                                            {"value": "wild", "count": 2}]
    assert "facets" not in search(animals, WILD)  # only when asked for


def test_facets_count_only_what_passed_the_metadata_filter(animals: TestClient) -> None:
    result = search(animals, WILD, filter={"year": {"gte": 2020}}, facets=["year", "kind"])
    assert result["facets"] == {
        "year": [{"value": 2020, "count": 1}, {"value": 2021, "count": 1}, {"value": 2022, "count": 1},
                 {"value": 2023, "count": 1}],
        "kind": [{"value": "mammal", "count": 2}, {"value": "food", "count": 1}, {"value": "machine", "count": 1}]}


def test_facets_count_only_what_passed_the_relevance_filter(animals: TestClient) -> None:
    on = {"enabled": True}
    everything = search(animals, "salmon swim upstream", k=100, relevance=on, facets=["kind"])
    assert 0 < everything["total"] < len(ANIMALS) and everything["filtered_out"] > 0
    passed = [d for d in ANIMALS if d["id"] in ids(everything)]
    assert everything["facets"] == {"kind": _expected(passed, "kind")}
    first_page = search(animals, "salmon swim upstream", k=1, relevance=on, facets=["kind"])
    assert first_page["facets"] == everything["facets"]


# --- boosts -------------------------------------------------------------------------------------


def test_a_boost_lifts_the_matching_hits_and_explain_shows_it(animals: TestClient) -> None:
    plain = ids(search(animals, WILD, k=6))
    assert plain[0] != "rocket"
    boosted = search(animals, WILD, k=6, explain=True, boosts=[{"filter": {"tags": {"in": ["space"]}}, "weight": 1}])
    assert ids(boosted)[0] == "rocket"
    for hit in boosted["hits"]:
        explain = hit["explain"]
        assert explain["boost"] == (1.0 if hit["id"] == "rocket" else 0.0)
        assert hit["score"] == pytest.approx(explain["before_boost"] + explain["boost"])
        assert explain["before_boost"] == pytest.approx(explain["fused"])  # convex scores are already [0, 1]
    # The boosts' sum; a negative weight pushes down.
    both = [{"filter": {"kind": "mammal"}, "weight": -0.5}, {"filter": {"tags": "pet"}, "weight": -0.25}]
    sunk = search(animals, WILD, k=6, explain=True, boosts=both)
    assert ids(sunk)[-2:] == [i for i in ids(search(animals, WILD, k=6)) if i in ("cat", "dog")]
    assert {h["id"]: h["explain"]["boost"] for h in sunk["hits"]}["cat"] == -0.75


@pytest.mark.parametrize("mode", ["lexical", "dense"])
def test_single_retriever_scores_are_normalised_before_a_boost(animals: TestClient, mode: str) -> None:
    boost = [{"filter": {"kind": "unicorn"}, "weight": 0.5}]  # matches nothing
    hits = search(animals, "rocket engine thrust", mode=mode, explain=True, boosts=boost)["hits"]
    assert hits[0]["id"] == "rocket"
    assert hits[0]["explain"]["before_boost"] == pytest.approx(1.0)  # the best candidate's score is 1
    assert all(h["explain"]["boost"] == 0.0 and h["score"] <= 1.0 for h in hits)


def test_rrf_scores_are_scaled_by_their_largest_possible_value(animals: TestClient) -> None:
    fusion = {"method": "rrf", "rrf_k": 60}
    boost = [{"filter": {"kind": "fish"}, "weight": 0.2}]
    hits = search(animals, "salmon rivers", fusion=fusion, explain=True, boosts=boost)["hits"]
    salmon = hits[0]
    assert salmon["id"] == "salmon" and salmon["explain"]["bm25_rank"] == salmon["explain"]["dense_rank"] == 1
    assert salmon["explain"]["fused"] == pytest.approx(2 / 61)
    assert salmon["explain"]["before_boost"] == pytest.approx(1.0)
    assert salmon["score"] == pytest.approx(1.2)


def test_boosts_reorder_but_never_change_relevance(animals: TestClient) -> None:
    on = {"enabled": True}
    boost = [{"filter": {"kind": "machine"}, "weight": 1.0}]
    plain = search(animals, "salmon swim upstream", k=100, relevance=on)
    boosted = search(animals, "salmon swim upstream", k=100, relevance=on, boosts=boost)
    assert sorted(ids(plain)) == sorted(ids(boosted)) and plain["total"] == boosted["total"]
    assert {h["id"]: h["relevance"] for h in plain["hits"]} == {h["id"]: h["relevance"] for h in boosted["hits"]}
    unfiltered = search(animals, "salmon swim upstream", k=100, boosts=boost)
    assert ids(unfiltered)[0] == "rocket"  # off, the boost puts the machine first; on, it is not relevant
    assert "rocket" not in ids(boosted)


# --- the contract ---------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    {"highlight": {"fields": ["body"]}}, {"highlight": {"fields": []}}, {"highlight": {"fragment_chars": 19}},
    {"highlight": {"fragment_chars": 1001}}, {"highlight": {"fragments": 0}}, {"highlight": {"fragments": 11}},
    {"highlight": {"fragments": 2.5}}, {"highlight": {"colour": "red"}}, {"highlight": True},
    {"facets": "tags"}, {"facets": [""]}, {"facets": [f"k{i}" for i in range(17)]}, {"facets": [3]},
    {"boosts": [{"filter": {"tags": "a"}, "weight": 1.5}]}, {"boosts": [{"filter": {"tags": "a"}, "weight": -2}]},
    {"boosts": [{"filter": {"tags": "a"}}]}, {"boosts": [{"filter": {}, "weight": 0.1}]},
    {"boosts": [{"filter": {"year": {"between": [1, 2]}}, "weight": 0.1}]},
    {"boosts": [{"filter": {"tags": "a"}, "weight": "0.1"}]},
    {"boosts": [{"filter": {"tags": "a"}, "weight": 0.1}] * 17},
])
def test_bad_additions_are_422(animals: TestClient, extra: dict[str, object]) -> None:
    response = animals.post("/v1/collections/animals/search", json={"query": "cats", **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and error["message"] and isinstance(error["details"], list)


def test_the_additions_are_in_the_openapi_document_with_their_bounds(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    def given(prop: dict[str, Any]) -> dict[str, Any]:  # an option's schema beside the null that means its default
        variants = [v for v in prop["anyOf"] if v != {"type": "null"}]
        assert len(variants) == 1 and len(prop["anyOf"]) == 2
        return {**variants[0], **{key: value for key, value in prop.items() if key != "anyOf"}}

    request = {name: given(prop) for name, prop in schemas["SearchRequest"]["properties"].items() if name != "query"}
    assert {"highlight", "facets", "boosts"} <= request.keys()
    assert request["facets"]["maxItems"] == 16 and "relevance filter" in request["facets"]["description"]
    assert request["boosts"]["maxItems"] == 16
    highlight = {name: given(prop) for name, prop in schemas["HighlightOptions"]["properties"].items()}
    assert (highlight["fragment_chars"]["minimum"], highlight["fragment_chars"]["maximum"]) == (20, 1000)
    assert (highlight["fragments"]["minimum"], highlight["fragments"]["maximum"]) == (1, 10)
    assert highlight["fields"]["items"]["enum"] == ["title", "text"]
    weight = schemas["Boost"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (-1, 1) and "RRF" in weight["description"]
    answer = schemas["SearchResponse"]["properties"]
    assert "facets" in answer and "highlights" in schemas["Hit"]["properties"]
    assert "FacetValue" in schemas


def test_prefix_completes_the_word_being_typed(animals: TestClient) -> None:
    """As you type, the last word is unfinished: "sourdo" found nothing lexically. With `prefix` it reads the
    collection's terms that word begins; a word a space has ended is not completed, nor is one inside the query."""
    def lexical(query: str, **body: object) -> dict[str, Any]:
        return search(animals, query, mode="lexical", highlight={"fields": ["title"]}, **body)

    assert ids(lexical("sourdo")) == []
    found = lexical("sourdo", prefix=True)
    assert ids(found) == ["bread"]
    assert found["hits"][0]["highlights"] == {"title": ["<mark>Sourdough</mark>"]}
    assert ids(lexical("propell", prefix=True)) == ["rocket"]
    assert ids(lexical("sourdo ", prefix=True)) == []
    assert ids(lexical("sourdo salmon", prefix=True)) == ["salmon"]
    # The default filter keeps the completed hit in hybrid mode too.
    assert "bread" in ids(search(animals, "sourdo", prefix=True, relevance={"enabled": True}))


def test_prefix_reaches_the_stem_of_the_word_being_typed(client: TestClient) -> None:
    """The index holds stems, and a stem is often shorter than the word being typed: "runni" (of "running", stem
    "run") and "connecti" (of "connection", "connect") began no term, so the hits went as the word grew and came
    back when it was whole. Each English ending the word may take is tried; "card" does not reach "car"."""
    client.put("/v1/collections/typing")
    texts = {"run": "Running shoes for a marathon", "net": "A network connection", "car": "Cars and trucks",
             "card": "Card games"}
    documents = [{"id": doc_id, "text": text} for doc_id, text in texts.items()]
    assert client.post("/v1/collections/typing/documents", json={"documents": documents}).status_code == 200
    for typed, expected in (("runni", ["run"]), ("runn", ["run"]), ("connecti", ["net"]), ("card", ["card"])):
        found = search(client, typed, "typing", mode="lexical", prefix=True, highlight={"fields": ["text"]})
        assert ids(found) == expected, typed
    assert found["hits"][0]["highlights"] == {"text": ["<mark>Card</mark> games"]}
    assert search(client, "runni", "typing", mode="lexical", prefix=True, highlight={"fields": ["text"]}
                  )["hits"][0]["highlights"] == {"text": ["<mark>Running</mark> shoes for a marathon"]}


def test_a_word_in_as_many_documents_as_the_search_reads_is_taken_as_typed(client: TestClient) -> None:
    """Completions are terms of their own, rarer and so weightier in BM25 than a common word: "gene" ranked
    "generalist" and "generic" first. A word already in `candidates` documents or more is not completed."""
    client.put("/v1/collections/typing")
    texts = ["gene expression", "gene therapy", "generalist views"]
    documents = [{"id": f"d{n}", "text": text} for n, text in enumerate(texts)]
    assert client.post("/v1/collections/typing/documents", json={"documents": documents}).status_code == 200
    for depth, expected in ((2, ["d0", "d1"]), (3, ["d0", "d1", "d2"])):
        found = search(client, "gene", "typing", mode="lexical", prefix=True, k=depth, candidates=depth)
        assert sorted(ids(found)) == expected, depth
