"""TrainingJobs: one running job per collection, results and errors kept, old finished jobs forgotten, stop."""

import threading
from typing import Any

import pytest

from app.engine.jobs import Progress, TrainingJobs, Work
from app.errors import InvalidInput, JobCancelled, JobNotFound, NotReady, TrainingInProgress


def _returns(value: dict[str, Any]) -> Work:
    def work(progress: Progress) -> dict[str, Any]:
        progress(0.5)
        return value

    return work


def test_a_job_reports_its_result_and_progress() -> None:
    jobs, gate, halfway = TrainingJobs(), threading.Event(), threading.Event()

    def work(progress: Progress) -> dict[str, Any]:
        progress(0.3)
        progress(0.2)  # progress never goes back
        halfway.set()
        assert gate.wait(timeout=30)
        return {"threshold": 0.5}

    job = jobs.start("c", 7, work)
    assert job.status == "running" and job.progress == 0.0 and job.examples == 7
    assert halfway.wait(timeout=30)
    running = jobs.get("c", job.id)
    assert running.status == "running" and running.progress == 0.3 and running.result is None
    assert jobs.running("c") is not None and jobs.running("other") is None
    gate.set()
    done = jobs.wait(job)
    assert (done.status, done.progress, done.result, done.error) == ("done", 1.0, {"threshold": 0.5}, None)
    assert done.finished_at is not None and done.finished_at >= done.started_at
    assert jobs.running("c") is None


def test_one_job_at_a_time_per_collection() -> None:
    jobs, gate = TrainingJobs(), threading.Event()

    def held(progress: Progress) -> dict[str, Any]:
        assert gate.wait(timeout=30)
        return {}

    first = jobs.start("c", 1, held)
    with pytest.raises(TrainingInProgress) as conflict:
        jobs.start("c", 1, _returns({}))
    assert conflict.value.details == [{"job": first.id}] and conflict.value.status == 409
    other = jobs.start("d", 1, _returns({}))  # another collection trains meanwhile
    assert jobs.wait(other).status == "done"
    gate.set()
    jobs.wait(first)
    assert jobs.wait(jobs.start("c", 1, _returns({}))).status == "done"  # and this one again once it finished


def test_a_failed_job_keeps_its_error() -> None:
    jobs = TrainingJobs()

    def invalid(progress: Progress) -> dict[str, Any]:
        raise InvalidInput("need at least two judged queries")

    def bug(progress: Progress) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    failed = jobs.wait(jobs.start("c", 1, invalid))
    assert failed.status == "failed" and failed.result is None and isinstance(failed.error, InvalidInput)
    crashed = jobs.wait(jobs.start("c", 1, bug))
    assert crashed.status == "failed" and crashed.error is not None
    assert (crashed.error.status, crashed.error.code) == (500, "internal_error")
    assert "ZeroDivisionError" in crashed.error.message


def test_only_the_last_finished_jobs_are_kept() -> None:
    jobs = TrainingJobs(keep_finished=2)
    finished = [jobs.wait(jobs.start("c", 1, _returns({"n": n}))) for n in range(3)]
    with pytest.raises(JobNotFound):
        jobs.get("c", finished[0].id)
    assert [jobs.get("c", job.id).result for job in finished[1:]] == [{"n": 1}, {"n": 2}]
    with pytest.raises(JobNotFound):
        jobs.get("other", finished[2].id)  # a job belongs to its collection


def test_stop_cancels_running_jobs_at_their_next_step_and_refuses_new_ones() -> None:
    jobs, started, stopping = TrainingJobs(), threading.Event(), threading.Event()
    swapped = []

    def work(progress: Progress) -> dict[str, Any]:
        started.set()
        assert stopping.wait(timeout=30)
        progress(0.9)  # raises: the service is stopping
        swapped.append(True)
        return {}

    job = jobs.start("c", 1, work)
    assert started.wait(timeout=30)
    jobs.stop(timeout=0)  # says stop and returns: the job is still between two steps
    stopping.set()
    cancelled = jobs.wait(job)
    assert cancelled.status == "failed" and isinstance(cancelled.error, JobCancelled) and swapped == []
    with pytest.raises(NotReady):
        jobs.start("c", 1, _returns({}))
