"""The search request and response (POST /v1/collections/{name}/search): filters, fusion, highlights, facets,
boosts and the relevance filter's options."""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool, Tag, model_validator

from app.engine import types
from app.engine.facets import MAX_FACET_VALUES
from app.engine.fusion import Normalization
from app.engine.highlight import ANALYSED_CHARS
from app.schemas import (
    KEYS_DOCUMENTED,
    MAX_BOOSTS,
    MAX_CANDIDATES,
    MAX_FACET_FIELDS,
    MAX_FILTER_VALUES,
    MAX_K,
    MAX_METADATA_KEYS,
    MAX_OFFSET,
    Bound,
    Int,
    JsonInteger,
    MetadataKey,
    Number,
    Options,
    QueryText,
    Scalar,
    Strict,
)


class Fusion(Options):
    method: types.FusionMethod | None = Field(
        None, description="convex or rrf; default: convex, or the fusion the collection's judgments fitted")
    alpha: Number | None = Field(None, ge=0.0, le=1.0, description="dense weight; default from settings")
    normalization: Normalization | None = None
    rrf_k: Annotated[int, Field(ge=1, le=100_000), JsonInteger] | None = None


class RangeFilter(Strict):
    # At least one bound, and no null ones, in the schema as in validation: a schema that allowed {} or
    # {"gt": null} would document as valid what the validator below refuses (the fuzz test found it).
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})
    gt: Bound = None
    gte: Bound = None
    lt: Bound = None
    lte: Bound = None

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


def _condition_kind(value: Any) -> str:
    """Which form of filter condition a value is, so that a wrong one gets that form's errors alone: as a plain
    union, `{}` got the four scalar types' errors ("should be a valid boolean", ...) before the range's own."""
    if isinstance(value, InFilter) or (isinstance(value, dict) and "in" in value):
        return "in"
    return "range" if isinstance(value, RangeFilter | dict) else "value"


def _filter_value(value: Any) -> Any:
    if isinstance(value, list):
        raise ValueError('a filter value is a string, a number or a boolean; to match any of several, write '
                         '{"in": [...]}')
    return value


FilterCondition = Annotated[
    Annotated[Scalar, BeforeValidator(_filter_value), Tag("value")] | Annotated[InFilter, Tag("in")]
    | Annotated[RangeFilter, Tag("range")],
    Discriminator(_condition_kind)]
Filter = Annotated[dict[MetadataKey, FilterCondition],
                   Field(max_length=MAX_METADATA_KEYS, json_schema_extra=KEYS_DOCUMENTED)]


def _conditions(conditions: dict[str, FilterCondition]) -> dict[str, types.FilterCondition]:
    return {key: condition.to_engine() if isinstance(condition, InFilter | RangeFilter) else types.Equals(condition)
            for key, condition in conditions.items()}


_HIGHLIGHT = types.Highlight()


class HighlightOptions(Options):
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


class RelevanceOptions(Options):
    enabled: StrictBool = True  # "false" or 0 is a 422, as "5" is for k: a typo must not flip the filter
    threshold: Number | None = Field(None, ge=0.0, le=1.0,
                                     description="probability threshold; overrides recall_target when both are given")
    recall_target: Number | None = Field(None, gt=0.0, le=1.0, description=(
        "use the threshold calibrated for this recall instead: the adapter's next calibrated target at or above "
        "it (GET …/relevance lists them); above the highest, every candidate is kept"))


class SearchRequest(Options):
    query: QueryText
    k: Int = Field(10, ge=1, le=MAX_K)
    offset: Int = Field(0, ge=0, le=MAX_OFFSET)
    mode: types.Mode = "hybrid"
    fusion: Fusion = Fusion()
    candidates: Annotated[int, Field(ge=1, le=MAX_CANDIDATES, description=(
        "how deep each retriever goes before fusion (default 100); when given, at least k + offset (else 422). "
        "Every page of a query with the same candidates and k is a slice of one list of `total` hits, so a page "
        "past `total` is empty; to page further, ask for more candidates on every page")), JsonInteger] | None = None
    filter: Filter | None = None
    relevance: RelevanceOptions = RelevanceOptions()
    explain: StrictBool = Field(False, description=(
        "each hit then carries how it was scored; with boosts, `before_boost` (the fused score on the boosts' "
        "scale) and `boost` (the weights that matched), whose sum is the hit's score"))
    highlight: HighlightOptions | None = Field(None, description=(
        "each hit then carries `highlights`: fragments of the named fields with the query's terms, as BM25 "
        f"analyses them, in <mark>; HTML-escaped outside the marks. Terms are looked for in a field's first "
        f"{ANALYSED_CHARS:,} characters"))
    facets: Annotated[list[MetadataKey], Field(max_length=MAX_FACET_FIELDS, description=(
        f"metadata keys to count values of. The answer's `facets` then counts, for each key, the documents "
        f"carrying each value among all `total` hits: every candidate that passed the metadata filter and the "
        f"relevance filter (all pages, not only this one; not the candidates filtered out). A list counts each "
        f"of its elements. Most frequent first, ties by value; at most {MAX_FACET_VALUES} values a key"))] = []
    boosts: Annotated[list[Boost], Field(max_length=MAX_BOOSTS, description=(
        "favour hits whose metadata match a filter; see `weight`"))] = []
    prefix: StrictBool = Field(False, description=(
        f"search as you type: when the query ends in a word (no space or punctuation after it) in fewer documents "
        f"than `candidates`, BM25 also reads the {types.PREFIX_COMPLETIONS} terms of the collection that word "
        f"begins that are in the most documents, so \"vitam\" finds \"vitamin\" (and highlights it), and first the "
        f"stems the word may have with an English ending (\"runni\": \"run\")"))

    def to_engine(self) -> types.SearchQuery:
        conditions = None if self.filter is None else _conditions(self.filter)
        fusion, relevance = self.fusion, self.relevance
        return types.SearchQuery(
            query=self.query, k=self.k, offset=self.offset, mode=self.mode, fusion_method=fusion.method,
            alpha=fusion.alpha, normalization=fusion.normalization, rrf_k=fusion.rrf_k, candidates=self.candidates,
            filter=conditions, relevance_enabled=relevance.enabled, threshold=relevance.threshold,
            recall_target=relevance.recall_target, explain=self.explain,
            highlight=None if self.highlight is None else self.highlight.to_engine(),
            facets=tuple(dict.fromkeys(self.facets)), boosts=tuple(b.to_engine() for b in self.boosts),
            prefix=self.prefix)


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
