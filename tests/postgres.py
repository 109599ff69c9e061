"""A real PostgreSQL for the tests, started by the tests themselves (the `pgserver` wheel carries PostgreSQL 16;
as root it runs the server as its own `pgserver` user). No database is mocked."""

import itertools
import uuid
from pathlib import Path

import pgserver
import psycopg
from pgserver._commands import pg_ctl


class Postgres:
    """One PostgreSQL server; `database()` gives a fresh, empty database's URL for each test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
        self._names = itertools.count()

    @property
    def admin_url(self) -> str:
        return self.server.get_uri()

    def database(self) -> str:
        name = f"t{next(self._names)}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.server.get_uri(name)

    def stop(self) -> None:
        """Makes the server unreachable (a fast shutdown: connections are cut) until `start`."""
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()
