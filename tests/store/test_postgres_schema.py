"""The PostgreSQL store's schema version: a database written by a later version of the service is refused."""

import psycopg
import pytest

from app.errors import StoreSchemaMismatch
from app.store.postgres import PostgresStore
from app.store.postgres_schema import SCHEMA_VERSION


def _version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM search_meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def _set_version(url: str, value: str | None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM search_meta WHERE key = 'schema_version'")
        if value is not None:
            conn.execute("INSERT INTO search_meta VALUES ('schema_version', %s)", (value,))


def test_a_new_database_records_the_schema_version(database_url: str) -> None:
    PostgresStore(database_url).close()
    assert _version(database_url) == str(SCHEMA_VERSION)


def test_a_database_from_before_the_version_row_is_at_version_1(database_url: str) -> None:
    PostgresStore(database_url).close()
    _set_version(database_url, None)  # as the databases made before the row was written
    store = PostgresStore(database_url)
    store.create_collection("c", 4, {})
    store.close()
    assert _version(database_url) == "1"


def test_a_database_a_later_version_wrote_is_refused_and_left_alone(database_url: str) -> None:
    PostgresStore(database_url).close()
    _set_version(database_url, str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreSchemaMismatch, match=f"schema version {SCHEMA_VERSION + 1}") as refused:
        PostgresStore(database_url)
    assert refused.value.details == [{"store_schema_version": SCHEMA_VERSION + 1,
                                      "service_schema_version": SCHEMA_VERSION}]
    assert _version(database_url) == str(SCHEMA_VERSION + 1)
