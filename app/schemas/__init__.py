"""Request and response models of the HTTP contract (shared/API.md), with every bound on input: the types they
share and the collections, documents, relevance and error models here, the search ones in app/schemas/search.py."""

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from app.engine import types
from app.engine.job_board import BOARD_RETENTION_DAYS
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
QUERY_DESCRIPTION = (
    f"up to {MAX_QUERY_CHARS:,} characters, not all of them blank. The encoder reads the start of a long query, "
    f"up to its own window (256 word pieces for the bundled model), and BM25 scores with the query's distinct "
    f"terms, each counted as often as it occurs: its {MAX_QUERY_TERMS:,} rarest in the collection when it has more")
# A blank query used to pass (only "" was refused) and, unfiltered, return arbitrary documents.
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S"),
                      Field(description=QUERY_DESCRIPTION)]

# No NUL in anything stored: PostgreSQL's text cannot hold it (over it such a batch was a 422 quoting COPY's
# error, where SQLite took it), and SQLite ends a JSON path at it (a filter on such a key failed with a 500).
NO_NUL = r"^[^\x00]*$"
DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _addressable(doc_id: str) -> str:
    """An id stored from now on is one every HTTP client can name in a URL. Curl, httpx and browsers resolve "."
    and ".." path segments before sending: `DELETE …/documents/..` went out as `DELETE /v1/collections/NAME/`,
    which deleted the whole collection (QA), and "./a" named document "a". Nor may it hold a control character
    or be blank: "d1\r" from a file with Windows line ends, or a tab from a spreadsheet, was stored as another
    document than the "d1" every later request named, and an empty field as " " (QA)."""
    if any(segment in (".", "..") for segment in doc_id.split("/")):
        raise ValueError("an id with '.' or '..' between its slashes cannot be named in a URL: HTTP clients take "
                         "it as a step along the path (a DELETE of document '..' would reach the collection)")
    control = _CONTROL.search(doc_id)
    if control is not None:
        raise ValueError(f"an id may not hold a control character: U+{ord(control.group()):04X} at {control.start()} "
                         "(a line end or tab carried over from the source?)")
    if not doc_id.strip():
        raise ValueError("an id may not be blank")
    return doc_id


# What `_addressable` refuses, said in the JSON schema (it raises its own messages, which name the character and
# where it is): no control character, something that is not a space; "." and ".." segments are in the description.
_NEW_ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
NewDocumentId = Annotated[DocumentId, AfterValidator(_addressable), Field(
    json_schema_extra={"pattern": _NEW_ID_PATTERN},
    description="1-512 characters, not blank, no control characters, and no '.' or '..' between slashes (HTTP "
                "clients resolve those as steps along a URL's path)")]
METADATA_KEY_PATTERN = r"^[^\x00]+$"
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=METADATA_KEY_PATTERN)]
# pydantic checks a dict's keys but does not write their pattern into the JSON schema: say it there too.
KEYS_DOCUMENTED = {"propertyNames": {"pattern": METADATA_KEY_PATTERN}}
MetadataString = Annotated[str, StringConstraints(max_length=MAX_METADATA_STRING, pattern=NO_NUL)]


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


def _int64(value: Any) -> Any:
    # Both stores keep 64-bit integers (SQLite's INTEGER); a larger one failed deep in a filter with a 500.
    # Refused here rather than read as a float, which the union below would otherwise do without a word.
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ValueError("integers must fit in 64 bits (up to 9223372036854775807); send a larger one as a float")
    return value


def _string(value: Any) -> Any:
    # A string over the bounds fails only its union's string branch, but the union reported every branch ("should
    # be a valid boolean", "must be a JSON integer", "should be a valid number", then the length): one message.
    if isinstance(value, str) and len(value) > MAX_METADATA_STRING:
        raise ValueError(f"a metadata string is at most {MAX_METADATA_STRING} characters, got {len(value)}")
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("a metadata string cannot hold the NUL character")
    return value


def _scalar(value: Any) -> Any:
    """What every metadata or filter scalar is checked for before its union: one message for what it would fail
    (each branch's own, at a location naming pydantic's union members, told a client nothing it could act on; QA)."""
    if value is None or isinstance(value, dict | list):
        raise ValueError(f"a value here is a string, a number or a boolean, not {_json_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number must be finite: JSON has no NaN or Infinity, and 1e400 is beyond a double")
    return _string(_int64(value))


def _json_kind(value: Any) -> str:
    """A JSON value's kind, as the messages below name it."""
    return "null" if value is None else "a boolean" if isinstance(value, bool) else "an object" if isinstance(
        value, dict) else "an array" if isinstance(value, list) else type(value).__name__


def _metadata_value(value: Any) -> Any:
    # One message for a value of no allowed kind: the union below reported each of its branches' (a nested
    # object got "should be a valid boolean", then integer, number, string and list), and a loader showed the first.
    if value is None or isinstance(value, dict) or (
            isinstance(value, list) and not all(isinstance(item, str) for item in value)):
        kind = "a list of other than strings" if isinstance(value, list) else _json_kind(value)
        raise ValueError(f"a metadata value is a string, a number, a boolean or a list of strings, not {kind}")
    if isinstance(value, list) and len(value) > MAX_METADATA_LIST:  # else each branch of the union reported (QA)
        raise ValueError(f"a metadata list holds at most {MAX_METADATA_LIST} strings, got {len(value)}")
    for item in value if isinstance(value, list) else [value]:
        _scalar(item)
    return value


# bool first in the unions, so that true stays a boolean and never becomes 1.
MetadataValue = Annotated[bool | Int | Number | MetadataString | Annotated[
    list[MetadataString], Field(max_length=MAX_METADATA_LIST)
], BeforeValidator(_metadata_value)]
Scalar = Annotated[bool | Int | Number | MetadataString, BeforeValidator(_scalar)]


def _bound(value: Any) -> Any:
    # One message for a bound of no allowed kind, rather than each branch's of the union below.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a range bound is a number or a string, not {_json_kind(value)}")
    return _scalar(value)


# A range bound, or none given: an integer stays one (read as a float, 2**53 + 1 became 2**53 and matched it);
# strings compare with strings. No booleans. Checked before the union with None (a null bound is refused by the
# range itself): inside it, a bad bound also got that branch's "Input should be None", at a location naming
# pydantic's union.
Bound = Annotated[Int | Number | MetadataString | SkipJsonSchema[None], BeforeValidator(_bound)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _nullable_options(schema: dict[str, Any]) -> None:
    """The OpenAPI document says what Options accepts: null for every field that may be left out."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        if name in required or any(v.get("type") == "null" for v in prop.get("anyOf", [prop])):
            continue
        outer = {key: prop.pop(key) for key in ("title", "description", "default") if key in prop}
        schema["properties"][name] = {"anyOf": [prop, {"type": "null"}], **outer}


class Options(Strict):
    """A request's options: a JSON null means the field's default, as leaving the field out does (clients
    generated from the OpenAPI document send null for what they leave unset)."""

    model_config = ConfigDict(json_schema_extra=_nullable_options)  # merged with Strict's

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        return {key: value for key, value in data.items() if value is not None} if isinstance(data, dict) else data


# --- documents ----------------------------------------------------------------------------------


class Document(Strict):
    id: NewDocumentId
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS, pattern=NO_NUL)]
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS, pattern=NO_NUL)] | None = None
    # null is no metadata, as a null title or vector is none (it was a 422 where those passed; QA)
    metadata: Annotated[dict[MetadataKey, MetadataValue],
                        Field(max_length=MAX_METADATA_KEYS, json_schema_extra=KEYS_DOCUMENTED)] | None = None
    vector: Annotated[list[Number], Field(min_length=1, max_length=MAX_VECTOR_DIM)] | None = None

    def to_engine(self) -> types.DocumentInput:
        return types.DocumentInput(self.id, self.text, self.title, self.metadata or {}, self.vector)


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


MAX_LISTED = 1_000
MAX_DELETED = 10_000


class DeleteRequest(Strict):
    # At most MAX_DELETED: more is a 413 "split it", as a document batch over its limit is (API.md), checked in the
    # route; as a schema bound it was a 422, which a client that halves a batch on 413 did not split (QA).
    ids: Annotated[list[DocumentId], Field(min_length=1, json_schema_extra={"maxItems": MAX_DELETED})]


class DeleteResult(BaseModel):
    deleted: int
    ids: list[str] = Field(description="the ids deleted, in the order asked (each once)")
    missing: list[str] = Field(description="the ids asked for that the collection did not hold")


class ListedDocument(StoredDocument):
    vector: list[float] | None = Field(None, description="the stored unit vector, when asked for (`vectors`)")


class DocumentPage(BaseModel):
    documents: list[ListedDocument]
    next: str | None = Field(description=(
        "the `after` of the next page: the last id of this one while it is full, null at the end"))


# --- relevance ----------------------------------------------------------------------------------


class TrainingExample(Options):
    query: QueryText
    # Empty: a query with nothing relevant in the collection (every candidate is then a negative), what the
    # filter exists for. Training needs 5 queries with a relevant candidate.
    relevant_ids: Annotated[list[DocumentId], Field(max_length=MAX_JUDGED_IDS)]
    irrelevant_ids: Annotated[list[DocumentId], Field(max_length=MAX_JUDGED_IDS)] = []

    @model_validator(mode="after")
    def _judged_once(self) -> "TrainingExample":
        both = sorted(set(self.relevant_ids) & set(self.irrelevant_ids))
        if both:
            raise ValueError(f"judged both relevant and irrelevant: {both[:5]}")
        return self

    def to_engine(self) -> types.TrainingExample:
        return types.TrainingExample(self.query, tuple(self.relevant_ids), tuple(self.irrelevant_ids))


class TrainRequest(Options):
    examples: Annotated[list[TrainingExample], Field(min_length=1, max_length=MAX_TRAIN_EXAMPLES)]
    recall_target: Number = Field(DEFAULT_RECALL_TARGET, gt=0.0, le=1.0)
    family: Family | None = None


class RelevanceStatus(BaseModel):
    """The adapter a collection's searches use (`GET …/relevance`), and what a training answers."""

    status: Literal["trained", "default", "fallback", "none"] = Field(description=(
        "`trained`: the collection's own; `default`: the shipped one; `fallback`: the shipped one that reads only "
        "candidate scores (the collection's encoder is not the one the default was fitted on); `none`: no filter"))
    family: str | None = Field(None, description="the map's family (null with no filter)")
    dimension: int | None = Field(None, description="the query embedding's dimension it reads")
    inputs: list[str] = Field([], description="what its network reads: the query embedding and/or statistics "
                                              "of the query's candidate list")
    cosine_scale: str | None = Field(None, description="how its map reads a candidate's cosine: `minmax` "
                                                       "(scaled over the query's top-100) or `raw`")
    threshold: float | None = Field(None, description="the global probability threshold in use")
    recall_target: float | None = Field(None, description="the recall the threshold was chosen for")
    thresholds: dict[str, float] = Field({}, description="the threshold calibrated for each recall target")
    metrics: dict[str, float] = Field({}, description="held-out metrics at the threshold, raw cosine's beside "
                                                      "them (`raw_cosine_*`)")
    info: dict[str, Any] = Field({}, description=(
        "how it was fitted; after a collection's training, `selection` and `fusion_selection` say which of the "
        "default and the fitted one was kept, and why"))


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any]  # always sent (API.md: every error body has it), so required in the schema too (QA)


class ErrorBody(BaseModel):
    error: ErrorDetail


class TrainJob(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": (
        "A relevance training job. On the embedded store jobs live in the server's memory: a restart forgets them "
        f"(a training cut short leaves the adapter it would have replaced), and only the last {KEEP_FINISHED} "
        f"finished ones are kept. Over PostgreSQL any replica answers for any replica's job, kept for "
        f"{BOARD_RETENTION_DAYS} days.")})

    job: str = Field(description="the job's id")
    status: Literal["running", "done", "failed"]
    progress: float = Field(ge=0.0, le=1.0, description="fraction done, at coarse steps; 1.0 once done")
    examples: int = Field(description="judged queries posted")
    started_at: float = Field(description="Unix time")
    finished_at: float | None = Field(None, description="Unix time")
    result: RelevanceStatus | None = Field(
        None, description="once done: what a waited-for training answers (held-out metrics and the threshold)")
    error: ErrorDetail | None = Field(
        None, description="once failed: why (the error a waited-for training would answer); adapter unchanged")
    cancelling: bool = Field(False, description="a cancel was asked for (DELETE of the job); it ends at its next "
                                                "progress step")


class TrainJobs(BaseModel):
    jobs: list[TrainJob] = Field(description=f"newest first: the running one and the last {KEEP_FINISHED} finished")
