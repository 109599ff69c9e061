"""The training-job board of the PostgreSQL store: one running job per collection across replicas."""

import threading
from collections.abc import Iterator

import psycopg
import pytest

from app.store.postgres import PostgresStore


@pytest.fixture
def stores(database_url: str) -> Iterator[list[PostgresStore]]:
    """Two stores over one database, as two replicas have."""
    opened = [PostgresStore(database_url) for _ in range(2)]
    yield opened
    for store in opened:
        store.close()


def _running() -> dict[str, object]:
    return {"status": "running", "examples": 1}


def test_of_replicas_claiming_one_collection_at_once_exactly_one_wins(stores: list[PostgresStore]) -> None:
    start, results = threading.Barrier(8), {}

    def claim(n: int) -> None:
        start.wait(timeout=30)
        results[n] = stores[n % 2].claim_job(f"job{n}", "c", _running(), 60.0)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [n for n, other in results.items() if other is None]
    assert len(results) == 8 and len(winners) == 1
    assert {other for other in results.values() if other is not None} == {f"job{winners[0]}"}
    assert stores[0].claim_job("x", "another", _running(), 60.0) is None  # other collections are free


def test_a_finished_or_abandoned_job_frees_its_collection(stores: list[PostgresStore]) -> None:
    first, second = stores
    assert first.claim_job("j1", "c", _running(), 60.0) is None
    assert second.claim_job("j2", "c", _running(), 60.0) == "j1"
    first.publish_job("j1", "c", {"status": "done", "examples": 1})
    assert second.claim_job("j2", "c", _running(), 60.0) is None
    # j2's replica stops publishing: once its record is older than the lost-after time, the collection is free.
    assert first.claim_job("j3", "c", _running(), 0.0) is None
    found = second.lookup_job("j3")
    assert found is not None and found[0] == "c" and found[1]["status"] == "running"


def test_a_collections_jobs_are_listed_from_any_replica_newest_first(stores: list[PostgresStore]) -> None:
    first, second = stores
    for n, started in enumerate((10.0, 30.0, 20.0)):
        first.publish_job(f"j{n}", "c", {"status": "done", "examples": 1, "started_at": started})
    second.publish_job("elsewhere", "d", {"status": "done", "examples": 1, "started_at": 40.0})
    listed = second.list_jobs("c", 2)
    assert [job_id for job_id, _, _ in listed] == ["j1", "j2"]
    assert listed[0][1]["started_at"] == 30.0 and listed[0][2] >= 0.0


def test_a_cancel_asked_through_one_replica_reaches_the_one_running_the_job(stores: list[PostgresStore]) -> None:
    runner, other = stores
    assert runner.claim_job("k1", "c", _running(), 60.0) is None
    assert runner.publish_job("k1", "c", _running()) is False  # nobody asked yet
    assert other.request_cancel("k1") is True
    assert other.request_cancel("k1") is True  # asked twice: still a running job being cancelled
    assert runner.publish_job("k1", "c", _running()) is True  # its next progress step or heartbeat reads it
    assert runner.publish_job("k1", "c", {"status": "failed", "examples": 1}) is False
    assert other.request_cancel("k1") is False  # ended: nothing to cancel
    assert other.request_cancel("no-such-job") is False
    # A later job of the collection starts uncancelled: the ended job's cancel went with its end.
    assert runner.claim_job("k2", "c", _running(), 60.0) is None
    assert runner.publish_job("k2", "c", _running()) is False


def test_a_collections_running_job_is_seen_from_any_replica(stores: list[PostgresStore]) -> None:
    first, second = stores
    assert second.running_job("r", 60.0) is None
    assert first.claim_job("r1", "r", _running(), 60.0) is None
    assert second.running_job("r", 60.0) == "r1" and second.running_job("other", 60.0) is None
    assert second.running_job("r", 0.0) is None  # not refreshed within the lost-after time: its replica stopped
    first.publish_job("r1", "r", {"status": "done", "examples": 1})
    assert second.running_job("r", 60.0) is None


def test_a_running_job_left_by_a_killed_replica_goes_with_the_retention(stores: list[PostgresStore],
                                                                         database_url: str) -> None:
    """Only finished jobs were purged after 7 days: a killed replica's row stayed "running" forever (QA)."""
    first, _ = stores
    assert first.claim_job("old", "k", _running(), 60.0) is None
    assert first.claim_job("recent", "k2", _running(), 60.0) is None
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE search_jobs SET updated_at = now() - interval '8 days' WHERE id = 'old'")
    first.publish_job("ended", "k3", {"status": "done", "examples": 1})  # a job's end purges the board
    assert first.lookup_job("old") is None and first.lookup_job("recent") is not None
