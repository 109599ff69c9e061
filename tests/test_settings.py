"""Settings: code defaults < config file < SEARCH_* environment, and a bad value fails at start."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.engine.types import CollectionSettings, SearchDefaults
from app.errors import DataDirUnusable
from app.settings import DEFAULT_CONFIG, Settings, load_settings, unknown_variables
from app.store.lock import DataDirLock
from tests.conftest import AppFactory
from tests.server import ROOT, free_port


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file of the test's own, and no SEARCH_* from the environment running the tests."""
    for key in [k for k in os.environ if k.startswith("SEARCH_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "settings.toml"
    path.write_text("")
    monkeypatch.setenv("SEARCH_CONFIG", str(path))
    return path


def test_the_shipped_file_keeps_the_code_defaults(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_CONFIG", str(DEFAULT_CONFIG))
    settings = Settings()
    assert settings.collection_defaults == CollectionSettings()
    assert settings.search_defaults == SearchDefaults()


def test_every_setting_is_named_in_the_shipped_file_and_the_readme() -> None:
    """Operators find the keys in those two places; both had fallen behind the code (cors_origins and
    fallback_adapter_dir were in neither list)."""
    shipped = DEFAULT_CONFIG.read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert re.search(rf"\b{name}\b", shipped), name
        assert f"`SEARCH_{name.upper()}`" in readme or f"| `{name}` |" in readme, name  # or a table of them


def test_the_file_overrides_a_default_and_the_environment_overrides_the_file(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text("threads = 3\n[collection_defaults.hnsw]\nef_search = 256\n[search_defaults]\nalpha = 0.5\n")
    settings = Settings()
    assert settings.threads == 3
    assert settings.collection_defaults.hnsw.ef_search == 256
    assert settings.collection_defaults.hnsw.m == CollectionSettings().hnsw.m  # the keys not set keep theirs
    assert settings.search_defaults.alpha == 0.5
    monkeypatch.setenv("SEARCH_THREADS", "4")
    assert Settings().threads == 4


@pytest.mark.parametrize("text", ["[collection_defaults.hnsw]\nm = 1\n", "[collection_defaults.bm25]\nk2 = 1.0\n",
                                  "[search_defaults]\nnormalization = \"l2\"\n", "no_such_key = 1\n",
                                  "snapshot_check_seconds = inf\n", "max_body_bytes = 99999999999999999999\n"])
def test_a_bad_value_or_unknown_key_fails_at_start(config: Path, text: str) -> None:
    config.write_text(text)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("keys", ["clé", "ok,key\u00a0inside", "a\x01b"])
def test_a_key_no_client_can_send_fails_at_start(keys: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP header carries visible ASCII only: SEARCH_ADMIN_KEYS=clé started, and no client could use it (QA)."""
    monkeypatch.setenv("SEARCH_ADMIN_KEYS", keys)
    with pytest.raises(ValidationError, match="visible ASCII"):
        Settings()


def test_a_config_file_that_is_not_there_fails_at_start(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_CONFIG", str(config.with_name("thre.toml")))  # a typo: not the defaults, silently
    with pytest.raises(FileNotFoundError, match=r"thre\.toml"):
        Settings()


@pytest.mark.parametrize("url", ["postgresql://search:hunter2%zzSECRET@127.0.0.1:5432/search",
                                 "postgresq://search:hunter2SECRET@127.0.0.1/search", "mysql://u:hunter2SECRET@h/db"])
def test_a_bad_database_url_fails_at_start_without_its_secret(
        config: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SEARCH_DATABASE_URL", url)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "database_url" in str(refused.value) and "postgresql://" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    monkeypatch.setenv("SEARCH_DATABASE_URL", "postgresql://u:p%25w@db.example:5432/search?sslmode=require")
    assert Settings().database_url.endswith("sslmode=require")


def test_a_process_starting_on_bad_settings_ends_with_one_line_naming_them(
        config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_THREADS", "abc")
    monkeypatch.setenv("SEARCH_DATABASE_URL", "postgresql://u:hunter2%zz@h/db")
    with pytest.raises(SystemExit) as ended:
        load_settings()
    message = str(ended.value.code)
    assert "SEARCH_THREADS" in message and "SEARCH_DATABASE_URL" in message and "\n" not in message
    assert "hunter2" not in message
    monkeypatch.setenv("SEARCH_CONFIG", str(config.with_name("missing.toml")))
    with pytest.raises(SystemExit, match=r"missing\.toml"):
        load_settings()


@pytest.mark.parametrize("name", ["SEARCH_API_KEY", "SEARCH_ADMIN_KEY", "search_api_key"])
def test_a_server_without_keys_whose_environment_misspells_one_does_not_start_open(
        config: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """SEARCH_API_KEY (the commands' variable) on a server started it open to anyone, with only a warning (QA)."""
    monkeypatch.setenv(name, "secret-key")
    with pytest.raises(SystemExit) as ended:
        load_settings()
    message = str(ended.value.code)
    assert f"{name} is set but is not a setting" in message and "open to anyone" in message
    assert "secret-key" not in message
    monkeypatch.setenv("SEARCH_ADMIN_KEYS", "a-real-key")  # keys configured: the commands' variable may be there
    assert load_settings().admin_keys == ["a-real-key"]


def test_settings_that_do_not_parse_end_with_one_line_naming_them(config: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON setting or a TOML file with a syntax error: a traceback through pydantic-settings before."""
    monkeypatch.setenv("SEARCH_COLLECTION_DEFAULTS", "{bad")
    with pytest.raises(SystemExit) as ended:
        load_settings()
    assert "collection_defaults" in str(ended.value.code) and "\n" not in str(ended.value.code)
    monkeypatch.delenv("SEARCH_COLLECTION_DEFAULTS")
    config.write_text("threads = [\n")
    with pytest.raises(SystemExit) as ended:
        load_settings()
    assert f"{config} is not valid TOML" in str(ended.value.code) and "\n" not in str(ended.value.code)


def test_a_second_server_on_a_data_dir_in_use_says_why_in_one_line_and_exits_3(tmp_path: Path) -> None:
    """uvicorn also logged the refusal's whole traceback (QA); its own "startup failed" line stays."""
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    try:
        env = {**os.environ, "SEARCH_DATA_DIR": str(tmp_path / "data"), "SEARCH_PORT": str(free_port())}
        done = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        lock.release()
    assert done.returncode == 3, done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines() if '"ERROR"' in line]
    assert "is in use by another process" in errors[0]["message"]
    assert "Traceback" not in done.stderr and len(errors) == 2, done.stderr


def test_a_data_dir_that_is_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(DataDirUnusable, match=r"SEARCH_DATA_DIR .*afile cannot be used .*: it is a file"):
        DataDirLock(tmp_path / "afile").acquire()


def test_a_search_variable_that_is_no_setting_is_named_at_start(
        make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The environment source ignores a SEARCH_* variable it has no field for, so a typo started the service on
    the default without a word (while an unknown key in the config file is refused)."""
    environ = {"SEARCH_THREDS": "2", "SEARCH_THREADS": "1", "search_port": "1", "SEARCH_CONFIG": "x.toml",
               "SEARCH_PUBLISH": "8000", "PATH": "/bin", "SEARCH_FROBNICATE": "1"}
    assert unknown_variables(environ) == [
        "SEARCH_FROBNICATE is not a setting and is ignored",
        "SEARCH_THREDS is not a setting and is ignored (did you mean SEARCH_THREADS?)"]
    # Read only as written (os.environ["SEARCH_CONFIG"]), so another case is ignored; pydantic reads settings in
    # any case but compares them lower-cased, so a dotless i (U+0131) is no i. The commands' key is no server setting.
    assert unknown_variables({"search_config": "x", "SEARCH_\u0131NGEST_THREADS": "2", "SEARCH_API_KEY": "k"}) == [
        "SEARCH_API_KEY is not a setting and is ignored (did you mean SEARCH_API_KEYS?)",
        "SEARCH_\u0131NGEST_THREADS is not a setting and is ignored (did you mean SEARCH_INGEST_THREADS?)",
        "search_config is not a setting and is ignored"]
    monkeypatch.setenv("SEARCH_INGEST_THREDS", "4")
    with caplog.at_level(logging.WARNING, logger="app"), make_client():
        pass
    named = "SEARCH_INGEST_THREDS is not a setting and is ignored (did you mean SEARCH_INGEST_THREADS?)"
    assert named in caplog.messages


def test_a_replica_whose_database_cannot_be_reached_at_start_says_why_and_exits_3(tmp_path: Path) -> None:
    """It logged "start-up failed; shutting down" and a traceback ending in "couldn't get a connection after 5.00
    sec"; the cause (refused, no socket) was only in the pool's own warnings (QA)."""
    env = {**os.environ, "SEARCH_DATA_DIR": str(tmp_path / "data"), "SEARCH_PORT": str(free_port()),
           "SEARCH_DATABASE_URL": f"postgresql://search:secret-pw@127.0.0.1:{free_port()}/search"}
    done = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 3, done.stderr
    errors = [json.loads(line) for line in done.stderr.splitlines() if '"ERROR"' in line]
    assert "the PostgreSQL store is unreachable" in errors[0]["message"], done.stderr
    assert "refused" in errors[0]["message"].lower(), errors[0]["message"]  # the cause, from a connection of its own
    assert "Traceback" not in done.stderr and "secret-pw" not in done.stderr


@pytest.mark.parametrize("value", [",", " , ", ",,"])
def test_a_key_list_that_names_no_key_is_refused_not_taken_as_none(value: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SEARCH_API_KEYS="," started the service open to anyone (QA); "" still means none, as compose sets it."""
    for name in ("SEARCH_API_KEYS", "SEARCH_ADMIN_KEYS"):
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit, match=f"{name}: Value error, .* names no key"):
            load_settings()
        monkeypatch.setenv(name, "")
    assert load_settings().api_keys == []


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_dir_is_refused_not_read_as_the_working_directory(value: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """SEARCH_DATA_DIR="" served, and wrote its store, from whatever directory the process started in (QA)."""
    monkeypatch.setenv("SEARCH_DATA_DIR", value)
    with pytest.raises(SystemExit, match="SEARCH_DATA_DIR: Value error, is empty"):
        load_settings()


def test_a_refused_value_names_the_variable_it_came_from_and_nan_is_not_a_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested field was named as a variable that does not exist ("SEARCH_COLLECTION_DEFAULTS_BM25_K1"), and
    "nan" was refused as out of range (QA)."""
    monkeypatch.setenv("SEARCH_COLLECTION_DEFAULTS", '{"bm25": {"k1": -1}}')
    monkeypatch.setenv("SEARCH_HNSW_RECALL_TARGET", "nan")
    monkeypatch.setenv("SEARCH_SNAPSHOT_CHECK_SECONDS", "inf")
    with pytest.raises(SystemExit) as ended:
        load_settings()
    message = str(ended.value.code)
    assert "SEARCH_COLLECTION_DEFAULTS (bm25.k1): Input should be greater than or equal to 0" in message
    assert "SEARCH_HNSW_RECALL_TARGET: Input should be a finite number" in message
    assert "SEARCH_SNAPSHOT_CHECK_SECONDS: Input should be a finite number" in message


def test_a_server_on_bad_settings_exits_3_as_any_start_that_fails(tmp_path: Path) -> None:
    """Bad settings ended `serve` with 1, every other failed start (a data dir in use, a store unreachable) 3."""
    env = {**os.environ, "SEARCH_DATA_DIR": str(tmp_path / "data"), "SEARCH_THREADS": "abc"}
    done = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stderr.splitlines() == ["bad settings (environment or "
                                        f"{DEFAULT_CONFIG}): SEARCH_THREADS: Input should be a valid integer, "
                                        "unable to parse string as an integer"]
    assert not (tmp_path / "data").exists()


def test_a_mistyped_adapter_folder_is_refused_and_an_empty_one_means_none(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A typo served without the default filter after one warning line (QA)."""
    for name in ("SEARCH_ADAPTER_DIR", "SEARCH_FALLBACK_ADAPTER_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "adaptr"))
        with pytest.raises(SystemExit, match=f"{name}: Value error, .*adaptr' is not a folder"):
            load_settings()
        monkeypatch.delenv(name)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SEARCH_ADAPTER_DIR", str(tmp_path / "empty"))
    assert load_settings().adapter_dir == tmp_path / "empty"
