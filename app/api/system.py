"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.errors import error_responses
from app.errors import NotReady, StartupFailed

router = APIRouter(tags=["system"])


@router.get("/health", summary="200 while the process lives")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="200 once the model and indexes are loaded (and, over PostgreSQL, caught up to the "
            "store's sequence at start), else 503; `degraded` while the store is unreachable (reads still served)",
            responses=error_responses(503))
async def ready(request: Request) -> dict[str, str]:
    engine = getattr(request.app.state, "engine", None)
    failure = getattr(request.app.state, "startup_failure", None)
    if engine is None and failure is not None:
        raise StartupFailed(f"start-up failed: {failure}")
    if engine is None:
        raise NotReady("the service is still loading its model and indexes")
    if engine.follower is not None:
        degraded = engine.follower.status().degraded
        if degraded is not None:
            return {"status": "degraded", "reason": f"{degraded}; searches are served, writes are refused"}
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus text format", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
