"""A collection remembers the encoder that made its vectors: another encoder is refused at start, naming it and
what to do; `reencode` moves it to the configured encoder in one transaction; adapters serve their model only."""

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.client import NotReadyError, SearchClient
from app.commands.reencode import ReencodeFailed, reencode
from app.engine.collection import Collection
from app.engine.embedder import normalise
from app.engine.encoders import Backend, EncoderIdentity, check_encoders
from app.engine.engine import SearchEngine
from app.engine.relevance import CosineAdapter
from app.engine.shipped_adapters import fits_encoder
from app.engine.types import DocumentInput, SearchQuery
from app.errors import DataDirLocked, EncoderMismatch, InsufficientStorage
from app.main import create_app
from app.settings import Settings
from app.store.base import CollectionRecord
from app.store.lock import DataDirLock
from app.store.sqlite import SqliteStore

DOCS = [DocumentInput(f"d{i}", f"document number {i} about {topic}")
        for i, topic in enumerate(["salmon", "rockets", "tomatoes", "violins", "glaciers"] * 4)]


class StubEncoder:
    """Vectors from a hash of the text and the backend's name: each backend encodes every text differently."""

    def __init__(self, backend: Backend = "torch", model_name: str = "stub-model", dim: int = 8) -> None:
        self.backend, self.model_name, self.dim = backend, model_name, dim
        self.encoded = 0
        self.batch_invariant = True

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.model_name, self.backend)

    def warm_up(self) -> None:
        pass

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{self.backend} {self.model_name} {text}".encode()).digest()[:8])
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(np.stack([self._vector(t) for t in texts])) if texts else np.empty((0, self.dim), np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode_queries([text])[0]

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        return self.encode_queries(texts)


def _settings(tmp_path: Path) -> Settings:
    (tmp_path / "none").mkdir(exist_ok=True)  # no adapters
    return Settings(data_dir=tmp_path / "data", adapter_dir=tmp_path / "none", fallback_adapter_dir=tmp_path / "none")


@pytest.fixture
def made_by_torch(tmp_path: Path) -> Iterator[Settings]:
    """A data dir with collections "papers" and "notes" encoded by the stub's torch backend, snapshotted."""
    settings = _settings(tmp_path)
    engine = SearchEngine(settings, StubEncoder("torch"))
    for name in ("papers", "notes"):
        engine.create_collection(name)
        engine.upsert(name, DOCS)
    engine.close()
    yield settings


def _stored(settings: Settings, name: str) -> tuple[dict[str, object], dict[int, np.ndarray]]:
    store = SqliteStore(Path(settings.data_dir) / "documents.sqlite3")
    try:
        record = next(r for r in store.collections() if r.name == name)
        vectors = {row.label: vector for rows, vecs in store.iter_rows(name)
                   for row, vector in zip(rows, vecs, strict=True)}
        return record.settings, vectors
    finally:
        store.close()


def _dense_top(settings: Settings, encoder: StubEncoder, query: str) -> str:
    """Starts an engine on the data dir and answers the dense top hit of "papers"."""
    engine = SearchEngine(settings, encoder)
    try:
        found = engine.search("papers", SearchQuery(query=query, k=1, offset=0, mode="dense", relevance_enabled=False))
        return found.hits[0].row.id
    finally:
        engine.close()


def test_a_new_collection_records_its_encoder(made_by_torch: Settings) -> None:
    settings, _ = _stored(made_by_torch, "papers")
    assert settings["encoder"] == {"model": "stub-model", "backend": "torch"}


def test_starting_with_another_encoder_names_the_collections_and_what_to_do(made_by_torch: Settings) -> None:
    with pytest.raises(EncoderMismatch) as caught:
        SearchEngine(made_by_torch, StubEncoder("onnx-int8"))
    message = caught.value.message
    assert "'notes' by stub-model (torch)" in message and "'papers' by stub-model (torch)" in message
    assert "SEARCH_ENCODER=torch" in message
    assert "python -m app reencode --collection notes --collection papers" in message
    assert [d["collection"] for d in caught.value.details] == ["notes", "papers"]
    # Another model is named too, with the setting that brings it back.
    with pytest.raises(EncoderMismatch, match="SEARCH_ENCODER=torch SEARCH_MODEL=stub-model"):
        SearchEngine(made_by_torch, StubEncoder("torch", model_name="other-model"))
    SearchEngine(made_by_torch, StubEncoder("torch")).close()  # the encoder that made them starts


def test_an_app_in_another_program_whose_start_up_fails_says_why_and_leaves_its_host_running(
        made_by_torch: Settings) -> None:
    """A server exits when its start-up fails; an app run inside another program (`evaluate`, tests) used to
    SIGTERM that program. It stays up instead, and /ready says why at once."""
    app = create_app(made_by_torch, StubEncoder("onnx-int8"))  # type: ignore[arg-type]
    with TestClient(app) as http:
        with pytest.raises(NotReadyError) as caught:
            SearchClient(http=http).wait_ready(timeout=60)
        assert caught.value.code == "startup_failed"
        assert "start-up failed" in caught.value.message and "'papers' by stub-model (torch)" in caught.value.message
        assert "python -m app reencode" in caught.value.message
        assert http.get("/health").status_code == 200
        assert http.get("/v1/collections").status_code == 503


def test_collections_from_before_encoders_were_recorded_count_as_torch(made_by_torch: Settings) -> None:
    store = SqliteStore(Path(made_by_torch.data_dir) / "documents.sqlite3")
    for record in store.collections():
        legacy = {k: v for k, v in record.settings.items() if k != "encoder"}
        store._writer.execute("UPDATE collections SET settings = ? WHERE name = ?", (json.dumps(legacy), record.name))
    store.close()
    SearchEngine(made_by_torch, StubEncoder("torch")).close()
    with pytest.raises(EncoderMismatch, match="by stub-model \\(torch\\)"):
        SearchEngine(made_by_torch, StubEncoder("onnx"))


def test_reencode_moves_a_collection_to_the_configured_encoder(made_by_torch: Settings) -> None:
    own = DocumentInput("own", "a document that brought its own vector", vector=[1.0] + [0.0] * 7)
    engine = SearchEngine(made_by_torch, StubEncoder("torch"))
    engine.upsert("papers", [own])
    engine.close()
    int8 = StubEncoder("onnx-int8")
    [outcome] = reencode(made_by_torch, ["papers", "papers"], int8, progress=False)  # named twice: once
    assert (outcome.documents, outcome.before, outcome.after) == (21, "stub-model (torch)", "stub-model (onnx-int8)")
    assert outcome.brought == 1  # its vector, too, is now the encoder's of its text, and the command says so
    settings, vectors = _stored(made_by_torch, "papers")
    assert settings["encoder"] == {"model": "stub-model", "backend": "onnx-int8"}
    assert settings["hnsw"] and settings["bm25"]  # the rest of its settings kept
    texts = {doc.id: doc.text for doc in [*DOCS, own]}
    store = SqliteStore(Path(made_by_torch.data_dir) / "documents.sqlite3")
    by_label = store.get_by_labels("papers", list(vectors))
    store.close()
    for label, vector in vectors.items():
        np.testing.assert_allclose(vector, int8.encode_query(texts[by_label[label].id]), atol=1e-6)
    # "notes" was not named: still torch's, so this encoder still may not start ...
    with pytest.raises(EncoderMismatch, match="'notes'"):
        SearchEngine(made_by_torch, int8)
    reencode(made_by_torch, None, int8, progress=False)
    # ... and once both are re-encoded it starts, and dense search finds a document by its text's vector.
    assert _dense_top(made_by_torch, int8, DOCS[3].text) == "d3"
    again = reencode(made_by_torch, None, StubEncoder("onnx-int8"), progress=False)
    assert all(o.skipped for o in again)  # nothing to do twice


def test_reencode_leaves_measuring_ef_search_to_the_service(made_by_torch: Settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuilt indexes are snapshotted untuned: no measurement is started (and cancelled) offline."""
    import app.engine.graph_upkeep as upkeep_module

    started: list[str] = []
    monkeypatch.setattr(upkeep_module, "due", lambda count, last: True)  # every graph due, whatever its size
    monkeypatch.setattr(upkeep_module, "measure", lambda *args, **kwargs: started.append("measure"))
    reencode(made_by_torch, ["papers"], StubEncoder("onnx-int8"), progress=False)
    assert started == []


def test_a_reencode_that_dies_midway_leaves_the_old_vectors_and_encoder(made_by_torch: Settings) -> None:
    before_settings, before = _stored(made_by_torch, "papers")

    class DiesMidway(StubEncoder):
        def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
            if self.encoded:
                raise KeyboardInterrupt  # the second chunk: the first one's vectors are already written
            return super().encode_documents(texts)

    import app.commands.reencode as module

    chunk, module.CHUNK = module.CHUNK, 8
    try:
        with pytest.raises(KeyboardInterrupt):
            reencode(made_by_torch, ["papers"], DiesMidway("onnx-int8"), progress=False)
    finally:
        module.CHUNK = chunk
    after_settings, after = _stored(made_by_torch, "papers")
    assert after_settings == before_settings
    assert all(np.array_equal(before[label], after[label]) for label in before)
    # The next start with the old encoder rebuilds the indexes (their snapshots were discarded) from the store.
    assert _dense_top(made_by_torch, StubEncoder("torch"), DOCS[7].text) == "d7"


def test_a_reencode_that_fills_the_disk_says_which_collections_are_done(made_by_torch: Settings,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at the second collection was a 42-line traceback, after the first had been committed (QA)."""
    replacing = SqliteStore.replace_vectors

    def replace_vectors(self: SqliteStore, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "papers":
            raise InsufficientStorage("the data dir's disk is full: nothing of this write was stored (test)")
        return replacing(self, name, *args, **kwargs)

    monkeypatch.setattr(SqliteStore, "replace_vectors", replace_vectors)
    with pytest.raises(ReencodeFailed) as failed:
        reencode(made_by_torch, None, StubEncoder("onnx-int8"), progress=False)
    assert [(o.collection, o.snapshotted) for o in failed.value.done] == [("notes", True)]
    assert "'papers' was not re-encoded" in str(failed.value) and "disk is full" in str(failed.value)
    assert _stored(made_by_torch, "papers")[0]["encoder"] == {"model": "stub-model", "backend": "torch"}
    assert _stored(made_by_torch, "notes")[0]["encoder"] == {"model": "stub-model", "backend": "onnx-int8"}
    monkeypatch.setattr(SqliteStore, "replace_vectors", replacing)
    # Committed, then its snapshot cannot be written: done in the store, and said so.
    monkeypatch.setattr(Collection, "snapshot", lambda self: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(ReencodeFailed) as failed:
        reencode(made_by_torch, None, StubEncoder("onnx-int8"), progress=False)
    assert [(o.collection, o.skipped, o.snapshotted) for o in failed.value.done] == [("notes", True, False),
                                                                                   ("papers", False, False)]
    assert "'papers' is re-encoded in the store" in str(failed.value) and "next start rebuilds" in str(failed.value)
    assert _stored(made_by_torch, "papers")[0]["encoder"] == {"model": "stub-model", "backend": "onnx-int8"}


def test_reencode_refuses_while_the_service_holds_the_data_dir(made_by_torch: Settings) -> None:
    lock = DataDirLock(Path(made_by_torch.data_dir))
    lock.acquire()
    try:
        with pytest.raises(DataDirLocked):
            reencode(made_by_torch, ["papers"], StubEncoder("onnx"), progress=False)
    finally:
        lock.release()
    with pytest.raises(KeyError, match="no collection 'nope'"):
        reencode(made_by_torch, ["nope"], StubEncoder("onnx"), progress=False)


def test_the_default_adapter_serves_only_the_model_it_was_fitted_on(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "config"
    adapter, fallback = CosineAdapter.load(config / "adapter"), CosineAdapter.load(config / "adapter-fallback")
    engine = SearchEngine(_settings(tmp_path), StubEncoder("onnx-int8", dim=adapter.dim))
    try:
        adapter.info["encoder"] = {"model": "stub-model", "backend": "torch"}
        assert fits_encoder(adapter, engine.embedder)  # the same model through another backend fits
        # Another model of the same dimension does not: the dimension alone used to let it through.
        adapter.info["encoder"] = {"model": "other-model", "backend": "onnx-int8"}
        assert not fits_encoder(adapter, engine.embedder)
        assert fits_encoder(fallback, engine.embedder)  # reads no embedding: fits any encoder
        del adapter.info["encoder"]  # from before models were recorded: the dimension decides
        assert fits_encoder(adapter, engine.embedder)
    finally:
        engine.close()


def test_over_a_shared_store_the_advice_is_not_reencode() -> None:
    """`reencode` refuses a shared store; a replica advised it all the same (QA)."""
    record = CollectionRecord("notes", "u", 384, {"encoder": {"model": "m", "backend": "torch"}})
    with pytest.raises(EncoderMismatch) as caught:
        check_encoders([record], EncoderIdentity("m", "onnx-int8"), shared=True)
    assert "SEARCH_ENCODER=torch" in caught.value.message and "new collections" in caught.value.message
    assert "embedded store only" in caught.value.message
