"""Helpers the routers share: the collection-name path parameter, the relevance status, error locations."""

from collections.abc import Mapping, Sequence
from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Path, Request
from starlette.convertors import PathConvertor, register_url_convertor

from app.api.deps import EngineDep
from app.engine.collection import Collection
from app.engine.judgments import describe_adapter
from app.engine.relevance import CosineAdapter
from app.errors import InvalidInput
from app.schemas import COLLECTION_NAME_PATTERN, DocumentId, RelevanceStatus

CollectionName = Annotated[str, Path(pattern=COLLECTION_NAME_PATTERN, description="collection name")]


class AnyPathConvertor(PathConvertor):
    """Starlette's `path`, line breaks included: its ".*" stopped at one, and the route pattern's "$" matches
    before a final one, so `DELETE …/documents/x%0A` deleted document "x" (QA)."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", AnyPathConvertor())


async def _document_id(request: Request, doc_id: Annotated[DocumentId, Path(description="document id")]) -> str:
    """The id in the path, refused when its %-escapes are no UTF-8: the server decodes those to U+FFFD, so
    `caf%E8` reached the document "caf\ufffd" (QA)."""
    if "\ufffd" in doc_id:
        try:
            unquote_to_bytes(request.scope.get("raw_path", b"").decode("latin-1")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the document id in the path is not UTF-8 once its %-escapes are decoded",
                               [{"loc": ["path", "doc_id"]}]) from None
    return doc_id


PathDocumentId = Annotated[str, Depends(_document_id)]


def relevance_status(engine: EngineDep, name: str) -> RelevanceStatus:
    collection = engine.collection(name)
    adapter = engine.adapter_for(collection)
    if adapter is None:
        return RelevanceStatus(status="none")
    return RelevanceStatus(status=_status(engine, collection, adapter), **describe_adapter(adapter))


def adapter_status(engine: EngineDep, collection: Collection) -> str:
    """Which adapter serves the collection: "trained" (its own), "default", "fallback" (the model is not the one
    the default adapter was trained for, so only candidate statistics are read) or "none"."""
    adapter = engine.adapter_for(collection)
    return "none" if adapter is None else _status(engine, collection, adapter)


def _status(engine: EngineDep, collection: Collection, adapter: CosineAdapter) -> str:
    """The status of `adapter`, which serves the collection (see adapter_status)."""
    return "trained" if adapter is collection.adapter else "default" if adapter is engine.default_adapter \
        else "fallback"


def locate(error: InvalidInput, locations: Mapping[str, Sequence[str]]) -> InvalidInput:
    """Adds the request location of the engine field an error names (e.g. recall_target -> body.relevance...)."""
    if error.field is not None and error.field in locations:
        error.details = [{"loc": list(locations[error.field])}, *error.details]
    return error


async def known_query(request: Request) -> None:
    """A 422 for a query parameter the route does not take: `?limt=5` was read as no limit at all, silently (the
    fuzz test sent `?=null` to the listing and it answered 200). Elasticsearch refuses an unrecognised parameter
    alike. The route's own parameters, its dependencies' included."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    taken: set[str] = set()
    pending = [dependant]
    while pending:  # (FastAPI's own flattening helpers are internal, and were renamed between releases)
        current = pending.pop()
        taken.update(param.alias for param in current.query_params)
        pending.extend(current.dependencies)
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        raise InvalidInput(f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                           + (f"; this route takes {', '.join(sorted(taken))}" if taken else
                              "; this route takes none"),
                           [{"loc": ["query", name], "msg": "not a parameter of this route", "type": "extra_forbidden"}
                            for name in unknown])
