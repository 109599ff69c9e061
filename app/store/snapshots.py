"""Index snapshots: written into a fresh directory, then published by atomically replacing a pointer."""

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_POINTER = "CURRENT"


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """A snapshot file's checksum, written beside it and checked before it is loaded."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("w") as handle:
        json.dump(payload, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class SnapshotDir:
    """The snapshots of one collection's indexes; readers only ever see a complete one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def current(self) -> Path | None:
        pointer = self.root / _POINTER
        try:
            name = json.loads(pointer.read_text())["snapshot"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        path = self.root / str(name)
        return path if path.is_dir() else None

    def publish(self, write: Callable[[Path], None]) -> Path:
        """Calls write(tmp_dir), makes it durable, points CURRENT at it and removes older snapshots."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"snap-{uuid.uuid4().hex}"
        tmp = self.root / f".{name}.tmp"
        tmp.mkdir()
        try:
            write(tmp)
            _fsync_tree(tmp)
            os.rename(tmp, self.root / name)
            _fsync_dir(self.root)
            write_json_atomic(self.root / _POINTER, {"snapshot": name})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.root.iterdir():
            if old.is_dir() and old.name.startswith("snap-") and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return self.root / name

    def _remove_folders(self, *prefixes: str) -> None:
        if self.root.is_dir():
            for old in self.root.iterdir():
                if old.is_dir() and old.name.startswith(prefixes):
                    shutil.rmtree(old, ignore_errors=True)

    def remove_partial(self) -> None:
        """Removes the half-written folders of snapshots a kill interrupted (never published: nothing reads them).
        Only while nothing publishes here: at start-up."""
        self._remove_folders(".snap-")

    def discard(self) -> None:
        """Drops the index snapshots (the pointer first, durably, so none is loaded again); the folders beside
        them (a trained adapter's) stay."""
        pointer = self.root / _POINTER
        if pointer.exists():
            pointer.unlink()
            _fsync_dir(self.root)
        self._remove_folders("snap-", ".snap-")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
