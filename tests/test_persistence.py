"""Restarts keep everything: same results after a clean restart, acknowledged writes survive kill -9."""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

import app.engine.tokenizer as tokenizer_module
from app.client import SearchClient
from app.engine.collection import SNAPSHOT_AFTER_REPLAYING
from app.engine.dense import DenseIndex
from app.engine.embedder import Embedder
from app.main import create_app
from app.settings import Settings
from tests.conftest import AppFactory, wait_ready
from tests.helpers import ANIMALS, ids, search
from tests.server import ROOT, Server

QUERIES = ["cats purr", "birds with talons", "space thrust", "wild yeast bread", "fish swimming upstream"]
OFF = {"enabled": False}


class CountingEmbedder:
    """Delegates to the real encoder and counts document encodes (a restart must need none)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.documents_encoded = 0

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        self.documents_encoded += len(texts)
        return self.inner.encode_documents(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _results(client: Any) -> list[list[tuple[str, float]]]:
    out = []
    for query in QUERIES:
        for mode in ("hybrid", "lexical", "dense"):
            body = {"query": query, "mode": mode, "k": 10, "relevance": OFF}
            hits = client.post("/v1/collections/animals/search", json=body).json()["hits"]
            out.append([(h["id"], round(h["score"], 5)) for h in hits])
    return out


@pytest.mark.parametrize("snapshot_every_writes", [1, 1_000_000])
def test_restart_gives_identical_results_without_reencoding(
        make_client: AppFactory, embedder: Embedder, snapshot_every_writes: int) -> None:
    """With a snapshot after every write, and with only the one taken at shutdown. Either way the restart loads
    a snapshot that covers every write; replay after a partial snapshot is tested below, with a kill."""
    with make_client(snapshot_every_writes=snapshot_every_writes, snapshot_check_seconds=0.05) as client:
        client.put("/v1/collections/animals")
        client.post("/v1/collections/animals/documents", json={"documents": ANIMALS})
        client.delete("/v1/collections/animals/documents/dog")
        client.post("/v1/collections/animals/documents", json={"documents": [
            {"id": "eagle", "text": "Eagles soar over mountains hunting rabbits.", "metadata": {"kind": "bird"}}]})
        before = _results(client)
    counting = CountingEmbedder(embedder)
    data_dir = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    with TestClient(create_app(Settings(data_dir=data_dir), counting)) as again:  # type: ignore[arg-type]
        wait_ready(again)
        assert _results(again) == before
        assert again.get("/v1/collections/animals").json()["count"] == len(ANIMALS) - 1
        assert again.get("/v1/collections/animals/documents/dog").status_code == 404
    assert counting.documents_encoded == 0


def _flip(path: Path, at: float, count: int = 64) -> None:
    """Inverts `count` bytes from `at` (a fraction of the file): damage that keeps the file's size."""
    data = bytearray(path.read_bytes())
    start = min(int(len(data) * at), max(0, len(data) - count))
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "damage"), [
    ("hnsw.bin", lambda p: p.write_bytes(b"garbage")),
    # Same size, flipped inside: hnswlib read it, /ready said 200, and the first dense search killed the process
    # (SIGSEGV), on every restart; with fewer bytes flipped, searches answered other neighbours.
    ("hnsw.bin", lambda p: _flip(p, 0.5)),
    ("staged-labels.npy", lambda p: p.write_bytes(b"")),  # numpy's EOFError: start-up failed, for good
    ("staged-vectors.npy", lambda p: _flip(p, 0.3, 20)),  # its header: numpy's TokenError, the same
    ("int8-scales.npy", lambda p: _flip(p, 0.9, 8)),  # read as is: other cosines for lexical-only candidates
])
def test_damaged_snapshot_is_rebuilt_from_the_store(make_client: AppFactory, caplog: pytest.LogCaptureFixture,
                                                    name: str, damage: Any) -> None:
    with make_client() as client:
        client.put("/v1/collections/animals")
        client.post("/v1/collections/animals/documents", json={"documents": ANIMALS})
        before = _results(client)
        data_dir = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
    damaged = list(data_dir.glob(f"indexes/*/snap-*/dense/{name}"))
    assert len(damaged) == 1, damaged  # the shutdown snapshot's file: the one this test is about
    damage(damaged[0])
    caplog.set_level(logging.WARNING)
    with make_client() as client:
        assert _results(client) == before
    assert any("snapshot unusable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)


def test_indexes_out_of_step_with_the_store_are_rebuilt(make_client: AppFactory, tmp_path: Path) -> None:
    """The indexes are caches: a store restored from an older copy must not be served through the newer
    indexes' documents. It was: a count of 900 with 600 stored, and searches answering 500 for the rows the
    snapshot named and the store no longer held. Both ways round: newer indexes beside an older store, and
    older indexes beside a newer one."""
    def copy_store(data_dir: Path, to: Path) -> None:
        to.mkdir()
        for file in data_dir.glob("documents.sqlite3*"):
            shutil.copy2(file, to / file.name)

    with make_client(snapshot_every_writes=1, snapshot_check_seconds=0.05) as client:
        client.put("/v1/collections/animals")
        client.post("/v1/collections/animals/documents", json={"documents": ANIMALS[:3]})
        data_dir = Path(client.app.state.settings.data_dir)  # type: ignore[attr-defined]
        early = _results(client)
    copy_store(data_dir, tmp_path / "early-store")
    shutil.copytree(data_dir / "indexes", tmp_path / "early-indexes")
    with make_client() as client:
        client.post("/v1/collections/animals/documents", json={"documents": ANIMALS[3:]})
        for doc_id in ("cat", "dog"):
            client.delete(f"/v1/collections/animals/documents/{doc_id}")
        late = _results(client)
    copy_store(data_dir, tmp_path / "late-store")
    shutil.copytree(data_dir / "indexes", tmp_path / "late-indexes")

    for store, indexes, count, expected in (("early-store", "late-indexes", 3, early),
                                            ("late-store", "early-indexes", len(ANIMALS) - 2, late)):
        for file in data_dir.glob("documents.sqlite3*"):
            file.unlink()
        for file in (tmp_path / store).iterdir():
            shutil.copy2(file, data_dir / file.name)
        shutil.rmtree(data_dir / "indexes")
        shutil.copytree(tmp_path / indexes, data_dir / "indexes")
        with make_client() as client:
            assert client.get("/v1/collections/animals").json()["count"] == count, (store, indexes)
            assert _results(client) == expected, (store, indexes)


def _record(doc_id: str, word: str) -> dict[str, Any]:
    return {"id": doc_id, "text": f"Record {doc_id} carries the word {word}.", "metadata": {"word": word}}


def _current_snapshot(data_dir: Path) -> tuple[str, int]:
    """(name, covered store sequence) of the one collection's current snapshot."""
    (collection_dir,) = (data_dir / "indexes").iterdir()
    name = json.loads((collection_dir / "CURRENT").read_text())["snapshot"]
    return name, json.loads((collection_dir / name / "manifest.json").read_text())["seq"]


def test_kill_9_after_a_partial_snapshot_replays_upserts_and_tombstones(make_client: AppFactory,
                                                                        tmp_path: Path) -> None:
    """A snapshot, then upserts, a replacement and deletes it does not cover, then kill -9: the restart loads the
    snapshot and replays the newer rows and tombstones, and BM25 and the graph both serve exactly the store."""
    data_dir = tmp_path / "data"
    first = [_record(f"r{i}", f"alpha{i}") for i in range(6)]
    # The periodic snapshot fires once the six first writes are in, and not again for the five after it.
    server = Server(data_dir, SEARCH_SNAPSHOT_EVERY_WRITES=str(len(first)),
                    SEARCH_SNAPSHOT_CHECK_SECONDS="0.05").start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.put("/v1/collections/records").status_code == 201
            assert http.post("/v1/collections/records/documents", json={"documents": first}).status_code == 200
            deadline = time.monotonic() + 60
            while not (data_dir / "indexes").is_dir() or not any((data_dir / "indexes").glob("*/CURRENT")):
                assert time.monotonic() < deadline, "no snapshot was written"
                time.sleep(0.05)
            snapshot = _current_snapshot(data_dir)
            later = [_record("r0", "omega0"), _record("r6", "alpha6"), _record("r7", "alpha7")]  # r0 replaced
            assert http.post("/v1/collections/records/documents", json={"documents": later}).status_code == 200
            assert http.delete("/v1/collections/records/documents/r1").status_code == 204  # snapshotted doc
            assert http.delete("/v1/collections/records/documents/r7").status_code == 204  # doc newer than it
            assert _current_snapshot(data_dir) == snapshot
    finally:
        server.kill()
    # Nothing after the snapshot reached an index file: the restart has to replay five writes on top of it.
    assert _current_snapshot(data_dir) == snapshot and snapshot[1] == len(first)
    live = {"r0": "omega0", "r2": "alpha2", "r3": "alpha3", "r4": "alpha4", "r5": "alpha5", "r6": "alpha6"}
    with make_client() as client:
        collection = client.app.state.engine.collection("records")  # type: ignore[attr-defined]
        assert collection.writes_since_snapshot == 5  # r0 and r6; tombstones of r0's old copy, r1 and r7
        assert client.get("/v1/collections/records").json()["count"] == len(live)
        for doc_id in ("r1", "r7"):
            assert client.get(f"/v1/collections/records/documents/{doc_id}").status_code == 404
        for mode in ("lexical", "dense", "hybrid"):
            everything = ids(search(client, "record carries the word", "records", mode=mode, k=20))
            assert sorted(everything) == sorted(live), mode
        for doc_id, word in live.items():
            assert client.get(f"/v1/collections/records/documents/{doc_id}").json()["text"] == \
                _record(doc_id, word)["text"]
            assert ids(search(client, word, "records", mode="lexical", k=20)) == [doc_id]
            assert ids(search(client, _record(doc_id, word)["text"], "records", mode="dense", k=1)) == [doc_id]
        for gone in ("alpha0", "alpha1", "alpha7"):  # r0's old words, the deleted docs' words
            assert ids(search(client, gone, "records", mode="lexical", k=20)) == []


def test_a_snapshot_of_an_older_analysis_is_analysed_again_from_the_store_and_keeps_its_graph(
        make_client: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An upgrade that changes the text analysis ("İstanbul" was "i" + "stanbul" before 2026-12-03, "i̇stanbul" until
    2026-12-05: a query for "istanbul" found neither) makes the
    lexical index of a snapshot from before it wrong. The start makes it again from the store's texts, loads the
    graph as it was (re-inserting nothing), replays the writes after the snapshot, and the next check's snapshot
    keeps it."""
    live = {"ist": "İstanbul ferry timetable", "r2": "Record two", "r3": "Record three", "izm": "İzmir harbour"}
    with monkeypatch.context() as before:
        # as before 2026-12-05: "i̇stanbul" kept its dot
        before.setattr(tokenizer_module, "unaccented", lambda word: word)
        before.setattr(tokenizer_module, "ANALYSIS_VERSION", 1)
        with make_client(snapshot_every_writes=1_000_000) as client:
            assert client.put("/v1/collections/records").status_code == 201
            first = [{"id": doc_id, "text": live.get(doc_id, "Record one")} for doc_id in ("ist", "r1", "r2", "r3")]
            assert client.post("/v1/collections/records/documents", json={"documents": first}).status_code == 200
            assert ids(search(client, "istanbul", "records", mode="lexical")) == []  # the old analysis's miss
            collection = client.app.state.engine.collection("records")  # type: ignore[attr-defined]
            collection.snapshot()
            later = [{"id": "izm", "text": live["izm"]}]
            assert client.post("/v1/collections/records/documents", json={"documents": later}).status_code == 200
            assert client.delete("/v1/collections/records/documents/r1").status_code == 204
            collection.writes_since_snapshot = 0  # as a kill would: the stop snapshots nothing over the tail
    inserted: list[int] = []
    upsert = DenseIndex.upsert

    def counting_upsert(index: DenseIndex, labels: np.ndarray, vectors: np.ndarray) -> None:
        inserted.extend(np.asarray(labels).tolist())
        upsert(index, labels, vectors)

    monkeypatch.setattr(DenseIndex, "upsert", counting_upsert)
    with caplog.at_level(logging.INFO), make_client() as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert inserted == [engine.get("records", "izm").label]  # only the tail: the graph was loaded
        assert engine.collection("records").writes_since_snapshot == 3 + 2  # ist, r2, r3; izm and r1's tombstone
        assert any("analysed again" in r.getMessage() for r in caplog.records)
        for query, doc_id in (("istanbul", "ist"), ("izmir", "izm"), ("ferry", "ist"), ("three", "r3")):
            assert ids(search(client, query, "records", mode="lexical")) == [doc_id], query
        assert sorted(ids(search(client, "record", "records", mode="lexical"))) == ["r2", "r3"]
        assert sorted(ids(search(client, "record", "records", mode="dense", k=10))) == sorted(live)
        # The next check snapshots it, few as the writes since are: until then a crash analysed everything again
        # at every start (QA). Then a kill: the stop snapshots nothing.
        collection = engine.collection("records")
        assert collection.snapshot_soon
        engine.snapshot_due()
        assert collection.writes_since_snapshot == 0 and not collection.snapshot_soon
    caplog.clear()
    with caplog.at_level(logging.INFO), make_client() as client:  # the check's snapshot holds the new analysis
        assert not any("analysed again" in r.getMessage() for r in caplog.records)
        assert client.app.state.engine.collection("records").writes_since_snapshot == 0  # type: ignore[attr-defined]
        assert ids(search(client, "istanbul", "records", mode="lexical")) == ["ist"]


def test_a_start_that_replayed_many_writes_snapshots_at_the_next_check(make_client: AppFactory) -> None:
    """A start with no snapshot (or an old one) replays the store's writes into the graph, ~1 ms each; only
    20,000 more writes or a clean stop snapshotted that, so a crash made every start replay them all again (QA)."""
    rng = np.random.default_rng(3)
    docs = [{"id": f"d{i}", "text": f"doc {i}", "vector": rng.standard_normal(384).tolist()}
            for i in range(SNAPSHOT_AFTER_REPLAYING)]
    with make_client(snapshot_every_writes=1_000_000) as client:
        # (an explicit ef_search: a measurement, due at 1,000 vectors, would ask for a snapshot itself)
        assert client.put("/v1/collections/many", json={"hnsw": {"ef_search": 64}}).status_code == 201
        assert client.post("/v1/collections/many/documents", json={"documents": docs}).status_code == 200
        collection = client.app.state.engine.collection("many")  # type: ignore[attr-defined]
        assert not collection.snapshot_soon  # writes alone wait for their count
        collection.writes_since_snapshot = 0  # as a kill would: no snapshot
    with make_client(snapshot_every_writes=1_000_000) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.collection("many").snapshot_soon
        engine.snapshot_due()
        assert not engine.collection("many").snapshot_soon and engine.collection("many").writes_since_snapshot == 0
    with make_client(snapshot_every_writes=1_000_000) as client:
        assert not client.app.state.engine.collection("many").snapshot_soon  # type: ignore[attr-defined]
        assert client.get("/v1/collections/many").json()["count"] == len(docs)


def test_a_snapshot_that_cannot_be_written_is_one_log_line_and_the_others_are_still_taken(
        make_client: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk under the first collection stopped the periodic snapshot of every collection after it, and
    logged a traceback at every check (30 s)."""
    with make_client(snapshot_every_writes=1, snapshot_check_seconds=3600) as client:
        for name in ("full", "fine"):
            assert client.put(f"/v1/collections/{name}").status_code == 201
            assert client.post(f"/v1/collections/{name}/documents", json={"documents": ANIMALS}).status_code == 200
        engine = client.app.state.engine  # type: ignore[attr-defined]
        full, fine = engine.collection("full"), engine.collection("fine")

        def no_space() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(full, "snapshot", no_space)
        with caplog.at_level(logging.ERROR, logger="app.engine"):
            engine.snapshot_due()
        assert fine.writes_since_snapshot == 0 and full.writes_since_snapshot == len(ANIMALS)
        (record,) = [r for r in caplog.records if r.name == "app.engine"]
        assert "collection full: no periodic snapshot" in record.getMessage() and "No space left" in record.getMessage()
        assert record.exc_info is None


def test_second_process_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    first = Server(tmp_path / "data").start()
    try:
        second = Server(tmp_path / "data")
        with pytest.raises(RuntimeError, match="exited"):
            second.start(timeout=60)
        log = (tmp_path / f"server-{second.port}.log").read_text()
        assert "in use by another process" in log
    finally:
        assert first.stop()


def test_acknowledged_documents_survive_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    acknowledged: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            http.put("/v1/collections/animals")
            for batch in range(3):
                docs = [{"id": f"{d['id']}-{batch}", "text": d["text"], "metadata": d["metadata"]} for d in ANIMALS]
                response = http.post("/v1/collections/animals/documents", json={"documents": docs})
                assert response.status_code == 200
                acknowledged += response.json()["ids"]
            assert http.delete("/v1/collections/animals/documents/cat-0").status_code == 204
            acknowledged.remove("cat-0")
    finally:
        server.kill()
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.get("/v1/collections/animals").json()["count"] == len(acknowledged)
            for doc_id in acknowledged:
                assert http.get(f"/v1/collections/animals/documents/{doc_id}").status_code == 200
            assert http.get("/v1/collections/animals/documents/cat-0").status_code == 404
            body = {"query": "rocket engine thrust", "k": 10, "relevance": OFF}
            for mode in ("lexical", "dense"):
                found = ids(http.post("/v1/collections/animals/search", json={**body, "mode": mode}).json())
                assert {"rocket-0", "rocket-1", "rocket-2"} <= set(found[:3]), mode
    finally:
        assert server.stop()


def _until_refused(port: int, timeout: float = 60.0) -> None:
    """Returns once nothing listens on `port` any more: a server that closes its socket has begun to shut down."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            return
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.05)


def test_sigterm_finishes_the_request_in_flight_snapshots_and_releases_the_lock(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    docs = [{"id": f"slow-{i}-{d['id']}", "text": " ".join([d["text"]] * 4) + f" Copy {i}."}
            for i in range(600 // len(ANIMALS)) for d in ANIMALS]
    body = json.dumps({"documents": docs}).encode()
    head = (f"POST /v1/collections/animals/documents HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
    try:
        assert httpx.put(f"{server.url}/v1/collections/animals", timeout=60).status_code == 201
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            # The ordering is forced, not timed: the server says 100 Continue only once the app asks for the body,
            # so the request is in flight at the SIGTERM; the body goes only once the server has stopped listening,
            # so the whole request (parse, encode, store) runs after the shutdown began.
            sock.sendall(head.encode())
            interim = b""
            while not interim.endswith(b"\r\n\r\n") and (chunk := sock.recv(1)):
                interim += chunk
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            _until_refused(server.port)
            sock.sendall(body)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # the server closes once it has answered
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]  # finished, not cut off
    finally:
        assert server.stop()  # the SIGTERM above: a clean exit
    # The shutdown snapshot covers the batch, so a restart replays nothing; the lock was released.
    (collection_dir,) = (tmp_path / "data" / "indexes").iterdir()
    current = json.loads((collection_dir / "CURRENT").read_text())["snapshot"]
    manifest = json.loads((collection_dir / current / "manifest.json").read_text())
    server = Server(tmp_path / "data").start()
    try:
        info = httpx.get(f"{server.url}/v1/collections/animals", timeout=60).json()
        assert info["count"] == len(docs) and manifest["seq"] >= len(docs)
    finally:
        assert server.stop()


def test_another_encoder_is_refused_at_start_until_reencode(tmp_path: Path) -> None:
    """Vectors from PyTorch, a restart with int8: refused with the collection named; `reencode`, then it serves."""
    server = Server(tmp_path / "data", SEARCH_ENCODER="torch").start()
    try:
        with SearchClient(server.url) as client:
            client.create_collection("animals")
            client.ingest("animals", [*ANIMALS, {"id": "own", "text": "brought its vector",
                                                 "vector": [1.0] + [0.0] * 383}])
    finally:
        assert server.stop()
    refused = Server(tmp_path / "data", SEARCH_ENCODER="onnx-int8")
    with pytest.raises(RuntimeError, match="exited with 3"):  # a failure for a supervisor, not a death by SIGTERM
        refused.start(timeout=120)
    log = (tmp_path / f"server-{refused.port}.log").read_text()
    assert "'animals' by sentence-transformers/all-MiniLM-L6-v2 (torch)" in log
    assert "SEARCH_ENCODER=torch" in log and "python -m app reencode --collection animals" in log

    env = {**os.environ, "SEARCH_DATA_DIR": str(tmp_path / "data"), "SEARCH_ENCODER": "onnx-int8"}
    done = subprocess.run([sys.executable, "-m", "app", "reencode", "--collection", "animals"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"animals: {len(ANIMALS) + 1} documents re-encoded" in done.stdout and "(onnx-int8)" in done.stdout
    assert "1 of them had brought their own vectors" in done.stdout
    server = Server(tmp_path / "data", SEARCH_ENCODER="onnx-int8").start()
    try:
        with SearchClient(server.url) as client:
            assert client.search("animals", "cats purr", k=1, mode="dense")["hits"][0]["id"] == "cat"
    finally:
        assert server.stop()
