"""The container files and the locks: linted, consistent with scripts/setup; the image's commands serve and probe.

There is no Docker engine here, so the image's CMD and HEALTHCHECK run on this machine instead, from a copy of
what the image copies, laid out as in the image, with the image's environment (host and paths made local).
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
TORCH_PIN = re.compile(r"torch==([\w.+]+)")
RUNTIME_LOCK, DEV_LOCK = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every Dockerfile instruction, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in
            (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for part in shlex.split(rest):
                key, _, value = part.partition("=")
                env[key] = value
    return env


def exec_form(keyword: str) -> list[str]:
    rest = next(rest for kw, rest in final_stage() if kw == keyword)
    command: list[str] = json.loads(rest[rest.index("["):])
    return command


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_passes_the_compose_spec_schema() -> None:
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def locked(lock: Path) -> dict[str, str]:
    """{normalised name: version} of a pip-compile lock."""
    pins = (re.match(r"([\w.-]+)==([\w.+!-]+)", line) for line in lock.read_text().splitlines())
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2] for m in pins if m}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]).lower() for r in requirements}


def test_image_installs_torch_then_the_lock_then_the_project_as_scripts_setup_does() -> None:
    setup = (ROOT / "scripts" / "setup").read_text()
    setup_pins = set(TORCH_PIN.findall(setup))
    project_pins = set(TORCH_PIN.findall((ROOT / "pyproject.toml").read_text()))
    lock_pins = {TORCH_PIN.findall(lock.read_text())[0].split("+")[0] for lock in (RUNTIME_LOCK, DEV_LOCK)}
    installs = [rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest]
    image_pins = {pin for rest in installs for pin in TORCH_PIN.findall(rest)}
    assert len(setup_pins) == 1 and image_pins == setup_pins == project_pins == lock_pins, \
        (setup_pins, image_pins, project_pins, lock_pins)
    torch_step = next(i for i, rest in enumerate(installs) if TORCH_PIN.search(rest))
    lock_step = next(i for i, rest in enumerate(installs) if "pip install -r requirements.lock" in rest)
    project_step = next(i for i, rest in enumerate(installs) if re.search(r"pip install --no-deps \.(\s|$)", rest))
    assert torch_step < lock_step < project_step
    assert "--index-url https://download.pytorch.org/whl/cpu" in installs[torch_step]
    assert "lock=requirements.lock" in setup and "--no-deps -e ." in setup  # the service's set-up, the same lock


def test_the_image_and_set_up_export_the_onnx_graphs_once_the_project_is_installed() -> None:
    """The ONNX encoders load graphs exported at build time (into the venv the final stage copies), never at start."""
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    project_step = next(i for i, rest in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", rest))
    export_step = next(i for i, rest in enumerate(runs) if "-m app export-onnx" in rest)
    last_from = max(i for i, (keyword, _) in enumerate(instructions()) if keyword == "FROM")
    assert project_step < export_step < sum(1 for keyword, _ in instructions()[:last_from] if keyword == "RUN")
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "-m app export-onnx" in setup and setup.rindex("export_onnx") > setup.index("--no-deps -e .")


def test_the_image_holds_one_copy_of_the_code() -> None:
    """app/ is installed into the venv in the build stage; the final stage copies the venv, not app/ again."""
    copies = [rest.split()[:-1] for keyword, rest in final_stage() if keyword == "COPY" and "--from" not in rest]
    assert not [sources for sources in copies if any(s.rstrip("/") in ("app", "pyproject.toml") for s in sources)]


def test_locks_pin_the_cpu_torch_and_no_cuda_packages() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    for pins in (runtime, dev):
        assert pins["torch"].endswith("+cpu")
        assert not [name for name in pins if name.startswith(("nvidia-", "triton", "cuda-"))]
    assert {name: dev.get(name) for name in runtime} == runtime  # the service runs the versions CI tests


def test_locks_cover_every_requirement_of_pyproject() -> None:
    """A dependency added to pyproject.toml and not to the locks would be missing after --no-deps."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for requirements in project["optional-dependencies"].values() for r in requirements]
    assert requirement_names(project["dependencies"]) <= set(locked(RUNTIME_LOCK))
    assert requirement_names(extras) - {project["name"]} <= set(locked(DEV_LOCK))


def test_everything_the_image_copies_gets_past_dockerignore() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [source.rstrip("/") for keyword, rest in instructions() if keyword == "COPY" and "--from" not in rest
               for source in rest.split()[:-1]]
    assert sources
    for source in sources:
        excluded = False
        for pattern in patterns:  # the last matching pattern wins, as in Docker
            if fnmatch.fnmatch(source, pattern.lstrip("!").rstrip("/")):
                excluded = not pattern.startswith("!")
        assert not excluded and (ROOT / source).exists(), source


def test_compose_runs_the_image_with_its_volume_port_keys_and_probe() -> None:
    service = yaml.safe_load(COMPOSE.read_text())["services"]["search"]
    env = image_env()
    volume = next(rest for keyword, rest in final_stage() if keyword == "VOLUME")
    assert [v.split(":")[1] for v in service["volumes"]] == json.loads(volume) == [env["SEARCH_DATA_DIR"]]
    assert [str(p).rsplit(":", 1)[1] for p in service["ports"]] == [env["SEARCH_PORT"]]
    assert {"SEARCH_API_KEYS", "SEARCH_ADMIN_KEYS"} <= set(service["environment"])
    assert service["healthcheck"]["test"] == ["CMD", *exec_form("HEALTHCHECK")]  # the probe tested below
    assert env["HF_HUB_OFFLINE"] == "1" and env["SEARCH_HOST"] == "0.0.0.0"
    user = next(rest for keyword, rest in final_stage() if keyword == "USER")
    assert user.split(":")[0] not in ("0", "root")


def test_image_command_serves_and_its_healthcheck_tells_ready_from_down(tmp_path: Path) -> None:
    """CMD and HEALTHCHECK as the image runs them, from /app's layout, on loopback and a free port."""
    workdir = next(rest for keyword, rest in final_stage() if keyword == "WORKDIR")
    app_root = tmp_path / "app"
    app_root.mkdir()
    for keyword, rest in final_stage():
        if keyword == "COPY" and "--from" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, app_root / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, app_root / source)
    volume = json.loads(next(rest for keyword, rest in final_stage() if keyword == "VOLUME"))[0]
    local = {key: str(tmp_path / "data") if value == volume else value.replace(workdir, str(app_root))
             for key, value in image_env().items() if key != "PATH"}
    port = str(free_port())
    env = {**os.environ, **local, "SEARCH_HOST": "127.0.0.1", "SEARCH_PORT": port}
    command, probe = exec_form("CMD"), exec_form("HEALTHCHECK")
    assert command[0] == probe[0] == "python"
    python = [sys.executable]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(python + command[1:], cwd=app_root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            healthy = False
            while not healthy and time.monotonic() < deadline and server.poll() is None:
                healthy = subprocess.run(python + probe[1:], env=env, capture_output=True).returncode == 0
                time.sleep(0.5)
            assert healthy, (tmp_path / "serve.log").read_text()[-2000:]
            response = httpx.get(f"http://127.0.0.1:{port}/ready")
            assert response.json() == {"status": "ready"}
            assert any((tmp_path / "data").iterdir())  # the data lands in SEARCH_DATA_DIR, the volume
        finally:
            server.terminate()
            assert server.wait(timeout=60) in (0, -15)
    assert subprocess.run(python + probe[1:], env=env, capture_output=True).returncode != 0
