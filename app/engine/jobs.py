"""Relevance training jobs: each runs in its own thread, one at a time per collection, and is kept in memory.

Jobs live in this process. A training cut short by a stop never swaps its adapter in, so the collection keeps
the one it had. The last `KEEP_FINISHED` finished jobs stay readable with their result or error; running jobs
are never forgotten. Over a shared store (replicas), each job is also published to a `JobBoard` there, at its
start, at each progress step, every HEARTBEAT_SECONDS while it runs and at its end, so that any replica answers
for it: a client behind a load balancer polls whichever replica it lands on. A published job whose replica
stopped updating it for LOST_AFTER_SECONDS is shown as failed. The board also keeps one running job per
collection across the replicas: a job starts only by claiming its collection there.

A running job can be cancelled (`cancel`): it ends at its next progress step (a chunk of judged queries, a member
of the ensemble) as failed with TrainingCancelled, and the collection keeps its adapter. Over a shared store a
cancel of another replica's job is left on the board, and that replica reads it when it next publishes the job
(a progress step, or its heartbeat).
"""

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.engine.job_board import (
    BOARD_RETENTION_DAYS,
    LOST_AFTER_SECONDS,
    JobBoard,
    TrainingJob,
    job_from_record,
    job_record,
    same_collection,
)
from app.errors import (
    JobCancelled,
    JobFinished,
    JobNotFound,
    NotReady,
    SearchServiceError,
    TrainingCancelled,
    TrainingInProgress,
)

log = logging.getLogger("app.engine.jobs")

KEEP_FINISHED = 100  # finished jobs kept for their result; older ones are forgotten, oldest first
STOP_WAIT_SECONDS = 30.0  # how long a stop waits for running jobs to reach their next progress step
HEARTBEAT_SECONDS = 10.0  # how often a running job's record on the board is refreshed
# A replica that could not publish its running job for this long ends it when it next reaches the store: by
# LOST_AFTER_SECONDS the others show the job failed and may start another on the collection, and a job shown
# failed must not come back to running and swap its adapter in over the other's (QA: a 75 s outage did that).
GIVE_UP_AFTER_SECONDS = LOST_AFTER_SECONDS - HEARTBEAT_SECONDS

Progress = Callable[[float], None]
# The work of a job: called with a progress callback in the job's own thread; returns the job's result.
Work = Callable[[Progress], dict[str, Any]]


class TrainingJobs:
    """The registry of one engine's training jobs; with a `board`, published there as `owner`."""

    def __init__(self, keep_finished: int = KEEP_FINISHED, board: JobBoard | None = None, owner: str = "") -> None:
        self._keep = keep_finished
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, TrainingJob] = OrderedDict()  # by id, oldest first
        self._running: dict[str, tuple[TrainingJob, threading.Thread]] = {}  # by collection
        self._stopping = False
        self._board, self._owner = board, owner
        self._publishing = threading.Lock()  # one publish at a time, each of the job's state as it is then
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._unpublished: list[TrainingJob] = []  # ended while the board could not be reached: published later
        self._dropped: list[threading.Thread] = []  # the running jobs of deleted collections (`drop`)

    def start(self, collection: str, examples: int, work: Work, uid: str = "") -> TrainingJob:
        """Runs `work` in a new thread as this collection's job (`uid`: the collection's, which `get` checks);
        TrainingInProgress while another one runs."""
        with self._lock:
            if self._stopping:
                raise NotReady("the service is stopping: no new training jobs")
            if collection in self._running:
                running = self._running[collection][0]
                raise TrainingInProgress(f"collection {collection!r} is already training (job {running.id}); "
                                         "wait for it to finish", [{"job": running.id}])
            job = TrainingJob(uuid.uuid4().hex, collection, examples, time.time(), uid)
            thread = threading.Thread(target=self._run, args=(job, work), name=f"train-{collection}", daemon=True)
            self._jobs[job.id] = job
            # Held while the board is asked, which is done outside the lock; until the claim is granted the thread
            # is not started, and the heartbeat and `stop` leave the job alone (`_started`).
            self._running[collection] = (job, thread)
            snapshot = replace(job)
        try:
            self._claim(job)
        except BaseException:
            with self._lock:
                del self._jobs[job.id]
                if self._running.get(collection, (None,))[0] is job:  # (not if the collection was dropped since)
                    del self._running[collection]
            raise
        with self._lock:
            if self._board is not None and self._heartbeat is None:
                self._heartbeat = threading.Thread(target=self._beat, name="train-heartbeat", daemon=True)
                self._heartbeat.start()
            thread.start()
        return snapshot

    def _claim(self, job: TrainingJob) -> None:
        """Claims the job's collection on the board (if any): TrainingInProgress when another replica's job runs
        there; StoreUnavailable when the board cannot be reached, since the training could not store its adapter
        there either."""
        if self._board is None:
            return
        with self._lock:
            record = job_record(job, self._owner)
        other = self._board.claim_job(job.id, job.collection, record, LOST_AFTER_SECONDS)
        if other is not None:
            raise TrainingInProgress(f"collection {job.collection!r} is already training on another replica (job "
                                     f"{other}); wait for it to finish", [{"job": other}])
        job.published = time.monotonic()

    def _published_or_kept(self, job: TrainingJob) -> None:
        """Publishes an ended job, or keeps it for the heartbeat to publish once the board can be reached."""
        if not self._publish(job):
            with self._lock:
                self._unpublished.append(job)

    def _publish(self, job: TrainingJob) -> bool:
        """Puts the job's record, as it is now, on the board (if any). Publishes take turns and each reads the
        job's state when its turn comes, so the last one holds the last state (a heartbeat never writes a
        finished job back to running). A store that cannot be reached only costs the other replicas' view of
        the job (logged), never the job. Not to be called holding the registry's lock."""
        if self._board is None:
            return True
        with self._publishing:
            with self._lock:
                if job.status == "running" and time.monotonic() - job.published > GIVE_UP_AFTER_SECONDS:
                    job.gave_up = True
                if job.gave_up and job.status == "running":
                    return False  # never "running" again: the job ends at its next step and publishes that
                record = job_record(job, self._owner)
            try:
                cancel = self._board.publish_job(job.id, job.collection, record)
            except Exception as exc:  # the job goes on; its next publish tries again
                log.warning("could not publish training job %s: %s", job.id, exc)
                return False
            with self._lock:
                job.published = time.monotonic()
                if cancel and job.status == "running":  # asked for through another replica
                    job.cancelling = True
            return True

    def _started(self) -> list[tuple[TrainingJob, threading.Thread]]:
        """The running jobs whose claim was granted (their thread started); the caller holds the lock."""
        return [(job, thread) for job, thread in self._running.values() if thread.ident is not None]

    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            with self._lock:
                running = [job for job, _ in self._started()]
            for job in running:  # never one still claiming: its record would reach the board before its claim
                self._publish(job)
            with self._lock:
                ended, self._unpublished = self._unpublished, []
            for job in ended:  # its end, once the store is back: until then the others show it as running
                self._published_or_kept(job)

    def get(self, collection: str, job_id: str, uid: str = "") -> TrainingJob:
        """The job of this collection (with `uid`, of this incarnation of it: a job of a collection deleted and
        created again under its name is not its job)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.collection == collection and same_collection(uid, job.uid):
                return replace(job)
        found = None if self._board is None else self._board.lookup_job(job_id)
        if found is not None and found[0] == collection:
            job = job_from_record(job_id, *found)
            if same_collection(uid, job.uid):
                return job
        kept = (f"over the shared store, jobs are kept there for {BOARD_RETENTION_DAYS} days"
                if self._board is not None else
                f"jobs are kept in memory: a restart forgets them, and only the last {self._keep} finished ones "
                "are kept")
        raise JobNotFound(f"no training job {job_id!r} on collection {collection!r} ({kept})")

    def list(self, collection: str, uid: str = "") -> list[TrainingJob]:
        """The collection's jobs (with `uid`, of this incarnation of it), newest first: this replica's, and over
        a shared store every replica's that the board still keeps."""
        with self._lock:
            jobs = {job.id: replace(job) for job in self._jobs.values()
                    if job.collection == collection and same_collection(uid, job.uid)}
        for job_id, record, age in [] if self._board is None else self._board.list_jobs(collection, self._keep):
            job = job_from_record(job_id, collection, record, age)
            if job_id not in jobs and same_collection(uid, job.uid):
                jobs[job_id] = job
        return sorted(jobs.values(), key=lambda job: job.started_at, reverse=True)[:self._keep]

    def cancel(self, collection: str, job_id: str, uid: str = "") -> TrainingJob:
        """Asks a running job to end at its next progress step, leaving the adapter as it is; the job as it is
        now (still running, `cancelling`). JobFinished when it has already ended, JobNotFound as `get`."""
        with self._lock:
            job = self._jobs.get(job_id)
            ours = job is not None and job.collection == collection and same_collection(uid, job.uid)
            if job is not None and ours:
                if job.status != "running":
                    raise _finished(job)
                job.cancelling = True
        if job is not None and ours:
            self._publish(job)
            return self.get(collection, job_id, uid)
        other = self.get(collection, job_id, uid)  # another replica's, from the board (JobNotFound if none)
        if other.status == "running" and self._board is not None and self._board.request_cancel(job_id):
            other.cancelling = True
            return other
        raise _finished(other if other.status != "running" else self.get(collection, job_id, uid))  # ended since

    def drop(self, collection: str) -> None:
        """The collection was deleted: its running job (if any) ends at its next progress step, and is no longer
        its name's job. A collection created again under the name trained at once, where it was refused with a
        409 naming a job that every job route answered 404 for, until that step (QA)."""
        with self._lock:
            entry = self._running.pop(collection, None)
            if entry is not None:
                entry[0].cancelling = True
                # a stop still waits for it (those that have ended are let go)
                self._dropped = [thread for thread in self._dropped if thread.is_alive()] + [entry[1]]

    def running(self, collection: str) -> TrainingJob | None:
        with self._lock:
            entry = self._running.get(collection)
            return None if entry is None else replace(entry[0])

    def running_anywhere(self, collection: str) -> str | None:
        """The id of the collection's running job: this replica's, or over a shared store another's."""
        mine = self.running(collection)
        if mine is not None:
            return mine.id
        return None if self._board is None else self._board.running_job(collection, LOST_AFTER_SECONDS)

    def wait(self, job: TrainingJob, timeout: float | None = None) -> TrainingJob:
        """The job once finished (or as it is after `timeout` seconds)."""
        job.finished.wait(timeout)
        return self.get(job.collection, job.id, job.uid)

    def stop(self, timeout: float = STOP_WAIT_SECONDS) -> None:
        """No new jobs; running ones are cancelled at their next progress step, waited for up to `timeout`."""
        with self._lock:
            self._stopping = True
            # A job still claiming is not joined (its thread has not started); it ends at its first progress step.
            threads = [thread for _, thread in self._started()]
            threads += [thread for thread in self._dropped if thread.ident is not None]
        self._stopped.set()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("training thread %s still running at stop; its job is forgotten", thread.name)

    def _report(self, job: TrainingJob, fraction: float) -> None:
        """A progress step: published, and where the job must end (before its swap), the error it ends with."""
        self._check_going_on(job)
        with self._lock:
            job.progress = max(job.progress, round(min(1.0, max(0.0, float(fraction))), 3))  # not 0.30000000000000004
        self._publish(job)
        self._check_going_on(job)  # that publish may have read a cancel, or found the store lost too long

    def _check_going_on(self, job: TrainingJob) -> None:
        if self._stopping:
            raise JobCancelled("the service stopped before the training finished; the adapter is unchanged")
        if job.cancelling:
            raise TrainingCancelled("the training was cancelled (DELETE of its job or of its collection); the adapter "
                                    "is unchanged")
        if job.gave_up:
            raise JobCancelled(f"this replica could not reach the shared store for over {GIVE_UP_AFTER_SECONDS:.0f} "
                               "s, after which other replicas show the job failed and may train the collection "
                               "again; it was ended there, and the adapter is unchanged")

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
            if self._running.get(job.collection, (None,))[0] is job:  # not if its collection was dropped (`drop`)
                del self._running[job.collection]
            finished = [job_id for job_id, j in self._jobs.items() if j.status != "running"]
            for job_id in finished[: max(0, len(finished) - self._keep)]:
                del self._jobs[job_id]
        self._published_or_kept(job)
        job.finished.set()


def _finished(job: TrainingJob) -> JobFinished:
    return JobFinished(f"training job {job.id} has already ended ({job.status}); there is nothing to cancel",
                       [{"job": job.id, "status": job.status}])
