"""A typed httpx client of the HTTP contract (shared/API.md), used by the CLI, the evaluation, the benchmark and tests.

What it raises and which failed requests it sends again (each retry logged as a warning) are in
app/client_retry.py; its errors and `Retry` are imported from here too.
"""

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, NotRequired, Protocol, TypedDict, cast
from urllib.parse import quote

import httpx

from app.client_batches import upsert_in_batches
from app.client_retry import (
    RETRY_STATUSES,
    ApiError,
    ClientError,
    DocumentTooLarge,
    NotReadyError,
    Resend,
    Retry,
    may_resend,
)

__all__ = ["ApiError", "ClientError", "DocumentTooLarge", "Hit", "NotReadyError", "Retry", "SearchClient",
           "SearchResult", "UpsertResult"]

log = logging.getLogger("app.client")


def _segment(text: str) -> str:
    """One path segment, escaped whole: an id may hold "/", "?", "#" or "%", and "." or ".." alone, which an
    HTTP client resolves as a path step (DELETE of document ".." went to the collection itself)."""
    if not text:  # the path would name the parent ("/v1/collections/" redirects; a document, the collection)
        raise ClientError("a collection name or document id cannot be empty")
    segment = quote(text, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


def _collection_path(name: str, *rest: str) -> str:
    return "/".join(["/v1/collections", _segment(name), *rest])


def _document_path(collection: str, doc_id: str) -> str:
    return _collection_path(collection, "documents", _segment(doc_id))


def check_service_url(url: str) -> None:
    """ClientError unless `url` is http(s)://host...: "notaurl" was retried as a transport error for two minutes
    (QA)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if (parsed is None or parsed.scheme not in ("http", "https") or not parsed.host
            or not 0 < (parsed.port or 80) < 65536):  # (70000 was tried, and said "connection refused", QA)
        raise ClientError(f"{url!r} is not a URL of the service (http://host:port or https://...)")


# What an Authorization header can carry of a key: visible ASCII (RFC 9110's token68 is narrower; the service takes
# any of these). The service refuses other keys at start (app/settings.py).
API_KEY = re.compile(r"[!-~]+")


def check_api_key(key: str) -> str:
    """The key without the whitespace around it (a key file saved on Windows ends in "\\r\\n"), or ClientError for
    one no header can carry: httpx raised UnicodeEncodeError at the first request for "clé", and a "\\r" inside
    failed every request as a transport error, retried (QA)."""
    key = key.strip()
    if not API_KEY.fullmatch(key):
        raise ClientError("the API key holds a character an HTTP header cannot carry (only visible ASCII: no "
                          "spaces, line breaks or accents); check how it was copied")
    return key


class Session(Protocol):
    """What the client needs of its HTTP client: httpx.Client, or Starlette's TestClient (an httpx2.Client)."""

    def request(self, *args: Any, **kwargs: Any) -> Any: ...

    def get(self, *args: Any, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


class Hit(TypedDict):
    id: str
    score: float
    relevance: float | None
    title: str | None
    text: str
    metadata: dict[str, Any]
    explain: NotRequired[dict[str, Any]]  # only when asked for
    highlights: NotRequired[dict[str, list[str]]]  # only when asked for


class SearchResult(TypedDict):
    hits: list[Hit]
    total: int
    filtered_out: int
    took_ms: float
    facets: NotRequired[dict[str, list[dict[str, Any]]]]  # only when asked for


class UpsertResult(TypedDict):
    upserted: int
    ids: list[str]


class SearchClient:
    """One service at `url`. Pass `http` to use a client of your own (Starlette's TestClient on an
    in-process app is one); it is then yours to close."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout: float = 120.0,
                 retry: Retry | None = None, http: Session | None = None) -> None:
        if http is None:
            check_service_url(url)
        # Sent with each request, not set on `http`: a client passed in is the caller's, headers included.
        self.headers = {"Authorization": f"Bearer {check_api_key(api_key)}"} if api_key else {}
        self._owned = http is None
        self.http: Session = http if http is not None else httpx.Client(base_url=url, timeout=timeout)
        self.retry = retry or Retry()

    # --- plumbing ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, resend: Resend = "any", json: Any = None, **kwargs: Any) -> Any:
        """Sends `json` (if not None) with retries; returns the decoded JSON body (None when empty) or raises
        ApiError; ClientError for a body JSON cannot carry (NaN, infinities: httpx raised a bare ValueError).
        `resend`: which transport failures are sent again (Resend)."""
        kwargs["headers"] = {**self.headers, **(kwargs.get("headers") or {})}
        if json is not None:
            kwargs["headers"].setdefault("Content-Type", "application/json")
            kwargs["content"] = _json_body(json)
        for attempt in range(max(1, self.retry.attempts)):
            last = attempt >= self.retry.attempts - 1
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last or not may_resend(exc, resend):
                    raise
                self._wait(attempt, None, str(exc) or type(exc).__name__)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._wait(attempt, response, f"answered {response.status_code}")
                continue
            if response.status_code >= 300:
                raise ApiError.from_response(response)
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise ApiError(response.status_code, "not_json", response.text[:500]) from None
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, response: Any, why: str) -> None:
        wait = self.retry.wait(attempt, response)
        # A loader retrying a server that is down for two minutes had said nothing all that time (QA).
        log.warning("%s: %s; trying again in %.1f s (attempt %d of %d)", _base(self.http), why, wait, attempt + 2,
                    self.retry.attempts)
        time.sleep(wait)

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- system --------------------------------------------------------------------------------------

    def ready(self) -> bool:
        response = self._ready()
        return response is not None and response.status_code == 200

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.1) -> None:
        """Returns once /ready answers 200 (the model and indexes are loaded); NotReadyError after `timeout`, or
        at once when the service says its start-up failed (it will never be ready)."""
        deadline = time.monotonic() + timeout
        while (response := self._ready()) is None or response.status_code != 200:
            if response is not None and response.status_code == 503:
                error = NotReadyError.from_response(response)
                if error.code == "startup_failed":
                    raise error
            if time.monotonic() > deadline:
                raise NotReadyError(503, "not_ready", f"the service was not ready within {timeout:.0f} s")
            time.sleep(interval)

    def _ready(self) -> Any:
        """/ready's answer, or None while nothing answers."""
        try:
            return self.http.get("/ready")
        except httpx.TransportError:
            return None

    def metrics(self) -> str:
        """The Prometheus text of /metrics."""
        response = self.http.get("/metrics", headers=self.headers)
        if response.status_code != 200:
            raise ApiError.from_response(response)
        return str(response.text)

    # --- collections ---------------------------------------------------------------------------------

    def create_collection(self, name: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Creates it, or returns it if it exists with the same settings (ApiError 409 if with others)."""
        return cast(dict[str, Any], self.request("PUT", _collection_path(name), json=settings))

    def get_collection(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", _collection_path(name)))

    def list_collections(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.request("GET", "/v1/collections")["collections"])

    def delete_collection(self, name: str) -> None:
        self.request("DELETE", _collection_path(name))

    # --- documents -----------------------------------------------------------------------------------

    def upsert(self, collection: str, documents: Sequence[dict[str, Any]]) -> UpsertResult:
        """One batch, all or nothing: returned only once the service stored every document durably."""
        return cast(UpsertResult, self.request("POST", _collection_path(collection, "documents"),
                                               json={"documents": list(documents)}, resend="unless_timed_out"))

    def ingest(self, collection: str, documents: Iterable[dict[str, Any]], *, batch: int = 256,
               concurrency: int = 1, on_batch: Callable[[int], None] | None = None) -> int:
        """Upserts `documents` in batches, `concurrency` requests in flight; returns how many were sent and
        acknowledged. `on_batch(n)` is called in input order, once every document before that batch's end is
        stored, with the batch's length (the service's `upserted` counts an id a batch names twice twice too,
        but a caller counting lines should not depend on that). An id given twice ends as its last document
        says: a batch that names an id an earlier batch still in flight names waits for that batch (QA: with
        two in flight, the older line won for ids repeated 256 lines apart).

        A batch the service refuses as too large (413) is sent again in halves, so long documents load whatever
        `batch` is; a document over the limit alone raises `DocumentTooLarge`, naming its place in the batch.
        Interrupted (Ctrl-C, SIGTERM), it waits for the batches already sent, which the service stores anyway,
        and acknowledges those stored before it stops (QA: a resumed load sent the last ~500 lines again)."""
        return upsert_in_batches(lambda chunk: self.upsert(collection, chunk), documents, batch=batch,
                                 concurrency=concurrency, on_batch=on_batch)

    def get(self, collection: str, doc_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self.request("GET", _document_path(collection, doc_id)))

    def delete(self, collection: str, doc_id: str) -> None:
        self.request("DELETE", _document_path(collection, doc_id))

    def delete_many(self, collection: str, ids: Sequence[str]) -> dict[str, Any]:
        """Deletes the ids the collection holds, all in one transaction: `{"deleted", "ids", "missing"}`."""
        return cast(dict[str, Any], self.request("POST", _collection_path(collection, "documents", "delete"),
                                                 json={"ids": list(ids)}))

    def documents(self, collection: str, *, vectors: bool = False, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every document of the collection in id order, `page` a request; with `vectors`, each with its stored
        unit vector, so that they can be upserted elsewhere as they are."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page, "vectors": vectors, **({} if after is None else {"after": after})}
            answer = self.request("GET", _collection_path(collection, "documents"), params=params)
            yield from answer["documents"]
            if (after := answer["next"]) is None:
                return

    # --- search and relevance ------------------------------------------------------------------------

    def search(self, collection: str, query: str, **options: Any) -> SearchResult:
        """`options` are the search body's other fields: k, offset, mode, fusion, filter, relevance, explain..."""
        return cast(SearchResult, self.request("POST", _collection_path(collection, "search"),
                                               json={"query": query, **options}))

    def train(self, collection: str, examples: list[dict[str, Any]], recall_target: float | None = None,
              family: str | None = None, *, wait: bool | None = None) -> dict[str, Any]:
        """The trained adapter, or (a large set, or `wait=False`) the job training it: its "job" id is what
        `job` and `wait_for_job` take. `wait=True` waits whatever the size."""
        body: dict[str, Any] = {"examples": examples}
        if recall_target is not None:
            body["recall_target"] = recall_target
        if family is not None:
            body["family"] = family
        params = {} if wait is None else {"wait": "true" if wait else "false"}
        return cast(dict[str, Any], self.request("POST", _collection_path(collection, "relevance", "train"),
                                                 json=body, params=params, resend="unsent"))

    def job(self, collection: str, job_id: str) -> dict[str, Any]:
        """A training job: status ("running", "done" or "failed"), progress, and at the end result or error."""
        return cast(dict[str, Any], self.request("GET", _collection_path(collection, "relevance", "jobs",
                                                                         _segment(job_id))))

    def jobs(self, collection: str) -> list[dict[str, Any]]:
        """The collection's training jobs, newest first, each as `job` gives it."""
        answer = self.request("GET", _collection_path(collection, "relevance", "jobs"))
        return cast(list[dict[str, Any]], answer["jobs"])

    def cancel_job(self, collection: str, job_id: str) -> dict[str, Any]:
        """Asks a running job to end at its next step (the adapter unchanged); the job as it is now. ApiError 409
        (job_finished) when it has ended."""
        return cast(dict[str, Any], self.request("DELETE", _collection_path(collection, "relevance", "jobs",
                                                                            _segment(job_id))))

    def wait_for_job(self, collection: str, job_id: str, timeout: float = 3600.0,
                     interval: float = 0.5) -> dict[str, Any]:
        """Polls the job until it has finished; the job as `job` gives it. TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while (job := self.job(collection, job_id))["status"] == "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"training job {job_id} still running after {timeout:.0f} s")
            time.sleep(interval)
        return job

    def relevance(self, collection: str) -> dict[str, Any]:
        """The adapter in use (default or trained), its threshold and metrics."""
        return cast(dict[str, Any], self.request("GET", _collection_path(collection, "relevance")))

    def reset_relevance(self, collection: str) -> dict[str, Any]:
        """Undoes the collection's trainings: the default adapter serves it again; answers as `relevance`."""
        return cast(dict[str, Any], self.request("DELETE", _collection_path(collection, "relevance")))


def _json_body(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        raise ClientError(f"the request cannot be sent: JSON has no NaN or infinite numbers ({exc})") from None


def _base(http: Session) -> str:
    return str(getattr(http, "base_url", "")) or "the service"
