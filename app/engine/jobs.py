"""Relevance training jobs: each runs in its own thread, one at a time per collection, and is kept in memory.

Jobs live in this process only. A restart forgets every job, finished or not; a training cut short by a stop
never swaps its adapter in, so the collection keeps the one it had. The last `KEEP_FINISHED` finished jobs
stay readable with their result or error; running jobs are never forgotten.
"""

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from app.errors import JobCancelled, JobNotFound, NotReady, SearchServiceError, TrainingInProgress

log = logging.getLogger("app.engine.jobs")

KEEP_FINISHED = 100  # finished jobs kept for their result; older ones are forgotten, oldest first
STOP_WAIT_SECONDS = 30.0  # how long a stop waits for running jobs to reach their next progress step

JobStatus = Literal["running", "done", "failed"]
Progress = Callable[[float], None]
# The work of a job: called with a progress callback in the job's own thread; returns the job's result.
Work = Callable[[Progress], dict[str, Any]]


@dataclass
class TrainingJob:
    """A snapshot of a job (`TrainingJobs.get` copies it under the lock); `error` is the exception it failed
    with, whose status and code say why."""

    id: str
    collection: str
    examples: int
    started_at: float  # Unix time
    status: JobStatus = "running"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: SearchServiceError | None = None
    finished_at: float | None = None
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)


class TrainingJobs:
    """The registry of one engine's training jobs."""

    def __init__(self, keep_finished: int = KEEP_FINISHED) -> None:
        self._keep = keep_finished
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, TrainingJob] = OrderedDict()  # by id, oldest first
        self._running: dict[str, tuple[TrainingJob, threading.Thread]] = {}  # by collection
        self._stopping = False

    def start(self, collection: str, examples: int, work: Work) -> TrainingJob:
        """Runs `work` in a new thread as this collection's job; TrainingInProgress while another one runs."""
        with self._lock:
            if self._stopping:
                raise NotReady("the service is stopping: no new training jobs")
            if collection in self._running:
                running = self._running[collection][0]
                raise TrainingInProgress(f"collection {collection!r} is already training (job {running.id}); "
                                         "wait for it to finish", [{"job": running.id}])
            job = TrainingJob(uuid.uuid4().hex, collection, examples, time.time())
            thread = threading.Thread(target=self._run, args=(job, work), name=f"train-{collection}", daemon=True)
            self._jobs[job.id] = job
            self._running[collection] = (job, thread)
            thread.start()
            return replace(job)

    def get(self, collection: str, job_id: str) -> TrainingJob:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.collection != collection:
                raise JobNotFound(f"no training job {job_id!r} on collection {collection!r} (jobs are kept in "
                                  f"memory: a restart forgets them, and only the last {self._keep} finished ones "
                                  "are kept)")
            return replace(job)

    def running(self, collection: str) -> TrainingJob | None:
        with self._lock:
            entry = self._running.get(collection)
            return None if entry is None else replace(entry[0])

    def wait(self, job: TrainingJob, timeout: float | None = None) -> TrainingJob:
        """The job once finished (or as it is after `timeout` seconds)."""
        job.finished.wait(timeout)
        return self.get(job.collection, job.id)

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """No new jobs; running ones are cancelled at their next progress step, waited for up to `timeout`."""
        with self._lock:
            self._stopping = True
            threads = [thread for _, thread in self._running.values()]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("training thread %s still running at stop; its job is forgotten", thread.name)

    def _report(self, job: TrainingJob, fraction: float) -> None:
        if self._stopping:  # the job ends here, before its swap
            raise JobCancelled("the service stopped before the training finished; the adapter is unchanged")
        with self._lock:
            job.progress = max(job.progress, min(1.0, max(0.0, float(fraction))))

    def _run(self, job: TrainingJob, work: Work) -> None:
        result, error = None, None
        try:
            result = work(lambda fraction: self._report(job, fraction))
        except SearchServiceError as exc:
            error = exc
        except Exception as exc:  # a bug: the job says so instead of the thread dying silently
            log.exception("training job %s on collection %r failed", job.id, job.collection)
            error = SearchServiceError(f"training failed: {type(exc).__name__}: {exc}")
        with self._lock:
            job.result, job.error = result, error
            if error is None:
                job.progress = 1.0
            job.status = "done" if error is None else "failed"
            job.finished_at = time.time()
            del self._running[job.collection]
            finished = [job_id for job_id, j in self._jobs.items() if j.status != "running"]
            for job_id in finished[: max(0, len(finished) - self._keep)]:
                del self._jobs[job_id]
        job.finished.set()
