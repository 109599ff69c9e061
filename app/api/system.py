"""Liveness, readiness and Prometheus metrics."""

import os
from pathlib import Path

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.errors import error_responses
from app.errors import NotReady, StartupFailed

router = APIRouter(tags=["system"])


@router.get("/health", summary="200 while the process lives")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="200 once the model and indexes are loaded (and, over PostgreSQL, caught up to the "
            "store's sequence at start), else 503; `degraded` while the store is unreachable or the data dir cannot be "
            "written (reads still served)",
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
    trouble = data_dir_trouble(request.app.state.settings.data_dir)
    if trouble is not None:
        return {"status": "degraded", "reason": f"{trouble}; searches are served, writes are refused"}
    return {"status": "ready"}


def data_dir_trouble(data_dir: Path) -> str | None:
    """Why the data dir cannot take a write (its filesystem read-only, as a disk error remounts it, or full),
    else None. Writes then answered 503 or 507 while /ready said "ready" (QA); it clears when the disk does. Still
    a 200: searches are served, and a load balancer routing on /ready keeps the replica for them."""
    try:
        disk = os.statvfs(data_dir)
    except OSError as exc:
        return f"the data dir {str(data_dir)!r} cannot be read ({exc.strerror})"
    if disk.f_flag & os.ST_RDONLY:
        return f"the data dir {str(data_dir)!r} is on a read-only filesystem"
    if (disk.f_bfree if os.geteuid() == 0 else disk.f_bavail) == 0:  # root writes into the reserved blocks too
        return f"the data dir's disk is full ({str(data_dir)!r})"
    return None


@router.get("/metrics", summary="Prometheus text format", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
