"""The real service in a subprocess (uvicorn app.main:app) on a free loopback port, for the benchmark."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from app.client import SearchClient
from app.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchServer:
    """One uvicorn process on its own data dir. As a context manager it never outlives the block."""

    def __init__(self, data_dir: Path, log_dir: Path, threads: int, env: dict[str, str] | None = None) -> None:
        """`env`: more SEARCH_* settings for the process (e.g. SEARCH_ENCODER)."""
        self.data_dir = data_dir
        self.log_path = log_dir / f"server-{data_dir.name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Snapshots only at shutdown, so that none lands in the middle of a measurement; no keys.
        self.env = {**os.environ, "SEARCH_DATA_DIR": str(data_dir), "SEARCH_LOG_LEVEL": "warning",
                    "SEARCH_THREADS": str(threads), "SEARCH_SNAPSHOT_EVERY_WRITES": str(10**9),
                    "SEARCH_API_KEYS": "", "SEARCH_ADMIN_KEYS": "", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = SearchClient(self.url, timeout=60)

    def start(self, timeout: float = 1800.0) -> float:
        """Starts the process and returns the seconds from its start until /ready answers 200."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client.close()
        self.client = SearchClient(self.url, timeout=60)
        with self.log_path.open("ab") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.client.ready():
                return time.perf_counter() - started
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server did not become ready in {timeout:.0f} s:\n{self.log_tail()}")

    def rss_bytes(self) -> int:
        """Resident set size of the server process (VmRSS in /proc/PID/status)."""
        if self.proc is None:
            raise RuntimeError("server not started")
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def stop(self, timeout: float = 600.0) -> float:
        """SIGTERM (the server snapshots its indexes), wait; SIGKILL if it hangs. Returns the seconds taken."""
        proc, self.proc = self.proc, None
        self.client.close()
        if proc is None or proc.poll() is not None:
            return 0.0
        started = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"server ignored SIGTERM for {timeout:.0f} s; killed") from None
        if code not in (0, -signal.SIGTERM):
            raise RuntimeError(f"server exited with {code} on SIGTERM:\n{self.log_tail()}")
        return time.perf_counter() - started

    def pin(self, cores: set[int] | None) -> None:
        """Runs every thread of the server on `cores` only (None: on any core this benchmark may use), as a
        container given that many CPUs would; the threads it starts later inherit that from their starters."""
        if self.proc is None:
            raise RuntimeError("server not started")
        allowed = cores if cores is not None else os.sched_getaffinity(0)
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), allowed)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, all its threads (utime, stime in /proc/PID/stat)."""
        if self.proc is None:
            raise RuntimeError("server not started")
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __enter__(self) -> "BenchServer":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.stop()
            return
        proc = self.proc
        try:  # already failing: do not mask that error, but leave nothing behind
            self.stop(timeout=60.0)
        except Exception:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
