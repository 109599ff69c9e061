"""`python -m app export` against a live server: a file that `ingest` loads back into the same collection."""

import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.cli import main
from app.client import SearchClient
from tests.helpers import ANIMALS
from tests.server import Server


def test_an_export_with_vectors_loads_into_the_same_collection(live_server: Server, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("exp-a")
        client.ingest("exp-a", ANIMALS)
    path = tmp_path / "animals.jsonl.gz"
    assert main(["export", "--url", live_server.url, "--collection", "exp-a", "--vectors", str(path)]) == 0
    assert f"{len(ANIMALS)} documents of 'exp-a' written to {path}" in capsys.readouterr().err
    with gzip.open(path, "rt", encoding="utf-8") as written:
        lines = [json.loads(line) for line in written]
    assert sorted(line["id"] for line in lines) == sorted(doc["id"] for doc in ANIMALS)
    assert all(len(line["vector"]) == 384 for line in lines) and not list(tmp_path.glob("*.partial"))

    assert main(["ingest", "--url", live_server.url, "--collection", "exp-b", "--quiet", str(path)]) == 0
    with SearchClient(live_server.url) as client:
        before, after = list(client.documents("exp-a", vectors=True)), list(client.documents("exp-b", vectors=True))
        assert [{**d, "vector": None} for d in after] == [{**d, "vector": None} for d in before]
        assert np.allclose([d["vector"] for d in after], [d["vector"] for d in before], atol=1e-6)
        body = {"mode": "hybrid", "k": 5, "relevance": {"enabled": False}}
        assert [h["id"] for h in client.search("exp-a", "a pet that purrs", **body)["hits"]] == \
            [h["id"] for h in client.search("exp-b", "a pet that purrs", **body)["hits"]]


def test_without_vectors_an_export_holds_the_documents_alone(live_server: Server, tmp_path: Path) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("exp-c")
        client.ingest("exp-c", ANIMALS[:3])
    path = tmp_path / "animals.jsonl"
    assert main(["export", "--url", live_server.url, "--collection", "exp-c", "--quiet", str(path)]) == 0
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == sorted(({k: doc.get(k) if k != "metadata" else doc.get(k, {}) for k in
                             ("id", "text", "title", "metadata")} for doc in ANIMALS[:3]), key=lambda d: d["id"])


def test_an_unknown_collection_writes_no_file(live_server: Server, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "none.jsonl"
    assert main(["export", "--url", live_server.url, "--collection", "exp-missing", str(path)]) == 1
    assert "export failed: 404" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_export_cut_short_leaves_no_file(live_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("exp-d")
        client.ingest("exp-d", ANIMALS[:3])

    def cut(self: SearchClient, collection: str, **options: object) -> Iterator[dict[str, object]]:
        yield {"id": "first", "text": "read before the server went away"}
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(SearchClient, "documents", cut)
    path = tmp_path / "cut.jsonl"
    assert main(["export", "--url", live_server.url, "--collection", "exp-d", "--quiet", str(path)]) == 1
    assert "export failed: could not reach" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .partial


def test_no_server_fails_at_once_with_no_retries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    assert main(["export", "--url", url, "--collection", "c", "--retries", "0", str(tmp_path / "c.jsonl")]) == 1
    assert f"export failed: could not reach {url}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
