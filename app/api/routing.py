"""Which route a request's path is for, before the router has seen it (the metrics of a request answered before
routing; a trailing slash the API's paths do not have)."""

from collections.abc import Iterable
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def route_for(scope: Scope) -> Any:
    """The first route `scope`'s path matches (for any method) in its app, else None."""
    return _first_match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)


def _first_match(routes: Iterable[Any], scope: Scope) -> Any:
    """Looks into included routers: FastAPI wraps each in an object whose `original_router` holds its routes
    (should a later FastAPI not, the answer is the wrapper, whose template is unknown: tests/api/test_system.py
    would say so)."""
    for candidate in routes:
        if candidate.matches(scope)[0] == Match.NONE:
            continue
        inner = getattr(candidate, "original_router", None)
        return candidate if inner is None else _first_match(inner.routes, scope)
    return None


class TrailingSlash:
    """Serves an API path written with a trailing slash (`POST /v1/collections/x/search/`) as the path without
    it. Starlette's router answered those with an empty-bodied 307 redirect: a non-2xx without the error body
    the contract promises, and a redirected POST that many clients do not follow (QA). A path that some route
    takes as it is (a document id ending in "/") is left alone, except `…/documents/`, whose id would be empty,
    which no document has: it is the listing (it was a 422 for the missing id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/v1/") and path.endswith("/") and (
                path.endswith("/documents/") or route_for(scope) is None):
            trimmed = {**scope, "path": path.rstrip("/")}
            if route_for(trimmed) is not None:
                raw = scope.get("raw_path")
                scope = {**trimmed, "raw_path": raw.rstrip(b"/") if raw else raw}
        await self.app(scope, receive, send)


class HeadAsGet:
    """Answers HEAD as GET without the body (RFC 9110: a server answers HEAD on whatever it answers GET on). The
    API's routes answered it 405, so an uptime check or `curl -I` on /health or /ready read the service as down
    (QA). Starlette's own routes do this; FastAPI's API routes take only the methods they name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
