"""What replicas publish of their training jobs for each other: a job's record on the board (the shared store),
and the board's interface. app/engine/jobs.py runs the jobs; app/store/postgres_jobs.py keeps the board."""

import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.errors import JobCancelled, SearchServiceError

BOARD_RETENTION_DAYS = 7  # over a shared store, how long the board keeps a job's record after its last publish
LOST_AFTER_SECONDS = 60.0  # a published running job not refreshed for this long: its replica stopped

JobStatus = Literal["running", "done", "failed"]


@dataclass
class TrainingJob:
    """A snapshot of a job (`TrainingJobs.get` copies it under the lock); `error` is the exception it failed
    with, whose status and code say why."""

    id: str
    collection: str
    examples: int
    started_at: float  # Unix time
    uid: str = ""  # of the collection it trains: one created again under the name does not show it
    status: JobStatus = "running"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: SearchServiceError | None = None
    finished_at: float | None = None
    cancelling: bool = False  # a cancel was asked for; the job ends at its next progress step
    published: float = 0.0  # time.monotonic() of its last publish the board took (over a shared store)
    gave_up: bool = False  # not published for too long (jobs.GIVE_UP_AFTER_SECONDS): it ends at its next step
    finished: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)


class JobBoard(Protocol):
    """Where replicas publish their jobs for each other (the shared store)."""

    def publish_job(self, job_id: str, collection: str, record: dict[str, Any]) -> bool:
        """Whether a cancel of the job was asked for on the board (`request_cancel`)."""

    def request_cancel(self, job_id: str) -> bool:
        """Asks the replica running the job to cancel it; False when no running job has that id."""

    def lookup_job(self, job_id: str) -> tuple[str, dict[str, Any], float] | None:
        """(collection, record, seconds since it was last published), or None."""

    def claim_job(self, job_id: str, collection: str, record: dict[str, Any], lost_after: float) -> str | None:
        """Publishes a new running job unless another running job of `collection` was published within
        `lost_after` seconds; then returns that job's id instead. Atomic across replicas."""

    def list_jobs(self, collection: str, limit: int) -> list[tuple[str, dict[str, Any], float]]:
        """(job id, record, seconds since it was last published) of the collection's `limit` latest jobs."""

    def running_job(self, collection: str, lost_after: float) -> str | None:
        """The id of a running job of `collection` published within `lost_after` seconds, or None."""


def job_record(job: TrainingJob, owner: str) -> dict[str, Any]:
    """What the board keeps of a job (JSON): everything `TrainingJob` says, and which replica runs it."""
    error = None if job.error is None else {"status": job.error.status, "code": job.error.code,
                                            "message": job.error.message, "details": job.error.details}
    return {"examples": job.examples, "started_at": job.started_at, "status": job.status,
            "progress": job.progress, "result": job.result, "error": error, "finished_at": job.finished_at,
            "owner": owner, "uid": job.uid, "cancelling": job.cancelling}


def job_from_record(job_id: str, collection: str, record: dict[str, Any], age: float) -> TrainingJob:
    """The job a board record describes; a running one whose replica stopped refreshing it, as failed."""
    job = TrainingJob(job_id, collection, int(record["examples"]), float(record["started_at"]),
                      uid=str(record.get("uid", "")), status=record["status"], progress=float(record["progress"]),
                      result=record.get("result"), finished_at=record.get("finished_at"),
                      cancelling=bool(record.get("cancelling", False)))
    raw = record.get("error")
    if raw is not None:
        job.error = SearchServiceError(str(raw["message"]), list(raw.get("details") or []))
        job.error.status, job.error.code = int(raw["status"]), str(raw["code"])
    elif job.status == "running" and age > LOST_AFTER_SECONDS:
        job.status, job.finished_at = "failed", None
        job.error = JobCancelled(f"the replica running this job ({record.get('owner')}) stopped updating it "
                                 f"{age:.0f} s ago: it was stopped or lost its store; the adapter is unchanged "
                                 "unless it had finished")
    return job


def same_collection(uid: str, job_uid: str) -> bool:
    """Whether a job of collection uid `job_uid` belongs to the collection `uid` ("": not known, as for jobs
    published before jobs recorded it)."""
    return not uid or not job_uid or uid == job_uid
