"""The relevance filter through the API: probabilities on hits, per-request control, training a collection's own."""

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.engine.collection import Collection
from app.engine.relevance import CosineAdapter
from tests.conftest import AppFactory
from tests.helpers import ids, search

TOPICS = {
    "cooking": ["Knead the dough and let the bread rise overnight.", "Simmer the tomato sauce with garlic and basil.",
                "Sear the steak in a hot cast iron pan.", "Whisk eggs and sugar for a sponge cake."],
    "astronomy": ["The telescope observed a distant spiral galaxy.",
                  "Jupiter has dozens of moons and a great red spot.",
                  "A supernova outshines its whole galaxy for weeks.", "Comets grow tails as they near the sun."],
    "finance": ["The central bank raised interest rates to curb inflation.",
                "Index funds spread risk across many stocks.", "Bond yields fall when prices rise.",
                "A mortgage is a loan secured by property."],
    "sports": ["The striker scored twice in the second half.", "Marathon runners train for months of long runs.",
               "The tennis final went to a fifth-set tiebreak.", "Swimmers taper before a championship meet."],
}
QUERIES = {
    "cooking": ["how to bake bread at home", "recipe for pasta sauce", "cooking meat in a pan"],
    "astronomy": ["planets and their moons", "exploding stars", "looking at galaxies through telescopes"],
    "finance": ["why do banks change interest rates", "investing in stocks", "home loans"],
    "sports": ["football goals", "training for long distance running", "tennis match"],
}


def _load(client: TestClient) -> dict[str, list[str]]:
    client.put("/v1/collections/topics")
    docs, by_topic = [], {}
    for topic, texts in TOPICS.items():
        by_topic[topic] = [f"{topic}-{i}" for i in range(len(texts))]
        docs += [{"id": f"{topic}-{i}", "text": t, "metadata": {"topic": topic}} for i, t in enumerate(texts)]
    assert client.post("/v1/collections/topics/documents", json={"documents": docs}).status_code == 200
    return by_topic


def _examples(by_topic: dict[str, list[str]]) -> list[dict[str, object]]:
    return [{"query": q, "relevant_ids": by_topic[topic],
             "irrelevant_ids": [d for t, ds in by_topic.items() if t != topic for d in ds][:3]}
            for topic, queries in QUERIES.items() for q in queries]


def test_hits_carry_probabilities_and_the_default_adapter_filters(client: TestClient) -> None:
    _load(client)
    relevance = client.get("/v1/collections/topics/relevance").json()
    assert relevance["status"] == "default" and 0 < relevance["threshold"] < 1
    unfiltered = search(client, "galaxies and supernovae", "topics", k=16, relevance={"enabled": False}, explain=True)
    assert len(unfiltered["hits"]) == 16 and unfiltered["filtered_out"] == 0
    for hit in unfiltered["hits"]:
        assert 0.0 <= hit["relevance"] <= 1.0
        assert set(hit["explain"]["adapter"]["params"]) >= {"a", "b"}
    filtered = search(client, "galaxies and supernovae", "topics", k=16, relevance={})
    assert 0 < len(filtered["hits"]) < 16
    assert filtered["total"] + filtered["filtered_out"] == unfiltered["total"]
    assert all(h["relevance"] >= relevance["threshold"] for h in filtered["hits"])
    # The filter keeps the on-topic documents, which rank first anyway.
    assert set(ids(filtered)) >= {"astronomy-0", "astronomy-2"}


def test_per_request_threshold_and_recall_target(client: TestClient) -> None:
    _load(client)
    everything = search(client, "interest rates", "topics", k=16, relevance={"threshold": 0.0})
    assert len(everything["hits"]) == 16 and everything["filtered_out"] == 0
    assert search(client, "interest rates", "topics", k=16, relevance={"threshold": 1.0})["hits"] == []
    strict = search(client, "interest rates", "topics", k=16, relevance={"recall_target": 0.8})
    safe = search(client, "interest rates", "topics", k=16, relevance={"recall_target": 0.99})
    assert len(strict["hits"]) <= len(safe["hits"])
    too_high = client.post("/v1/collections/topics/search", json={"query": "x", "relevance": {"recall_target": 0.999}})
    assert too_high.status_code == 422 and "0.99" in too_high.json()["error"]["message"]
    hit = search(client, "interest rates", "topics", explain=True, relevance={})["hits"][0]
    assert hit["explain"]["margin"] == hit["relevance"] - hit["explain"]["threshold"]


def test_nonsense_queries_come_back_empty(client: TestClient) -> None:
    _load(client)
    for query in ("qwzxv plorth", "zzkrb vvnqe ttupx", "xqjw"):
        assert search(client, query, "topics", relevance={})["hits"] == []


def test_train_a_collections_own_adapter_and_keep_it_across_restarts(make_client: AppFactory, tmp_path: Path) -> None:
    with make_client() as client:
        by_topic = _load(client)
        response = client.post("/v1/collections/topics/relevance/train",
                               json={"examples": _examples(by_topic), "recall_target": 0.9})
        assert response.status_code == 200, response.text
        trained = response.json()
        assert trained["status"] == "trained" and trained["recall_target"] == 0.9
        metrics = trained["metrics"]
        assert metrics["recall"] >= 0.9 and {"pr_auc", "raw_cosine_pr_auc", "kept_per_query",
                                             "empty_query_rate", "precision"} <= set(metrics)
        assert client.get("/v1/collections/topics/relevance").json()["threshold"] == trained["threshold"]
        assert client.get("/v1/collections/topics").json()["relevance"]["status"] == "trained"
        # Both candidates are reported, with which was kept and why: the fine-tuned adapter against the default
        # recalibrated on these judgments, and the fitted fusion against the default fusion.
        selection, fusion = trained["info"]["selection"], trained["info"]["fusion_selection"]
        assert selection["kept"] in ("trained", "default, recalibrated") and "PR-AUC" in selection["why"]
        assert {"pr_auc", "recall"} <= set(selection["trained"]) & set(selection["default_recalibrated"])
        assert fusion["kept"] in ("fitted", "default") and "ndcg@10" in fusion["default"]
    with make_client() as client:
        again = client.get("/v1/collections/topics/relevance").json()
        assert again["status"] == "trained" and again["threshold"] == trained["threshold"]
        assert again["info"]["fusion_selection"] == trained["info"]["fusion_selection"]


def test_training_on_unknown_ids_is_422_and_changes_nothing(client: TestClient) -> None:
    _load(client)
    before = client.get("/v1/collections/topics/relevance").json()
    bad = {"examples": [{"query": "bread", "relevant_ids": ["cooking-0", "no-such-doc"]}]}
    response = client.post("/v1/collections/topics/relevance/train", json=bad)
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [{"unknown_ids": ["no-such-doc"]}]
    too_few = {"examples": [{"query": "bread", "relevant_ids": ["cooking-0"]}]}
    assert client.post("/v1/collections/topics/relevance/train", json=too_few).status_code == 422
    assert client.get("/v1/collections/topics/relevance").json() == before


def test_searches_during_training_never_fail(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches go on while the trained adapter waits to be swapped in and after the swap; none fails. The
    swap is held until searches have run beside it, so the overlap is forced rather than left to timing."""
    by_topic = _load(client)
    statuses: list[int] = []
    progress, done = threading.Condition(), threading.Event()
    swap = Collection.set_adapter

    def after_searches(count: int) -> None:
        with progress:
            assert progress.wait_for(lambda: len(statuses) >= count, timeout=60), len(statuses)

    def held_swap(self: Collection, adapter: CosineAdapter) -> None:
        after_searches(len(statuses) + 3)  # the request is in flight, its adapter fitted but not yet in use
        swap(self, adapter)

    def searcher() -> None:
        while not done.is_set():
            response = client.post("/v1/collections/topics/search", json={"query": "stock market", "k": 5})
            with progress:
                statuses.append(response.status_code)
                progress.notify_all()

    monkeypatch.setattr(Collection, "set_adapter", held_swap)
    thread = threading.Thread(target=searcher)
    thread.start()
    try:
        response = client.post("/v1/collections/topics/relevance/train", json={"examples": _examples(by_topic)})
        after_searches(len(statuses) + 3)  # and with the new adapter in use
    finally:
        done.set()
        thread.join()
    assert response.status_code == 200
    assert len(statuses) >= 6 and set(statuses) == {200}


def test_another_encoder_gets_the_dimension_free_fallback_adapter(make_client: AppFactory, tmp_path: Path) -> None:
    """A default adapter trained for another embedding size is not used; the shipped fallback, which reads only
    the candidates' statistics, filters instead, says so, and still returns nothing for non-word queries."""
    other = tmp_path / "adapter-768"
    CosineAdapter.identity_like(768, slope=10.0, intercept=-5.0).save(other)
    with make_client(adapter_dir=other) as client:
        _load(client)
        relevance = client.get("/v1/collections/topics/relevance").json()
        assert relevance["status"] == "fallback" and relevance["dimension"] == 0 and relevance["inputs"] == ["stats"]
        relevant = search(client, "galaxies and supernovae", "topics", k=16)
        assert relevant["hits"] and all(hit["relevance"] is not None for hit in relevant["hits"])
        assert search(client, "qwxzvbn plorktam", "topics", k=16)["hits"] == []
