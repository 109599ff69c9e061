"""Domain errors raised by the engine and store, and the handlers that turn them into HTTP answers.

    SearchServiceError                 500 internal_error (a bug)
     ├── InvalidInput                  422 invalid_input
     │    └── DimensionMismatch        422 dimension_mismatch
     ├── PayloadTooLarge               413 payload_too_large
     ├── UnsupportedMediaType          415 unsupported_media_type
     ├── NotFound                      404
     │    ├── CollectionNotFound       404 collection_not_found
     │    └── DocumentNotFound         404 document_not_found
     ├── Conflict                      409
     │    └── CollectionConflict       409 collection_conflict
     ├── Unauthorized                  401 unauthorized
     ├── Forbidden                     403 forbidden
     ├── NotReady                      503 not_ready
     └── DataDirLocked                 raised at start when another process holds the data dir

Every non-2xx body is {"error": {"code", "message", "details"}}.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorBody

log = logging.getLogger("app.errors")


class SearchServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(SearchServiceError):
    """`field` names the engine input at fault (e.g. "recall_target"); the API turns it into a body location."""

    status, code = 422, "invalid_input"

    def __init__(self, message: str, details: list[Any] | None = None, field: str | None = None) -> None:
        super().__init__(message, details)
        self.field = field


class DimensionMismatch(InvalidInput):
    code = "dimension_mismatch"


class PayloadTooLarge(SearchServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(SearchServiceError):
    status, code = 415, "unsupported_media_type"


class NotFound(SearchServiceError):
    status, code = 404, "not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class Conflict(SearchServiceError):
    status, code = 409, "conflict"


class CollectionConflict(Conflict):
    code = "collection_conflict"


class Unauthorized(SearchServiceError):
    status, code = 401, "unauthorized"


class Forbidden(SearchServiceError):
    status, code = 403, "forbidden"


class NotReady(SearchServiceError):
    status, code = 503, "not_ready"


class DataDirLocked(SearchServiceError):
    code = "data_dir_locked"


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
    415: "unsupported content type",
    422: "the request failed validation",
    503: "the service is still loading its model and indexes",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses, all with the ErrorBody schema."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


def error_response(status: int, code: str, message: str, details: list[Any] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": jsonable_encoder(details or [])}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echoing the rejected input back can be huge (a 32 MiB batch); the location and reason suffice.
    return [{"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()[:50]]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchServiceError)
    async def _domain(_: Request, exc: SearchServiceError) -> JSONResponse:
        if exc.status == 500:
            log.error("internal error: %s", exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_input", "the request failed validation", _validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body that is not UTF-8: bad input like any other
            return error_response(422, "invalid_input", "the request body could not be parsed: "
                                  "send UTF-8 JSON", [{"loc": ["body"], "msg": str(exc.detail), "type": "body_parse"}])
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
