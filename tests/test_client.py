"""The typed client: every operation against the in-process app, and its retries against a scripted transport."""

import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from app.client import ApiError, ClientError, DocumentTooLarge, Retry, SearchClient
from tests.api.test_relevance import QUERIES, TOPICS
from tests.helpers import ANIMALS

NO_WAIT = Retry(attempts=4, backoff=0.0)


def test_every_operation_against_the_app(client: TestClient) -> None:
    api = SearchClient(http=client)
    api.wait_ready(timeout=5)
    assert api.create_collection("animals")["count"] == 0
    assert api.create_collection("animals")["name"] == "animals"  # idempotent
    batches: list[int] = []
    assert api.ingest("animals", ANIMALS, batch=4, on_batch=batches.append) == 6
    assert batches == [4, 2]
    assert api.list_collections() == [{"name": "animals", "count": 6}]
    assert api.get("animals", "cat")["title"] == "Cats"
    odd = "notes/a b?c#d%"  # escaped in the path, so the id arrives whole
    api.ingest("animals", [{"id": odd, "text": "odd id"}])
    assert api.get("animals", odd)["id"] == odd
    api.delete("animals", odd)

    result = api.search("animals", "purring cats", k=3, relevance={"enabled": False})
    assert result["hits"][0]["id"] == "cat" and len(result["hits"]) == 3
    assert api.relevance("animals")["status"] == "default"

    api.delete("animals", "cat")
    with pytest.raises(ApiError) as missing:
        api.get("animals", "cat")
    assert (missing.value.status, missing.value.code) == (404, "document_not_found")
    api.delete_collection("animals")
    assert api.list_collections() == []


def test_train_fits_the_collections_own_adapter(client: TestClient) -> None:
    api = SearchClient(http=client)
    api.create_collection("topics")
    docs = [{"id": f"{topic}-{i}", "text": text} for topic, texts in TOPICS.items() for i, text in enumerate(texts)]
    api.ingest("topics", docs)
    examples = [{"query": q, "relevant_ids": [f"{topic}-{i}" for i in range(len(TOPICS[topic]))]}
                for topic, queries in QUERIES.items() for q in queries]
    report = api.train("topics", examples, recall_target=0.9)
    assert report["status"] == "trained"
    assert api.relevance("topics")["status"] == "trained"
    started = api.train("topics", examples, wait=False)  # as a job: its id, then poll it
    assert started["status"] == "running"
    done = api.wait_for_job("topics", started["job"], interval=0.05)
    assert done["status"] == "done" and done["result"]["status"] == "trained" and done["progress"] == 1.0
    assert api.jobs("topics")[0] == done
    with pytest.raises(ApiError) as ended:
        api.cancel_job("topics", started["job"])
    assert (ended.value.status, ended.value.code) == (409, "job_finished")
    assert api.reset_relevance("topics")["status"] == "default" == api.relevance("topics")["status"]
    with pytest.raises(ApiError) as step:  # an id no URL can name (the client still escapes one stored before)
        api.upsert("topics", [{"id": "..", "text": "an id that is a path step"}])
    assert step.value.status == 422
    with pytest.raises(ApiError) as missing:
        api.delete("topics", "..")  # escaped: a document that is not there, not the collection
    assert missing.value.status == 404
    assert api.get_collection("topics")["count"] == len(docs)


def test_bad_input_raises_the_services_error_without_retrying(client: TestClient) -> None:
    api = SearchClient(http=client)
    api.create_collection("animals")
    with pytest.raises(ApiError) as bad:
        api.upsert("animals", [{"id": "x"}])  # no text
    assert bad.value.status == 422 and bad.value.details
    assert str(bad.value).endswith("(body.documents.0.text: Field required)")  # which field, printed as it is


def test_an_id_given_twice_ends_as_its_last_document_says_with_batches_in_flight() -> None:
    """QA: with two batches in flight, a later batch naming an id could be stored before the earlier one, and
    the older line won. A store that takes the first batch slowly shows it."""
    stored: dict[str, str] = {}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        docs = json.loads(request.content)["documents"]
        if docs[0]["text"] == "old":
            time.sleep(0.3)  # the first batch is slow to be stored
        with lock:
            stored.update({doc["id"]: doc["text"] for doc in docs})
        return httpx.Response(200, json={"upserted": len(docs), "ids": [doc["id"] for doc in docs]})

    api = SearchClient(http=httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler)))
    lines = [{"id": "x", "text": "old"}, {"id": "a", "text": "1"}, {"id": "b", "text": "2"},
             {"id": "c", "text": "3"}, {"id": "x", "text": "new"}, {"id": "d", "text": "4"}]
    assert api.ingest("c", lines, batch=2, concurrency=3) == 6
    assert stored == {"x": "new", "a": "1", "b": "2", "c": "3", "d": "4"}


def test_a_batch_over_the_body_limit_is_sent_in_halves_and_a_document_over_it_alone_is_named() -> None:
    """A loader's --batch too large for long documents failed the load ("run again with a smaller --batch"), and
    a 40 MB line was named only at --batch 1 (QA). A service whose limit is 100 bytes shows it."""
    stored: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if len(request.content) > 100:
            return httpx.Response(413, json={"error": {"code": "payload_too_large", "message": "over 100 bytes",
                                                       "details": []}})
        docs = json.loads(request.content)["documents"]
        stored.extend(doc["id"] for doc in docs)
        return httpx.Response(200, json={"upserted": len(docs), "ids": [doc["id"] for doc in docs]})

    api = SearchClient(http=httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler)))
    lines = [{"id": f"d{n}", "text": "short"} for n in range(8)]
    acknowledged: list[int] = []
    assert api.ingest("c", lines, batch=8, on_batch=acknowledged.append) == 8
    assert stored == [f"d{n}" for n in range(8)] and acknowledged == [8]  # in order, in pieces that fit
    lines[5] = {"id": "long", "text": "x" * 200}
    stored.clear()
    acknowledged.clear()
    with pytest.raises(DocumentTooLarge) as refused:
        api.ingest("c", lines, batch=8, on_batch=acknowledged.append)
    assert refused.value.index == 5 and refused.value.status == 413
    assert stored == ["d0", "d1", "d2", "d3", "d4"]  # the halves before it are stored ...
    assert acknowledged == [5]  # ... and acknowledged, so a resume does not send them again (QA)


def test_an_interrupted_load_acknowledges_the_batches_already_sent() -> None:
    """The batches in flight when Ctrl-C came are stored by the service anyway; the loader waited for them but did
    not record them, so a resume sent them again (QA: ~500 documents)."""
    def handler(request: httpx.Request) -> httpx.Response:
        docs = json.loads(request.content)["documents"]
        time.sleep(0.2)
        return httpx.Response(200, json={"upserted": len(docs), "ids": [doc["id"] for doc in docs]})

    api = SearchClient(http=httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler)))
    acknowledged: list[int] = []

    def on_batch(n: int) -> None:
        acknowledged.append(n)
        if len(acknowledged) == 1:
            raise KeyboardInterrupt  # Ctrl-C, with the second batch in flight
    with pytest.raises(KeyboardInterrupt):
        api.ingest("c", [{"id": f"d{n}", "text": "t"} for n in range(6)], batch=2, concurrency=2, on_batch=on_batch)
    assert acknowledged == [2, 2]  # the third batch was never sent


def _scripted(answers: list[Callable[[httpx.Request], httpx.Response]]) -> tuple[SearchClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)(request)

    http = httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler))
    return SearchClient(http=http, api_key="k1", retry=NO_WAIT), seen


def _status(code: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json={"error": {"code": "busy", "message": "later", "details": []}})


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _stored(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"upserted": 2, "ids": ["a", "b"]})


def test_upserts_are_retried_on_429_503_and_connection_errors() -> None:
    api, seen = _scripted([_status(503), _status(429), _refuse, _stored])
    assert api.upsert("c", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])["upserted"] == 2
    assert len(seen) == 4
    assert {r.content for r in seen} == {seen[0].content}  # the same batch each time: safe, upserts are by id
    assert all(r.headers["authorization"] == "Bearer k1" for r in seen)


def test_a_client_passed_in_keeps_its_own_headers() -> None:
    """The key goes with each request; the caller's httpx client, shared with other code, is not changed."""
    api, seen = _scripted([_stored, lambda request: httpx.Response(200, text="# metrics")])
    assert "authorization" not in api.http.headers  # type: ignore[attr-defined]
    api.upsert("c", [{"id": "a", "text": "x"}])
    api.metrics()
    assert [r.headers["authorization"] for r in seen] == ["Bearer k1"] * 2


def test_a_key_no_header_can_carry_is_refused_and_one_copied_with_a_line_end_is_trimmed() -> None:
    """A key with "é" crashed the commands with httpx's UnicodeEncodeError, and one read from a Windows file
    ("key\\r\\n") failed every request as a transport error, retried for ~100 s (QA)."""
    for key in ("clé", "two words", "tab\tkey"):
        with pytest.raises(ClientError, match="API key"):
            SearchClient("http://search.test", api_key=key)
    seen: list[httpx.Request] = []
    http = httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(
        lambda request: seen.append(request) or httpx.Response(200, text="# metrics")))
    SearchClient(http=http, api_key=" k1\r\n").metrics()
    assert seen[0].headers["authorization"] == "Bearer k1"


def test_an_empty_name_or_id_is_refused_before_anything_is_sent() -> None:
    """A ClientError, as a bad URL or a NaN is: it was a bare ValueError (QA)."""
    api, seen = _scripted([])
    for call in (lambda: api.create_collection(""), lambda: api.get("c", ""), lambda: api.delete("", "x")):
        with pytest.raises(ClientError, match="cannot be empty"):
            call()
    assert seen == []


def test_retries_end_with_the_last_error() -> None:
    api, _ = _scripted([_refuse] * 4)
    with pytest.raises(httpx.ConnectError):
        api.get_collection("c")
    api, _ = _scripted([_status(503)] * 4)
    with pytest.raises(ApiError) as busy:
        api.get_collection("c")
    assert busy.value.status == 503 and busy.value.message == "later"


def _slow(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def test_a_training_that_may_have_reached_the_service_is_not_sent_again() -> None:
    """Retried after a read timeout, a training answered 409 naming the job its own first request had started."""
    api, seen = _scripted([_slow, _stored])
    with pytest.raises(httpx.ReadTimeout):
        api.train("c", [{"query": "q", "relevant_ids": ["a"]}])
    assert len(seen) == 1
    api, seen = _scripted([_refuse, lambda request: httpx.Response(200, json={"status": "trained"})])
    assert api.train("c", [{"query": "q", "relevant_ids": ["a"]}], wait=False)["status"] == "trained"
    assert len(seen) == 2 and seen[1].url.params["wait"] == "false"  # never reached it: safe to send again
    api, seen = _scripted([_slow, lambda request: httpx.Response(200, json={"hits": []})])  # a search may be
    assert api.search("c", "q")["hits"] == [] and len(seen) == 2


def _cut(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)


def test_an_upsert_whose_answer_timed_out_is_not_sent_again(caplog: pytest.LogCaptureFixture) -> None:
    """Sent again after a read timeout, one batch of 300 was stored three times over (each ~20 s of the server's
    encoder) by a client that still ended with ReadTimeout (QA). A connection the server cut (a restart) is
    retried as before, and each retry is logged."""
    api, seen = _scripted([_slow, _stored])
    with pytest.raises(httpx.ReadTimeout):
        api.upsert("c", [{"id": "a", "text": "x"}])
    assert len(seen) == 1
    api, seen = _scripted([_cut, _refuse, _stored])
    with caplog.at_level(logging.WARNING, logger="app.client"):
        assert api.upsert("c", [{"id": "a", "text": "x"}])["upserted"] == 2
    assert len(seen) == 3
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "http://search.test: Server disconnected without sending a response.",
        "http://search.test: connection refused"]
    assert "attempt 2 of 4" in caplog.records[0].getMessage()


def test_a_body_json_cannot_carry_is_refused_before_anything_is_sent() -> None:
    """NaN or an infinity (which Python's json reads from a file) raised httpx's bare ValueError."""
    api, seen = _scripted([])
    with pytest.raises(ClientError, match="JSON has no NaN or infinite numbers"):
        api.upsert("c", [{"id": "a", "text": "x", "metadata": {"score": float("nan")}}])
    with pytest.raises(ClientError, match="JSON has no NaN"):
        api.search("c", "q", boost=[{"filter": {"year": 2020}, "weight": float("inf")}])
    assert seen == []


@pytest.mark.parametrize("url", ["notaurl", "127.0.0.1:8000", "ftp://host/", "http://"])
def test_a_url_that_is_not_one_is_refused_at_once(url: str) -> None:
    """"notaurl" failed each request as a transport error, and the ingest command retried it for two minutes."""
    with pytest.raises(ClientError, match="is not a URL of the service"):
        SearchClient(url)


def test_names_and_ids_are_one_path_segment_each() -> None:
    """An id "..", sent as is, was resolved by httpx as a path step: deleting that document deleted the
    collection; a collection name with "?" acted on another collection."""
    api, seen = _scripted([lambda request: httpx.Response(204)] * 3)
    api.delete("victim", "..")
    api.delete("victim", ".")
    api.delete_collection("victim?x")
    assert [r.url.raw_path for r in seen] == [b"/v1/collections/victim/documents/%2E%2E",
                                              b"/v1/collections/victim/documents/%2E",
                                              b"/v1/collections/victim%3Fx"]
    with pytest.raises(ValueError, match="at least 1"):
        api.ingest("c", [{"id": "a", "text": "x"}], concurrency=0)


def test_the_ingest_command_rides_out_a_restart_that_the_default_retry_does_not() -> None:
    """A replica answers 503 for 6-11 s while it loads; ingest's budget was the client's default 6 attempts (QA)."""
    from dataclasses import replace

    from app.commands import ingest_retry

    loading = [_status(503)] * 15

    def scripted(retry: Retry) -> SearchClient:
        answers = [*loading, _stored]
        http = httpx.Client(base_url="http://search.test",
                            transport=httpx.MockTransport(lambda request: answers.pop(0)(request)))
        return SearchClient(http=http, retry=replace(retry, backoff=0.0))

    assert scripted(ingest_retry()).ingest("c", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]) == 2
    with pytest.raises(ApiError) as gave_up:
        scripted(Retry()).ingest("c", [{"id": "a", "text": "x"}])
    assert gave_up.value.status == 503


def test_delete_many_posts_the_ids_once_and_answers_what_the_service_did() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"deleted": 1, "ids": ["a/1"], "missing": ["b"]})

    api = SearchClient(http=httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler)))
    assert api.delete_many("c d", ["a/1", "b"]) == {"deleted": 1, "ids": ["a/1"], "missing": ["b"]}
    assert [(r.method, r.url.raw_path) for r in seen] == [("POST", b"/v1/collections/c%20d/documents/delete")]
    assert json.loads(seen[0].content) == {"ids": ["a/1", "b"]}
