"""Request and response models of the collections routes."""

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.engine import types
from app.schemas import JsonInteger, Number, Options, RelevanceStatus

_HNSW, _BM25 = types.HnswSettings(), types.Bm25Settings()  # the defaults, and bounds, are the engine's


class HnswSettings(Options):
    m: Annotated[int, types.HNSW_M, JsonInteger] = _HNSW.m
    ef_construction: Annotated[int, types.HNSW_EF_CONSTRUCTION, JsonInteger] = _HNSW.ef_construction
    # null (the default): the collection tunes its own to the configured recall target (see `hnsw_tuning`)
    ef_search: Annotated[int, types.HNSW_EF_SEARCH, JsonInteger] | None = _HNSW.ef_search


class Bm25Settings(Options):
    k1: Annotated[Number, types.BM25_K1] = _BM25.k1
    b: Annotated[Number, types.BM25_B] = _BM25.b


class CollectionSettings(Options):
    hnsw: HnswSettings = HnswSettings()
    bm25: Bm25Settings = Bm25Settings()

    @classmethod
    def from_engine(cls, settings: types.CollectionSettings) -> "CollectionSettings":
        return cls.model_validate(settings.to_dict())


class CollectionRequest(Options):
    hnsw: HnswSettings | None = None
    bm25: Bm25Settings | None = None


class CollectionSummary(BaseModel):
    name: str
    count: int


class CollectionList(BaseModel):
    collections: list[CollectionSummary]


class HnswTuning(BaseModel):
    """The ef_search in use and where it comes from: `explicit` (the collection's settings), `tuned` (the smallest
    ef whose measured recall@k meets the target) or `untuned` (not yet measured: too few vectors, or the first
    measurement still running)."""

    ef_search: int
    source: Literal["explicit", "tuned", "untuned"]
    recall_target: float
    recall: float | None = Field(None, description="recall@k measured at ef_search (tuned only)")
    k: int | None = None
    sample: int | None = Field(None, description="probe queries, each a mix of 4 of the collection's vectors")
    measured_at: int | None = Field(None, description="vectors in the graph when measured; re-measured at twice that")
    measuring: bool = Field(False, description="a measurement is running in the background")


class CollectionInfo(BaseModel):
    name: str
    count: int
    settings: CollectionSettings
    dimension: int
    relevance: RelevanceStatus
    applied_seq: int | None = Field(
        None, description="Replicas over PostgreSQL: every change to the store up to this sequence is in this "
                          "replica's indexes; null with the embedded store")
    hnsw_tuning: HnswTuning
    encoder: dict[str, str] = Field(description=(
        "the encoder that made the collection's vectors (model and backend); a service with another one refuses "
        "to start until `python -m app reencode` moves it"))
