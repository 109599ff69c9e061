"""Documents: bulk ingest (JSON or NDJSON, all-or-nothing), a listing in id order, get and delete by id, and
bulk delete (all-or-nothing)."""

import codecs
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.api.batch_size import json_over, ndjson_over
from app.api.deps import AdminAccess, EngineDep, JsonBody, ReadAccess, SettingsDep, refuse_untyped
from app.api.errors import error_responses
from app.api.params import CollectionName, PathDocumentId
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.memory import release_free_heap
from app.schemas import (
    MAX_DELETED,
    MAX_LISTED,
    DeleteRequest,
    DeleteResult,
    Document,
    DocumentBatch,
    DocumentId,
    DocumentPage,
    ListedDocument,
    StoredDocument,
    UpsertResult,
)

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"],
                   responses=error_responses(401, 404, 422, 503))

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DocumentBatch"}},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one Document JSON object per line"}},
        },
    }
}


def _errors(exc: ValidationError, prefix: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": prefix + list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()[:50]]


def parse_batch(body: bytes, content_type: str, limit: int) -> tuple[list[Document], list[int] | None]:
    """Parses a JSON batch or NDJSON lines, with each NDJSON document's line number (None for JSON); any bad
    document rejects the whole batch, and one of more than `limit` documents is a 413 before any is validated
    (app/api/batch_size.py). The body is read as the
    search and train routes read theirs (Python's JSON decoder): a UTF-8 byte order mark is skipped (a file saved
    by a Windows editor and posted as it is failed on line 1, QA), and UTF-16 or UTF-32, which that decoder
    recognises, is taken too (here it was "Invalid JSON at line 1 column 1", QA)."""
    encoding = json.detect_encoding(body)
    body = body.removeprefix(codecs.BOM_UTF8) if encoding.startswith("utf-8") else _as_utf8(body, encoding)
    media = content_type.split(";")[0].strip().lower()
    if media in ("application/x-ndjson", "application/jsonl", "application/ndjson"):
        if ndjson_over(body, limit):
            raise _too_many(limit)
        docs, lines = [], []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            lines.append(number)
            try:
                docs.append(Document.model_validate_json(line))
            except ValidationError as exc:
                raise InvalidInput(f"NDJSON line {number} is not a valid document",
                                   _errors(exc, ["body", f"line {number}"])) from None
        if not docs:
            raise InvalidInput("the NDJSON body holds no documents")
        return docs, lines
    if media == "application/json":
        if json_over(body, limit):
            raise _too_many(limit)
        try:
            return DocumentBatch.model_validate_json(body).documents, None
        except ValidationError as exc:
            raise InvalidInput("the document batch failed validation", _errors(exc, ["body"])) from None
    raise UnsupportedMediaType(f"content type {media!r} is not accepted: send application/json or "
                               "application/x-ndjson")


def _in_body(error: InvalidInput, lines: list[int] | None) -> InvalidInput:
    """The engine names a document by its place in the batch (["documents", i, ...]); the body's own locations
    are ["body", "documents", i, ...], or ["body", "line N", ...] in NDJSON (QA: a bad vector on line 3 said
    ["documents", 1, "vector"])."""
    for detail in error.details:
        loc = detail.get("loc") if isinstance(detail, dict) else None
        if loc and loc[0] == "documents" and len(loc) > 1 and isinstance(loc[1], int):
            detail["loc"] = ["body", *loc] if lines is None else ["body", f"line {lines[loc[1]]}", *loc[2:]]
    return error


def _too_many(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"more than {limit} documents in one batch; the limit is {limit}: split it")


def _as_utf8(body: bytes, encoding: str) -> bytes:
    try:
        return body.decode(encoding).encode()
    except UnicodeError:
        raise InvalidInput(f"the body is not valid {encoding.upper().replace('_', '-')}; send UTF-8 JSON") from None


@router.post("", response_model=UpsertResult, openapi_extra=_BODY, dependencies=[AdminAccess],
             responses=error_responses(403, 413, 415, 507))
async def upsert_documents(name: CollectionName, request: Request, engine: EngineDep,
                           settings: SettingsDep) -> UpsertResult:
    engine.collection(name)  # 404 before reading a large body for nothing
    refuse_untyped(request, "application/json or application/x-ndjson")
    # In the thread pool: validating 1,000 documents with vectors takes ~30 ms, which would hold up every
    # search waiting on the event loop; off it, the interpreter switches threads every 5 ms.
    docs, lines = await run_in_threadpool(parse_batch, await request.body(),
                                          request.headers.get("content-type", ""), settings.max_batch_documents)
    if len(docs) > settings.max_batch_documents:  # an id key written with \u escapes: counted only here
        raise _too_many(settings.max_batch_documents)
    start = time.perf_counter()
    try:
        ids = await run_in_threadpool(engine.upsert, name, [doc.to_engine() for doc in docs])
    except InvalidInput as exc:
        raise _in_body(exc, lines) from None
    request.app.state.metrics.observe_ingest(name, len(ids), time.perf_counter() - start)
    del docs
    await run_in_threadpool(release_free_heap)
    return UpsertResult(upserted=len(ids), ids=ids)


@router.get("", response_model=DocumentPage, response_model_exclude_unset=True, dependencies=[ReadAccess],
            summary="The collection's documents in id order, a page at a time")
def list_documents(name: CollectionName, engine: EngineDep,
                   after: Annotated[DocumentId | None, Query(description=(
                       "the last id of the page before (its answer's `next`); left out, the first page"))] = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_LISTED, description="documents a page")] = 100,
                   vectors: Annotated[bool, Query(description=(
                       "each document with its stored unit vector: an export that loads elsewhere (POST "
                       "…/documents) without encoding again"))] = False) -> DocumentPage:
    """What a backup, a move to another service (one replica over PostgreSQL, say) or a check of a load needs:
    Elasticsearch's scroll, Meilisearch's and Qdrant's document listings. Pages follow ids, so a write between
    two pages neither repeats a document nor skips one it did not touch."""
    rows, found = engine.collection(name).list_documents(after, limit, vectors)
    listed = []
    for i, row in enumerate(rows):
        document = ListedDocument(id=row.id, text=row.text, title=row.title, metadata=row.metadata)
        if found is not None:
            document.vector = found[i].tolist()
        listed.append(document)
    return DocumentPage(documents=listed, next=rows[-1].id if len(rows) == limit else None)


@router.post("/delete", response_model=DeleteResult, dependencies=[AdminAccess, JsonBody],
             responses=error_responses(403, 413, 415, 507), summary="Delete documents by id, all in one transaction")
def delete_documents(name: CollectionName, body: DeleteRequest, engine: EngineDep) -> DeleteResult:
    """What a sync job that mirrors a source needs (Elasticsearch's bulk deletes, Qdrant's points/delete,
    Meilisearch's delete-batch): answered once every one is durably gone, and none is if the write fails. An id
    the collection does not hold is listed in `missing`, not an error: deleting it again finds it gone."""
    if len(body.ids) > MAX_DELETED:
        raise PayloadTooLarge(f"{len(body.ids)} ids in one bulk delete; the limit is {MAX_DELETED:,}: split it")
    gone = set(engine.collection(name).delete_many(body.ids))
    asked = list(dict.fromkeys(body.ids))
    return DeleteResult(deleted=len(gone), ids=[i for i in asked if i in gone],
                        missing=[i for i in asked if i not in gone])


# `:anypath` (app/api/params.py): an id may hold "/" (a file path, say); without it such an id could not be read
# or deleted, and one ending in "/" was redirected to the id without it, whose document was then read or deleted
# instead.
@router.get("/{doc_id:anypath}", response_model=StoredDocument, dependencies=[ReadAccess])
def get_document(name: CollectionName, doc_id: PathDocumentId, engine: EngineDep) -> StoredDocument:
    row = engine.get(name, doc_id)
    return StoredDocument(id=row.id, text=row.text, title=row.title, metadata=row.metadata)


@router.delete("/{doc_id:anypath}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[AdminAccess],
               responses=error_responses(403, 507))
def delete_document(name: CollectionName, doc_id: PathDocumentId, engine: EngineDep) -> Response:
    engine.delete(name, doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


