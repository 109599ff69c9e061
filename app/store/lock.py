"""Exclusive lock on a data directory so that one process owns it."""

import fcntl
import os
from pathlib import Path

from app.errors import DataDirLocked, DataDirUnusable


class DataDirLock:
    """An flock on DATA_DIR/LOCK, held for the life of the process; the kernel drops it if we die."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            why = "it is a file" if self.path.parent.is_file() else f"{exc.strerror} ({exc.filename})"
            raise DataDirUnusable(f"SEARCH_DATA_DIR {self.path.parent} cannot be used as the data directory: "
                                  f"{why}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"data directory {self.path.parent} is in use by another process "
                "(one server per SEARCH_DATA_DIR); stop it or choose another SEARCH_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
