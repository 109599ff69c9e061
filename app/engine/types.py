"""The engine's own plain types and the one home of its defaults; the HTTP models and the settings map onto them."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, ClassVar, Literal, get_args

from annotated_types import Ge, Interval, Le

from app.engine.fusion import Normalization

Mode = Literal["hybrid", "lexical", "dense"]
FusionMethod = Literal["convex", "rrf"]
NORMALIZATIONS: tuple[Normalization, ...] = get_args(Normalization)

# Ranges of the index and fusion parameters, as annotated-types constraints: pydantic enforces them where these
# types are validated (the settings; the HTTP models reuse them), while the engine itself needs no pydantic.
HNSW_M = Interval(ge=2, le=128)
HNSW_EF_CONSTRUCTION = Interval(ge=8, le=2_000)
HNSW_EF_SEARCH = Interval(ge=8, le=4_000)
BM25_K1 = Interval(ge=0.0, le=10.0)
BM25_B = Interval(ge=0.0, le=1.0)
ALPHA = Interval(ge=0.0, le=1.0)
MAX_CANDIDATES = 2_000
# A search with `prefix` reads this many completions of its last word (Lucene's prefix queries expand to 50;
# here each is a BM25 term of its own, so fewer).
PREFIX_COMPLETIONS = 16
FRAGMENT_CHARS = Interval(ge=20, le=1_000)
FRAGMENTS = Interval(ge=1, le=10)
BOOST_WEIGHT = Interval(ge=-1.0, le=1.0)

# Read by pydantic when it validates these dataclasses (in the settings): unknown keys are an error.
_FORBID_EXTRA: dict[str, Any] = {"extra": "forbid"}


# Self-tuned ef_search (app/engine/hnsw_tuning.py): the smallest ef whose recall@10 of probe queries made of the
# collection's vectors, against exact search, meets this target; until a collection is first measured, ef_search is
# EF_SEARCH_UNTUNED (the fixed value of earlier versions, chosen for the benchmark corpus's near-ties).
HNSW_RECALL_TARGET = 0.95
EF_SEARCH_UNTUNED = 512


@dataclass(frozen=True)
class HnswSettings:
    """HNSW graph parameters. At 100K benchmark documents (real MiniLM vectors + noise-derived ones) recall@10
    against exact search was 0.72 at m 16 / ef 128 and 0.97 at m 32 / ef 512, for ~0.8 ms more a query (the
    encoder takes ~17 ms). `ef_search` None (the default): each collection tunes its own to HNSW_RECALL_TARGET;
    a number: that ef, always."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA
    m: Annotated[int, HNSW_M] = 32
    ef_construction: Annotated[int, HNSW_EF_CONSTRUCTION] = 200
    ef_search: Annotated[int, HNSW_EF_SEARCH] | None = None


@dataclass(frozen=True)
class Bm25Settings:
    """Okapi BM25 parameters, chosen by leave-one-domain-out runs over the four shared collections (README,
    "How the defaults were chosen"): k1 1.2 / b 0.75 (Lucene's) is within 0.004 mean nDCG@10 of the grid's best
    on all four, where SciFact's old 0.9 / 0.4 lost 0.02 on CISI and CACM."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA
    k1: Annotated[float, BM25_K1] = 1.2
    b: Annotated[float, BM25_B] = 0.75


@dataclass(frozen=True)
class CollectionSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA
    hnsw: HnswSettings = HnswSettings()
    bm25: Bm25Settings = Bm25Settings()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the store keeps and snapshots compare."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CollectionSettings":
        hnsw, bm25 = data["hnsw"], data["bm25"]
        ef_search = hnsw.get("ef_search")  # None: self-tuned
        return cls(HnswSettings(int(hnsw["m"]), int(hnsw["ef_construction"]),
                                None if ef_search is None else int(ef_search)),
                   Bm25Settings(float(bm25["k1"]), float(bm25["b"])))


@dataclass(frozen=True)
class SearchDefaults:
    """Fusion defaults applied when a search leaves them out: convex tm2c2 with dense weight 0.8, the pick of
    three of the four leave-one-domain-out runs over the shared collections (README)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _FORBID_EXTRA
    method: FusionMethod = "convex"
    alpha: Annotated[float, ALPHA] = 0.8
    normalization: Normalization = "tm2c2"
    rrf_k: Annotated[int, Ge(1)] = 60
    candidates: Annotated[int, Ge(1), Le(MAX_CANDIDATES)] = 100


# --- filters: every condition on one metadata key must hold ------------------------------------

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Equals:
    """The key's value (or, for a list, one of its elements) equals `value`."""

    value: Scalar


@dataclass(frozen=True)
class In:
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    """Numbers compare with numbers, strings with strings; None: no bound on that side."""

    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None


FilterCondition = Equals | In | Range


# --- what a search may ask for besides its hits ---------------------------------------------

HighlightField = Literal["title", "text"]


@dataclass(frozen=True)
class Highlight:
    """Which fields of each hit to highlight, how long a fragment may be (characters of the original text) and
    how many fragments a field may get."""

    fields: tuple[HighlightField, ...] = ("title", "text")
    fragment_chars: Annotated[int, FRAGMENT_CHARS] = 160
    fragments: Annotated[int, FRAGMENTS] = 2


@dataclass(frozen=True)
class Boost:
    """Adds `weight` to the (normalised) fused score of every candidate whose metadata matches `filter`."""

    filter: Mapping[str, FilterCondition]
    weight: float


# --- queries and writes -------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchQuery:
    """One search. None means "the engine's default" (SearchDefaults) for the fusion and depth fields, and
    "the adapter's calibrated threshold" for threshold and recall_target."""

    query: str
    k: int
    offset: int
    mode: Mode
    fusion_method: FusionMethod | None = None
    alpha: float | None = None
    normalization: Normalization | None = None
    rrf_k: int | None = None
    candidates: int | None = None
    filter: Mapping[str, FilterCondition] | None = None
    relevance_enabled: bool = True
    threshold: float | None = None
    recall_target: float | None = None
    explain: bool = False
    highlight: Highlight | None = None
    facets: tuple[str, ...] = ()
    boosts: tuple[Boost, ...] = ()
    prefix: bool = False  # the query's last word may be a word being typed (PREFIX_COMPLETIONS)


@dataclass(frozen=True)
class DocumentInput:
    """A document to upsert; without a vector the engine encodes title and text."""

    id: str
    text: str
    title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    vector: Sequence[float] | None = None


@dataclass(frozen=True)
class TrainingExample:
    """A judged query: ids of documents relevant to it and, optionally, ids judged irrelevant."""

    query: str
    relevant_ids: Sequence[str]
    irrelevant_ids: Sequence[str] = ()
