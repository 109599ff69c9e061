"""The search page: static files under /ui/ (mounted in create_app), and / sends a browser there."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

PAGE_DIR = Path(__file__).resolve().parent.parent / "ui"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("ui/")  # relative: still right behind a proxy that adds a prefix


# The page inserts the service's highlights as HTML (escaped there, <mark> only). Defence in depth should that
# escaping ever fail: no script but the page's own file runs, nothing is fetched from elsewhere, and no other
# site may frame the page. `data:` images for its empty favicon.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class PageFiles(StaticFiles):
    """The page's files, revalidated on every load (ETag): a new version of the service never meets old script;
    with PAGE_HEADERS."""

    def __init__(self) -> None:
        super().__init__(directory=PAGE_DIR, html=True)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(PAGE_HEADERS)
        return response
