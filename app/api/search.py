"""Hybrid search."""

import time

from anyio import from_thread
from fastapi import APIRouter, Request, Response

from app.api.deps import ReadEngineDep
from app.api.errors import error_responses
from app.api.params import CollectionName, locate
from app.engine import slots
from app.errors import ClientGone, InvalidInput
from app.schemas import MAX_CANDIDATES
from app.schemas.search import FacetValue, Hit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"], responses=error_responses(401, 404, 422, 503))
# Where each engine query field comes from in the body, for the errors the engine raises about one.
_LOCATIONS = {"recall_target": ("body", "relevance", "recall_target"),
              "threshold": ("body", "relevance", "threshold")}


def _check_depth(body: SearchRequest) -> None:
    """API.md: `candidates` is "at least k + offset". One below it asked for a page the list cannot reach: it was
    answered empty, or short, with a 200 (QA). Left out, `candidates` is the default depth, and a page past the
    list's `total` is empty, as every page of a query is a slice of one list."""
    if body.candidates is not None and body.candidates < body.k + body.offset:
        raise InvalidInput(f"candidates ({body.candidates}) is below k + offset ({body.k + body.offset}): the page "
                           f"lies past the list it ranks. Send candidates of at least {body.k + body.offset} with "
                           "every page of this query (up to "
                           f"{MAX_CANDIDATES:,}), or leave it out for the default",
                           [{"loc": ["body", "candidates"], "msg": "must be at least k + offset",
                             "type": "value_error"}])


@router.post("/search", response_model=SearchResponse, responses=error_responses(413, 415))
def search(name: CollectionName, body: SearchRequest, engine: ReadEngineDep, request: Request) -> Response:
    start = time.perf_counter()

    def still_wanted() -> bool:  # a hop to the event loop: asked only of a search that has waited
        return not from_thread.run(request.is_disconnected)

    # A search that waited for a worker thread (every one busy: overload) first asks whether its client is still
    # there; the engine asks again while it waits for a search slot.
    if start - getattr(request.state, "arrived", start) > slots.STILL_WANTED_EVERY and not still_wanted():
        raise ClientGone("the client closed its connection before the search began")
    _check_depth(body)
    try:
        outcome = engine.search(name, body.to_engine(), still_wanted)
    except InvalidInput as exc:
        raise locate(exc, _LOCATIONS) from None
    # `explain`, `highlights` and `facets` appear only when asked for (API.md): left unset, they are not dumped.
    asked = {"explain": body.explain, "highlights": body.highlight is not None}
    hits = [Hit(id=h.row.id, score=h.score, relevance=h.relevance, title=h.row.title, text=h.row.text,
                metadata=h.row.metadata, **{field: getattr(h, field) for field, wanted in asked.items() if wanted})
            for h in outcome.hits]
    request.app.state.metrics.observe_search(name, outcome.total + outcome.filtered_out, outcome.filtered_out,
                                             len(hits))
    answer = SearchResponse(hits=hits, total=outcome.total, filtered_out=outcome.filtered_out,
                            took_ms=round((time.perf_counter() - start) * 1000, 3))
    if outcome.facets is not None:
        answer.facets = {key: [FacetValue(**value) for value in values] for key, values in outcome.facets.items()}
    # Serialised once, by pydantic: through response_model FastAPI would dump, re-validate and encode it again.
    return Response(answer.model_dump_json(exclude_unset=True), media_type="application/json")
