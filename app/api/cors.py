"""CORS for pages on the origins in SEARCH_CORS_ORIGINS: Starlette's middleware, its refusals in our error body."""

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from app.api.errors import error_response

_ADVICE = {
    "origin": "SEARCH_CORS_ORIGINS lists the origins that may call the API from a browser",
    "method": "the API's methods are GET, POST, PUT and DELETE",
    "headers": "a page may send Authorization, Content-Type and X-Request-ID (an API key goes in Authorization: "
               "Bearer)",
    "private-network": "this service does not answer Private Network Access preflights (a public page calling a "
                       "private address); serve the page from an origin on the same network",
}


class CorsMiddleware(CORSMiddleware):
    """Answers preflights for `origins`; allows the methods of the API and the Authorization, Content-Type and
    X-Request-ID headers, and lets the page read X-Request-ID, a training job's Location and a 503's Retry-After
    (a browser hides every other header of a cross-origin answer). A refused preflight gets 400 with the usual
    error body, which says what to change (Starlette's says what it refused, in plain text)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(app, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
                         allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                         expose_headers=["X-Request-ID", "Location", "Retry-After"], max_age=600)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        # Starlette names what it refused: the origin, the method and/or the headers; the advice follows it.
        advice = [_ADVICE[part] for part in refused.split(", ") if part in _ADVICE]
        refusal = error_response(400, "cors_refused", f"this cross-origin request is not allowed ({refused}); "
                                 + "; ".join(advice),
                                 [{"origin": request_headers.get("origin"), "refused": refused.split(", ")}])
        refusal.headers.update({k: v for k, v in response.headers.items() if k.lower() == "vary"})
        return refusal
