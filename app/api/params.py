"""Helpers the routers share: the collection-name path parameter, the relevance status, error locations."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import Path

from app.api.deps import EngineDep
from app.engine.collection import Collection
from app.engine.judgments import describe_adapter
from app.engine.relevance import CosineAdapter
from app.errors import InvalidInput
from app.schemas import COLLECTION_NAME_PATTERN

CollectionName = Annotated[str, Path(pattern=COLLECTION_NAME_PATTERN, description="collection name")]


def relevance_status(engine: EngineDep, name: str) -> dict[str, Any]:
    collection = engine.collection(name)
    adapter = engine.adapter_for(collection)
    if adapter is None:
        return {"status": "none", "threshold": None, "metrics": {}}
    return {"status": _status(engine, collection, adapter), **describe_adapter(adapter)}


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
