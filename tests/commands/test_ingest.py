"""`python -m app ingest` against a live server: JSONL and BEIR input, a bad line, and a resume."""

import gzip
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli import main
from app.client import ApiError, SearchClient
from app.commands.ingest import BadLine, _refused_batch, ingest, parse_line
from tests.helpers import ANIMALS
from tests.server import Server


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _ingest(server: Server, collection: str, path: Path, *extra: str) -> int:
    return main(["ingest", "--url", server.url, "--collection", collection, str(path), *extra])


def _ids(server: Server, collection: str) -> set[str]:
    with SearchClient(server.url) as client:
        hits = client.search(collection, "animals machines food", k=100, relevance={"enabled": False})["hits"]
        return {hit["id"] for hit in hits}


def test_jsonl_file_is_loaded_into_a_new_collection(live_server: Server, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "animals.jsonl", [*ANIMALS[:3], "", *ANIMALS[3:]])  # a blank line is skipped
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal
    assert _ingest(live_server, "load-jsonl", path, "--batch", "2", "--concurrency", "2") == 0
    err = capsys.readouterr().err
    assert "6/6" in err and "doc/s" in err  # the progress bar: documents, rate (and ETA while running)
    assert "6 documents upserted" in err and "holds 6 documents (+6)" in err
    assert _ingest(live_server, "load-jsonl", path, "--restart", "--quiet") == 0
    assert "doc/s]" not in capsys.readouterr().err  # --quiet: no bar on a terminal either
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # into a log: the bar's frames ran together there
    assert _ingest(live_server, "load-jsonl", path, "--restart") == 0
    err = capsys.readouterr().err
    assert "doc/s]" not in err and "\r" not in err and "6 documents upserted" in err
    with SearchClient(live_server.url) as client:
        assert client.get("load-jsonl", "salmon")["metadata"]["edible"] is True
    assert not (tmp_path / "animals.jsonl.progress.json").exists()  # finished: nothing to resume


def test_a_collection_with_settings_of_its_own_is_loaded_as_it_is(live_server: Server, tmp_path: Path) -> None:
    """The command creates the collection when it does not exist; one that exists with other settings than the
    defaults (its PUT answers 409 to a bare PUT) is loaded into, not refused with a resume advice that fails."""
    with SearchClient(live_server.url) as client:
        client.create_collection("load-custom", {"hnsw": {"m": 16}})
    assert _ingest(live_server, "load-custom", _write(tmp_path / "a.jsonl", ANIMALS)) == 0
    with SearchClient(live_server.url) as client:
        described = client.get_collection("load-custom")
    assert described["count"] == len(ANIMALS) and described["settings"]["hnsw"]["m"] == 16


def test_beir_folder_is_read_from_its_corpus(live_server: Server, tmp_path: Path) -> None:
    _write(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "Vitamin D", "text": "Vitamin D helps bones."},
                                       {"_id": "d2", "title": "", "text": "Calcium is a mineral."}])
    assert _ingest(live_server, "load-beir", tmp_path) == 0
    with SearchClient(live_server.url) as client:
        assert client.get("load-beir", "d1")["title"] == "Vitamin D"
        assert client.get("load-beir", "d2")["title"] is None


def test_a_gzip_file_or_beir_folder_is_read_decompressed(live_server: Server, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A `.jsonl.gz` was read as raw bytes: "line 1: not UTF-8 ... fix the line", and an empty collection (QA)."""
    raw = "".join(json.dumps(doc) + "\n" for doc in ANIMALS).encode()
    (tmp_path / "animals.jsonl.gz").write_bytes(gzip.compress(raw))
    assert _ingest(live_server, "load-gz", tmp_path / "animals.jsonl.gz") == 0
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl.gz").write_bytes(gzip.compress(raw))
    assert _ingest(live_server, "load-gz-beir", beir) == 0
    assert len(_ids(live_server, "load-gz")) == len(_ids(live_server, "load-gz-beir")) == len(ANIMALS)
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(raw)[:-30])  # a download cut short
    capsys.readouterr()
    assert _ingest(live_server, "load-gz-cut", tmp_path / "cut.jsonl.gz") == 1
    assert "damaged gzip file" in capsys.readouterr().err
    with SearchClient(live_server.url) as client:
        assert "load-gz-cut" not in [c["name"] for c in client.list_collections()]  # refused before anything


def test_a_bad_first_line_creates_no_collection_and_a_missing_input_is_an_argument_error(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _ingest(live_server, "load-first", _write(tmp_path / "ids.jsonl", [{"id": 7, "text": "x"}])) == 1
    assert "line 1: 'id' must be a non-empty string" in capsys.readouterr().err
    assert _ingest(live_server, "load-first", tmp_path / "nowhere.jsonl") == 2
    err = capsys.readouterr().err
    assert "argument path" in err and "does not exist" in err
    with SearchClient(live_server.url) as client:
        assert "load-first" not in [c["name"] for c in client.list_collections()]


def test_a_bad_line_stops_the_load_and_a_rerun_resumes_from_it(live_server: Server, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    docs = [{"id": f"n{i}", "text": f"note number {i} about animals"} for i in range(1, 9)]
    lines: list[Any] = [*docs[:5], '{"id": "n6", "text": "unterminated', *docs[6:]]
    path = _write(tmp_path / "notes.jsonl", lines)
    assert _ingest(live_server, "load-bad", path, "--batch", "2", "--concurrency", "2") == 1
    err = capsys.readouterr().err
    assert "line 6: not valid JSON" in err and "Lines before it are stored" in err
    assert _ids(live_server, "load-bad") == {f"n{i}" for i in range(1, 6)}
    assert json.loads((tmp_path / "notes.jsonl.progress.json").read_text())["lines"] == 5

    _write(path, docs)  # the line fixed
    assert _ingest(live_server, "load-bad", path, "--batch", "2") == 0
    err = capsys.readouterr().err
    assert "resuming after line 5" in err and "3 documents upserted" in err
    assert _ids(live_server, "load-bad") == {f"n{i}" for i in range(1, 9)}
    assert not (tmp_path / "notes.jsonl.progress.json").exists()


def test_a_line_the_service_refuses_is_named_and_the_lines_before_it_stored(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nested = {"id": "m3", "text": "three", "metadata": {"shape": {"nested": "objects are not metadata"}}}
    path = _write(tmp_path / "meta.jsonl", [{"id": "m1", "text": "one"}, {"id": "m2", "text": "two"}, nested,
                                            {"id": "m4", "text": "four"}])
    assert _ingest(live_server, "load-refused", path, "--batch", "4") == 1
    err = capsys.readouterr().err
    assert "line 3: refused by the service: metadata.shape" in err
    with SearchClient(live_server.url) as client:
        assert client.get_collection("load-refused")["count"] == 2  # m1 and m2, sent again without line 3


def test_a_line_that_is_not_utf8_is_a_bad_line_with_its_number(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, the file was decoded outside the per-line checks: a traceback, nothing stored, no progress."""
    path = _write(tmp_path / "latin1.jsonl", [{"id": f"u{i}", "text": f"note {i}"} for i in range(1, 5)])
    with path.open("ab") as f:
        f.write(b'{"id": "u5", "text": "caf\xe9 au lait"}\n')
    assert _ingest(live_server, "load-latin1", path, "--batch", "2") == 1
    err = capsys.readouterr().err
    assert "line 5: not UTF-8 (byte 0xe9" in err and "4 documents upserted" in err
    assert json.loads((tmp_path / "latin1.jsonl.progress.json").read_text())["lines"] == 4


def test_a_refusal_the_engine_names_is_a_bad_line(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A vector of the wrong dimension is refused by the engine (loc ["body", "documents", i, "vector"]), not by
    validation: it too names its line. Before, the message advised a re-run that failed the same way."""
    docs: list[Any] = [{"id": f"v{i}", "text": f"note {i}"} for i in range(1, 6)]
    docs[3] = {"id": "v4", "text": "four", "vector": [0.1, 0.2, 0.3]}
    path = _write(tmp_path / "dims.jsonl", docs)
    assert _ingest(live_server, "load-dims", path, "--batch", "2", "--concurrency", "1") == 1
    err = capsys.readouterr().err
    assert "line 4: refused by the service: vector" in err and "3 documents upserted" in err
    with SearchClient(live_server.url) as client:
        assert client.get_collection("load-dims")["count"] == 3


def test_a_batch_in_flight_stored_after_a_refusal_is_said_as_such(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """"0 documents upserted" beside "(+2)" read as a miscount (QA): the batch sent beside the refused one was
    stored, unacknowledged."""
    docs: list[Any] = [{"id": "w1", "text": "one", "vector": [0.1, 0.2, 0.3]},
                       *({"id": f"w{i}", "text": f"note {i}"} for i in range(2, 7))]
    path = _write(tmp_path / "flight.jsonl", docs)
    assert _ingest(live_server, "load-flight", path, "--batch", "2", "--concurrency", "2") == 1
    err = capsys.readouterr().err
    assert "line 1: refused by the service: vector" in err
    assert "0 documents upserted" in err and "holds 2 documents (+2) (more than were acknowledged" in err


def test_an_interrupted_load_resumes_after_the_lines_it_recorded(live_server: Server, tmp_path: Path) -> None:
    path = _write(tmp_path / "animals.jsonl", ANIMALS)
    # What a run stopped after its first acknowledged batches leaves behind: lines 1-4 recorded as stored.
    # (They are not, here: so the collection shows that the re-run did not send them again.)
    record = {"url": live_server.url, "collection": "load-resume", "input": str(path.resolve()), "lines": 4}
    (tmp_path / "animals.jsonl.progress.json").write_text(json.dumps(record))
    assert _ingest(live_server, "load-resume", path) == 0
    assert _ids(live_server, "load-resume") == {"rocket", "bread"}
    # A progress file for another collection is not this load's: it starts from line 1.
    record["collection"] = "elsewhere"
    (tmp_path / "animals.jsonl.progress.json").write_text(json.dumps(record))
    assert _ingest(live_server, "load-resume", path) == 0
    assert len(_ids(live_server, "load-resume")) == 6


def test_a_record_of_more_lines_than_the_input_holds_is_not_resumed(live_server: Server, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """An input rewritten shorter after an interrupted run was "resumed" past its end: nothing loaded, exit 0,
    "lines 1-300 stored" of a 6-line file, and the record deleted (QA)."""
    path = _write(tmp_path / "animals.jsonl", ANIMALS)
    record = {"url": live_server.url, "collection": "load-shorter", "input": str(path.resolve()), "lines": 300}
    (tmp_path / "animals.jsonl.progress.json").write_text(json.dumps(record))
    assert _ingest(live_server, "load-shorter", path) == 1
    err = capsys.readouterr().err
    assert "records lines 1-300 as stored, but" in err and "has 6 lines" in err and "--restart" in err
    assert json.loads((tmp_path / "animals.jsonl.progress.json").read_text())["lines"] == 300  # kept as it was
    with SearchClient(live_server.url) as client, pytest.raises(ApiError):
        client.get_collection("load-shorter")  # nothing was sent
    assert _ingest(live_server, "load-shorter", path, "--restart") == 0
    assert len(_ids(live_server, "load-shorter")) == 6


def test_a_collection_the_server_will_not_serve_is_said_so_not_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A replica that does not serve a collection another encoder made answers its PUT 409 with why; the load took
    the 409 as "it exists", then failed on the 404 with "does not exist" (QA)."""
    why = "collection 'c' exists, made by another encoder (x), and this replica encodes with y"
    answers = {"create_collection": ApiError(409, "collection_conflict", why),
               "get_collection": ApiError(404, "collection_not_found", "collection 'c' does not exist")}

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                raise answers[name]
            return call

    path = _write(tmp_path / "a.jsonl", ANIMALS[:1])
    with pytest.raises(ApiError) as raised:
        ingest(Refusing(), path, "c", url="http://127.0.0.1:9", batch=10, concurrency=1,  # type: ignore[arg-type]
               resume=True, quiet=True)
    assert raised.value.status == 409 and "another encoder" in raised.value.message


def test_progress_can_be_recorded_away_from_the_input(live_server: Server, tmp_path: Path) -> None:
    inputs, elsewhere = tmp_path / "shared", tmp_path / "mine" / "load.progress.json"
    inputs.mkdir()
    elsewhere.parent.mkdir()
    path = _write(inputs / "animals.jsonl", [*ANIMALS[:2], "not json"])
    assert _ingest(live_server, "load-away", path, "--progress-file", str(elsewhere)) == 1
    assert json.loads(elsewhere.read_text())["lines"] == 2
    assert sorted(p.name for p in inputs.iterdir()) == ["animals.jsonl"]


def test_a_refused_batch_that_names_no_line_says_what_to_do() -> None:
    """A 413, or a store refusing a batch without naming a line: running the same command again would fail the
    same way, which is what the message used to advise."""
    batch = [(11, {"id": "a"}), (12, {"id": "b"})]
    too_large = _refused_batch(ApiError(413, "payload_too_large", "at most 50 documents a request"), batch, 100)
    assert "lines 11-12" in str(too_large) and "smaller --batch than 100" in str(too_large)
    alone = _refused_batch(ApiError(413, "payload_too_large", "over 33554432 bytes"), batch[:1], 1)
    assert "line 11 alone" in str(alone) and "--batch" not in str(alone)  # it said: a smaller --batch than 1
    unnamed = _refused_batch(ApiError(422, "invalid_input", "the store refused the batch"), batch, 2)
    assert "lines 11-12" in str(unnamed) and "fix it" in str(unnamed) and "from line 11" in str(unnamed)


def test_an_id_repeated_in_a_batch_does_not_move_the_lines_named(live_server: Server, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The service counts a repeated id twice or once as it likes: the loader counts the lines it sent (it
    counted the answer's `upserted`, and a service counting the id once made it name line 9 for line 10)."""
    docs = [{"id": "a", "text": "first"}, {"id": "a", "text": "again"},
            *({"id": f"d{i}", "text": f"document {i}"} for i in range(7)),
            {"id": "bad", "text": "x", "metadata": {"nested": {"x": 1}}}, {"id": "last", "text": "y"}]
    path = _write(tmp_path / "dup.jsonl", docs)
    assert _ingest(live_server, "load-dup", path, "--batch", "4", "--concurrency", "1") == 1
    err = capsys.readouterr().err
    assert "line 10: refused by the service" in err and "lines 1-9 of dup.jsonl stored" in err


def test_the_first_bad_line_in_the_file_is_named(live_server: Server, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A line the service refuses, and a later one the reader finds broken while that batch is in flight."""
    docs: list[Any] = [{"id": f"m{i}", "text": f"document {i}"} for i in range(10)]
    docs[1] = {"id": "m1", "text": "x", "metadata": {"nested": {"x": 1}}}
    docs[6] = '{"id": "m6", "text": '
    assert _ingest(live_server, "load-mixed", _write(tmp_path / "mixed.jsonl", docs), "--batch", "4") == 1
    assert "mixed.jsonl: line 2: refused by the service" in capsys.readouterr().err


def test_a_progress_file_that_cannot_be_written_stops_the_load_before_it_sends(
        live_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "a.jsonl", ANIMALS)
    for where in (tmp_path / "missing" / "p.json", tmp_path):  # a folder that is not there; a folder, not a file
        with pytest.raises(SystemExit) as exit_info:
            _ingest(live_server, "load-noprogress", path, "--progress-file", str(where))
        assert exit_info.value.code == 2 and "argument --progress-file" in capsys.readouterr().err
    (tmp_path / "a.jsonl.progress.json").mkdir()  # the default path, taken by a folder
    status = _ingest(live_server, "load-noprogress", path)
    err = capsys.readouterr().err
    assert status == 1 and "cannot write the progress file" in err and "run the same command" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.progress.json"]  # no staging file
    with SearchClient(live_server.url) as client, pytest.raises(ApiError):
        client.get_collection("load-noprogress")  # nothing was sent (not even the collection made)


def test_a_byte_order_mark_before_the_first_line_is_not_a_bad_line(live_server: Server, tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(d) for d in ANIMALS[:2]).encode() + b"\r\n")
    assert _ingest(live_server, "load-bom", path) == 0
    with SearchClient(live_server.url) as client:
        assert client.get_collection("load-bom")["count"] == 2


def test_a_refused_collection_name_says_why(live_server: Server, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """It printed only "422 invalid_input: the request failed validation" (QA); then the server's pattern, after
    connecting (QA). Now the argument is refused before any work, as every command's bad value is."""
    path = _write(tmp_path / "animals.jsonl", ANIMALS[:1])
    with pytest.raises(SystemExit) as exit_info:
        _ingest(live_server, "bad name", path)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --collection: 'bad name' is not a collection name" in err, err
    assert list(tmp_path.iterdir()) == [path]  # no progress file recording no line (QA)


@pytest.mark.parametrize(("value", "why"), [("NaN", "NaN is not a JSON number"),
                                            ("-Infinity", "-Infinity is not a JSON number"),
                                            ("1e400", "1e400 is out of a number's range")])
def test_a_number_json_cannot_carry_is_a_bad_line(value: str, why: str, live_server: Server, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Python's json reads NaN, Infinity and 1e400 (as inf), and the load then died in httpx with a traceback
    naming no line, the lines before it unstored (QA)."""
    path = _write(tmp_path / "nan.jsonl", [ANIMALS[0], f'{{"id": "n2", "text": "x", "metadata": {{"s": {value}}}}}'])
    assert _ingest(live_server, "load-nan", path) == 1
    err = capsys.readouterr().err
    assert f"line 2: {why}" in err and "Traceback" not in err
    with SearchClient(live_server.url) as client:
        assert client.get_collection("load-nan")["count"] == 1


@pytest.mark.parametrize(("given", "said"), [("-", "standard input cannot be read twice"),
                                             ("/dev/null", "is not a regular file")])
def test_an_input_that_is_not_a_file_says_so(given: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    """"-" and /dev/stdin were said not to exist. An argument error: exit 2, as a missing file's."""
    assert main(["ingest", "--url", "http://127.0.0.1:9", "--collection", "c", given]) == 2
    assert said in capsys.readouterr().err


def test_a_url_that_is_not_one_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was retried silently for two minutes, then the message advised running the same command again (QA)."""
    path = _write(tmp_path / "animals.jsonl", ANIMALS[:1])
    with pytest.raises(SystemExit) as exit_info:  # refused with the other arguments, before anything is read
        main(["ingest", "--url", "notaurl", "--collection", "c", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --url: 'notaurl' is not a URL of the service" in err
    assert "run the same command" not in err


def test_a_batch_whose_answer_timed_out_says_what_to_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The client does not send it again (tests/test_client.py); the command says why and what to change."""
    def slow(*args: Any, **kwargs: Any) -> int:
        raise httpx.ReadTimeout("timed out")

    monkeypatch.setattr("app.commands.ingest.ingest", slow)
    path = _write(tmp_path / "animals.jsonl", ANIMALS[:1])
    assert main(["ingest", "--url", "http://127.0.0.1:9", "--collection", "c", "--timeout", "7.5", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no answer to a batch within 7.5 s" in err and "--timeout" in err and "--batch" in err


def test_an_empty_input_says_that_no_line_was_stored(live_server: Server, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _ingest(live_server, "load-empty", _write(tmp_path / "empty.jsonl", [])) == 0
    assert "no line of empty.jsonl stored" in capsys.readouterr().err


def test_the_input_is_never_its_own_progress_file(live_server: Server, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--progress-file X X replaced the input with the progress JSON (QA)."""
    path = _write(tmp_path / "same.jsonl", ANIMALS)
    before = path.read_bytes()
    assert _ingest(live_server, "load-same", path, "--progress-file", str(path)) == 1
    assert "is the input itself" in capsys.readouterr().err and path.read_bytes() == before


def test_sigterm_is_said_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from app.runtime import Terminated

    def terminated(*args: object, **kwargs: object) -> int:
        raise Terminated

    monkeypatch.setattr("app.commands.ingest.ingest", terminated)
    assert main(["ingest", "--collection", "c", str(tmp_path / "x.jsonl")]) == 143
    assert "terminated: run the same command again to resume" in capsys.readouterr().err


def test_a_line_with_a_raw_control_character_says_where_once() -> None:
    """json's message for it ends in "at", and the line read "Invalid control character at at column 29" (QA)."""
    with pytest.raises(BadLine) as bad:
        parse_line(5, b'{"id": "a", "text": "tab\there"}')
    assert str(bad.value) == "line 5: not valid JSON (Invalid control character at column 25)"


def test_a_terminal_that_reports_no_size_still_gets_the_bar(live_server: Server, tmp_path: Path) -> None:
    """A new pseudo-terminal is 0 x 0 until its owner sets a size (`script`, some `docker exec -t`): tqdm drew
    nothing there for the whole run (QA)."""
    path = _write(tmp_path / "a.jsonl", ANIMALS)
    main_side, terminal = pty.openpty()  # never sized: 0 x 0
    try:
        done = subprocess.run([sys.executable, "-m", "app", "ingest", "--url", live_server.url, "--collection",
                               "load-pty", str(path), "--batch", "2"], stderr=terminal, stdout=subprocess.DEVNULL,
                              timeout=120, check=False)
    finally:
        os.close(terminal)
    written = b""
    while select.select([main_side], [], [], 0.5)[0]:
        try:
            chunk = os.read(main_side, 65536)
        except OSError:  # (Linux: the other side closed)
            break
        if not chunk:
            break
        written += chunk
    os.close(main_side)
    assert done.returncode == 0
    assert f"{len(ANIMALS)}/{len(ANIMALS)}" in written.decode() and "doc/s]" in written.decode()


def test_no_server_fails_at_once_with_no_retries_and_says_how_many_were_spent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --url was retried for ~100 s, with no way to ask for less (QA)."""
    path = _write(tmp_path / "animals.jsonl", ANIMALS[:1])
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    started = time.monotonic()
    assert main(["ingest", "--url", url, "--collection", "c", "--retries", "0", str(path)]) == 1
    assert time.monotonic() - started < 10  # the default's 20 retries of a refused connection take ~100 s
    err = capsys.readouterr().err
    assert "ingest failed:" in err and "retries" not in err and "run the same command again" in err
    assert main(["ingest", "--url", url, "--collection", "c", "--retries", "1", str(path)]) == 1
    assert "(after 1 retry: --retries sets how many)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--url", url, "--collection", "c", "--retries", "-1", str(path)])
    assert exit_info.value.code == 2


def test_a_line_too_large_alone_is_a_bad_line_and_the_lines_before_it_are_recorded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Within a batch sent in halves, the halves before the line were stored but not recorded, so a re-run sent
    them again, and the message did not say they were stored (QA). A service whose body limit is 400 bytes."""
    stored: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            if len(request.content) > 400:
                return httpx.Response(413, json={"error": {"code": "payload_too_large", "message": "over 400 bytes",
                                                           "details": []}})
            docs = json.loads(request.content)["documents"]
            stored.update((doc["id"], doc["text"]) for doc in docs)
            return httpx.Response(200, json={"upserted": len(docs), "ids": [doc["id"] for doc in docs]})
        return httpx.Response(200, json={"name": "c", "count": len(stored)})  # PUT and GET of the collection

    client = SearchClient(http=httpx.Client(base_url="http://search.test", transport=httpx.MockTransport(handler)))
    lines = [{"id": f"d{n}", "text": f"line {n} " + "words " * 8} for n in range(1, 13)]
    lines[8] = {"id": "d9", "text": "x" * 500}
    path = _write(tmp_path / "long.jsonl", lines)
    assert ingest(client, path, "c", url="http://search.test", batch=12, concurrency=1, quiet=True) == 1
    err = capsys.readouterr().err
    assert "line 9: refused by the service as too large on its own (over 400 bytes)" in err
    assert "lines 1-8 of long.jsonl stored" in err and "Lines before it are stored" in err
    assert sorted(stored) == sorted(f"d{n}" for n in range(1, 9))
    lines[8]["text"] = "fixed"
    path = _write(path, lines)
    stored.clear()  # what the re-run sends: the lines after the record only
    assert ingest(client, path, "c", url="http://search.test", batch=12, concurrency=1, quiet=True) == 0
    assert sorted(stored) == sorted(f"d{n}" for n in range(9, 13))


def test_a_refusal_that_is_not_sent_again_does_not_claim_retries(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A 507 said "after 20 retries" where none was made (QA)."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(507, json={"error": {"code": "insufficient_storage", "message": "disk full",
                                                       "details": []}})
        return httpx.Response(200, json={"name": "c", "count": 0})

    transport = httpx.MockTransport(handler)
    original = SearchClient.__init__

    def mocked(self: SearchClient, *args: Any, **kwargs: Any) -> None:
        original(self, http=httpx.Client(base_url="http://search.test", transport=transport),
                 retry=kwargs.get("retry"))

    path = _write(tmp_path / "a.jsonl", ANIMALS[:1])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchClient, "__init__", mocked)
        assert main(["ingest", "--url", "http://search.test", "--collection", "c", "--quiet", str(path)]) == 1
    err = capsys.readouterr().err
    assert "507 insufficient_storage: disk full; run the same command again" in err and "retries" not in err
