"""Shared fixtures: one loaded encoder for the session, apps on fresh data dirs, a small real corpus."""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.client import SearchClient
from app.engine.encoders import Encoder
from app.main import create_app
from app.settings import Settings
from tests.helpers import ANIMALS
from tests.postgres import Postgres
from tests.server import Server

# Suites that take minutes (server starts, kill -9 loops, load, fuzzing, the image's command run for real):
# marked `slow` here, in one place, so that `pytest -m "not slow"` is the quick run; the default runs all.
SLOW_SUITES = frozenset({"test_persistence.py", "test_concurrency.py", "test_container.py", "test_fuzz.py",
                         "test_crash_safety.py", "test_replica_crash.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_SUITES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def embedder() -> Encoder:
    """The default encoder (SEARCH_ENCODER), as the test servers load it: a data dir moves between the two."""
    model = Settings(threads=1).load_encoder()
    model.warm_up()
    return model


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    SearchClient(http=client).wait_ready(timeout, interval=0.02)


AppFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_client(tmp_path: Path, embedder: Encoder) -> AppFactory:
    """make_client(**settings) -> context manager of a ready TestClient on tmp_path/data (reused across calls)."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(**{"data_dir": tmp_path / "data", **overrides})
        with TestClient(create_app(settings, embedder)) as client:
            wait_ready(client)
            yield client

    return factory


@pytest.fixture
def client(make_client: AppFactory) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


@pytest.fixture
def animals(client: TestClient) -> TestClient:
    """A client with collection "animals" holding ANIMALS."""
    assert client.put("/v1/collections/animals").status_code == 201
    response = client.post("/v1/collections/animals/documents", json={"documents": ANIMALS})
    assert response.status_code == 200, response.text
    return client


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real uvicorn server for the suites that need a socket (commands, browser); each uses its own collections."""
    server = Server(tmp_path_factory.mktemp("live") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (started on first use, stopped and removed at the end)."""
    server = Postgres()
    yield server
    server.remove()


@pytest.fixture
def database_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres.database()
