"""Dependencies shared by the routers: the engine, the settings and the API-key checks."""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.engine.engine import SearchEngine
from app.errors import Forbidden, NotReady, SearchServiceError, Unauthorized, UnsupportedMediaType
from app.settings import Settings

# Every dependency here is async: FastAPI runs a plain `def` dependency in its thread pool, a hop (and an
# event-loop wake-up) per dependency per request for work that takes microseconds.
_bearer = HTTPBearer(auto_error=False, description="API key (read or admin) when the service has keys configured")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> SearchEngine:
    engine: SearchEngine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        raise NotReady("the service is still loading its model and indexes")
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[SearchEngine, Depends(get_engine)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _matches(key: str, keys: list[str]) -> bool:
    # Constant-time comparison against every key, so timing reveals neither which key nor how much matched.
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def _key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("this service needs an API key: send 'Authorization: Bearer <key>'")
    return credentials.credentials


def _check_read(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if not settings.api_keys and not settings.admin_keys:
        return
    key = _key(credentials)
    if not (_matches(key, settings.api_keys) | _matches(key, settings.admin_keys)):
        raise Unauthorized("the API key is not valid")


async def require_read(settings: SettingsDep, credentials: Credentials) -> None:
    _check_read(settings, credentials)


def has_body(request: Request) -> bool:
    """Whether the request carries a body: a length above 0, or chunks."""
    length = request.headers.get("content-length")
    return (length is not None and length.strip() != "0") or "transfer-encoding" in request.headers


def refuse_untyped(request: Request, accepted: str) -> None:
    """415 for a body without a Content-Type. A browser sends such a POST from any site without asking the
    service first (a CORS "simple" request: `fetch(url, {method: "POST", mode: "no-cors", body: blob})`), so
    taking it as JSON let any page a user opened write to a service on their machine that has no keys (QA).
    Asking for a JSON type makes the browser ask first (a preflight), which SEARCH_CORS_ORIGINS answers."""
    if has_body(request) and not request.headers.get("content-type", "").strip():
        raise UnsupportedMediaType(f"a body needs its Content-Type: send {accepted}")


def _check_json(request: Request) -> None:
    """A JSON body's route refuses another content type as the documents route does (415), where FastAPI
    would answer that the body is missing (422)."""
    refuse_untyped(request, "application/json")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if has_body(request) and media != "application/json" and not media.endswith("+json"):
        # Not refused without a body: `curl -X PUT -d ''` says form-encoded of nothing.
        raise UnsupportedMediaType(f"content type {media!r} is not accepted: send application/json")


async def require_json(request: Request) -> None:
    _check_json(request)


async def read_engine(request: Request, credentials: Credentials) -> SearchEngine:
    """ReadAccess, JsonBody and EngineDep as one dependency, in their order (401 before 415 before 503), for the
    search route: fewer dependencies for FastAPI to solve there, ~60 µs less server CPU a search (measured)."""
    _check_read(request.app.state.settings, credentials)
    _check_json(request)
    return await get_engine(request)


async def require_admin(settings: SettingsDep, credentials: Credentials) -> None:
    if not settings.api_keys and not settings.admin_keys:
        return
    key = _key(credentials)
    if _matches(key, settings.admin_keys):
        return
    if _matches(key, settings.api_keys):
        raise Forbidden("this API key may read but not write; writes need an admin key")
    raise Unauthorized("the API key is not valid")


async def access_refusal(request: Request) -> SearchServiceError | None:
    """The 401 or 403 that the request's route would answer before anything else, or None. FastAPI parses a
    JSON body before it solves the route's dependencies, so a body that is not JSON (or not UTF-8) at all fails
    first: its 422 waits for this, and a caller the route refuses learns nothing of the body."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    calls = {dependency.call for dependency in getattr(dependant, "dependencies", [])}
    settings: Settings = request.app.state.settings
    try:
        if require_admin in calls:
            await require_admin(settings, await _bearer(request))
        elif calls & {require_read, read_engine}:
            _check_read(settings, await _bearer(request))
    except SearchServiceError as refusal:
        return refusal
    return None


ReadAccess = Depends(require_read)
ReadEngineDep = Annotated[SearchEngine, Depends(read_engine)]
AdminAccess = Depends(require_admin)
JsonBody = Depends(require_json)  # after the access check in a route's dependencies
