"""The training-job board in PostgreSQL (app/engine/job_board.py): the replica running each job publishes it to
search_jobs, any replica reads it, claims of one collection take turns, and cancels wait in search_job_cancels
for the replica running the job to read them."""

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from app.engine.job_board import BOARD_RETENTION_DAYS
from app.store.postgres_feed import Connections

JOB_RETENTION = f"{BOARD_RETENTION_DAYS} days"  # training jobs' records are kept this long for any replica to answer


class JobBoardTables:
    """The JobBoard protocol over the tables, mixed into PostgresStore, whose connections it uses."""

    _connections: Connections

    def publish_job(self, job_id: str, collection: str, record: dict[str, Any]) -> bool:
        with self._connections.connection() as conn:
            conn.execute("INSERT INTO search_jobs VALUES (%s, %s, %s, now()) ON CONFLICT (id) DO UPDATE "
                         "SET record = EXCLUDED.record, updated_at = now()", (job_id, collection, Jsonb(record)))
            if record.get("status") == "running":
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM search_job_cancels WHERE id = %s)",
                                   (job_id,)).fetchone()
                return bool(row and row[0])
            # A running job's record is refreshed every 10 s: one this old was left by a replica that was killed.
            conn.execute("DELETE FROM search_jobs WHERE updated_at < now() - %s::interval", (JOB_RETENTION,))
            conn.execute("DELETE FROM search_job_cancels AS c WHERE NOT EXISTS "
                         "(SELECT 1 FROM search_jobs AS j WHERE j.id = c.id AND j.record->>'status' = 'running')")
        return False

    def request_cancel(self, job_id: str) -> bool:
        with self._connections.connection() as conn:
            row = conn.execute("INSERT INTO search_job_cancels SELECT id, now() FROM search_jobs "
                               "WHERE id = %s AND record->>'status' = 'running' ON CONFLICT (id) DO NOTHING "
                               "RETURNING id", (job_id,)).fetchone()
            if row is not None:
                return True
            # Asked for once already (the conflict), or no such running job.
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM search_job_cancels AS c JOIN search_jobs AS j "
                               "USING (id) WHERE id = %s AND j.record->>'status' = 'running')", (job_id,)).fetchone()
            return bool(row and row[0])

    def claim_job(self, job_id: str, collection: str, record: dict[str, Any], lost_after: float) -> str | None:
        with self._connections.connection() as conn, conn.transaction():
            # Claims of one collection take turns (a lock held to this transaction's end), so two replicas
            # starting at once cannot both find the collection free.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('search_jobs:' || %s))", (collection,))
            other = _running_job(conn, collection, lost_after)
            if other is not None:
                return other
            conn.execute("INSERT INTO search_jobs VALUES (%s, %s, %s, now())", (job_id, collection, Jsonb(record)))
        return None

    def list_jobs(self, collection: str, limit: int) -> list[tuple[str, dict[str, Any], float]]:
        with self._connections.connection() as conn:
            rows = conn.execute("SELECT id, record, extract(epoch FROM now() - updated_at) FROM search_jobs "
                                "WHERE collection = %s ORDER BY (record->>'started_at')::float DESC LIMIT %s",
                                (collection, limit)).fetchall()
        return [(str(row[0]), dict(row[1]), float(row[2])) for row in rows]

    def running_job(self, collection: str, lost_after: float) -> str | None:
        with self._connections.connection() as conn:
            return _running_job(conn, collection, lost_after)

    def lookup_job(self, job_id: str) -> tuple[str, dict[str, Any], float] | None:
        with self._connections.connection() as conn:
            row = conn.execute("SELECT collection, record, extract(epoch FROM now() - updated_at) "
                               "FROM search_jobs WHERE id = %s", (job_id,)).fetchone()
        return None if row is None else (str(row[0]), dict(row[1]), float(row[2]))


def _running_job(conn: psycopg.Connection[Any], collection: str, lost_after: float) -> str | None:
    """The id of a running job of the collection published within `lost_after` seconds, or None."""
    row = conn.execute("SELECT id FROM search_jobs WHERE collection = %s AND record->>'status' = 'running' "
                       "AND updated_at > now() - make_interval(secs => %s) LIMIT 1",
                       (collection, lost_after)).fetchone()
    return None if row is None else str(row[0])
