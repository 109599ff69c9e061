"""Where a service's state lives, from its settings: the store of record (the embedded SQLite one in the data
directory, or the shared PostgreSQL one read through this replica's mirror) and the folder of index snapshots."""

import logging
from pathlib import Path

from app.errors import DataDirUnusable
from app.settings import Settings
from app.store.base import DocumentStore
from app.store.mirror import MirrorStore
from app.store.postgres import PostgresStore
from app.store.replica import ReplicaStore
from app.store.snapshots import SnapshotDir
from app.store.sqlite import SqliteStore

log = logging.getLogger("app.engine")
REPLICA_COPY = "replica.sqlite3"  # a replica's local copy of the shared store (MirrorStore)


def open_store(settings: Settings) -> DocumentStore:
    """The shared PostgreSQL store when `database_url` is set, else the embedded SQLite one. DataDirUnusable for a
    data dir of the other kind: a replica's dir started without the URL served as an empty embedded store (and
    removed the index folders of "deleted" collections), and an embedded one with it ignored its documents (QA)."""
    data_dir, embedded = Path(settings.data_dir), embedded_store_path(settings)
    if settings.database_url:
        if embedded.exists():
            raise DataDirUnusable(f"{data_dir} holds an embedded store ({embedded.name}), which a replica does not "
                                  "read: give each replica a data dir of its own without one (to move its documents "
                                  "into PostgreSQL, ingest them through a replica)")
        return open_replica_store(settings)
    if (data_dir / REPLICA_COPY).exists() and not embedded.exists():
        raise DataDirUnusable(f"{data_dir} is a replica's ({REPLICA_COPY}, its copy of a PostgreSQL store): set "
                              "SEARCH_DATABASE_URL to that database, or give an empty data dir for an embedded store")
    return SqliteStore(embedded)


def embedded_store_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "documents.sqlite3"


def open_replica_store(settings: Settings) -> ReplicaStore:
    """The shared store at `settings.database_url`, read through a mirror in the replica's data dir."""
    shared = PostgresStore(settings.database_url, tombstone_retention=settings.tombstone_retention,
                           timeout=settings.database_timeout_seconds,
                           answer_seconds=settings.database_answer_seconds)
    return ReplicaStore(shared, MirrorStore(Path(settings.data_dir) / REPLICA_COPY, shared.identity()))


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
