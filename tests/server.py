"""Starts the real service (uvicorn in a subprocess) on a free loopback port, for crash and load tests."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.bench.server import free_port
from app.client import SearchClient

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["ROOT", "Server", "free_port"]


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SEARCH_DATA_DIR": str(data_dir), "SEARCH_LOG_LEVEL": "warning", **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> "Server":
        log = (self.data_dir.parent / f"server-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        with SearchClient(self.url, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}")
                if client.ready():
                    return self
                time.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, no snapshot is written."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down cleanly (uvicorn re-raises the signal once done)."""
        if self.proc is None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60) in (0, -signal.SIGTERM)
