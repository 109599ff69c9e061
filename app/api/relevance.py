"""The Cosine Adapter relevance filter of a collection: train it from judgments, inspect it."""

from typing import Any

from fastapi import APIRouter

from app.api.deps import AdminAccess, EngineDep, ReadAccess
from app.api.errors import error_responses
from app.api.params import CollectionName, relevance_status
from app.engine.judgments import describe_adapter
from app.schemas import TrainRequest

router = APIRouter(prefix="/v1/collections/{name}/relevance", tags=["relevance"],
                   responses=error_responses(401, 404, 422, 503))


@router.post("/train", dependencies=[AdminAccess], responses=error_responses(403),
             summary="Fit the collection's adapter; report held-out metrics and the threshold chosen")
def train(name: CollectionName, body: TrainRequest, engine: EngineDep) -> dict[str, Any]:
    adapter = engine.train_relevance(name, [example.to_engine() for example in body.examples], body.recall_target,
                                     body.family)
    return {"status": "trained", **describe_adapter(adapter)}


@router.get("", dependencies=[ReadAccess], summary="The adapter in use (default or trained)")
def get_relevance(name: CollectionName, engine: EngineDep) -> dict[str, Any]:
    return relevance_status(engine, name)
