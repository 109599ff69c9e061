"""Schemathesis against the app's own OpenAPI document: every operation, open and with API keys.

No request may get a 5xx, every answer must match what the document promises (content type, headers, body
schema), invalid input must be rejected, valid input accepted, and with keys configured auth must hold.
The model loads once (session `embedder`); each run seeds a collection so the happy paths run too.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import AppFactory
from tests.helpers import ANIMALS

MAX_EXAMPLES = 40
COLLECTION = "animals"
KEYS = {"api_keys": ["fuzz-reader"], "admin_keys": ["fuzz-admin"]}
# Schema-valid yet refused by design: a vector must have the collection's dimension, judged ids must exist.
DATA_DEPENDENT = {"POST /v1/collections/{name}/documents", "POST /v1/collections/{name}/relevance/train"}
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                         suppress_health_check=list(HealthCheck))


class NoLifespan:
    """The app for schemathesis' in-process client: the TestClient of `make_client` owns the real lifespan."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


@dataclass(frozen=True)
class Finding:
    operation: str
    failure: str
    detail: str
    request: str
    status: int
    body: str

    def __str__(self) -> str:
        return f"{self.operation}: {self.failure} ({self.detail})\n  {self.request}\n  -> {self.status} {self.body}"


def seed(client: Any, headers: dict[str, str]) -> None:
    client.put(f"/v1/collections/{COLLECTION}", headers=headers)
    response = client.post(f"/v1/collections/{COLLECTION}/documents", json={"documents": ANIMALS}, headers=headers)
    assert response.status_code == 200, response.text


def cases(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """Random path parameters, and as often the seeded collection and its documents (the happy paths)."""
    strategies = [operation.as_strategy(mode)]
    if "{name}" in operation.path and "{doc_id}" in operation.path:
        strategies.append(st.sampled_from([d["id"] for d in ANIMALS]).flatmap(
            lambda doc_id: operation.as_strategy(mode, path_parameters={"name": COLLECTION, "doc_id": doc_id})))
    elif "{name}" in operation.path:
        strategies.append(operation.as_strategy(mode, path_parameters={"name": COLLECTION}))
    return st.one_of(strategies)


def only_auth_negated(case: Case) -> bool:
    """Negative only in its headers, and the one documented header is Authorization."""
    meta = case.meta
    return meta is not None and [loc for loc in ParameterLocation if meta.is_negative_at(loc)] == [
        ParameterLocation.HEADER]


class Fuzzer:
    """Runs the checks on every generated case of every operation; collects distinct findings."""

    def __init__(self, client: Any, headers: dict[str, str], keys: bool) -> None:
        self.client, self.headers, self.keys = client, headers, keys
        self.examples: Counter[str] = Counter()
        self.findings: dict[tuple[str, str, str], Finding] = {}

    def checks(self, case: Case) -> list[Callable[..., Any]]:
        chosen: list[Callable[..., Any]] = [
            not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
            response_schema_conformance]
        # Without keys configured a missing Authorization header is fine, though the document declares it.
        if self.keys or not only_auth_negated(case):
            chosen.append(negative_data_rejection)
        if case.operation.label not in DATA_DEPENDENT:
            chosen.append(positive_data_acceptance)
        if self.keys:
            chosen.append(ignored_auth)
        return chosen

    def run(self, case: Case) -> None:
        label = case.operation.label
        self.examples[label] += 1
        response = case.call(headers=self.headers, timeout=60)
        try:
            case.validate_response(response, checks=self.checks(case), headers=self.headers)
        except (Failure, FailureGroup) as exc:
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                self.findings.setdefault((label, type(failure).__name__, failure.message.split("\n")[0]), Finding(
                    label, type(failure).__name__, failure.message.replace("\n", "; ")[:300],
                    case.as_curl_command(headers=self.headers)[:600], response.status_code, response.text[:300]))
        if case.method == "DELETE" and response.status_code == 204:
            seed(self.client, self.headers)  # the happy paths of later examples need the collection back

    def fuzz(self, operation: APIOperation) -> None:
        for mode in GenerationMode:
            try:
                FUZZ_SETTINGS(given(cases(operation, mode))(self.run))()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to negate: no parameters, no body


@pytest.mark.parametrize("keys", [False, True], ids=["open", "with-keys"])
def test_every_operation_survives_fuzzing_as_documented(make_client: AppFactory, keys: bool) -> None:
    headers = {"Authorization": "Bearer fuzz-admin"} if keys else {}
    with make_client(**(KEYS if keys else {})) as client:
        seed(client, headers)
        fuzzer = Fuzzer(client, headers, keys)
        schema = schemathesis.openapi.from_asgi("/openapi.json", NoLifespan(client.app))
        # A batch over its limits is refused with 413 (API.md), a bulk delete of more than its maxItems ids too.
        rejection = schema.config.checks.negative_data_rejection
        rejection.expected_statuses = [*rejection.expected_statuses, "413"]
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # every operation in the document can be generated for
            fuzzer.fuzz(result.ok())
        examples, findings = fuzzer.examples, list(fuzzer.findings.values())
        paths = client.get("/openapi.json").json()["paths"]
    operations = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    assert set(examples) == operations
    assert all(count >= MAX_EXAMPLES for label, count in examples.items() if "{" in label), examples
    assert not findings, "\n".join(map(str, findings))
    print(f"\nfuzzing ({'with' if keys else 'without'} keys): {sum(examples.values())} examples over "
          f"{len(examples)} operations, 0 findings")
