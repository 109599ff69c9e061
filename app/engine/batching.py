"""Shared forward passes: query encodes that arrive while the encoder is busy go through it as one batch.

Hand-written because none of the well-kept pieces fits: a thread pool runs each query alone, and the batching
servers (Triton, TorchServe, Ray Serve) are whole services of their own. This is one worker thread, a queue
and a condition. A lone query on an idle encoder goes at once, on its caller's thread; the queries that
arrive while a pass is in the encoder wait for it to finish and then share the worker's next pass (topped up
for at most `max_wait` seconds when others were already queued, so that stragglers of a burst join it).
Document encodes (ingest) run in their own threads and give way between chunks to the queries waiting here
(`yield_to_queries`).
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol

import numpy as np

from app.errors import ShuttingDown

log = logging.getLogger("app.batching")
# Bound on the wait of an ingest chunk for the queries before it: under a stream of searches that never leaves
# the encoder idle, ingest still moves at least one chunk per this long.
INGEST_YIELD_SECONDS = 0.05


class QueryEncoder(Protocol):
    """What every encoder backend provides for queries."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors, in one forward pass."""
        ...


class QueryBatcher:
    """One worker thread owns the query encodes; `encode` may be called from any number of threads."""

    def __init__(self, encoder: QueryEncoder, max_batch: int, max_wait: float) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError("max_batch must be at least 1 and max_wait at least 0")
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._pending: deque[tuple[str, Future[np.ndarray]]] = deque()
        self._busy = False  # a batch is in the encoder
        self._closed = False
        self._yielding = 0  # ingest threads waiting in yield_to_queries
        self.batches = 0  # forward passes so far (and texts through them): the sharing, observable
        self.texts = 0
        self._worker = threading.Thread(target=self._run, name="query-encoder", daemon=True)
        self._worker.start()

    def submit(self, text: str) -> "Future[np.ndarray]":
        """Queues one query; the future holds its unit vector, or the error encoding this text raised."""
        future: Future[np.ndarray] = Future()
        with self._cond:
            if self._closed:
                raise ShuttingDown("the service is shutting down")
            self._pending.append((text, future))
            self._cond.notify_all()
        return future

    def encode(self, text: str) -> np.ndarray:
        """The query's unit vector. On an idle encoder the caller's own thread runs the pass: no hand-over to the
        worker and back, each of which may wait up to the interpreter's switch interval (5 ms) for the GIL
        while other threads run Python (a bulk load parsing its JSON). Queries that arrive meanwhile queue for
        the worker, which takes them as one batch when this pass ends."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the service is shutting down")
            inline = not self._busy and not self._pending
            if inline:
                self._busy = True
        if not inline:
            return self.submit(text).result()
        try:
            vector = self.encoder.encode_queries([text])[0]
            self._count(1)
        finally:
            with self._cond:
                self._busy = False
                # Only those who wait for this pass to end are woken: waking the idle worker for nothing after
                # every lone search cost a thread switch and a GIL hand-off each time.
                if self._pending or self._yielding:
                    self._cond.notify_all()
        return vector

    def _count(self, texts: int) -> None:
        """One forward pass of `texts` queries (callers and the worker both count)."""
        with self._cond:
            self.batches += 1
            self.texts += texts

    def yield_to_queries(self, timeout: float = INGEST_YIELD_SECONDS) -> None:
        """Waits (at most `timeout`) until no query is queued or in the encoder: an ingest calls it before each
        chunk of documents, so that a search's encode does not share the cores with a document batch."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._yielding += 1
            try:
                while (self._pending or self._busy) and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
            finally:
                self._yielding -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Stops taking queries, fails the queued ones (ShuttingDown), lets the batch in the encoder finish."""
        with self._cond:
            self._closed = True
            abandoned = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for _, future in abandoned:
            future.set_exception(ShuttingDown("the service is shutting down"))
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("the query encoder is still busy after %.0f s; not waiting for it", timeout)

    # --- the worker -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._encode(batch)
            except BaseException as exc:  # the worker is going down: no caller may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _next_batch(self) -> list[tuple[str, "Future[np.ndarray]"]] | None:
        with self._cond:
            while (not self._pending or self._busy) and not self._closed:  # busy: a caller encodes inline
                self._cond.wait()
            if self._closed:
                return None
            batch = self._take(self.max_batch)
            if 1 < len(batch) < self.max_batch and self.max_wait > 0:
                # Under load (others were queued already): let the rest of the burst catch this pass.
                deadline = time.monotonic() + self.max_wait
                while len(batch) + len(self._pending) < self.max_batch and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch += self._take(self.max_batch - len(batch))
            self._busy = True
            return batch

    def _take(self, count: int) -> list[tuple[str, "Future[np.ndarray]"]]:
        """Up to `count` queued queries whose callers still want them; the caller holds the condition."""
        taken: list[tuple[str, Future[np.ndarray]]] = []
        while self._pending and len(taken) < count:
            text, future = self._pending.popleft()
            if future.set_running_or_notify_cancel():
                taken.append((text, future))
        return taken

    def _encode(self, batch: list[tuple[str, "Future[np.ndarray]"]]) -> None:
        if not batch:  # every caller in it gave up
            return
        try:
            vectors = self.encoder.encode_queries([text for text, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            # One text's failure must not fail the others: each alone, so the error reaches only its own.
            for text, future in batch:
                self._encode_alone(text, future)
            return
        self._count(len(batch))
        for (_, future), vector in zip(batch, vectors, strict=True):
            future.set_result(vector)

    def _encode_alone(self, text: str, future: "Future[np.ndarray]") -> None:
        try:
            vector = self.encoder.encode_queries([text])[0]
        except Exception as exc:
            future.set_exception(exc)
            return
        self._count(1)
        future.set_result(vector)
