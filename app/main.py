"""The FastAPI application: create_app(settings) wires settings, engine, routers and handlers."""

# `uvicorn app.main:app` enters here: the thread caps must be in the environment before the imports
# below load numpy and torch (see app/runtime.py).
from app.runtime import STARTUP_FAILED, configure_environment

configure_environment()

import asyncio
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from app.api import collections, documents, relevance, search, system, ui
from app.api.cors import CorsMiddleware
from app.api.errors import UnexpectedErrors, install_handlers
from app.api.limits import BodyLimitMiddleware
from app.api.params import known_query
from app.api.routing import HeadAsGet, TrailingSlash
from app.engine.encoders import Encoder
from app.engine.engine import SearchEngine
from app.errors import DataDirLocked, DataDirUnusable, EncoderMismatch, StoreSchemaMismatch, StoreUnavailable
from app.logs import RequestIdMiddleware, adopt_uvicorn_default_logging
from app.metrics import Metrics, MetricsMiddleware
from app.schemas import DocumentBatch
from app.settings import Settings, load_settings, unknown_variables
from app.store.lock import DataDirLock

log = logging.getLogger("app")
DOCS_FILES = "/docs-files"  # where /docs loads Swagger UI's files from
# Start-up failures whose message says what to do: logged in one line, without a traceback.
_SAYS_WHAT_TO_DO = (EncoderMismatch, StoreSchemaMismatch, StoreUnavailable, DataDirUnusable)


def _load_engine(app: FastAPI, settings: Settings, embedder: Encoder | None, exit_on_failure: bool) -> None:
    """Loads model and indexes off the event loop, so /health answers while /ready says 503."""
    try:
        if embedder is None:
            embedder = settings.load_encoder()
            embedder.warm_up()
        app.state.engine = SearchEngine(settings, embedder)
        log.info("ready: %d collections in %s, encoder %s", len(app.state.engine.list_collections()),
                 settings.data_dir, embedder.identity)
    except Exception as exc:
        if isinstance(exc, _SAYS_WHAT_TO_DO):
            log.error("start-up failed: %s", exc.message, extra={"details": exc.details})
            app.state.startup_failure = exc.message
        else:
            # The cause in the line itself, as a log viewer shows it; the traceback after it (QA: a bad
            # SEARCH_MODEL said only "start-up failed; shutting down", its reason the last of 13 traceback lines).
            app.state.startup_failure = f"{type(exc).__name__}: {exc}"
            log.exception("start-up failed: %s%s", app.state.startup_failure,
                          "; shutting down" if exit_on_failure else "")
        # A server that can never become ready should exit and let its supervisor see that: it shuts down as
        # on SIGTERM, then the lifespan ends the process with STARTUP_FAILED (uvicorn re-raises the SIGTERM it
        # caught once it has stopped, and a death by SIGTERM reads as a stop, not a failure, to systemd). An
        # in-process app (tests, `evaluate`) must not signal its host: its /ready says why instead.
        if exit_on_failure:
            os.kill(os.getpid(), signal.SIGTERM)


async def _snapshot_loop(app: FastAPI, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.snapshot_check_seconds)
        engine: SearchEngine | None = getattr(app.state, "engine", None)
        if engine is not None:
            try:
                await asyncio.to_thread(engine.snapshot_due)
            except Exception:
                log.exception("periodic snapshot failed; the store still holds every write")


def create_app(settings: Settings | None = None, embedder: Encoder | None = None, *,
               exit_on_startup_failure: bool = False) -> FastAPI:
    """`embedder` lets tests share one loaded model across apps; by default the lifespan loads it. An app whose
    start-up fails stays up, and /ready answers 503 `startup_failed` with the reason: it may be running inside
    another program (tests, `evaluate`), which must not be signalled. The server's app (`app` below, what
    uvicorn and `python -m app serve` run) exits instead, with STARTUP_FAILED."""
    settings = settings or load_settings()
    # uvicorn configures its logging before it imports the app: under a bare `uvicorn app.main:app` its
    # plain-text lines (access log included) become the JSON lines of `python -m app serve`, from the first.
    adopt_uvicorn_default_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys and not settings.admin_keys:
            log.warning("no API keys configured: the service is open to anyone who can reach it")
        for line in unknown_variables(os.environ):
            log.warning(line)
        # Take the data-dir lock before answering anything, so that a second process fails at once.
        lock = DataDirLock(settings.data_dir)
        try:
            lock.acquire()
        except (DataDirLocked, DataDirUnusable) as exc:
            log.error("%s", exc.message)
            raise
        loader = threading.Thread(target=_load_engine, args=(app, settings, embedder, exit_on_startup_failure),
                                  daemon=True)
        loader.start()
        snapshots = asyncio.create_task(_snapshot_loop(app, settings))
        try:
            yield
        finally:
            snapshots.cancel()
            with suppress(asyncio.CancelledError):
                await snapshots
            await asyncio.to_thread(loader.join)
            engine: SearchEngine | None = getattr(app.state, "engine", None)
            if engine is not None:
                app.state.engine = None
                await asyncio.to_thread(engine.close)
            lock.release()
            if exit_on_startup_failure and app.state.startup_failure is not None:
                logging.shutdown()
                os._exit(STARTUP_FAILED)

    # FastAPIOffline: FastAPI whose /docs page loads Swagger UI from the service, not a CDN (offline it was a blank
    # page, and online every visitor's browser fetched third-party scripts; QA). No /redoc: ReDoc still fetches
    # its logo from its CDN.
    app = FastAPIOffline(title="Hybrid search", version="1.0.0", lifespan=lifespan, static_url=DOCS_FILES,
                         redoc_url=None,
                         description="Hybrid (BM25 + HNSW) search with Cosine Adapter relevance filtering.")
    app.state.settings = settings
    app.state.engine = None
    app.state.startup_failure = None
    app.state.metrics = Metrics()
    app.state.metrics.watch_collections(
        lambda: {c.name: len(c.lexical) for c in (app.state.engine.list_collections() if app.state.engine else [])})
    app.state.metrics.watch_replication(lambda: _replication(app), lambda: {
        c.name: c.applied_seq for c in (app.state.engine.list_collections() if app.state.engine else [])})
    app.state.metrics.watch_query_encoder(lambda: _query_encoder_counts(app))
    app.state.metrics.watch_search_slots(lambda: _search_slot_counts(app))
    install_handlers(app)
    for module in (system, collections, documents, search, relevance):
        app.include_router(module.router, dependencies=[Depends(known_query)])
    app.include_router(ui.router)  # the page's own address may carry what a browser adds
    app.mount("/ui", ui.PageFiles(), name="ui")
    app.add_middleware(UnexpectedErrors)  # innermost: the others see its 500 as an answer
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(TrailingSlash)  # outside the metrics: they count the route it serves
    app.add_middleware(HeadAsGet)
    app.add_middleware(RequestIdMiddleware)
    if settings.cors_origins:
        # Outermost, so that every answer (a 401 or a 413 too) carries the headers a browser needs to read it.
        app.add_middleware(CorsMiddleware, origins=settings.cors_origins)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _replication(app: FastAPI) -> dict[str, float] | None:
    engine: SearchEngine | None = app.state.engine
    if engine is None or engine.follower is None:
        return None
    status = engine.follower.status()
    return {"applied_seq": status.applied_seq, "store_seq": status.store_seq,
            "lag_sequences": status.store_seq - status.applied_seq, "lag_seconds": status.lag_seconds,
            "degraded": float(status.degraded is not None)}


def _query_encoder_counts(app: FastAPI) -> tuple[int, int]:
    engine: SearchEngine | None = app.state.engine
    return (0, 0) if engine is None else (engine.queries.batches, engine.queries.texts)


def _search_slot_counts(app: FastAPI) -> tuple[int, float, int]:
    engine: SearchEngine | None = app.state.engine
    slots = None if engine is None else engine.search_slots
    return (0, 0.0, 0) if slots is None else (slots.waits, slots.wait_seconds, slots.abandoned)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, plus the ingest body schema (the route parses JSON or NDJSON itself)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        batch = DocumentBatch.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(batch.pop("$defs", {}))
        components["DocumentBatch"] = batch
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app(exit_on_startup_failure=True)
