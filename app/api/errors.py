"""Errors as HTTP answers, all one body shape {"error": {"code", "message", "details"}}, and their OpenAPI text."""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import access_refusal
from app.errors import PayloadTooLarge, SearchServiceError
from app.schemas import COLLECTION_NAME_PATTERN, ErrorBody

log = logging.getLogger("app.errors")

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


_WHEN = {
    401: "no API key, or not a valid one (only when the service has keys)",
    403: "a read key on a route that writes",
    404: "unknown collection or document",
    409: "the collection exists with other settings",
    413: "body or batch over the limits",
    415: "unsupported content type or content encoding",
    422: "the request failed validation",
    503: "not ready (still loading its model and indexes, or stopping), or the shared PostgreSQL store cannot be "
         "reached or refused the call: nothing was done; retry after Retry-After",
    507: "the store's disk is full: nothing of the write was stored",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses, all with the ErrorBody schema."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


def error_response(status: int, code: str, message: str, details: list[Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details or [])}}
    headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **(headers or {})}
    return JSONResponse(status_code=status, content=body, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echoing the rejected input back can be huge (a 32 MiB batch); the location and reason suffice.
    return [{"loc": _location(err.get("loc", ())), "msg": _message(err), "type": err.get("type", "")}
            for err in exc.errors()[:50]]


# The tags pydantic puts in a location after a filter's key, naming which form of condition it read the value as
# (app/schemas/search.py, FilterCondition): no field of the request, so a client could not map the error to one.
_CONDITION_TAGS = ("value", "in", "range")


def _location(loc: Sequence[Any]) -> list[Any]:
    """`loc` as the request names its parts: ["body", "filter", "year", "in", 0], not [..., "year", "in", "in", 0]."""
    parts = list(loc)
    for at in range(len(parts) - 2, 0, -1):
        if parts[at - 1] == "filter" and at + 1 < len(parts) and parts[at + 1] in _CONDITION_TAGS:
            del parts[at + 1]
    return parts


def _message(err: Mapping[str, Any]) -> str:
    """The error's message; a body that is not JSON also says why and where, as the documents route does ("JSON
    decode error" alone, QA): FastAPI puts the decoder's reason in ctx and the character's offset in loc."""
    message = str(err.get("msg", ""))
    reason = (err.get("ctx") or {}).get("error")
    if err.get("type") == "json_invalid" and reason:
        loc = list(err.get("loc", ()))
        at = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        return f"{message}: {reason}{at}"
    return message


class UnexpectedErrors:
    """Answers an unhandled exception with the 500 error body here, inside the other middlewares. Left to the
    `Exception` handler, it reaches Starlette's ServerErrorMiddleware, which answers and then raises it again,
    and uvicorn then closes the keep-alive connection: the client's next request on it failed (an ingest that
    could not tell whether it was applied). An exception after the answer began still goes up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            log.exception("unhandled error")
            await error_response(500, "internal_error", "internal error")(scope, receive, send)
        except asyncio.CancelledError:
            # Past its graceful-shutdown timeout uvicorn cancels the requests still running (and awaits none of
            # them), answering each with a bare text 500 that the client and the ingest command take as fatal
            # (QA: a bulk load at a rolling restart). A 503 says to retry; a batch cut short here may or may not
            # be stored (its thread may still commit), and its retry is an upsert of the same documents.
            if started:
                raise
            log.warning("%s %s cut short by the shutdown: answered 503", scope.get("method"), scope.get("path"))
            await error_response(503, "not_ready", "the service stopped before this request was answered; it may "
                                 "or may not have been applied: retry it", headers={
                                     "Retry-After": str(RETRY_AFTER_SECONDS), "Connection": "close"})(
                scope, receive, send)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
RETRY_AFTER_SECONDS = 1


def _allowed(request: Request) -> str:
    """The methods some route takes at this path: Starlette's 405 names only the first route that matched the
    path (GET for a collection, which also takes PUT and DELETE). Asked of the router method by method, through
    `matches` (how routes are nested is FastAPI's business). HEAD wherever GET is: `HeadAsGet` answers it."""
    routes = request.app.router.routes
    taken = [m for m in _METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]
    if "GET" in taken and "HEAD" not in taken:
        taken.insert(taken.index("GET") + 1, "HEAD")
    return ", ".join(taken)


def _slash_in_name(request: Request) -> bool:
    """A collection name with an escaped "/" (what a client sends for "a/b"): the router, which routes the
    unescaped path, answered its generic 404 where every other name outside the pattern gets a 422 (QA)."""
    parts = bytes(request.scope.get("raw_path") or b"").split(b"/")
    return parts[:3] == [b"", b"v1", b"collections"] and len(parts) > 3 and b"%2f" in parts[3].lower()


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchServiceError)
    async def _domain(_: Request, exc: SearchServiceError) -> JSONResponse:
        if exc.status == 500:
            log.error("internal error: %s", exc.message)
        # 503s pass (loading, the shared store unreachable): a client that honours Retry-After backs off.
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
        return error_response(exc.status, exc.code, exc.message, exc.details, headers=headers)

    async def _invalid(request: Request, message: str, details: list[dict[str, Any]]) -> JSONResponse:
        """A 422, unless the route refuses the caller (401, 403): access first, as for every other bad input."""
        refusal = await access_refusal(request)
        if refusal is not None:
            return await _domain(request, refusal)
        return error_response(422, "invalid_input", message, details)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        for err in exc.errors():  # a training batch over its limit: 413, as a document batch's (API.md; QA)
            if err.get("type") == "too_long" and tuple(err.get("loc", ())) == ("body", "examples"):
                limit = (err.get("ctx") or {}).get("max_length")
                refusal = await access_refusal(request)  # a key refused still comes first
                return await _domain(request, refusal or PayloadTooLarge(
                    f"more than {limit} examples in one training request; the limit is {limit}"))
        return await _invalid(request, "the request failed validation", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body that is not UTF-8: bad input like any other
            return await _invalid(request, "the request body could not be parsed: send UTF-8 JSON",
                                  [{"loc": ["body"], "msg": str(exc.detail), "type": "body_parse"}])
        if exc.status_code == 404 and _slash_in_name(request):
            return await _invalid(request, "a collection name cannot hold '/'", [
                {"loc": ["path", "name"], "msg": f"String should match pattern '{COLLECTION_NAME_PATTERN}'",
                 "type": "string_pattern_mismatch"}])
        headers = {"Allow": _allowed(request)} if exc.status_code == 405 else exc.headers
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail),
                              headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
