"""Test data and small helpers shared by the suites."""

import contextlib
import importlib
import inspect
import io
import sys
import warnings
from typing import Any

from fastapi.testclient import TestClient

ANIMALS = [
    {"id": "cat", "title": "Cats", "text": "Cats are small domesticated felines that purr and hunt mice.",
     "metadata": {"kind": "mammal", "year": 2020, "tags": ["pet", "fur"], "legs": 4}},
    {"id": "dog", "title": "Dogs", "text": "Dogs are loyal companions that bark at strangers and fetch sticks.",
     "metadata": {"kind": "mammal", "year": 2022, "tags": ["pet", "fur"], "legs": 4}},
    {"id": "eagle", "title": "Eagles", "text": "Eagles are birds of prey with sharp talons and keen eyesight.",
     "metadata": {"kind": "bird", "year": 2018, "tags": ["wild", "feathers"], "legs": 2}},
    {"id": "salmon", "title": "Salmon", "text": "Salmon swim upstream from the ocean to spawn in rivers.",
     "metadata": {"kind": "fish", "year": 2019, "tags": ["wild"], "legs": 0, "edible": True}},
    {"id": "rocket", "title": "Rocket engines", "text": "A rocket engine burns propellant to produce thrust in space.",
     "metadata": {"kind": "machine", "year": 2021, "tags": ["space"], "edible": False}},
    {"id": "bread", "title": "Sourdough", "text": "Sourdough bread rises with wild yeast and lactic acid bacteria.",
     "metadata": {"kind": "food", "year": 2023, "tags": ["baking"], "edible": True}},
]



def search(client: TestClient, query: str, collection: str = "animals", **body: Any) -> dict[str, Any]:
    """A search that must succeed; unfiltered unless the test asks for the relevance filter."""
    body.setdefault("relevance", {"enabled": False})
    response = client.post(f"/v1/collections/{collection}/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def ids(result: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in result["hits"]]


# Importing these opens a browser, prints, or drags in a GUI toolkit.
_SKIP_MODULES = {"antigravity", "this", "idlelib", "turtle", "turtledemo", "tkinter"}


def stdlib_docstrings() -> list[str]:
    """Docstrings of standard-library modules and a couple of their members: real, offline prose."""
    docs: list[str] = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names - _SKIP_MODULES):
            try:
                module = None if name.startswith("_") else importlib.import_module(name)
            except Exception:
                continue
            if module is None or not inspect.getdoc(module):
                continue
            docs.append(inspect.getdoc(module) or "")
            members = [getattr(module, m, None) for m in sorted(vars(module)) if not m.startswith("_")]
            owned = [m for m in members if getattr(m, "__module__", None) == name and inspect.getdoc(m)]
            docs.extend(inspect.getdoc(m) or "" for m in owned[:2])
    return docs
