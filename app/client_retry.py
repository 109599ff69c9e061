"""What the client (app/client.py) raises, and which failed requests it sends again.

    ClientError                  anything the client raises on purpose
     └── ApiError                the service answered non-2xx: .status, .code, .message, .details
          ├── DocumentTooLarge   ingest: one document of a batch over the body limit on its own (.index)
          └── NotReadyError      /ready did not answer 200 within wait_ready's timeout, or said its
                                 start-up failed

Requests that get 429 or 503, or fail to connect or read, are retried with exponential backoff (operations that
may be repeated: upserts replace by id, PUT of a collection is idempotent); httpx's own TransportError is raised
once the retries are spent. Two are not sent again once they may have reached the service: an upsert whose answer
timed out (the service is likely still storing the batch, and a copy would add its whole encode again: QA saw one
batch stored three times over by a client that still failed), and a training (a second one would answer 409 while
the first runs). For those only a connection that never reached the service is retried.
"""

import random
from dataclasses import dataclass
from typing import Any, Literal

import httpx

RETRY_STATUSES = (429, 503)
# Which requests that failed in transport are sent again: "any" (reads, collections), "unless_timed_out" (upserts,
# module docstring), "unsent" (only a connection that never reached the service: a training).
Resend = Literal["any", "unless_timed_out", "unsent"]


class ClientError(Exception):
    pass


class ApiError(ClientError):
    """A non-2xx answer; `code`, `message` and `details` come from the service's error body."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        # A 422's details say which field and why: "the request failed validation" alone did not (QA)
        why = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg', '')}" for d in details or []
                        if isinstance(d, dict) and "msg" in d)
        super().__init__(f"{status} {code}: {message}" + (f" ({why})" if why else ""))
        self.status, self.code, self.message, self.details = status, code, message, details or []

    @classmethod
    def from_response(cls, response: Any) -> "ApiError":
        try:
            error = response.json()["error"]
            return cls(response.status_code, error["code"], error["message"], error.get("details") or [])
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "http_error", response.text[:500])


class DocumentTooLarge(ApiError):
    """A 413 for one document of a batch on its own (`SearchClient.ingest` halves a batch the service refuses as
    too large): `index` is its place in the batch."""

    def __init__(self, error: ApiError, index: int) -> None:
        super().__init__(error.status, error.code, error.message, error.details)
        self.index = index


class NotReadyError(ApiError):
    pass


@dataclass
class Retry:
    """`attempts` tries in all; the n-th wait is backoff * 2**n seconds (at most `max_wait`), with jitter."""

    attempts: int = 6
    backoff: float = 0.25
    max_wait: float = 10.0

    def wait(self, attempt: int, response: Any) -> float:
        after = response.headers.get("retry-after", "") if response is not None else ""
        if after.isdigit():
            return min(float(after), self.max_wait)
        return min(self.backoff * 2**attempt, self.max_wait) * random.uniform(0.5, 1.0)


def may_resend(exc: httpx.TransportError, resend: Resend) -> bool:
    """Whether a request that failed in transport is sent again (the module docstring says which)."""
    if isinstance(exc, httpx.UnsupportedProtocol):  # a URL no retry can mend
        return False
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return resend == "any" or (resend == "unless_timed_out" and not isinstance(exc, httpx.ReadTimeout))
