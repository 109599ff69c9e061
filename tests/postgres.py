"""A real PostgreSQL for the tests, started by the tests themselves (the `pgserver` wheel carries PostgreSQL 16;
as root it runs the server as its own `pgserver` user). No database is mocked."""

import itertools
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pgserver
import psycopg


class Postgres:
    """One PostgreSQL server; `database()` gives a fresh, empty database's URL for each test."""

    def __init__(self) -> None:
        # Not under pytest's temporary folders: those are private to root, and as root the server runs as
        # another user, who must reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="search-pg-"))
        self.server = pgserver.get_server(self.root / "pgdata", cleanup_mode="stop")
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
        """Makes the server unreachable until `start`: a fast shutdown (SIGINT to the postmaster), which cuts
        every connection."""
        process = self.server.get_postmaster_info().process
        os.kill(process.pid, signal.SIGINT)
        process.wait(30)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def remove(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)
