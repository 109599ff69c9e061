"""`SearchClient.ingest`'s machinery: documents upserted in batches, several in flight, acknowledged in order."""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from app.client_retry import ApiError, DocumentTooLarge

Upsert = Callable[[list[dict[str, Any]]], object]


def upsert_in_batches(upsert: Upsert, documents: Iterable[dict[str, Any]], *, batch: int, concurrency: int,
                      on_batch: Callable[[int], None] | None) -> int:
    """`upsert` of each batch of `documents`, `concurrency` in flight; what `SearchClient.ingest` says."""
    if batch < 1 or concurrency < 1:
        raise ValueError(f"batch and concurrency must be at least 1, got {batch} and {concurrency}")
    total = 0
    with ThreadPoolExecutor(concurrency) as pool:
        pending: deque[tuple[Future[None], int, set[str]]] = deque()

        def acknowledge(stored: int) -> None:
            nonlocal total
            total += stored
            if on_batch and stored:
                on_batch(stored)

        def finish_oldest() -> None:
            future, sent, _ = pending[0]
            try:
                future.result()  # (an interruption here leaves the batch pending)
            except DocumentTooLarge as refused:  # the halves before it were stored, in order: acknowledged (QA:
                pending.popleft()  # a resume sent them again)
                acknowledge(refused.index)
                raise
            pending.popleft()
            acknowledge(sent)

        try:
            for chunk in batched(documents, batch):
                ids = {str(doc.get("id")) for doc in chunk}
                while pending and (len(pending) >= concurrency or any(ids & named for *_, named in pending)):
                    finish_oldest()
                pending.append((pool.submit(_halving, upsert, chunk), len(chunk), ids))
            while pending:
                finish_oldest()
        except (KeyboardInterrupt, SystemExit):
            for future, *_ in pending:
                future.cancel()
            while pending and not pending[0][0].cancelled():
                try:
                    finish_oldest()
                except Exception:  # this one's failure is not the one to report: the interruption is
                    break
            raise
        except BaseException:
            for future, *_ in pending:
                future.cancel()
            raise
    return total


def _halving(upsert: Upsert, documents: list[dict[str, Any]], first: int = 0) -> None:
    """`documents` stored, in halves (in order) while the service answers 413 (over its body limit); one document
    over it alone raises `DocumentTooLarge` with its place in the batch."""
    try:
        upsert(documents)
    except ApiError as error:
        if error.status != 413:
            raise
        if len(documents) == 1:
            raise DocumentTooLarge(error, first) from None
        half = len(documents) // 2
        _halving(upsert, documents[:half], first)
        _halving(upsert, documents[half:], first + half)


def batched(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
