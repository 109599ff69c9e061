"""The command line's arguments, extras check and logs (the commands themselves run in CI and in the bench test)."""

import importlib.metadata
import io
import json
import logging
import logging.config
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from app.cli import _work_dir, main, missing_extra
from app.eval.report import RELEVANCE_TARGETS
from app.logs import adopt_uvicorn_default_logging


@pytest.mark.parametrize("flag", [["--check-relevance"], ["--check-relevance", "all"]])
def test_check_relevance_all_checks_every_target(flag: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_evaluate(*args: object, relevance_checks: list[str] | None = None, **kwargs: object) -> list[str]:
        seen["checks"] = relevance_checks
        return []

    monkeypatch.setattr("app.eval.report.evaluate_dataset", fake_evaluate)
    monkeypatch.setattr("app.eval.beir.check_beir", lambda directory, split: None)
    assert main(["evaluate", "--dataset", "x", "--data-dir", "y", *flag]) == 0
    assert seen["checks"] == list(RELEVANCE_TARGETS)


def test_check_relevance_rejects_unknown_targets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--dataset", "x", "--check-relevance", "pr_auc_ratio,kept"])
    assert exit_info.value.code == 2
    assert "'pr_auc_ratio,kept': expected one or more of" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "extra", "dist"), [
    (["evaluate", "--dataset", "x"], "eval", "pytrec-eval-terrier"),
    (["bench", "--quick"], "bench", "bm25s"),
])
def test_a_command_missing_its_extra_names_it_before_any_work(
        command: list[str], extra: str, dist: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real_distribution = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name == dist:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command started its work")

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr("app.eval.report.evaluate_dataset", no_work)
    monkeypatch.setattr("app.bench.run.run", no_work)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"needs the '{extra}' extra ({dist} not installed)" in err and f"pip install -e '.[{extra}]'" in err


def test_the_extras_the_commands_check_are_declared() -> None:
    assert missing_extra("eval") == missing_extra("bench") == []  # the dev set-up has them all
    with pytest.raises(ValueError, match="declares no extra 'evall'"):
        missing_extra("evall")


def test_warnings_of_python_and_of_other_libraries_are_json_lines_too() -> None:
    """The first start's ONNX export wrote the tracer's warnings and onnxruntime's root-logger advice as plain
    text among the JSON lines (QA)."""
    import warnings

    from app.logs import configure_logging

    names = ("", "app", "uvicorn", "uvicorn.access", "uvicorn.error", "psycopg", "py.warnings")
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.filters[:])
             for name, lg in ((n, logging.getLogger(n)) for n in names)}
    try:
        configure_logging("info")
        stream = io.StringIO()
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a tensor read as a Python boolean", UserWarning, stacklevel=1)
        logging.warning("please consider pre-processing")  # a library logging on the root logger
        logging.getLogger("onnxruntime").info("an info line of a library: not shown")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["logger"], line["level"]) for line in lines] == [("py.warnings", "WARNING"),
                                                                       ("root", "WARNING")]
        assert "a tensor read as a Python boolean" in lines[0]["message"]
    finally:
        logging.captureWarnings(False)
        for name, (handlers, level, propagate, filters) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.level, lg.propagate, lg.filters[:] = handlers, level, propagate, filters


def test_bare_uvicorn_logs_json_lines_as_serve_does() -> None:
    """uvicorn's own default logging (what `uvicorn app.main:app` sets up) is switched to serve's JSON lines."""
    from uvicorn.config import LOGGING_CONFIG

    names = ("app", "uvicorn", "uvicorn.access", "uvicorn.error", "psycopg")
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.filters[:])
             for name, lg in ((n, logging.getLogger(n)) for n in names)}
    try:
        for name in names:
            logging.getLogger(name).handlers.clear()
        assert not adopt_uvicorn_default_logging("info")  # in process (a TestClient): nothing to adopt
        logging.config.dictConfig(LOGGING_CONFIG)
        assert adopt_uvicorn_default_logging("info")
        assert not adopt_uvicorn_default_logging("info")  # configured now, as `python -m app serve` does
        access = logging.getLogger("uvicorn.access")
        stream = io.StringIO()
        handler = access.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/health", "1.1", 200)
        line = json.loads(stream.getvalue())
        assert line["logger"] == "uvicorn.access" and "GET /health" in line["message"] and "request_id" in line
        pool = logging.getLogger("psycopg.pool")  # its warnings while PostgreSQL is down were plain text
        assert pool.getEffectiveLevel() <= logging.WARNING
        handler = logging.getLogger("psycopg").handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream := io.StringIO())
        pool.warning("error connecting in %r: connection is bad", "search-store")
        assert json.loads(stream.getvalue())["logger"] == "psycopg.pool"
        pool.info("connection given by %r", "search-store")  # each connection's comings and goings (QA: 88% of a
        assert len(stream.getvalue().splitlines()) == 1     # replica's log): at debug only
    finally:
        for name, (handlers, level, propagate, filters) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.filters[:] = handlers, filters
            logger.setLevel(level)
            logger.propagate = propagate


@pytest.mark.parametrize("command", [["evaluate", "--dataset", "{missing}"],
                                     ["evaluate", "--dataset", "{beir}", "--split", "nosplit"],
                                     ["train-adapter", "--dataset", "{missing}:train", "--out", "{out}"],
                                     ["lodo", "--dataset", "{beir}:train", "--dataset", "{missing}"]])
def test_a_dataset_that_is_not_there_is_one_line_before_any_work(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """train-adapter loaded the model, then died with a traceback and left its store in /tmp (QA)."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        (beir / name).write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    argv = [part.format(missing=tmp_path / "missing", beir=beir, out=tmp_path / "out") for part in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not found: is" in err and "a BEIR dataset" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and list((tmp_path / "temp").iterdir()) == []


def test_train_adapter_asks_where_to_write_instead_of_overwriting_the_shipped_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --out it wrote config/adapter, the default the service loads: a 40-query trial replaced it (QA)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train-adapter", "--dataset", "anything:train"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_work_dir_not_given_is_removed_at_the_end_and_one_given_is_kept(tmp_path: Path) -> None:
    """evaluate, lodo and train-adapter without --data-dir each left their store and indexes in /tmp (30-60 MB
    an evaluation)."""
    with _work_dir(None, "search-eval-") as temporary:
        (temporary / "documents.sqlite3").write_text("x")
    assert not temporary.exists()
    with _work_dir(tmp_path / "kept", "search-eval-") as kept:
        kept.mkdir()
    assert kept == tmp_path / "kept" and kept.is_dir()


def test_reencode_of_a_data_dir_with_no_store_says_so_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run in the wrong folder, it made ./data with a store and a LOCK file, then said "no collection" (QA)."""
    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path / "data"))
    assert main(["reencode", "--collection", "nope"]) == 2
    assert f"no store in {tmp_path / 'data'} (SEARCH_DATA_DIR)" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_reencode_stopped_by_a_full_disk_says_what_is_done_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It was a 42-line traceback, after one collection had been committed (QA)."""
    import app.commands.reencode as module
    from app.errors import InsufficientStorage

    def fails(*args: object, **kwargs: object) -> None:
        done = [module.Outcome("notes", "m (torch)", "m (onnx-int8)", 3, snapshotted=True)]
        raise module.ReencodeFailed(done, "papers", InsufficientStorage("the data dir's disk is full"))

    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(module, "reencode", fails)
    assert main(["reencode"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["notes: 3 documents re-encoded, m (torch) -> m (onnx-int8)"]
    assert err.splitlines() == ["reencode: 'papers' was not re-encoded (the data dir's disk is full): it keeps its "
                                "old vectors and encoder, as nothing of it was written; mend that (free space) and "
                                "run reencode again for the collections not done"]


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the command started its work")


@pytest.mark.parametrize(("command", "argument"), [
    (["evaluate", "--dataset", "d", "--check", "lexical=abc"], "--check"),
    (["evaluate", "--dataset", "d", "--check", "bogus=0.5"], "--check"),
    (["evaluate", "--dataset", "d", "--check", "dense=1.5"], "--check"),
    (["evaluate", "--dataset", "d", "--plot", "{tmp}/nonexistent/x.png"], "--plot"),
    (["evaluate", "--dataset", "d", "--json", "{tmp}"], "--json"),
    (["evaluate", "--dataset", "d", "--url", "notaurl"], "--url"),
    (["evaluate", "--dataset", "d", "--data-dir", "/proc/x"], "--data-dir"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--recall-target", "1.5"], "--recall-target"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--steps", "-1"], "--steps"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--hidden", "0"], "--hidden"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--val-fraction", "2"], "--val-fraction"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--inputs", "bogus"], "--inputs"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--folds", "1"], "--folds"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--query-noise", "nan"], "--query-noise"),
    (["train-adapter", "--dataset", "d", "--out", "/proc/x"], "--out"),
    (["train-adapter", "--dataset", "d", "--out", "o", "--fallback-out", "{file}/x"], "--fallback-out"),
    (["lodo", "--dataset", "d", "--dataset", "e", "--folds", "0"], "--folds"),
    (["lodo", "--dataset", "d", "--dataset", "e", "--json", "/proc/x.json"], "--json"),
    (["bench", "--sizes", "abc"], "--sizes"),
    (["bench", "--sizes", "1000,-5"], "--sizes"),
    (["bench", "--rounds", "0"], "--rounds"),
    (["bench", "--encoders", "onnx-int8,bogus"], "--encoders"),
    (["bench", "--database-url", "notaurl"], "--database-url"),
    (["bench", "--keep", "/proc/x"], "--keep"),
    (["ingest", "--collection", "", "x.jsonl"], "--collection"),
    (["ingest", "--collection", "c", "--url", "http:/x", "x.jsonl"], "--url"),
    (["search", "--collection", "c", "--url", "http://127.0.0.1:70000", "a query"], "--url"),
    (["evaluate", "--dataset", "d", "--check", ","], "--check"),
    (["search", "--collection", "", "a query"], "--collection"),
    (["ingest", "--collection", "bad name!", "x.jsonl"], "--collection"),  # (after 20 retries with no server, QA)
    (["search", "--collection", "a/b", "a query"], "--collection"),
    (["search", "--collection", "c", "--filter", '{{"x": NaN}}', "a query"], "--filter"),  # (format: {{ is {)
    (["search", "--collection", "c", "--filter", '{{"x": {{"gt": 1e999}}}}', "a query"], "--filter"),
])
def test_a_bad_value_is_one_line_naming_its_argument_before_any_work(
        command: list[str], argument: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each was a traceback, several after minutes of work; --plot made the folders it named (QA)."""
    (tmp_path / "file").write_text("")
    monkeypatch.chdir(tmp_path)
    for work in ("app.eval.report.evaluate_dataset", "app.eval.adapter_training.train_default_adapter",
                 "app.eval.lodo.leave_one_domain_out", "app.bench.run.run", "app.commands.ingest.ingest"):
        monkeypatch.setattr(work, _no_work)
    with pytest.raises(SystemExit) as exit_info:
        main([part.format(tmp=tmp_path, file=tmp_path / "file") for part in command])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {argument}" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_the_values_taken_reach_the_command_as_they_are_meant(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr("app.bench.run.run", lambda config: seen.setdefault("config", config) and "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["bench", "--sizes", "1000, 2000", "--rounds", "2", "--encoders", "onnx,torch",
                 "--keep=~/kept/here"]) == 0  # (a shell leaves that ~ as it is)
    config = seen["config"]
    assert (config.sizes, config.rounds, config.encoders, config.keep) == (  # type: ignore[attr-defined]
        [1000, 2000], 2, ["onnx", "torch"], tmp_path / "kept" / "here")
    assert not (tmp_path / "kept").exists()  # checked, not made: the command makes it when it writes there


def test_evaluate_help_names_every_relevance_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(target in help_text for target in RELEVANCE_TARGETS)


def test_evaluate_of_a_server_names_it_in_one_line_when_it_cannot_be_reached(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    def unreachable(*args: object, **kwargs: object) -> list[str]:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr("app.eval.beir.check_beir", lambda directory, split: None)
    monkeypatch.setattr("app.eval.report.evaluate_dataset", unreachable)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--dataset", "x", "--url", "http://127.0.0.1:9"])
    assert exit_info.value.code == "python -m app evaluate: http://127.0.0.1:9: [Errno 111] Connection refused"
    capsys.readouterr()
    # its data dir is the server's own: one given would be unused
    assert main(["evaluate", "--dataset", "x", "--url", "http://127.0.0.1:9", "--data-dir", "d"]) == 2
    assert "--data-dir is for the in-process service" in capsys.readouterr().err


def test_sigterm_ends_a_command_through_its_clean_ups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Killed by SIGTERM, evaluate and train-adapter left their work dirs in /tmp (QA)."""
    import os
    import signal

    def killed(dataset: Path, split: str, data_dir: Path, **kwargs: object) -> list[str]:
        (data_dir / "documents.sqlite3").write_text("x")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not end the command")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr("app.eval.beir.check_beir", lambda directory, split: None)
    monkeypatch.setattr("app.eval.report.evaluate_dataset", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["evaluate", "--dataset", "x"]) == 143
    assert list(tmp_path.iterdir()) == [] and "python -m app evaluate: terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == before


def _one_document_dataset(beir: Path) -> Path:
    """A well-formed BEIR folder: one document, one query judged in its test split."""
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "", "text": "a document"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return beir


@pytest.mark.parametrize(("file", "text", "why"), [
    ("corpus.jsonl", '{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n', "corpus.jsonl line 2: not JSON"),
    ("corpus.jsonl", '{"_id": "d1", "title": "a"}\n', "corpus.jsonl line 1: no text string"),
    ("queries.jsonl", '["q1", "a query"]\n', "queries.jsonl line 1: no _id or text string"),
    ("queries.jsonl", '\ufeff{"_id": "q0", "text": "a"}\n{"_id": "q1", "text": "caf\udce9"}\n',
     "queries.jsonl line 2: not UTF-8"),
    ("qrels/test.tsv", "q1\td1\t1\n", "test.tsv: its first line must be the header"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tyes\n", "test.tsv line 2: expected a query id"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td\udce9\t1\n", "test.tsv: not UTF-8"),
    ("qrels/test.tsv", "query-id\tcorpus-id\tscore\n q1\td1\t1\n", "is judged in"),
    ("corpus.jsonl", "\n", "corpus.jsonl: no document"),
])
def test_a_malformed_dataset_file_is_named_with_its_line(file: str, text: str, why: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """They were a bare JSONDecodeError or KeyError (QA)."""
    beir = _one_document_dataset(tmp_path / "beir")
    (beir / file).write_bytes(text.encode("utf-8", "surrogateescape"))  # (\udce9: the byte 0xe9 alone)
    assert main(["evaluate", "--dataset", str(beir), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m app evaluate: ") and why in err and "Traceback" not in err


def test_lodo_needs_two_collections_and_reports_the_recalibrations_a_small_set_allows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One collection named twice, or a left-out set of 50 judged queries or fewer, ended in a traceback after
    minutes of work (QA)."""
    import numpy as np

    from app.engine.judgments import TrainingSet
    from app.eval.lodo import _recalibrated

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        (beir / name).write_text("")
    assert main(["lodo", "--dataset", f"{beir}:train", "--dataset", f"{beir}:test"]) == 2
    assert "at least two collections" in capsys.readouterr().err
    held = TrainingSet(np.zeros((30, 4)), [np.zeros(5)] * 30, [np.ones(5, bool)] * 30, [np.zeros(5)] * 30,
                       np.zeros((30, 3)))
    assert _recalibrated(None, held, [np.zeros(5)] * 30, 0.9, 25) is None  # 5 left to measure it on


def test_a_second_signal_ends_the_process_as_the_system_would() -> None:
    """A second Ctrl-C, raised inside the first one's clean-up, hung evaluate (QA)."""
    import os
    import signal

    from app.runtime import Terminated, interruptible

    before = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Terminated), interruptible():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:  # the clean-up of the first: a second signal now is the system's to act on
            assert signal.getsignal(signal.SIGINT) == signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert {each: signal.getsignal(each) for each in before} == before


def test_an_adapter_replaces_only_a_folder_that_is_new_empty_or_an_adapters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--out models emptied the folder of the notes and adapters beside it; --out . trained, then failed; a link
    failed after training (QA)."""
    from app import cli_args

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "models")
    monkeypatch.setattr("app.eval.adapter_training.train_default_adapter", _no_work)
    for out in ("models", ".", "/"):
        with pytest.raises(SystemExit) as exit_info:
            main(["train-adapter", "--dataset", "d", "--out", str(tmp_path / out) if out == "models" else out])
        assert exit_info.value.code == 2 and "argument --out" in capsys.readouterr().err
    assert (tmp_path / "models" / "notes.txt").read_text() == "mine"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.json").write_text("{}")
    (adapter / "weights.npz").write_bytes(b"")
    (tmp_path / "link").symlink_to(adapter)
    assert cli_args.adapter_dir(str(tmp_path / "link")) == adapter  # replaced where it really is
    assert cli_args.adapter_dir(str(tmp_path / "new" / "one")) == tmp_path / "new" / "one"
    assert main(["train-adapter", "--dataset", "d", "--out", str(adapter), "--fallback-out",
                 str(tmp_path / "link")]) == 2
    assert "--fallback-out is --out" in capsys.readouterr().err


def test_a_dataset_folder_names_a_collection_it_can_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A space in the folder's name was a 422 without a reason, or a traceback; "." made "eval-" (QA)."""
    from app.eval.beir import dataset_name

    (tmp_path / "my set").mkdir()
    monkeypatch.chdir(tmp_path / "my set")
    assert dataset_name(Path("/data/my set")) == dataset_name(Path(".")) == "my-set"
    assert dataset_name(Path("/data/scifact")) == "scifact"


def test_evaluate_on_a_running_servers_data_dir_says_so_in_a_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.store.lock import DataDirLock

    beir = _one_document_dataset(tmp_path / "beir")
    (tmp_path / "data").mkdir()
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()  # as a server holds it
    try:
        assert main(["evaluate", "--dataset", str(beir), "--data-dir", str(tmp_path / "data")]) == 1
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert err.startswith("python -m app evaluate: ") and "Traceback" not in err and len(err.splitlines()) == 1


def test_bench_refuses_a_database_it_cannot_reach_before_any_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    """"postgresql://" with no server there failed ~2 minutes in, after the phases before the replicas' (QA)."""
    monkeypatch.setattr("app.bench.run.run", _no_work)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--quick", "--database-url", "postgresql://nobody:secret@127.0.0.1:9/none"])
    assert "--database-url: cannot connect" in str(exit_info.value.code)
    assert "secret" not in str(exit_info.value.code)


def test_the_corpus_is_created_only_when_the_server_lacks_it() -> None:
    """A read key evaluating a server that held the corpus got 403 for a creation it did not need (QA)."""
    from app.client import ApiError
    from app.eval.runner import ensure_corpus

    class Server:
        def __init__(self, count: int | None) -> None:
            self.count, self.calls = count, []  # count None: no such collection

        def get_collection(self, name: str) -> dict[str, int]:
            self.calls.append("get")
            if self.count is None:
                raise ApiError(404, "collection_not_found", "no", [])
            return {"count": self.count}

        def create_collection(self, name: str) -> None:
            self.calls.append("create")
            self.count = 0

        def ingest(self, name: str, documents: Any, batch: int) -> None:
            self.calls.append(f"ingest {len(list(documents))}")

    corpus = [{"_id": "d1", "title": "", "text": "a"}]
    held, missing = Server(1), Server(None)
    assert ensure_corpus(held, "eval-x", corpus) is None and held.calls == ["get"]  # type: ignore[arg-type]
    ensure_corpus(missing, "eval-x", corpus)  # type: ignore[arg-type]
    assert missing.calls == ["get", "create", "ingest 1"]


def test_evaluate_at_a_url_where_nothing_listens_says_so_at_once(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Its first call printed the client's six retry lines over 5 s before the one line that said why."""
    from tests.server import free_port

    def no_work(*args: object, **kwargs: object) -> list[str]:
        raise AssertionError("the evaluation started")

    monkeypatch.setattr("app.eval.report.evaluate_dataset", no_work)
    monkeypatch.setattr("app.eval.beir.check_beir", lambda directory, split: None)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as exit_info, caplog.at_level(logging.WARNING):
        main(["evaluate", "--dataset", "x", "--url", url])
    assert str(exit_info.value.code).startswith(f"python -m app evaluate: {url}: ")
    assert len([r for r in caplog.records if "trying again" in r.getMessage()]) <= 1
