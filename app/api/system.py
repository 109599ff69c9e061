"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.errors import error_responses
from app.errors import NotReady

router = APIRouter(tags=["system"])


@router.get("/health", summary="200 while the process lives")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="200 once the model and indexes are loaded, else 503",
            responses=error_responses(503))
async def ready(request: Request) -> dict[str, str]:
    if getattr(request.app.state, "engine", None) is None:
        raise NotReady("the service is still loading its model and indexes")
    return {"status": "ready"}


@router.get("/metrics", summary="Prometheus text format", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
