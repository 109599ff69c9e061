"""Structured JSON logs, each line carrying the id of the request it belongs to."""

import contextvars
import logging
import logging.config
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RefusedStartFilter(logging.Filter):
    """Drops uvicorn's traceback of a start the app refused with a line of its own (the data dir held by another
    process, or unusable; app/main.py logs why): the README promises one line, and the traceback said nothing
    more."""

    REFUSALS = ("app.errors.DataDirLocked", "app.errors.DataDirUnusable")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error" or not isinstance(record.msg, str) or not record.msg.startswith("Traceback"):
            return True
        return not record.msg.rstrip().rsplit("\n", 1)[-1].startswith(self.REFUSALS)


def log_config(level: str = "info") -> dict[str, Any]:
    """A dictConfig for the app's and uvicorn's loggers: one JSON object a line on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}, "refused_start": {"()": RefusedStartFilter}},
        "formatters": {"json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "filters": ["request_id", "refused_start"]}},
        "loggers": {
            "app": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            # the connection pool's warnings while PostgreSQL is unreachable (no secrets: the URL is checked first);
            # its info lines (each connection requested, given and returned) only at debug: at info they were 88%
            # of a replica's log, ~3 lines a second idle (QA)
            "psycopg": {"handlers": ["stderr"], "level": "DEBUG" if level == "debug" else max(
                level.upper(), "WARNING", key=logging.getLevelName), "propagate": False},
        },
        # Every other library's warnings (and Python's, through `configure_logging`) as JSON lines too: the first
        # start's ONNX export wrote plain-text warnings among the JSON ones (QA), and onnxruntime's quantiser's
        # `logging.warning` set up a plain-text root handler of its own.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def configure_logging(level: str) -> None:
    """The service's logs: `log_config`, and Python's warnings through the logging (logger "py.warnings")."""
    logging.config.dictConfig(log_config(level))
    logging.captureWarnings(True)


def adopt_uvicorn_default_logging(level: str) -> bool:
    """Switches a bare `uvicorn app.main:app` to the JSON logs `python -m app serve` configures.

    Only where uvicorn has set up its own default, plain-text handlers and nothing has set up the app's
    logger: a process configured by `python -m app serve` or by a `--log-config` of its own, and an app run
    in process (a TestClient: no uvicorn handlers), are left alone. True when it configured the logs.
    """
    from uvicorn.logging import ColourizedFormatter

    uvicorn_handlers = logging.getLogger("uvicorn").handlers
    if logging.getLogger("app").handlers or not uvicorn_handlers:
        return False
    if not all(isinstance(handler.formatter, ColourizedFormatter) for handler in uvicorn_handlers):
        return False
    configure_logging(level)
    return True


class RequestIdMiddleware:
    """Takes the caller's X-Request-ID (or makes one), exposes it to the logs and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        rid = given if given.isprintable() and given else uuid.uuid4().hex
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
