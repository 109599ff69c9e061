"""The PostgreSQL store's schema: its tables, created when missing, and the version this code reads and writes."""

from typing import Any

import psycopg

from app.errors import StoreSchemaMismatch

# Serialises schema creation when several replicas start at once (CREATE ... IF NOT EXISTS races otherwise).
_SCHEMA_LOCK = 727_1301
_SCHEMA = """
CREATE TABLE IF NOT EXISTS search_meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO search_meta VALUES ('identity', gen_random_uuid()::text) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS search_seq (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), value bigint NOT NULL);
INSERT INTO search_seq VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS search_collections (
    name text PRIMARY KEY, uid text NOT NULL, dimension integer NOT NULL, settings jsonb NOT NULL,
    pruned_through bigint NOT NULL DEFAULT 0, changed_seq bigint NOT NULL DEFAULT 0,
    adapter_seq bigint NOT NULL DEFAULT 0, adapter_meta text, adapter_weights bytea);
CREATE TABLE IF NOT EXISTS search_documents (
    collection text NOT NULL, id text NOT NULL, label bigint NOT NULL UNIQUE,
    title text, text text NOT NULL, metadata jsonb NOT NULL, vector bytea NOT NULL,
    PRIMARY KEY (collection, id));
CREATE INDEX IF NOT EXISTS search_documents_by_label ON search_documents (collection, label);
CREATE TABLE IF NOT EXISTS search_tombstones (collection text NOT NULL, label bigint NOT NULL, seq bigint NOT NULL);
CREATE INDEX IF NOT EXISTS search_tombstones_by_seq ON search_tombstones (collection, seq);
CREATE TABLE IF NOT EXISTS search_jobs (
    id text PRIMARY KEY, collection text NOT NULL, record jsonb NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS search_job_cancels (id text PRIMARY KEY, requested_at timestamptz NOT NULL);
"""
# The schema this code reads and writes; search_meta keeps the database's. A database that a later version of the
# service wrote is refused rather than half understood. Version 1 is the schema as it stood when the number was
# introduced, so a database without the row is at 1; a later change to _SCHEMA that earlier versions could not
# work beside bumps it and migrates from it. A table they do not read does not: search_job_cancels (2026-12-02)
# holds cancels of training jobs, which a replica of an earlier version runs to the end.
SCHEMA_VERSION = 1
# Columns added since, each with a default, so that replicas of earlier versions (whose COPY names its columns) work
# beside them: (table, column, definition). Added only when missing: ALTER TABLE takes an exclusive lock on the
# table even when IF NOT EXISTS finds the column, and would queue behind every replica's open read of it.
_ADDED_COLUMNS = (
    # NewDocument.encoded: the vector is the service's encoding of the row's title and text.
    ("search_documents", "encoded", "boolean NOT NULL DEFAULT false"),
)


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Creates what is missing (replicas starting at once take turns) and refuses a database that a later version
    of the service wrote (StoreSchemaMismatch), changing nothing in it."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    conn.execute(_SCHEMA)
    conn.execute("INSERT INTO search_meta VALUES ('schema_version', %s) ON CONFLICT DO NOTHING", (str(SCHEMA_VERSION),))
    row = conn.execute("SELECT value FROM search_meta WHERE key = 'schema_version'").fetchone()
    found = int(row[0]) if row else SCHEMA_VERSION
    if found > SCHEMA_VERSION:
        raise StoreSchemaMismatch(
            f"the PostgreSQL store holds schema version {found}, written by a later version of this service "
            f"(this one knows version {SCHEMA_VERSION}): run that version or a later one against it",
            [{"store_schema_version": found, "service_schema_version": SCHEMA_VERSION}])
    for table, column, definition in _ADDED_COLUMNS:
        present = conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                               "AND table_name = %s AND column_name = %s", (table, column)).fetchone()
        if present is None:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
