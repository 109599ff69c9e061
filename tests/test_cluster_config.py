"""The compose file's cluster profile and its load balancer: PostgreSQL, replicas, HAProxy routing on /ready.

No Docker engine here: the compose file is read as data, HAProxy checks its configuration, and the same
configuration (its replicas pointed at two local stand-ins instead of Docker's DNS) runs for real to show that
a replica whose /ready is not 200 gets no traffic.
"""

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "config" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
needs_haproxy = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="needs HAProxy: run scripts/install-tools")


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def compose_default(value: str) -> str:
    """`${NAME:-default}` -> default."""
    match = re.fullmatch(r"\$\{\w+:-(.+)\}", value)
    assert match, value
    return match.group(1)


def test_plain_up_is_the_single_embedded_service() -> None:
    always_on = [name for name, service in services().items() if not service.get("profiles")]
    assert always_on == ["search"]
    assert "SEARCH_DATABASE_URL" not in services()["search"]["environment"]


def test_cluster_profile_is_postgres_replicas_and_a_load_balancer() -> None:
    cluster = {name: s for name, s in services().items() if "cluster" in s.get("profiles", [])}
    assert set(cluster) == {"postgres", "search-replica", "lb"}
    postgres, replica, lb = cluster["postgres"], cluster["search-replica"], cluster["lb"]
    assert postgres["image"].startswith("postgres:")
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])
    assert "postgres-data" in yaml.safe_load(COMPOSE.read_text())["volumes"]

    assert replica["image"] == services()["search"]["image"]
    assert int(compose_default(str(replica["deploy"]["replicas"]))) >= 2
    # One CPU a replica, as the benchmark's pinned replica row measures them.
    assert float(compose_default(replica["deploy"]["resources"]["limits"]["cpus"])) == 1
    assert compose_default(replica["environment"]["SEARCH_THREADS"]) == "1"
    assert "@postgres:5432/" in replica["environment"]["SEARCH_DATABASE_URL"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "volumes" not in replica  # a named volume shared by replicas would be one data dir for all of them

    assert lb["image"].startswith("haproxy:")
    assert f"./{HAPROXY_CFG.relative_to(ROOT)}:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    published = lb["ports"][0].rsplit(":", 1)[1]
    config = HAPROXY_CFG.read_text()
    assert f"bind :{published}" in config
    assert "option httpchk GET /ready" in config and "http-check expect status 200" in config
    assert re.search(r"server-template \w+ \d+ search-replica:8000\b", config)


@needs_haproxy
def test_haproxy_accepts_the_configuration() -> None:
    result = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


class StandIn:
    """A replica's stand-in: /ready answers `ready_status`; any other path answers with the stand-in's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready_status = 200
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = stand_in.ready_status if self.path == "/ready" else 200
                body = stand_in.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def local_config(port: int, replicas: list[StandIn]) -> str:
    """The shipped configuration with Docker's DNS discovery swapped for the stand-ins; checks fast."""
    config = HAPROXY_CFG.read_text()
    swaps = {
        "bind :8000": f"bind 127.0.0.1:{port}",
        " resolvers docker init-addr none": "",
        "inter 2s fall 2 rise 2": "inter 50ms fall 1 rise 1",
    }
    for old, new in swaps.items():
        assert old in config, old  # the test must follow the configuration it stands for
        config = config.replace(old, new)
    config = re.sub(r"\nresolvers docker\n(    .*\n)+", "\n", config)
    template = re.search(r"    server-template .*\n", config)
    assert template
    servers = "".join(f"    server {r.name} 127.0.0.1:{r.port}\n" for r in replicas)
    return config.replace(template.group(0), servers)


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, list[StandIn]]]:
    replicas = [StandIn("a"), StandIn("b")]
    replicas[1].ready_status = 503  # still starting
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(local_config(port, replicas))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}", replicas
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for replica in replicas:
            replica.server.shutdown()


def served_by(url: str, requests: int = 12) -> set[str]:
    with httpx.Client(timeout=5) as client:
        return {client.get(f"{url}/v1/collections").text for _ in range(requests)}


def eventually(url: str, expected: set[str], timeout: float = 10.0) -> set[str]:
    """Polls until the balancer's traffic goes to exactly `expected` (health checks take a few intervals)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen = served_by(url)
        except httpx.HTTPError:
            seen = set()
        if seen == expected:
            return seen
        time.sleep(0.05)
    return seen


@needs_haproxy
def test_balancer_sends_traffic_only_to_replicas_whose_ready_is_200(
        balancer: tuple[str, list[StandIn]]) -> None:
    url, (a, b) = balancer
    assert eventually(url, {"a"}) == {"a"}
    b.ready_status = 200  # b has caught up
    assert eventually(url, {"a", "b"}) == {"a", "b"}
    a.ready_status = 503  # a restarts
    assert eventually(url, {"b"}) == {"b"}
