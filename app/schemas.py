"""Request and response models of the HTTP contract (shared/API.md), with every bound on input."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.engine import types
from app.engine.facets import MAX_FACET_VALUES
from app.engine.fusion import Normalization
from app.engine.jobs import KEEP_FINISHED
from app.engine.lexical_scoring import MAX_QUERY_TERMS
from app.engine.relevance import DEFAULT_RECALL_TARGET, Family

MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 2_000
MAX_TEXT_CHARS = 100_000
MAX_QUERY_CHARS = 32_768  # a pasted paragraph or page; the encoder reads its window, BM25 its rarest terms
MAX_METADATA_KEYS = 64
MAX_METADATA_LIST = 256
MAX_METADATA_STRING = 2_048
MAX_VECTOR_DIM = 4_096
MAX_K = 1_000
MAX_OFFSET = 10_000
MAX_CANDIDATES = types.MAX_CANDIDATES
MAX_FILTER_VALUES = 1_024
MAX_TRAIN_EXAMPLES = 50_000
MAX_JUDGED_IDS = 1_000
MAX_FACET_FIELDS = 16
MAX_BOOSTS = 16
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_QUERY_DESCRIPTION = (
    f"up to {MAX_QUERY_CHARS:,} characters. The encoder reads the start of a long query, up to its own window "
    f"(256 word pieces for the bundled model), and BM25 scores with the query's distinct terms, each counted as "
    f"often as it occurs: its {MAX_QUERY_TERMS:,} rarest in the collection when it has more")

DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
# No NUL in a key: SQLite ends a JSON path at it, and a filter on such a key failed with a 500 (fuzz test).
METADATA_KEY_PATTERN = r"^[^\x00]+$"
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=METADATA_KEY_PATTERN)]
# pydantic checks a dict's keys but does not write their pattern into the JSON schema: say it there too.
_KEYS_DOCUMENTED = {"propertyNames": {"pattern": METADATA_KEY_PATTERN}}
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


_HNSW, _BM25 = types.HnswSettings(), types.Bm25Settings()  # the defaults, and bounds, are the engine's


class HnswSettings(Strict):
    m: Annotated[int, types.HNSW_M, JsonInteger] = _HNSW.m
    ef_construction: Annotated[int, types.HNSW_EF_CONSTRUCTION, JsonInteger] = _HNSW.ef_construction
    # null (the default): the collection tunes its own to the configured recall target (see `hnsw_tuning`)
    ef_search: Annotated[int, types.HNSW_EF_SEARCH, JsonInteger] | None = _HNSW.ef_search

    def to_engine(self) -> types.HnswSettings:
        return types.HnswSettings(self.m, self.ef_construction, self.ef_search)


class Bm25Settings(Strict):
    k1: Annotated[Number, types.BM25_K1] = _BM25.k1
    b: Annotated[Number, types.BM25_B] = _BM25.b

    def to_engine(self) -> types.Bm25Settings:
        return types.Bm25Settings(self.k1, self.b)


class CollectionSettings(Strict):
    hnsw: HnswSettings = HnswSettings()
    bm25: Bm25Settings = Bm25Settings()

    @classmethod
    def from_engine(cls, settings: types.CollectionSettings) -> "CollectionSettings":
        return cls.model_validate(settings.to_dict())


class CollectionRequest(Strict):
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
    relevance: dict[str, Any]
    applied_seq: int | None = Field(
        None, description="Replicas over PostgreSQL: every change to the store up to this sequence is in this "
                          "replica's indexes; null with the embedded store")
    hnsw_tuning: HnswTuning


# --- documents ----------------------------------------------------------------------------------


class Document(Strict):
    id: DocumentId
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue],
                        Field(max_length=MAX_METADATA_KEYS, json_schema_extra=_KEYS_DOCUMENTED)] = {}
    vector: Annotated[list[Number], Field(min_length=1, max_length=MAX_VECTOR_DIM)] | None = None

    def to_engine(self) -> types.DocumentInput:
        return types.DocumentInput(self.id, self.text, self.title, self.metadata, self.vector)


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
    method: types.FusionMethod | None = Field(
        None, description="convex or rrf; default: convex, or the fusion the collection's judgments fitted")
    alpha: Number | None = Field(None, ge=0.0, le=1.0, description="dense weight; default from settings")
    normalization: Normalization | None = None
    rrf_k: Annotated[int, Field(ge=1, le=100_000), JsonInteger] | None = None


class RangeFilter(Strict):
    # At least one bound, and no null ones, in the schema as in validation: a schema that allowed {} or
    # {"gt": null} would document as valid what the validator below refuses (the fuzz test found it).
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})
    gt: Number | MetadataString | SkipJsonSchema[None] = None
    gte: Number | MetadataString | SkipJsonSchema[None] = None
    lt: Number | MetadataString | SkipJsonSchema[None] = None
    lte: Number | MetadataString | SkipJsonSchema[None] = None

    @model_validator(mode="before")
    @classmethod
    def _no_null_bounds(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(value is None for value in data.values()):
            raise ValueError("a range bound must be a number or a string, not null")
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> "RangeFilter":
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("a range filter needs at least one of gt, gte, lt, lte")
        return self

    def to_engine(self) -> types.Range:
        return types.Range(self.gt, self.gte, self.lt, self.lte)


class InFilter(Strict):
    in_: Annotated[list[Scalar], Field(alias="in", min_length=1, max_length=MAX_FILTER_VALUES)]

    def to_engine(self) -> types.In:
        return types.In(tuple(self.in_))


FilterCondition = Scalar | InFilter | RangeFilter
Filter = Annotated[dict[MetadataKey, FilterCondition],
                   Field(max_length=MAX_METADATA_KEYS, json_schema_extra=_KEYS_DOCUMENTED)]


def _conditions(conditions: dict[str, FilterCondition]) -> dict[str, types.FilterCondition]:
    return {key: condition.to_engine() if isinstance(condition, InFilter | RangeFilter) else types.Equals(condition)
            for key, condition in conditions.items()}


_HIGHLIGHT = types.Highlight()


class HighlightOptions(Strict):
    fields: Annotated[list[types.HighlightField], Field(min_length=1, max_length=2)] = list(_HIGHLIGHT.fields)
    fragment_chars: Annotated[int, types.FRAGMENT_CHARS, JsonInteger] = Field(
        _HIGHLIGHT.fragment_chars, description="most characters of the original text a fragment shows, cut at "
        "word boundaries (the marks and the '… ' and ' …' around a fragment cut from a longer text come on top)")
    fragments: Annotated[int, types.FRAGMENTS, JsonInteger] = Field(
        _HIGHLIGHT.fragments, description="most fragments a field gets, best first (most distinct query terms, "
        "then most matched words, then earliest); a field with no matched word gets its leading fragment")

    def to_engine(self) -> types.Highlight:
        return types.Highlight(tuple(dict.fromkeys(self.fields)), self.fragment_chars, self.fragments)


class Boost(Strict):
    filter: Annotated[Filter, Field(min_length=1, description="as the search's `filter`")]
    weight: Annotated[Number, types.BOOST_WEIGHT] = Field(description=(
        "added to the score of each hit whose metadata matches the filter. Boosted, a score is the fused score "
        "on a [0, 1] scale plus the weights that match: convex scores as they are (tm2c2 and minmax lie in "
        "[0, 1], zscore's are in standard deviations), RRF's divided by the most a hit can get, 2 / (rrf_k + 1), "
        "so 1 means first in both lists; lexical-only and dense-only scores normalised by tm2c2 (the best "
        "candidate has 1). Boosts reorder the hits that pass the relevance filter; they never change a hit's "
        "relevance or which hits pass"))

    def to_engine(self) -> types.Boost:
        return types.Boost(_conditions(self.filter), self.weight)


class RelevanceOptions(Strict):
    enabled: bool = True
    threshold: Number | None = Field(None, ge=0.0, le=1.0,
                                     description="probability threshold; overrides recall_target when both are given")
    recall_target: Number | None = Field(None, gt=0.0, le=1.0,
                                         description="use the threshold calibrated for this recall instead")


class SearchRequest(Strict):
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS),
                     Field(description=_QUERY_DESCRIPTION)]
    k: Int = Field(10, ge=1, le=MAX_K)
    offset: Int = Field(0, ge=0, le=MAX_OFFSET)
    mode: types.Mode = "hybrid"
    fusion: Fusion = Fusion()
    candidates: Annotated[int, Field(ge=1, le=MAX_CANDIDATES), JsonInteger] | None = None
    filter: Filter | None = None
    relevance: RelevanceOptions = RelevanceOptions()
    explain: bool = Field(False, description=(
        "each hit then carries how it was scored; with boosts, `before_boost` (the fused score on the boosts' "
        "scale) and `boost` (the weights that matched), whose sum is the hit's score"))
    highlight: HighlightOptions | None = Field(None, description=(
        "each hit then carries `highlights`: fragments of the named fields with the query's terms, as BM25 "
        "analyses them, in <mark>; HTML-escaped outside the marks"))
    facets: Annotated[list[MetadataKey], Field(max_length=MAX_FACET_FIELDS, description=(
        f"metadata keys to count values of. The answer's `facets` then counts, for each key, the documents "
        f"carrying each value among all `total` hits: every candidate that passed the metadata filter and the "
        f"relevance filter (all pages, not only this one; not the candidates filtered out). A list counts each "
        f"of its elements. Most frequent first, ties by value; at most {MAX_FACET_VALUES} values a key"))] = []
    boosts: Annotated[list[Boost], Field(max_length=MAX_BOOSTS, description=(
        "favour hits whose metadata match a filter; see `weight`"))] = []

    def to_engine(self) -> types.SearchQuery:
        conditions = None if self.filter is None else _conditions(self.filter)
        fusion, relevance = self.fusion, self.relevance
        return types.SearchQuery(
            query=self.query, k=self.k, offset=self.offset, mode=self.mode, fusion_method=fusion.method,
            alpha=fusion.alpha, normalization=fusion.normalization, rrf_k=fusion.rrf_k, candidates=self.candidates,
            filter=conditions, relevance_enabled=relevance.enabled, threshold=relevance.threshold,
            recall_target=relevance.recall_target, explain=self.explain,
            highlight=None if self.highlight is None else self.highlight.to_engine(),
            facets=tuple(dict.fromkeys(self.facets)), boosts=tuple(b.to_engine() for b in self.boosts))


class Hit(BaseModel):
    id: str
    score: float
    relevance: float | None
    title: str | None = None
    text: str
    metadata: dict[str, Any] = {}
    explain: dict[str, Any] | None = None
    highlights: dict[types.HighlightField, list[str]] | None = Field(None, description=(
        "when asked for: fragments of each highlighted field that has text, best first, the query's terms in "
        "<mark> and everything else HTML-escaped, so a page may insert them as HTML"))


class FacetValue(BaseModel):
    value: bool | int | float | str
    count: int = Field(ge=1, description="hits (documents) carrying the value")


class SearchResponse(BaseModel):
    hits: list[Hit]
    total: int
    filtered_out: int
    took_ms: float
    facets: dict[str, list[FacetValue]] | None = Field(None, description=(
        f"when asked for: for each requested key, its values among all `total` hits (every candidate that passed "
        f"the metadata and relevance filters, on every page) with the number of those hits carrying each; a "
        f"list-valued field counts each element. Most frequent first, ties by value, at most {MAX_FACET_VALUES}"))


# --- relevance ----------------------------------------------------------------------------------


class TrainingExample(Strict):
    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS),
                     Field(description=_QUERY_DESCRIPTION)]
    relevant_ids: Annotated[list[DocumentId], Field(min_length=1, max_length=MAX_JUDGED_IDS)]
    irrelevant_ids: Annotated[list[DocumentId], Field(max_length=MAX_JUDGED_IDS)] = []

    def to_engine(self) -> types.TrainingExample:
        return types.TrainingExample(self.query, tuple(self.relevant_ids), tuple(self.irrelevant_ids))


class TrainRequest(Strict):
    examples: Annotated[list[TrainingExample], Field(min_length=1, max_length=MAX_TRAIN_EXAMPLES)]
    recall_target: Number = Field(DEFAULT_RECALL_TARGET, gt=0.0, le=1.0)
    family: Family | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any] = []


class ErrorBody(BaseModel):
    error: ErrorDetail


class TrainJob(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": (
        "A relevance training job. Jobs live in the server's memory: a restart forgets them (a training cut short "
        f"leaves the adapter it would have replaced), and only the last {KEEP_FINISHED} finished ones are kept.")})

    job: str = Field(description="the job's id")
    status: Literal["running", "done", "failed"]
    progress: float = Field(ge=0.0, le=1.0, description="fraction done, at coarse steps; 1.0 once done")
    examples: int = Field(description="judged queries posted")
    started_at: float = Field(description="Unix time")
    finished_at: float | None = Field(None, description="Unix time")
    result: dict[str, Any] | None = Field(
        None, description="once done: what a waited-for training answers (held-out metrics and the threshold)")
    error: ErrorDetail | None = Field(
        None, description="once failed: why (the error a waited-for training would answer); adapter unchanged")
