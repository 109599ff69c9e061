"""Domain errors raised by the engine and store; app/api/errors.py turns them into HTTP answers.

    SearchServiceError                 500 internal_error (a bug)
     ├── InvalidInput                  422 invalid_input
     │    └── DimensionMismatch        422 dimension_mismatch
     ├── PayloadTooLarge               413 payload_too_large
     ├── UnsupportedMediaType          415 unsupported_media_type
     ├── NotFound                      404
     │    ├── CollectionNotFound       404 collection_not_found
     │    ├── DocumentNotFound         404 document_not_found
     │    └── JobNotFound              404 job_not_found
     ├── Conflict                      409
     │    ├── CollectionConflict       409 collection_conflict
     │    ├── TrainingInProgress       409 training_in_progress
     │    ├── TrainingCancelled        409 training_cancelled (a training whose job a request cancelled)
     │    └── JobFinished              409 job_finished (a cancel of a job that has ended)
     ├── Unauthorized                  401 unauthorized
     ├── Forbidden                     403 forbidden
     ├── NotReady                      503 not_ready
     │    ├── JobCancelled             503 cancelled (a training job that the service's stop ended)
     │    ├── StoreUnavailable         503 store_unavailable (the shared PostgreSQL store cannot be reached,
     │    │                            or refused the call with a timeout of its own)
     │    ├── ShuttingDown             503 shutting_down (a search queued for the encoder when the service stopped)
     │    └── StartupFailed            503 startup_failed (/ready of an in-process app whose start-up failed)
     ├── InsufficientStorage           507 insufficient_storage (the store's disk is full; nothing written)
     ├── ClientGone                    499 client_closed_request (a search whose client left while it waited)
     ├── DataDirLocked                 raised at start when another process holds the data dir
     ├── DataDirUnusable               raised at start when the data dir cannot be made or written (a file, say)
     └── EncoderMismatch               raised at start when collections were encoded by another encoder

Each carries its HTTP status and machine-readable code as plain class attributes, so this module needs no web
framework: the engine and the store import it without importing FastAPI.
"""

from typing import Any


class SearchServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidInput(SearchServiceError):
    """`field` names the engine input at fault (e.g. "recall_target"); the API turns it into a body location."""

    status, code = 422, "invalid_input"

    def __init__(self, message: str, details: list[Any] | None = None, field: str | None = None) -> None:
        super().__init__(message, details)
        self.field = field


class DimensionMismatch(InvalidInput):
    code = "dimension_mismatch"


class PayloadTooLarge(SearchServiceError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(SearchServiceError):
    status, code = 415, "unsupported_media_type"


class NotFound(SearchServiceError):
    status, code = 404, "not_found"


class CollectionNotFound(NotFound):
    code = "collection_not_found"


class DocumentNotFound(NotFound):
    code = "document_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(SearchServiceError):
    status, code = 409, "conflict"


class CollectionConflict(Conflict):
    code = "collection_conflict"


class TrainingInProgress(Conflict):
    """A second training of a collection while its first runs; `details` name the running job."""

    code = "training_in_progress"


class TrainingCancelled(Conflict):
    """A training whose job was cancelled by a request: the adapter is unchanged."""

    code = "training_cancelled"


class JobFinished(Conflict):
    code = "job_finished"


class Unauthorized(SearchServiceError):
    status, code = 401, "unauthorized"


class Forbidden(SearchServiceError):
    status, code = 403, "forbidden"


class NotReady(SearchServiceError):
    status, code = 503, "not_ready"


class JobCancelled(NotReady):
    code = "cancelled"


class StoreUnavailable(NotReady):
    """A write (or a read that needs the store) while PostgreSQL cannot be reached: nothing was written."""

    code = "store_unavailable"


class ShuttingDown(NotReady):
    code = "shutting_down"


class StartupFailed(NotReady):
    """/ready of an in-process app whose start-up failed (a server exits instead): it will never be ready."""

    code = "startup_failed"


class InsufficientStorage(SearchServiceError):
    """A write the store could not make for want of disk space (SQLite's data dir, or PostgreSQL's): nothing of
    it was written. Not retried by clients: space does not come back by itself."""

    status, code = 507, "insufficient_storage"


class ClientGone(SearchServiceError):
    """A search whose client closed its connection while the search waited (for a worker thread or a search
    slot): not run. The answer reaches no one; 499 is nginx's "client closed request", as the request metrics
    count it."""

    status, code = 499, "client_closed_request"


class DataDirLocked(SearchServiceError):
    code = "data_dir_locked"


class DataDirUnusable(SearchServiceError):
    code = "data_dir_unusable"


class StoreSchemaMismatch(SearchServiceError):
    """A shared store written by a later version of the service, whose schema this one does not know."""

    code = "store_schema_mismatch"


class EncoderMismatch(SearchServiceError):
    """Collections whose vectors another encoder made: a query encoded by this one would silently score worse."""

    code = "encoder_mismatch"
