"""The relevance filter through the API: probabilities on hits, per-request control, training a collection's own
(waited for or as a job)."""

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api import relevance as relevance_api
from app.engine import engine as engine_module
from app.engine import judgments as judgments_module
from app.engine import own_adapter as own_adapter_module
from app.engine.collection import Collection
from app.engine.engine import SearchEngine
from app.engine.relevance import CosineAdapter
from app.engine.relevance import cross_fit as cross_fit_module
from app.errors import CollectionNotFound, TrainingCancelled
from app.schemas import MAX_TRAIN_EXAMPLES
from app.store.snapshots import SnapshotDir
from app.store.sqlite import SqliteStore
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
    assert relevance["cosine_scale"] == "minmax"  # the shipped default reads the cosine scaled over its list
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


def test_a_query_without_a_topic_keeps_only_its_lexical_matches(client: TestClient) -> None:
    """Stop words alone, or numbers: the default adapter never saw such queries and kept most candidates of them.
    A candidate that does not hold the query's terms now has probability 0, so stop words alone find nothing and a
    number finds the documents that hold it; a query with a word is left to the adapter."""
    _load(client)
    room = {"id": "room-42", "text": "Room 42 is on the second floor, next to the library."}
    assert client.post("/v1/collections/topics/documents", json={"documents": [room]}).status_code == 200
    for query in ("the", "what is it", "42", "of the 42"):
        unfiltered = search(client, query, "topics", k=17)
        assert len(unfiltered["hits"]) == 17
        assert all(hit["relevance"] == 0.0 for hit in unfiltered["hits"] if hit["id"] != "room-42"), query
        assert set(ids(search(client, query, "topics", k=17, relevance={}))) <= {"room-42"}, query
    assert search(client, "the", "topics", k=17, relevance={"threshold": 0.0})["filtered_out"] == 0
    # A word beside the number: the adapter alone decides, and gives documents without the number a chance.
    worded = search(client, "room 42 library", "topics", k=17)["hits"]
    assert any(hit["relevance"] > 0.0 for hit in worded if hit["id"] != "room-42")


def test_per_request_threshold_and_recall_target(client: TestClient) -> None:
    _load(client)
    everything = search(client, "interest rates", "topics", k=16, relevance={"threshold": 0.0})
    assert len(everything["hits"]) == 16 and everything["filtered_out"] == 0
    assert search(client, "interest rates", "topics", k=16, relevance={"threshold": 1.0})["hits"] == []
    strict = search(client, "interest rates", "topics", k=16, relevance={"recall_target": 0.8})
    safe = search(client, "interest rates", "topics", k=16, relevance={"recall_target": 0.99})
    assert len(strict["hits"]) <= len(safe["hits"])
    # Above the highest calibrated target (0.99) only keeping every candidate keeps the promise.
    above = search(client, "interest rates", "topics", k=16, relevance={"recall_target": 0.999})
    assert len(above["hits"]) == 16 and above["filtered_out"] == 0
    hit = search(client, "interest rates", "topics", explain=True, relevance={})["hits"][0]
    assert hit["explain"]["margin"] == hit["relevance"] - hit["explain"]["threshold"]


def test_a_training_that_keeps_the_default_as_it_is_leaves_the_collection_following_it(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the judgments show nothing better than the default and its thresholds on target, the collection held a
    frozen copy of it, which a later default never reached, and said "trained". It now follows the default; a
    training that moves anything (its thresholds here) still gives the collection an adapter of its own."""
    by_topic = _load(client)
    engine: SearchEngine = client.app.state.engine  # type: ignore[attr-defined]
    default = engine.default_adapter
    assert default is not None and default.calibration is not None
    outcome: dict[str, CosineAdapter] = {}

    def fitted(*args: Any) -> CosineAdapter:
        return outcome["adapter"]

    monkeypatch.setattr(engine_module, "fit_own_adapter", fitted)
    moved = replace(default.calibration, threshold=default.calibration.threshold * 0.5)
    outcome["adapter"] = default.with_calibration(moved)
    outcome["adapter"].info["selection"] = {"kept": "default, recalibrated"}
    trained = client.post("/v1/collections/topics/relevance/train", json={"examples": _examples(by_topic)}).json()
    assert trained["status"] == "trained" and trained["threshold"] == moved.threshold
    assert client.get("/v1/collections/topics/relevance").json()["status"] == "trained"
    outcome["adapter"] = default.with_calibration(default.calibration)
    outcome["adapter"].info["selection"] = {"kept": "default", "why": "no better"}
    kept = client.post("/v1/collections/topics/relevance/train", json={"examples": _examples(by_topic)}).json()
    assert kept["status"] == "default" and kept["info"]["selection"]["kept"] == "default"
    assert kept["threshold"] == default.calibration.threshold
    now = client.get("/v1/collections/topics/relevance").json()
    assert now["status"] == "default" and engine.collection("topics").adapter is None


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
        metrics = trained["metrics"]  # held out: the trained one's out of fold, the default's where it never trained
        assert metrics["recall"] >= 0.8
        assert {"pr_auc", "kept_per_query", "empty_query_rate", "precision"} <= set(metrics)
        assert client.get("/v1/collections/topics/relevance").json()["threshold"] == trained["threshold"]
        assert client.get("/v1/collections/topics").json()["relevance"]["status"] == "trained"
        # Both candidates are reported, with which was kept and why: the fine-tuned adapter against the default
        # recalibrated on these judgments, and the fitted fusion against the default fusion.
        selection, fusion = trained["info"]["selection"], trained["info"]["fusion_selection"]
        assert selection["kept"] in ("trained", "default", "default, recalibrated") and "PR-AUC" in selection["why"]
        assert {"pr_auc", "recall"} <= set(selection["trained"]) & set(selection["default"]) & set(
            selection["default_recalibrated"])
        assert fusion["kept"] in ("fitted", "default") and "ndcg@10" in fusion["default"]
    shutil.rmtree(tmp_path / "data" / "indexes")  # a cache: the trained adapter is in the store
    with make_client() as client:
        again = client.get("/v1/collections/topics/relevance").json()
        assert again["status"] == "trained" and again["threshold"] == trained["threshold"]
        assert again["info"]["fusion_selection"] == trained["info"]["fusion_selection"]
        client.put("/v1/collections/untrained")
        default = client.get("/v1/collections/untrained/relevance").json()
        assert default["status"] == "default"
        # A training can be undone: the collection goes back to the default, and stays there after a restart.
        reset = client.delete("/v1/collections/topics/relevance")
        assert reset.status_code == 200 and reset.json() == default
        assert client.delete("/v1/collections/topics/relevance").json() == default  # again: nothing to remove
        assert client.delete("/v1/collections/nope/relevance").status_code == 404
    with make_client() as client:
        assert client.get("/v1/collections/topics/relevance").json() == default


def test_a_query_with_nothing_relevant_can_be_posted(client: TestClient) -> None:
    """What the filter exists for: a query whose every candidate is irrelevant. `relevant_ids: []` was a 422."""
    by_topic = _load(client)
    nothing = [{"query": q, "relevant_ids": []} for q in ("the weather on mars", "knitting patterns", "jazz")]
    response = client.post("/v1/collections/topics/relevance/train", json={"examples": [*_examples(by_topic),
                                                                                         *nothing]})
    assert response.status_code == 200, response.text
    assert response.json()["info"]["selection"]["default"]["n_queries"] == len(_examples(by_topic)) + 3
    few = client.post("/v1/collections/topics/relevance/train", json={"examples": nothing})
    assert few.status_code == 422 and "relevant document" in few.json()["error"]["message"]
    # A set large enough to train as a job is refused as soon, not after every query was encoded and searched.
    many = [{"query": f"query {i}", "relevant_ids": []} for i in range(relevance_api.MAX_WAITED_EXAMPLES + 1)]
    refused = client.post("/v1/collections/topics/relevance/train", json={"examples": many})
    assert refused.status_code == 422 and refused.json()["error"]["details"] == [{"queries_with_relevant_ids": 0}]


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


def test_more_examples_than_a_training_takes_is_a_413_like_an_oversized_batch(client: TestClient) -> None:
    """API.md: 413 for a body or batch over the limits; 50,001 examples were a 422 (QA)."""
    client.put("/v1/collections/t")
    many = {"examples": [{"query": f"q{i}", "relevant_ids": ["a"]} for i in range(MAX_TRAIN_EXAMPLES + 1)]}
    answer = client.post("/v1/collections/t/relevance/train", json=many)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "payload_too_large", answer.text
    assert f"the limit is {MAX_TRAIN_EXAMPLES}" in answer.json()["error"]["message"]


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
        assert relevance["cosine_scale"] == "raw"  # the shipped fallback reads raw cosine (README)
        on = {"enabled": True}
        relevant = search(client, "galaxies and supernovae", "topics", k=16, relevance=on)
        assert relevant["hits"] and all(hit["relevance"] is not None for hit in relevant["hits"])
        assert relevant["filtered_out"] > 0
        assert search(client, "qwxzvbn plorktam", "topics", k=16, relevance=on)["hits"] == []


# --- training as a job ---------------------------------------------------------------------------


def _engine(client: TestClient) -> SearchEngine:
    engine: SearchEngine = client.app.state.engine  # type: ignore[attr-defined]
    return engine


def _finished(client: TestClient, location: str) -> dict[str, Any]:
    """The job at `location` once it has finished: waits on the job's own event, then reads it over HTTP."""
    job_id = location.rsplit("/", 1)[1]
    engine = _engine(client)
    job = engine.training_jobs.get("topics", job_id)
    assert job.finished.wait(timeout=300)
    response = client.get(location)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def _held_swap(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(fitted, release): a training sets `fitted` once its adapter is fitted and waits for `release` before
    swapping it in. Released on the way out, so that no test leaves a training blocked."""
    fitted, release = threading.Event(), threading.Event()
    swap = Collection.set_adapter

    def held(self: Collection, adapter: CosineAdapter) -> None:
        fitted.set()
        assert release.wait(timeout=300)
        swap(self, adapter)

    monkeypatch.setattr(Collection, "set_adapter", held)
    try:
        yield fitted, release
    finally:
        release.set()


def test_a_job_trains_while_searches_go_on_and_swaps_its_adapter_in_at_the_end(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    by_topic = _load(client)
    before = client.get("/v1/collections/topics/relevance").json()
    with _held_swap(monkeypatch) as (fitted, release):
        response = client.post("/v1/collections/topics/relevance/train?wait=false",
                               json={"examples": _examples(by_topic), "recall_target": 0.9})
        assert response.status_code == 202, response.text
        started = response.json()
        location = response.headers["location"]
        assert location == f"/v1/collections/topics/relevance/jobs/{started['job']}"
        assert started["status"] == "running" and started["result"] is None and started["error"] is None
        assert started["examples"] == 12
        assert fitted.wait(timeout=300)
        # Fitted but not swapped in: the job runs, searches answer with the adapter in use, a second training
        # is refused and names the running job.
        running = client.get(location).json()
        assert running["status"] == "running" and 0.0 < running["progress"] < 1.0 and running["result"] is None
        for query in ("stock market", "exploding stars", "bread"):
            assert client.post("/v1/collections/topics/search", json={"query": query}).status_code == 200
        assert client.get("/v1/collections/topics/relevance").json() == before
        second = client.post("/v1/collections/topics/relevance/train", json={"examples": _examples(by_topic)})
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "training_in_progress"
        assert second.json()["error"]["details"] == [{"job": started["job"]}]
        release.set()
        done = _finished(client, location)
    assert done["status"] == "done" and done["progress"] == 1.0 and done["error"] is None
    assert done["result"]["status"] == "trained" and done["result"]["recall_target"] == 0.9
    after = client.get("/v1/collections/topics/relevance").json()
    assert after["status"] == "trained" and after["threshold"] == done["result"]["threshold"]
    assert search(client, "stock market", "topics", relevance={})["hits"]  # searches go on with the new one


def test_a_job_that_fails_says_why_and_leaves_the_adapter(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    by_topic = _load(client)
    before = client.get("/v1/collections/topics/relevance").json()
    # The check before any job counts the queries that name a relevant document (12 here, at least 5 needed); the
    # training, in the job, those with a relevant candidate: its bar raised past 12, the job fails.
    monkeypatch.setattr(cross_fit_module, "MIN_POSITIVE_QUERIES", 100)
    too_few = {"examples": _examples(by_topic)}
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json=too_few)
    assert response.status_code == 202, response.text
    failed = _finished(client, response.headers["location"])
    assert failed["status"] == "failed" and failed["result"] is None
    assert failed["error"]["code"] == "invalid_input" and failed["error"]["message"]
    assert client.get("/v1/collections/topics/relevance").json() == before
    # The same set, waited for, is the 422 it always was; and a new job may start once one has failed.
    waited = client.post("/v1/collections/topics/relevance/train?wait=true", json=too_few)
    assert waited.status_code == 422 and waited.json()["error"]["message"] == failed["error"]["message"]


def test_bad_input_is_422_before_any_job_starts(client: TestClient) -> None:
    by_topic = _load(client)
    bad = {"examples": [{"query": "bread", "relevant_ids": ["cooking-0", "no-such-doc"]}]}
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json=bad)
    assert response.status_code == 422 and response.json()["error"]["details"] == [{"unknown_ids": ["no-such-doc"]}]
    assert _engine(client).training_jobs.running("topics") is None
    assert client.post("/v1/collections/topics/relevance/train?wait=maybe",
                       json={"examples": _examples(by_topic)}).status_code == 422
    contradicted = {"examples": [{"query": "bread", "relevant_ids": ["cooking-0"], "irrelevant_ids": ["cooking-0"]}]}
    response = client.post("/v1/collections/topics/relevance/train", json=contradicted)
    assert response.status_code == 422 and "cooking-0" in response.text
    assert _engine(client).training_jobs.running("topics") is None
    across_rows = {"examples": [{"query": "bread", "relevant_ids": ["cooking-0"]},
                                {"query": "bread", "relevant_ids": ["cooking-1"], "irrelevant_ids": ["cooking-0"]}]}
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json=across_rows)
    assert response.status_code == 422 and response.json()["error"]["details"] == [{"query": "bread",
                                                                                    "ids": ["cooking-0"]}]
    assert _engine(client).training_jobs.running("topics") is None
    blank = {"examples": [{"query": "  ", "relevant_ids": ["cooking-0"]}]}
    assert client.post("/v1/collections/topics/relevance/train", json=blank).status_code == 422


def test_sets_over_the_bound_train_as_a_job_unless_the_client_waits(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    by_topic = _load(client)
    monkeypatch.setattr(relevance_api, "MAX_WAITED_EXAMPLES", 12)
    pasted = " ".join(TOPICS["astronomy"] * 1_000)[:32_768]  # a training query may be as long as a search's
    body = {"examples": [*_examples(by_topic), {"query": pasted, "relevant_ids": by_topic["astronomy"]}]}
    response = client.post("/v1/collections/topics/relevance/train", json=body)
    assert response.status_code == 202, response.text
    assert _finished(client, response.headers["location"])["status"] == "done"
    waited = client.post("/v1/collections/topics/relevance/train?wait=true", json=body)
    assert waited.status_code == 200 and waited.json()["status"] == "trained"


def test_unknown_jobs_and_collections_are_404(client: TestClient) -> None:
    by_topic = _load(client)
    unknown = client.get("/v1/collections/topics/relevance/jobs/0123456789abcdef")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"
    response = client.post("/v1/collections/topics/relevance/train?wait=false",
                           json={"examples": _examples(by_topic)})
    job = response.json()["job"]
    client.put("/v1/collections/other")
    elsewhere = client.get(f"/v1/collections/other/relevance/jobs/{job}")
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["code"] == "job_not_found"
    no_collection = client.get(f"/v1/collections/nope/relevance/jobs/{job}")
    assert no_collection.status_code == 404 and no_collection.json()["error"]["code"] == "collection_not_found"
    _finished(client, response.headers["location"])


def test_a_collection_created_again_under_the_name_does_not_show_the_old_ones_jobs(client: TestClient) -> None:
    response = client.post("/v1/collections/topics/relevance/train?wait=false",
                           json={"examples": _examples(_load(client))})
    assert _finished(client, response.headers["location"])["status"] == "done"
    assert client.delete("/v1/collections/topics").status_code == 204
    client.put("/v1/collections/topics")
    gone = client.get(response.headers["location"])
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "job_not_found"


def test_a_collections_jobs_are_listed_newest_first_and_only_its_own(client: TestClient) -> None:
    by_topic = _load(client)
    client.put("/v1/collections/other")
    assert client.get("/v1/collections/topics/relevance/jobs").json() == {"jobs": []}
    first = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    _finished(client, first.headers["location"])
    again = client.post("/v1/collections/topics/relevance/train?wait=false",
                        json={"examples": _examples(by_topic), "recall_target": 0.9})
    second = _finished(client, again.headers["location"])
    listed = client.get("/v1/collections/topics/relevance/jobs").json()["jobs"]
    assert [job["job"] for job in listed] == [again.json()["job"], first.json()["job"]]
    assert listed[0] == second and listed[1]["status"] == "done" and listed[1]["result"]
    assert client.get("/v1/collections/other/relevance/jobs").json() == {"jobs": []}
    assert client.get("/v1/collections/nope/relevance/jobs").status_code == 404
    # Dropped and created again under the name, the collection does not list the old one's jobs.
    assert client.delete("/v1/collections/topics").status_code == 204
    client.put("/v1/collections/topics")
    assert client.get("/v1/collections/topics/relevance/jobs").json() == {"jobs": []}


def test_the_job_routes_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    train = paths["/v1/collections/{name}/relevance/train"]["post"]
    assert {"200", "202", "409", "422"} <= set(train["responses"])
    assert "Location" in train["responses"]["202"]["headers"]
    assert any(p["name"] == "wait" and p["in"] == "query" for p in train["parameters"])
    job = paths["/v1/collections/{name}/relevance/jobs/{job_id}"]["get"]
    schemas = {status: job["responses"][status]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]
               for status in ("200", "404")}
    assert schemas == {"200": "TrainJob", "404": "ErrorBody"}


def test_the_adapter_answers_have_their_fields_in_the_openapi_document(client: TestClient) -> None:
    """What the adapter is (GET, DELETE, a training's 200, a job's result, a collection's `relevance`) is one
    typed schema, so that a client generated from the document reads its fields (it was a free-form object)."""
    document = client.get("/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    relevance = "/v1/collections/{name}/relevance"
    for path, method in ((relevance, "get"), (relevance, "delete"), (f"{relevance}/train", "post")):
        answer = paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": "#/components/schemas/RelevanceStatus"}, (path, method)
    assert schemas["CollectionInfo"]["properties"]["relevance"] == {"$ref": "#/components/schemas/RelevanceStatus"}
    assert {"$ref": "#/components/schemas/RelevanceStatus"} in schemas["TrainJob"]["properties"]["result"]["anyOf"]
    status = schemas["RelevanceStatus"]["properties"]
    assert status["status"]["enum"] == ["trained", "default", "fallback", "none"]
    assert client.put("/v1/collections/topics").status_code == 201
    shown = client.get(relevance.format(name="topics")).json()
    assert set(shown) == set(status) and shown["status"] == "default"


def _assert_ended_without_its_collection(client: TestClient, location: str) -> None:
    """The job at `location` failed for its collection's deletion; over HTTP, a collection of the same name
    (if any) does not show it."""
    job_id = location.rsplit("/", 1)[1]
    jobs = _engine(client).training_jobs
    assert jobs.get("topics", job_id).finished.wait(timeout=300)
    failed = jobs.get("topics", job_id)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "collection_not_found"
    assert client.get(location).status_code == 404


@pytest.mark.parametrize("step", ["build_training_set", "train_and_calibrate"])
def test_a_collection_dropped_during_its_training_never_gets_the_adapter(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """Dropped and created again while its job builds the training set or fits: the job fails before its swap,
    and the new collection of that name keeps the default adapter (none is written where it would load)."""
    by_topic = _load(client)
    building, release = threading.Event(), threading.Event()
    original = getattr(own_adapter_module, step)

    def held(*args: Any, **kwargs: Any) -> Any:
        building.set()
        assert release.wait(timeout=300)
        return original(*args, **kwargs)

    monkeypatch.setattr(own_adapter_module, step, held)
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    assert response.status_code == 202, response.text
    try:
        assert building.wait(timeout=300)
        assert client.delete("/v1/collections/topics").status_code == 204
        _load(client)
    finally:
        release.set()
    _assert_ended_without_its_collection(client, response.headers["location"])
    assert client.get("/v1/collections/topics/relevance").json()["status"] == "default"
    assert _engine(client).store.load_adapter("topics") is None  # none written where the new one loads its own


def _held_training(client: TestClient, by_topic: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
                   ) -> tuple[Any, threading.Event, threading.Event]:
    """A training started as a job (202), held inside its fit until `release` is set; `fitting` once it is."""
    fitting, release = threading.Event(), threading.Event()
    fit = own_adapter_module.train_and_calibrate

    def held(*args: Any, **kwargs: Any) -> Any:
        fitting.set()
        assert release.wait(timeout=300)
        return fit(*args, **kwargs)

    monkeypatch.setattr(own_adapter_module, "train_and_calibrate", held)
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    assert response.status_code == 202, response.text
    return response, fitting, release


def test_a_collection_deleted_while_it_trains_can_train_again_at_once(client: TestClient,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleted and created again under its name, a collection was refused a training with a 409 naming its old
    job, which every job route answered 404 for, until that job's next step (QA). The old job ends failed there
    without touching the new collection's adapter."""
    by_topic = _load(client)
    fit = own_adapter_module.train_and_calibrate
    response, fitting, release = _held_training(client, by_topic, monkeypatch)
    old = _engine(client).training_jobs.get("topics", response.json()["job"])
    try:
        assert fitting.wait(timeout=300)
        assert client.delete("/v1/collections/topics").status_code == 204
        _load(client)
        monkeypatch.setattr(own_adapter_module, "train_and_calibrate", fit)
        again = client.post("/v1/collections/topics/relevance/train?wait=false",
                            json={"examples": _examples(by_topic)})
        assert again.status_code == 202, again.text
        assert client.get(response.headers["location"]).status_code == 404  # the old job is not this one's
    finally:
        release.set()
    assert old.finished.wait(timeout=300)
    ended = _engine(client).training_jobs.wait(old)
    assert ended.status == "failed" and isinstance(ended.error, CollectionNotFound | TrainingCancelled), ended.error
    assert _finished(client, again.headers["location"])["status"] == "done"


def test_a_cancelled_job_ends_failed_and_leaves_the_adapter(client: TestClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    by_topic = _load(client)
    before = client.get("/v1/collections/topics/relevance").json()
    response, fitting, release = _held_training(client, by_topic, monkeypatch)
    location = response.headers["location"]
    try:
        assert fitting.wait(timeout=300)
        cancel = client.delete(location)
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["status"] == "running" and cancel.json()["cancelling"] is True
    finally:
        release.set()
    ended = _finished(client, location)
    assert ended["status"] == "failed" and ended["cancelling"] is True and ended["result"] is None
    assert ended["error"]["code"] == "training_cancelled"
    assert client.get("/v1/collections/topics/relevance").json() == before
    again = client.delete(location)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"
    assert client.delete("/v1/collections/topics/relevance/jobs/no-such-job").status_code == 404
    assert client.delete(f"/v1/collections/nope/relevance/jobs/{ended['job']}").json()["error"]["code"] == \
        "collection_not_found"
    monkeypatch.undo()
    trained = client.post("/v1/collections/topics/relevance/train?wait=true", json={"examples": _examples(by_topic)})
    assert trained.status_code == 200, trained.text  # the collection trains again at once


def test_a_collection_dropped_while_its_queries_are_encoded_ends_the_job_before_they_are_searched(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The set-building phase (each judged query encoded, then searched) did not look: 4,000 examples kept an
    orphaned job running ~35 s after the DELETE, at progress 0.0, and the name's new collection got 409."""
    by_topic = _load(client)
    engine, searched = _engine(client), []
    encode, retrieve = engine.embedder.encode_queries, judgments_module.hybrid.retrieve

    def encode_then_drop(texts: Any) -> Any:
        engine.drop_collection("topics")
        return encode(texts)

    monkeypatch.setattr(engine.embedder, "encode_queries", encode_then_drop)
    monkeypatch.setattr(judgments_module.hybrid, "retrieve", lambda *a, **k: searched.append(1) or retrieve(*a, **k))
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    job_id = response.headers["location"].rsplit("/", 1)[1]
    assert engine.training_jobs.get("topics", job_id).finished.wait(timeout=60)
    job = engine.training_jobs.get("topics", job_id)  # a copy of the job as it stands
    assert job.error is not None and job.error.code == "collection_not_found" and searched == []


def test_a_collection_dropped_while_its_adapter_fits_ends_the_job_at_the_next_member(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, the job fitted all of its members (minutes for a large set) and failed only at the swap; until
    then it held the name, and a collection created again under it answered 409 to its own training."""
    by_topic = _load(client)
    fitted: list[int] = []
    original = cross_fit_module.fit_adapter

    def fit_then_drop(*args: Any, **kwargs: Any) -> Any:
        fitted.append(1)
        if len(fitted) == 1:
            _engine(client).drop_collection("topics")
        return original(*args, **kwargs)

    monkeypatch.setattr(cross_fit_module, "fit_adapter", fit_then_drop)
    response = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    _assert_ended_without_its_collection(client, response.headers["location"])
    assert len(fitted) == 1  # of 15 members
    monkeypatch.setattr(cross_fit_module, "fit_adapter", original)
    by_topic = _load(client)  # created again: it trains at once
    again = client.post("/v1/collections/topics/relevance/train?wait=false", json={"examples": _examples(by_topic)})
    assert again.status_code == 202, again.text
    assert _finished(client, again.headers["location"])["status"] == "done"


def test_the_selection_says_how_the_trained_candidate_was_fitted(client: TestClient) -> None:
    """Another family than the default's is fitted from scratch; the answer used to call it warm-started."""
    by_topic = _load(client)
    body = {"examples": _examples(by_topic), "family": "linear"}
    why = client.post("/v1/collections/topics/relevance/train", json=body).json()["info"]["selection"]["why"]
    assert "a linear map fitted from scratch" in why and "warm-started" not in why
    why = client.post("/v1/collections/topics/relevance/train",
                      json={"examples": _examples(by_topic)}).json()["info"]["selection"]["why"]
    assert "warm-started from the default" in why


def test_an_adapter_kept_beside_the_snapshots_moves_into_the_store(make_client: AppFactory, tmp_path: Path) -> None:
    """Versions before 2026-12-02 kept a trained adapter in indexes/<uid>/adapter: a data dir of theirs keeps it."""
    with make_client() as client:
        trained = client.post("/v1/collections/topics/relevance/train", json={"examples": _examples(_load(client))})
        assert trained.status_code == 200, trained.text
    store = SqliteStore(tmp_path / "data" / "documents.sqlite3")
    [record] = [r for r in store.collections() if r.name == "topics"]
    stored = store.load_adapter("topics")
    assert stored is not None
    legacy = SnapshotDir(tmp_path / "data" / "indexes" / record.uid / "adapter")
    legacy.publish(CosineAdapter.from_bytes(*stored).save)
    store.save_adapter("topics", None, None)
    store.close()
    for _ in range(2):  # moved at the first start, from the store at the second
        with make_client() as client:
            relevance = client.get("/v1/collections/topics/relevance").json()
            assert relevance["status"] == "trained" and relevance["threshold"] == trained.json()["threshold"]
        assert not legacy.root.exists()
