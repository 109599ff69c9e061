"""Collections: create (idempotent), list, describe, delete."""

from typing import Annotated

from fastapi import APIRouter, Body, Response, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import AdminAccess, EngineDep, JsonBody, ReadAccess
from app.api.errors import error_responses
from app.api.params import CollectionName, relevance_status
from app.engine.collection import Collection
from app.engine.encoders import recorded_encoder
from app.schemas.collections import (
    CollectionInfo,
    CollectionList,
    CollectionRequest,
    CollectionSettings,
    CollectionSummary,
    HnswTuning,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=error_responses(401, 422, 503))


@router.put("/{name}", status_code=status.HTTP_201_CREATED, response_model=CollectionInfo,
            responses={200: {"model": CollectionInfo, "description": "exists with the same settings"},
                       **error_responses(403, 409, 413, 415, 507)},
            dependencies=[AdminAccess, JsonBody])
async def create_collection(name: CollectionName, engine: EngineDep, response: Response,
                            body: Annotated[CollectionRequest | None, Body()] = None) -> CollectionInfo:
    body = body or CollectionRequest()
    # Only the fields given: the engine fills the others from the configured defaults (QA: from the built-in ones).
    hnsw = None if body.hnsw is None else body.hnsw.model_dump(exclude_unset=True)
    bm25 = None if body.bm25 is None else body.bm25.model_dump(exclude_unset=True)
    collection, created = await run_in_threadpool(engine.create_collection, name, hnsw, bm25)
    if not created:
        response.status_code = status.HTTP_200_OK
    return describe(engine, collection.name)


@router.get("", response_model=CollectionList, dependencies=[ReadAccess])
def list_collections(engine: EngineDep) -> CollectionList:
    return CollectionList(collections=[CollectionSummary(name=c.name, count=len(c.lexical))
                                       for c in engine.list_collections()])


@router.get("/{name}", response_model=CollectionInfo, dependencies=[ReadAccess], responses=error_responses(404))
def get_collection(name: CollectionName, engine: EngineDep) -> CollectionInfo:
    return describe(engine, name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[AdminAccess],
               responses=error_responses(403, 404, 507))
def delete_collection(name: CollectionName, engine: EngineDep) -> Response:
    engine.drop_collection(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def describe(engine: EngineDep, name: str) -> CollectionInfo:
    collection = engine.collection(name)
    return CollectionInfo(name=name, count=len(collection.lexical),
                          settings=CollectionSettings.from_engine(collection.settings),
                          dimension=collection.record.dimension, relevance=relevance_status(engine, name),
                          applied_seq=collection.applied_seq if engine.follower is not None else None,
                          hnsw_tuning=hnsw_tuning(collection),
                          encoder=recorded_encoder(collection.record.settings, engine.embedder.model_name).to_dict())


def hnsw_tuning(collection: Collection) -> HnswTuning:
    dense, target = collection.dense, collection.recall_target
    if collection.settings.hnsw.ef_search is not None:
        return HnswTuning(ef_search=dense.ef_search, source="explicit", recall_target=target)
    tuning, measuring = dense.tuning, collection.measuring
    if tuning is None:
        return HnswTuning(ef_search=dense.ef_search, source="untuned", recall_target=target, measuring=measuring)
    return HnswTuning(ef_search=tuning.ef_search, source="tuned", recall_target=tuning.target, recall=tuning.recall,
                      k=tuning.k, sample=tuning.sample, measured_at=tuning.measured_at, measuring=measuring)
