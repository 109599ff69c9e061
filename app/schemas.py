"""Request and response models of the HTTP contract (shared/API.md), with every bound on input."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StringConstraints, model_validator

MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 100_000
MAX_QUERY_CHARS = 2_048
MAX_METADATA_KEYS = 64
MAX_METADATA_LIST = 256
MAX_METADATA_STRING = 2_048
MAX_VECTOR_DIM = 4_096
MAX_K = 1_000
MAX_OFFSET = 10_000
MAX_CANDIDATES = 2_000
MAX_FILTER_VALUES = 1_024
MAX_TRAIN_EXAMPLES = 50_000
MAX_JUDGED_IDS = 1_000
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MetadataString = Annotated[str, StringConstraints(max_length=MAX_METADATA_STRING)]


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer: lax pydantic would also read true as 1 and "7" as 7; strict would refuse 7.0,
    # which JSON Schema counts as an integer. So: only JSON numbers, then pydantic's lax conversion.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    return value


JsonInteger = BeforeValidator(_json_integer)
# In an optional field, write the bounds before JsonInteger: after it they are lost from the JSON schema.
Int = Annotated[int, JsonInteger]
# Strict floats take ints and refuse true and "7" (and validate a vector 6x faster than a validator would).
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]
# bool first in the unions, so that true stays a boolean and never becomes 1.
MetadataValue = bool | Int | Number | MetadataString | Annotated[
    list[MetadataString], Field(max_length=MAX_METADATA_LIST)
]
Scalar = bool | Int | Number | MetadataString


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- collections --------------------------------------------------------------------------------


class HnswSettings(Strict):
    m: Int = Field(32, ge=2, le=128)
    ef_construction: Int = Field(200, ge=8, le=2_000)
    ef_search: Int = Field(512, ge=8, le=4_000)


class Bm25Settings(Strict):
    k1: Number = Field(0.9, ge=0.0, le=10.0)
    b: Number = Field(0.4, ge=0.0, le=1.0)


class CollectionSettings(Strict):
    hnsw: HnswSettings = HnswSettings()
    bm25: Bm25Settings = Bm25Settings()


class CollectionRequest(Strict):
    hnsw: HnswSettings | None = None
    bm25: Bm25Settings | None = None


class CollectionSummary(BaseModel):
    name: str
    count: int


class CollectionList(BaseModel):
    collections: list[CollectionSummary]


class CollectionInfo(BaseModel):
    name: str
    count: int
    settings: CollectionSettings
    dimension: int
    relevance: dict[str, Any]


# --- documents ----------------------------------------------------------------------------------


class Document(Strict):
    id: DocumentId
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=MAX_METADATA_KEYS)] = {}
    vector: Annotated[list[Number], Field(min_length=1, max_length=MAX_VECTOR_DIM)] | None = None


class DocumentBatch(Strict):
    documents: Annotated[list[Document], Field(min_length=1)]


class UpsertResult(BaseModel):
    upserted: int
    ids: list[str]


class StoredDocument(BaseModel):
    id: str
    text: str
    title: str | None = None
    metadata: dict[str, Any] = {}


# --- search -------------------------------------------------------------------------------------


class Fusion(Strict):
    method: Literal["convex", "rrf"] = "convex"
    alpha: Number | None = Field(None, ge=0.0, le=1.0, description="dense weight; default from settings")
    normalization: Literal["tm2c2", "minmax", "zscore"] | None = None
    rrf_k: Annotated[int, Field(ge=1, le=100_000), JsonInteger] | None = None


class RangeFilter(Strict):
    gt: Number | MetadataString | None = None
    gte: Number | MetadataString | None = None
    lt: Number | MetadataString | None = None
    lte: Number | MetadataString | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "RangeFilter":
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range filter needs at least one of gt, gte, lt, lte")
        return self


class InFilter(Strict):
    in_: Annotated[list[Scalar], Field(alias="in", min_length=1, max_length=MAX_FILTER_VALUES)]


FilterCondition = Scalar | InFilter | RangeFilter


class RelevanceOptions(Strict):
    enabled: bool = True
    threshold: Number | None = Field(None, ge=0.0, le=1.0,
                                     description="probability threshold; overrides recall_target when both are given")
    recall_target: Number | None = Field(None, gt=0.0, le=1.0,
                                         description="use the threshold calibrated for this recall instead")


class SearchRequest(Strict):
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
    k: Int = Field(10, ge=1, le=MAX_K)
    offset: Int = Field(0, ge=0, le=MAX_OFFSET)
    mode: Literal["hybrid", "lexical", "dense"] = "hybrid"
    fusion: Fusion = Fusion()
    candidates: Annotated[int, Field(ge=1, le=MAX_CANDIDATES), JsonInteger] | None = None
    filter: Annotated[dict[MetadataKey, FilterCondition], Field(max_length=MAX_METADATA_KEYS)] | None = None
    relevance: RelevanceOptions = RelevanceOptions()
    explain: bool = False


class Hit(BaseModel):
    id: str
    score: float
    relevance: float | None
    title: str | None = None
    text: str
    metadata: dict[str, Any] = {}
    explain: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[Hit]
    total: int
    filtered_out: int
    took_ms: float


# --- relevance ----------------------------------------------------------------------------------


class TrainingExample(Strict):
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
    relevant_ids: Annotated[list[DocumentId], Field(min_length=1, max_length=MAX_JUDGED_IDS)]
    irrelevant_ids: Annotated[list[DocumentId], Field(max_length=MAX_JUDGED_IDS)] = []


class TrainRequest(Strict):
    examples: Annotated[list[TrainingExample], Field(min_length=1, max_length=MAX_TRAIN_EXAMPLES)]
    recall_target: Number = Field(0.95, gt=0.0, le=1.0)
    family: Literal["hybrid", "linear", "power"] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any] = []


class ErrorBody(BaseModel):
    error: ErrorDetail
