"""The document store: atomic batches, fresh labels, tombstones for replay, metadata filters.

The tests that take the `store` fixture are the contract every DocumentStore backend must meet: a new backend
joins the fixture's parameters.
"""

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from app.engine.types import Equals, FilterCondition, In, Range
from app.errors import CollectionNotFound
from app.store import sqlite as sqlite_module
from app.store.base import DocumentStore, NewDocument, ReplacedVectors, StoredRow
from app.store.mirror import MirrorStore
from app.store.postgres import PostgresStore
from app.store.sqlite import SqliteStore

BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], DocumentStore]] = {
    "sqlite": lambda request, tmp: SqliteStore(tmp / "s.db"),
    "postgres": lambda request, tmp: PostgresStore(request.getfixturevalue("database_url")),
}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentStore]:
    backend = BACKENDS[request.param](request, tmp_path)
    for name in ("c", "other"):  # the engine writes only to a collection it created
        backend.create_collection(name, 4, {})
    yield backend
    backend.close()


def _doc(doc_id: str, **metadata: object) -> NewDocument:
    return NewDocument(doc_id, f"text of {doc_id}", None, dict(metadata), np.ones(4, dtype=np.float32) / 2)


def test_labels_are_fresh_and_replacements_leave_tombstones(store: DocumentStore) -> None:
    s = store.seq()  # a backend may number collection changes too
    first = store.upsert("c", [_doc("a"), _doc("b")])
    assert first.new_labels == [s + 1, s + 2] and first.old_labels == [] and first.seq == s + 2
    second = store.upsert("c", [_doc("a")])
    assert second.new_labels == [s + 3] and second.old_labels == [s + 1]
    assert store.delete("c", "b") == s + 2
    assert store.delete("c", "b") is None
    assert store.tombstones_after("c", s + 2) == [s + 1, s + 2]
    assert [[r.id for r in rows] for rows, _ in store.iter_rows("c", after_seq=0)] == [["a"]]
    assert store.seq() == s + 4
    store.prune_tombstones("c", s + 4)
    assert store.tombstones_after("c", 0) == []


def test_documents_written_as_encoded_give_their_text_and_vector_back_until_replaced(store: DocumentStore) -> None:
    vector = np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    encoded = [NewDocument(i, f"text of {i}", "T", {}, vector, encoded=True) for i in ("a", "b", "c")]
    store.upsert("c", [*encoded, _doc("own")])
    store.upsert("other", [NewDocument("a", "elsewhere", None, {}, vector, encoded=True)])
    found = store.encoded_texts("c", ["a", "b", "c", "own", "missing"])
    assert sorted(found) == ["a", "b", "c"]  # "own" brought its own vector
    assert (found["a"].title, found["a"].text, found["a"].vector.tolist()) == ("T", "text of a", vector.tolist())
    store.upsert("c", [_doc("a")])  # replaced by a client's vector
    store.delete("c", "b")
    assert sorted(store.encoded_texts("c", ["a", "b", "c"])) == ["c"]
    store.upsert("c", [NewDocument("a", "new text", None, {}, vector, encoded=True)])
    assert store.encoded_texts("c", ["a"])["a"].text == "new text"
    assert store.encoded_texts("other", ["a"])["a"].text == "elsewhere"


def test_a_postgres_store_from_before_the_encoded_column_gains_it_once(database_url: str) -> None:
    store = PostgresStore(database_url)
    store.create_collection("c", 4, {})
    store.upsert("c", [_doc("old")])
    store.close()
    with psycopg.connect(database_url, autocommit=True) as conn:  # the table as earlier versions made it
        conn.execute("ALTER TABLE search_documents DROP COLUMN encoded")
    store = PostgresStore(database_url)
    store.upsert("c", [NewDocument("new", "t", None, {}, np.ones(4, dtype=np.float32) / 2, encoded=True)])
    assert sorted(store.encoded_texts("c", ["old", "new"])) == ["new"]
    store.close()
    PostgresStore(database_url).close()  # a second start finds the column and leaves it


def test_a_failing_batch_writes_nothing(store: DocumentStore) -> None:
    store.upsert("c", [_doc("a")])
    before = store.seq()
    broken = NewDocument("b", "text", None, {"bad": object()}, np.ones(4, dtype=np.float32))
    with pytest.raises(TypeError):
        store.upsert("c", [_doc("z"), broken])
    assert store.count("c") == 1 and store.get("c", "z") is None and store.seq() == before


def test_committed_batches_are_on_disk_for_another_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.upsert("c", [_doc("a"), _doc("b")])
    other = sqlite3.connect(tmp_path / "s.db")
    assert other.execute("SELECT count(*) FROM documents").fetchone()[0] == 2


def test_metadata_filters(store: DocumentStore) -> None:
    store.upsert("c", [_doc("a", year=2020, tags=["x", "y"], flag=True, name="alpha"),
                       _doc("b", year=2022, tags=["y"], flag=False, name="beta"),
                       _doc("c", year=2024.5, tags="x", name="gamma", count=1)])
    store.upsert("other", [_doc("a", year=2020)])

    def ids(conditions: dict[str, FilterCondition]) -> list[str]:
        labels = store.filter_labels("c", conditions)
        return sorted(row.id for row in store.get_by_labels("c", labels.tolist()).values())

    assert ids({"year": Equals(2020)}) == ["a"]
    assert ids({"year": Range(gte=2022)}) == ["b", "c"]
    assert ids({"year": Range(gt=2020, lt=2024)}) == ["b"]
    assert ids({"tags": Equals("x")}) == ["a", "c"]
    assert ids({"tags": In(("y", "z"))}) == ["a", "b"]
    assert ids({"flag": Equals(True)}) == ["a"]
    assert ids({"flag": Equals(False)}) == ["b"]
    assert ids({"count": Equals(True)}) == []  # a number is not a boolean
    assert ids({"name": Range(gte="b")}) == ["b", "c"]
    assert ids({"year": Range(gte="2020")}) == []  # strings do not compare with numbers
    assert ids({"missing": Equals(1)}) == []
    assert ids({'we"ird': Equals(1)}) == []
    assert ids({"flag": In((1,))}) == [] and ids({"count": In((True,))}) == []  # in: a number is no boolean
    assert ids({"flag": In((True, 2022))}) == ["a"] and ids({"year": In((True, 2022, "2020"))}) == ["b"]


def test_filters_follow_replacements_deletions_and_drops(store: DocumentStore) -> None:
    """The SQLite store answers filters from metadata flattened beside the documents: a replaced version's, a
    deleted document's or a dropped collection's values must not match any more."""
    store.upsert("c", [_doc("a", kind="x", tags=["p", "q"]), _doc("b", kind="x")])
    store.upsert("c", [_doc("a", kind="y", tags=["q"])])  # a new version, under a new label

    def ids(conditions: dict[str, FilterCondition], collection: str = "c") -> list[str]:
        labels = store.filter_labels(collection, conditions)
        assert np.all(np.diff(labels) > 0)  # sorted, each label once (two matching list elements included)
        return sorted(row.id for row in store.get_by_labels(collection, labels.tolist()).values())

    assert ids({"kind": Equals("x")}) == ["b"] and ids({"kind": Equals("y")}) == ["a"]
    assert ids({"tags": Equals("p")}) == [] and ids({"tags": In(("p", "q"))}) == ["a"]
    assert len(store.filter_labels("c", {"kind": Equals("x")})) == 1  # the old version's label is gone too
    assert ids({"kind": In(("x", "y")), "tags": Equals("q")}) == ["a"]  # every condition must hold
    store.delete("c", "b")
    assert ids({"kind": Equals("x")}) == []
    store.drop_collection("c")
    store.create_collection("c", 4, {})
    store.upsert("c", [_doc("z", kind="z")])
    assert ids({"kind": Equals("y")}) == [] and ids({"kind": Equals("z")}) == ["z"]
    assert len(store.filter_labels("c", {})) == 1  # no condition: every document


def test_a_store_written_before_the_flattened_metadata_fills_it_once(tmp_path: Path) -> None:
    """Filters read `metadata_values`; a data dir from before that table has documents but none of their values."""
    store = SqliteStore(tmp_path / "s.db")
    store.upsert("c", [_doc("a", kind="x", tags=["p"]), _doc("b", kind="y")])
    store.close()
    old = sqlite3.connect(tmp_path / "s.db")  # what that version's schema held
    old.executescript("DROP TRIGGER metadata_values_insert; DROP TRIGGER metadata_values_delete; "
                      "DROP TABLE metadata_values; DELETE FROM meta WHERE key = 'metadata_values';")
    old.close()
    store = SqliteStore(tmp_path / "s.db")
    labels = store.filter_labels("c", {"tags": Equals("p")})
    assert [row.id for row in store.get_by_labels("c", labels.tolist()).values()] == ["a"]
    store.upsert("c", [_doc("c", kind="y")])  # and kept in step from then on
    assert len(store.filter_labels("c", {"kind": Equals("y")})) == 2
    store.close()


def test_another_process_replacing_a_document_keeps_the_flattened_metadata_right(tmp_path: Path) -> None:
    """The triggers live in the file, so an earlier version of the service writing it runs them too, without the
    pragmas this one might set: a replacement it made left the old version's values behind, and a filtered
    search then met a label the indexes did not hold (a 500)."""
    store = SqliteStore(tmp_path / "s.db")
    store.upsert("c", [_doc("a", color="red")])
    store.close()
    other = sqlite3.connect(tmp_path / "s.db")  # what an earlier version's upsert does, with no pragma
    other.execute("INSERT OR REPLACE INTO documents VALUES ('c', 'a', 99, NULL, 't', '{\"color\": \"blue\"}', x'')")
    other.commit()
    other.close()
    store = SqliteStore(tmp_path / "s.db")
    assert store.filter_labels("c", {"color": Equals("red")}).tolist() == []
    assert store.filter_labels("c", {"color": Equals("blue")}).tolist() == [99]
    store.close()


def test_a_document_an_earlier_version_replaced_is_not_taken_as_encoded(tmp_path: Path) -> None:
    """Earlier versions write the file too (seven values by position) and know nothing of `encoded_labels`."""
    store = SqliteStore(tmp_path / "s.db")
    store.upsert("c", [NewDocument("a", "t", None, {}, np.ones(4, dtype=np.float32) / 2, encoded=True)])
    store.close()
    other = sqlite3.connect(tmp_path / "s.db")
    other.execute("INSERT OR REPLACE INTO documents VALUES ('c', 'a', 99, NULL, 't', '{}', x'')")
    other.commit()
    other.close()
    store = SqliteStore(tmp_path / "s.db")
    assert store.encoded_texts("c", ["a"]) == {}
    store.close()


def test_every_condition_of_a_filter_reads_the_same_committed_documents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filter is one lookup a condition; a replacement committed between two of them moved the document to a new
    label, which the first lookup did not see and the second did: the document matched neither."""
    store = SqliteStore(tmp_path / "s.db")
    store.upsert("c", [_doc("a", kind="x", tag="t")])
    queries = sqlite_module.condition_queries

    def with_a_write_between(collection: str, conditions: dict[str, FilterCondition]) -> Iterator[tuple[str, list]]:
        first, *rest = queries(collection, conditions)
        yield first
        store.upsert("c", [_doc("a", kind="x", tag="t")])  # committed by the writer meanwhile
        yield from rest

    monkeypatch.setattr(sqlite_module, "condition_queries", with_a_write_between)
    assert len(store.filter_labels("c", {"kind": Equals("x"), "tag": Equals("t")})) == 1  # as it stood at the start
    monkeypatch.undo()
    assert len(store.filter_labels("c", {"kind": Equals("x"), "tag": Equals("t")})) == 1  # and now the new version
    store.close()


def test_a_replicas_local_copy_filters_what_it_holds(tmp_path: Path) -> None:
    """A replica answers filters from its MirrorStore, written by the follower's `apply` (replaced labels
    removed, the live versions written)."""
    mirror = MirrorStore(tmp_path / "mirror.db", "db-1")
    mirror.apply("c", [], [StoredRow(1, "a", "t", None, {"kind": "x"}), StoredRow(2, "b", "t", None, {"kind": "x"})])
    mirror.apply("c", [1], [StoredRow(3, "a", "t", None, {"kind": "y"})])
    assert mirror.filter_labels("c", {"kind": Equals("x")}).tolist() == [2]
    assert mirror.filter_labels("c", {"kind": Equals("y")}).tolist() == [3]
    mirror.forget("c")
    assert mirror.filter_labels("c", {"kind": Equals("x")}).tolist() == []
    mirror.close()


def test_a_string_written_composed_or_decomposed_is_one_value(store: DocumentStore) -> None:
    """"Café" typed on macOS is decomposed (e + U+0301): the same text to a reader, two values to a filter, so a
    filter on one missed the documents written the other way (QA). Both stores; what was stored is kept."""
    composed, decomposed = "Caf\u00e9", "Cafe\u0301"
    store.upsert("c", [_doc("a", place=composed), _doc("b", place=decomposed), _doc("c", place=[decomposed]),
                       _doc("d", place="Cafe")])

    def ids(condition: FilterCondition) -> list[str]:
        labels = store.filter_labels("c", {"place": condition})
        return sorted(row.id for row in store.get_by_labels("c", labels.tolist()).values())

    assert ids(Equals(composed)) == ids(Equals(decomposed)) == ["a", "b", "c"]
    assert ids(In((decomposed, "x"))) == ["a", "b", "c"]
    assert ids(Equals("Cafe")) == ["d"]
    stored = {row.id: row.metadata["place"] for row in store.get_by_labels(
        "c", store.filter_labels("c", {"place": Equals(composed)}).tolist()).values()}
    assert stored == {"a": composed, "b": decomposed, "c": [decomposed]}


@pytest.mark.parametrize("key", ["café", 'a"b', "a\\b", "naïve.tag", "日付"])
def test_any_metadata_key_can_be_filtered_on(store: DocumentStore, key: str) -> None:
    """Non-ASCII keys (written escaped in SQLite's JSON) and keys holding '"' or '\\' (which a JSON path cannot
    name) matched nothing before, whatever the filter."""
    store.upsert("c", [_doc("a", **{key: "yes", "n": 1}), _doc("b", **{key: ["no", "yes"]}),
                       _doc("c", **{key: 3, "flag": True}), _doc("d", **{key: True})])

    def ids(condition: FilterCondition) -> list[str]:
        labels = store.filter_labels("c", {key: condition})
        return sorted(row.id for row in store.get_by_labels("c", labels.tolist()).values())

    assert ids(Equals("yes")) == ["a", "b"]
    assert ids(In(("no", 3))) == ["b", "c"]
    assert ids(Range(gte=2)) == ["c"]
    assert ids(Equals(True)) == ["d"] and ids(Equals(1)) == [] and ids(In((1,))) == []


def test_replacing_vectors_is_one_transaction_with_the_settings(store: DocumentStore) -> None:
    """What `reencode` relies on: every new vector and the new settings, or (the batches failing midway) none."""
    store.create_collection("enc", 4, {"encoder": {"model": "m", "backend": "torch"}})
    # "a" and "b" brought their own vectors, "z" was the service's encoding of its text
    labels = store.upsert("enc", [_doc("a"), _doc("b"), replace(_doc("z"), encoded=True)]).new_labels
    seq = store.seq()
    new = np.eye(4, dtype=np.float32)[:3]

    def failing() -> Iterator[tuple[list[int], np.ndarray]]:
        yield labels[:2], new[:2]
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError):
        store.replace_vectors("enc", failing(), 4, {"encoder": {"model": "m", "backend": "onnx"}})
    record = next(r for r in store.collections() if r.name == "enc")
    assert record.settings["encoder"]["backend"] == "torch"
    assert all(np.allclose(v, 0.5) for _, vectors in store.iter_rows("enc") for v in vectors)
    assert list(store.encoded_texts("enc", ["a", "b", "z"])) == ["z"]

    replaced = store.replace_vectors("enc", iter([(labels[:2], new[:2]), (labels[2:], new[2:])]), 4,
                                     {"encoder": {"model": "m", "backend": "onnx"}})
    assert replaced == ReplacedVectors(written=3, brought=2)
    # Every vector is the service's encoding now: a re-post of the same text may take it again.
    encoded = store.encoded_texts("enc", ["a", "b", "z"])
    assert sorted(encoded) == ["a", "b", "z"] and np.array_equal(encoded["b"].vector, new[1])
    record = next(r for r in store.collections() if r.name == "enc")
    assert record.settings["encoder"]["backend"] == "onnx" and record.dimension == 4
    [(rows, vectors)] = list(store.iter_rows("enc"))
    assert [r.label for r in rows] == labels and np.array_equal(vectors, new)
    assert store.seq() == seq  # labels and sequence untouched: no replay, the caller rebuilds the indexes


def test_replacing_vectors_refuses_bad_batches_and_unknown_collections_alike(store: DocumentStore) -> None:
    store.create_collection("enc", 4, {"encoder": {"model": "m", "backend": "torch"}})
    labels = store.upsert("enc", [_doc("a"), _doc("b")]).new_labels
    for bad in (np.ones((2, 3), np.float32), np.ones((1, 4), np.float32)):  # wrong dimension, one vector short
        with pytest.raises(ValueError, match="vectors of shape"):
            store.replace_vectors("enc", iter([(labels, bad)]), 4, {"encoder": {"model": "m", "backend": "onnx"}})
    with pytest.raises(CollectionNotFound):
        store.replace_vectors("nowhere", iter([]), 4, {})
    record = next(r for r in store.collections() if r.name == "enc")
    assert record.settings["encoder"]["backend"] == "torch"
    assert all(np.allclose(v, 0.5) for _, vectors in store.iter_rows("enc") for v in vectors)


def test_a_write_to_a_collection_another_replica_deleted_is_refused(database_url: str) -> None:
    """Over the shared store a replica may not have heard of a drop yet: its write must not outlive the drop."""
    store = PostgresStore(database_url)
    store.create_collection("c", 4, {})
    store.drop_collection("c")
    with pytest.raises(CollectionNotFound):
        store.upsert("c", [_doc("a")])
    with pytest.raises(CollectionNotFound):
        store.delete("c", "a")
    store.create_collection("c", 4, {})
    assert store.count("c") == 0
    store.close()


def test_a_trained_adapter_is_stored_replaced_removed_and_dropped_with_its_collection(store: DocumentStore) -> None:
    assert store.load_adapter("c") is None
    store.save_adapter("c", '{"v": 1}', b"one")
    store.save_adapter("c", '{"v": 2}', b"two")
    assert store.load_adapter("c") == ('{"v": 2}', b"two") and store.load_adapter("other") is None
    store.save_adapter("c", None, None)  # a reset: the default serves again
    assert store.load_adapter("c") is None
    store.save_adapter("c", '{"v": 3}', b"three")
    store.drop_collection("c")
    with pytest.raises(CollectionNotFound):
        store.save_adapter("c", '{"v": 4}', b"four")
    store.create_collection("c", 4, {})  # a new collection of the name starts with the default
    assert store.load_adapter("c") is None


def test_metadata_numbers_come_back_as_they_went_in(store: DocumentStore) -> None:
    """PostgreSQL's jsonb keeps a number's digits, not how JSON wrote it: Python writes 1e16 as `1e+16`, which jsonb
    read back as 10000000000000000, an int, on every replica."""
    metadata = {"big": 1e16, "huge": -1.7976931348623157e308, "tiny": 5e-324, "small": 1e-7, "int": 10**17,
                "list": [2.5e20, 3, 0.5], "text": "1e+16", "exact": 9007199254740993}
    store.upsert("c", [_doc("a", **metadata)])
    row = store.get("c", "a")
    assert row is not None
    assert row.metadata == metadata
    assert {k: type(v) for k, v in row.metadata.items()} == {k: type(v) for k, v in metadata.items()}
    assert [type(v) for v in row.metadata["list"]] == [float, int, float]
    assert [r.id for r in store.get_by_labels("c", [row.label]).values()] == ["a"]


def test_a_listing_pages_through_the_live_documents_in_id_order(store: DocumentStore, tmp_path: Path) -> None:
    ids = ["b", "a/1", "é", "c", "a", "Z"]
    store.upsert("c", [_doc(i, n=n) for n, i in enumerate(ids)])
    store.upsert("other", [_doc("x")])
    store.delete("c", "c")
    store.upsert("c", [_doc("b", n=9)])  # replaced: listed once, as it is now
    live = [i for i in ids if i != "c"]
    listed, after = [], None
    while page := store.list_rows("c", after, 2):
        listed += page
        after = page[-1].id
    assert sorted(live) == sorted(row.id for row in listed) and len(listed) == len(live)
    if isinstance(store, SqliteStore):  # ids compare as bytes; PostgreSQL's by its database's collation
        assert [row.id for row in listed] == sorted((row.id for row in listed), key=str.encode)
    assert {row.id: row.metadata["n"] for row in listed}["b"] == 9
    assert store.list_rows("c", listed[-1].id, 10) == [] and store.list_rows("missing", None, 10) == []
    # A replica lists its local copy, which the follower writes without vectors.
    mirror = MirrorStore(tmp_path / "mirror.db", "db-1")
    mirror.apply("c", [], [StoredRow(1, "b", "t", None, {}), StoredRow(2, "a", "t", None, {"k": "v"})])
    assert [(row.id, row.metadata) for row in mirror.list_rows("c", None, 10)] == [("a", {"k": "v"}), ("b", {})]
    assert [row.id for row in mirror.list_rows("c", "a", 10)] == ["b"]
    mirror.close()



def test_a_bulk_delete_is_one_write_of_the_ids_found(store: DocumentStore) -> None:
    written = store.upsert("c", [_doc(i) for i in ("a", "b", "c", "d")])
    store.upsert("other", [_doc("a")])
    s = store.seq()
    assert store.delete_many("c", ["b", "zz", "d", "b"]) == {"b": written.new_labels[1], "d": written.new_labels[3]}
    assert store.seq() == s + 1  # one sequence number: a follower applies the deletes together
    assert sorted(store.tombstones_after("c", s)) == [written.new_labels[1], written.new_labels[3]]
    assert [row.id for row in store.list_rows("c", None, 10)] == ["a", "c"]
    assert store.delete_many("c", ["zz"]) == {} and store.seq() == s + 1  # nothing found: nothing written
    assert [row.id for row in store.list_rows("other", None, 10)] == ["a"]
    many = [f"m{i}" for i in range(1200)]  # past SQLite's parameters a statement: chunks, one transaction
    store.upsert("c", [_doc(i) for i in many])
    assert len(store.delete_many("c", many)) == 1200 and store.count("c") == 2


def test_an_embedded_store_that_cannot_be_opened_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A store file that cannot be opened for writing (unwritable; here a folder in its place) ended the start
    with a traceback whose message did not name it (QA)."""
    from app.errors import DataDirUnusable
    from app.store.sqlite import SqliteStore

    (tmp_path / "documents.sqlite3").mkdir()
    with pytest.raises(DataDirUnusable, match=f"the store {tmp_path / 'documents.sqlite3'} cannot be opened"):
        SqliteStore(tmp_path / "documents.sqlite3")
