"""The shipped config file and the code's own defaults say the same thing."""

import os
import tomllib
from typing import Any

import pytest

from app.settings import DEFAULT_CONFIG, Settings


def _differences(code: dict[str, Any], shipped: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in shipped.items():
        if isinstance(value, dict):
            found += _differences(code[key], value, f"{prefix}{key}.")
        elif code[key] != value:
            found.append(f"{prefix}{key}: code {code[key]!r}, file {value!r}")
    return found


def _code_defaults(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for key in [k for k in os.environ if k.startswith("SEARCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SEARCH_CONFIG", "/nonexistent/settings.toml")
    return Settings().model_dump()


def _shipped() -> dict[str, Any]:
    shipped = tomllib.loads(DEFAULT_CONFIG.read_text())
    for path_key in ("data_dir", "model"):  # the file's paths are relative, the code's resolved
        shipped.pop(path_key)
    return shipped


def test_config_file_repeats_the_code_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/settings.toml documents every default; a service started without it must behave the same."""
    assert _differences(_code_defaults(monkeypatch), _shipped()) == []


def test_a_drifted_default_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    drifted = _shipped()
    drifted["collection_defaults"]["hnsw"]["m"] = 16
    assert _differences(_code_defaults(monkeypatch), drifted) == ["collection_defaults.hnsw.m: code 32, file 16"]
