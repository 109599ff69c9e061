"""The Cosine Adapter relevance filter of a collection: train it from judgments (as a job), inspect it."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.api.deps import AdminAccess, EngineDep, JsonBody, ReadAccess
from app.api.errors import error_responses
from app.api.params import CollectionName, adapter_status, relevance_status
from app.engine.job_board import TrainingJob
from app.engine.jobs import Progress
from app.engine.judgments import describe_adapter
from app.errors import CollectionNotFound
from app.schemas import ErrorBody, ErrorDetail, RelevanceStatus, TrainJob, TrainJobs, TrainRequest

# Larger sets train as a job unless the request asks to wait: their training (every query encoded and
# searched, an ensemble fitted) can outlast the timeouts of clients and proxies in front of the service.
MAX_WAITED_EXAMPLES = 200

router = APIRouter(prefix="/v1/collections/{name}/relevance", tags=["relevance"],
                   responses=error_responses(401, 404, 422, 503))

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {
    "model": ErrorBody, "description": "a training job is running on this collection; `details` name it (`job`)"}}
_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {
    "model": TrainJob, "description": "training as a job: poll the job at `Location`",
    "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}}}


def _job_view(job: TrainingJob) -> TrainJob:
    error = None if job.error is None else ErrorDetail(code=job.error.code, message=job.error.message,
                                                       details=job.error.details)
    return TrainJob(job=job.id, status=job.status, progress=job.progress, examples=job.examples,
                    started_at=job.started_at, finished_at=job.finished_at, result=job.result, error=error,
                    cancelling=job.cancelling)


@router.post("/train", dependencies=[AdminAccess, JsonBody], response_model=RelevanceStatus,
             responses={**error_responses(403, 413, 415, 507), **_CONFLICT, **_ACCEPTED},
             summary="Fit the collection's adapter: answer its held-out metrics and threshold, or 202 and a job",
             description=(
                 "Searches go on with the current adapter until the new one is swapped in, atomically, at the end; "
                 "a training that fails leaves the current adapter in place. One training at a time per collection "
                 f"(409). Up to {MAX_WAITED_EXAMPLES} examples the request waits (200); more train as a job (202), "
                 "unless `wait` says otherwise. On the embedded store jobs live in the server's memory: a restart "
                 "forgets them; over PostgreSQL any replica answers for any replica's job."))
def train(name: CollectionName, body: TrainRequest, engine: EngineDep,
          wait: Annotated[bool | None, Query(
              description=f"true: answer 200 with the result once trained; false: answer 202 with a job at once. "
                          f"Default: wait for at most {MAX_WAITED_EXAMPLES} examples")] = None,
          ) -> Any:
    examples = [example.to_engine() for example in body.examples]
    engine.check_judgments(name, examples)  # unknown ids: a 422 before any work
    recall_target, family, collection = body.recall_target, body.family, engine.collection(name)

    def work(progress: Progress) -> dict[str, Any]:
        try:
            adapter = engine.train_relevance(name, examples, recall_target, family, progress=progress)
        except Exception:
            if collection.dropped:  # whatever failed, that is why (its indexes went away under it); no swap
                raise CollectionNotFound(f"collection {name!r} was dropped during the training") from None
            raise
        # "default" when the training kept the default as it is (info.selection says why): the collection follows it
        return RelevanceStatus(status=adapter_status(engine, collection), **describe_adapter(adapter)).model_dump()

    job = engine.training_jobs.start(name, len(examples), work, uid=collection.record.uid)
    if len(examples) <= MAX_WAITED_EXAMPLES if wait is None else wait:
        job = engine.training_jobs.wait(job)
        if job.error is not None:  # what the job failed with, as if the request had trained itself
            raise job.error
        assert job.result is not None
        return job.result
    # Not the route's response model (a job, not a result): answered as it is, past FastAPI's validation.
    return JSONResponse(_job_view(job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/collections/{name}/relevance/jobs/{job.id}"})


@router.get("/jobs", dependencies=[ReadAccess], response_model=TrainJobs,
            summary="The collection's training jobs, newest first: the running one and the last finished ones")
def list_jobs(name: CollectionName, engine: EngineDep) -> TrainJobs:
    collection = engine.collection(name)  # an unknown collection is a 404 of its own
    return TrainJobs(jobs=[_job_view(job) for job in engine.training_jobs.list(name, collection.record.uid)])


@router.get("/jobs/{job_id}", dependencies=[ReadAccess], response_model=TrainJob,
            responses={404: {"model": ErrorBody, "description": "unknown collection, or no such job on it "
                                                                "(on the embedded store, a restart forgets jobs)"}},
            summary="A training job: its status, progress and, once finished, its result or error")
def get_job(name: CollectionName, job_id: Annotated[str, Path(min_length=1, max_length=64)],
            engine: EngineDep) -> TrainJob:
    collection = engine.collection(name)  # an unknown collection is a 404 of its own
    return _job_view(engine.training_jobs.get(name, job_id, collection.record.uid))


@router.delete("/jobs/{job_id}", dependencies=[AdminAccess], response_model=TrainJob, status_code=202,
               responses={**error_responses(403), 409: {
                   "model": ErrorBody, "description": "the job has already ended (`job_finished`)"}},
               summary="Cancel a running training job: it ends at its next progress step; the adapter is unchanged",
               description="Answers the job as it is now (`cancelling`); poll it until it ends as failed with "
                           "`training_cancelled`. A job past its last step finishes anyway. Over PostgreSQL any "
                           "replica takes the cancel, and the replica running the job reads it at its next step.")
def cancel_job(name: CollectionName, job_id: Annotated[str, Path(min_length=1, max_length=64)],
               engine: EngineDep) -> TrainJob:
    collection = engine.collection(name)  # an unknown collection is a 404 of its own
    return _job_view(engine.training_jobs.cancel(name, job_id, collection.record.uid))


@router.get("", dependencies=[ReadAccess], summary="The adapter in use (default or trained)")
def get_relevance(name: CollectionName, engine: EngineDep) -> RelevanceStatus:
    return relevance_status(engine, name)


@router.delete("", dependencies=[AdminAccess], responses={**error_responses(403, 507), **_CONFLICT},
               summary="Go back to the default adapter: remove the collection's trained one (and its fitted fusion)",
               description="Answers the adapter now in use, as GET does. While the collection trains, a 409 names "
                           "the job (its adapter would be swapped in after the reset).")
def reset_relevance(name: CollectionName, engine: EngineDep) -> RelevanceStatus:
    engine.reset_relevance(name)
    return relevance_status(engine, name)
