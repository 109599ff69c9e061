"""Where a service's state lives, from its settings: the store of record (the embedded SQLite one in the data
directory, or the shared PostgreSQL one read through this replica's mirror) and the folder of index snapshots."""

import logging
from pathlib import Path

from app.settings import Settings
from app.store.base import DocumentStore
from app.store.mirror import MirrorStore
from app.store.postgres import PostgresStore
from app.store.replica import ReplicaStore
from app.store.snapshots import SnapshotDir
from app.store.sqlite import SqliteStore

log = logging.getLogger("app.engine")


def open_store(settings: Settings) -> DocumentStore:
    """The shared PostgreSQL store when `database_url` is set, else the embedded SQLite one."""
    if settings.database_url:
        return open_replica_store(settings)
    return SqliteStore(embedded_store_path(settings))


def embedded_store_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "documents.sqlite3"


def open_replica_store(settings: Settings) -> ReplicaStore:
    """The shared store at `settings.database_url`, read through a mirror in the replica's data dir."""
    shared = PostgresStore(settings.database_url, tombstone_retention=settings.tombstone_retention,
                           timeout=settings.database_timeout_seconds)
    return ReplicaStore(shared, MirrorStore(Path(settings.data_dir) / "replica.sqlite3", shared.identity()))


def index_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "indexes"


def remove_orphan_indexes(root: Path, live: set[str]) -> None:
    """Removes the index folders under `root` of no live collection (uids): what a kill during a collection's
    deletion leaves, after the store forgot it. Only at start-up, before any collection is created."""
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir() and folder.name not in live:
                log.warning("removing %s: the index folder of a deleted collection", folder)
                SnapshotDir(folder).remove()
