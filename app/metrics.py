"""Prometheus metrics of one app instance (own registry: no process-global state)."""

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.routing import route_for


class _CollectionSizes(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("search_collection_documents", "Documents per collection", labels=["collection"])
        for name, count in self._counts().items():
            family.add_metric([name], count)
        yield family


class _Replication(Collector):
    """A replica over PostgreSQL: how far it has applied the store's change feed, and how far behind it is."""

    def __init__(self, status: Callable[[], dict[str, float] | None], applied: Callable[[], dict[str, int]]) -> None:
        self._status = status
        self._applied = applied

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._status()
        if status is None:
            return
        for name, help_text in (("applied_seq", "Last store sequence applied by this replica"),
                                ("store_seq", "Latest store sequence this replica knows of"),
                                ("lag_sequences", "Store sequences not applied yet"),
                                ("lag_seconds", "Seconds since the oldest change not applied yet was announced"),
                                ("degraded", "1 while the store is unreachable (reads served from memory)")):
            yield GaugeMetricFamily(f"search_replication_{name}", help_text, value=status[name])
        family = GaugeMetricFamily("search_collection_applied_seq", "Store sequence each collection is applied to",
                                   labels=["collection"])
        for collection, seq in self._applied().items():
            family.add_metric([collection], seq)
        yield family


class _Counters(Collector):
    """Counters the engine keeps itself, read when scraped: `read()` gives one value per (name, help) of
    `counters`, in their order."""

    def __init__(self, counters: Sequence[tuple[str, str]], read: Callable[[], Sequence[float]]) -> None:
        self._counters = counters
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        for (name, help_text), value in zip(self._counters, self._read(), strict=True):
            yield CounterMetricFamily(name, help_text, value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("search_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("search_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.ingested = Counter("search_ingested_documents", "Documents acknowledged by ingest", ["collection"],
                                registry=self.registry)
        self.ingest_seconds = Counter("search_ingest_seconds", "Time spent in acknowledged ingest batches",
                                      ["collection"], registry=self.registry)
        self.candidates = Counter("search_relevance_candidates", "Candidates seen by the relevance filter",
                                  ["collection"], registry=self.registry)
        self.filtered = Counter("search_relevance_filtered", "Candidates dropped by the relevance filter",
                                ["collection"], registry=self.registry)
        self.queries = Counter("search_queries", "Searches answered", ["collection"], registry=self.registry)
        self.empty = Counter("search_queries_empty", "Searches answered with no hits", ["collection"],
                             registry=self.registry)

    def watch_collections(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_CollectionSizes(counts))

    def watch_replication(self, status: Callable[[], dict[str, float] | None],
                          applied: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_Replication(status, applied))

    def watch_query_encoder(self, counts: Callable[[], tuple[int, int]]) -> None:
        """`counts`: (forward passes, queries encoded) so far. Their ratio is how many searches shared a pass (1
        when every search encodes alone)."""
        self.registry.register(_Counters((("search_query_encoder_passes", "Forward passes of the query encoder"),
                                          ("search_query_encoder_queries", "Queries encoded by those passes")),
                                         counts))

    def watch_search_slots(self, counts: Callable[[], tuple[int, float, int]]) -> None:
        """`counts`: (searches that found every search slot taken, seconds they waited, searches among them whose
        client left before their turn) so far (app/engine/slots.py)."""
        self.registry.register(_Counters((("search_slot_waits", "Searches that found every search slot taken"),
                                          ("search_slot_wait_seconds", "Time searches waited for a search slot"),
                                          ("search_slot_abandoned", "Searches not run: their client left while "
                                           "they waited for a search slot")),
                                         counts))

    def observe_search(self, collection: str, candidates: int, filtered: int, hits: int) -> None:
        self.queries.labels(collection).inc()
        self.candidates.labels(collection).inc(candidates)
        self.filtered.labels(collection).inc(filtered)
        if hits == 0:
            self.empty.labels(collection).inc()

    def observe_ingest(self, collection: str, documents: int, seconds: float) -> None:
        self.ingested.labels(collection).inc(documents)
        self.ingest_seconds.labels(collection).inc(seconds)


CLIENT_CLOSED = 499  # nginx's "client closed request": the client went away before any answer


class MetricsMiddleware:
    """Counts and times every request by its route template (not its raw path, to bound cardinality). A client
    that went away before any answer counts as 499 (nginx's "client closed request"), not 500: an interrupted
    upload is no server error, and it had set off 5xx alerts (QA). A request answered before routing (a 413 for
    its size, say) still counts under the template its path matches."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = start  # request.state.arrived: when the service first saw it
        status: dict[str, Any] = {"code": 500}  # what an exception that escaped every handler would be

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.update(code=message["status"], started=True)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
            if "started" not in status:
                status["code"] = CLIENT_CLOSED
        finally:
            template = _template(scope)
            self.metrics.requests.labels(scope["method"], template, str(status["code"])).inc()
            self.metrics.latency.labels(scope["method"], template).observe(time.perf_counter() - start)


def _template(scope: Scope) -> str:
    """The matched route's template ({doc_id}, not {doc_id:path}); for a request answered before routing, that of
    the route its path matches; else "unmatched"."""
    route = scope.get("route") or route_for(scope)
    return getattr(route, "path_format", "unmatched")
