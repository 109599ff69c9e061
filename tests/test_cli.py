"""The command line's arguments, extras check and logs (the commands themselves run in CI and in the bench test)."""

import importlib.metadata
import io
import json
import logging
import logging.config
import tempfile
from pathlib import Path

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
    assert "unknown relevance targets ['kept']" in capsys.readouterr().err


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
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train-adapter loaded the model, then died with a traceback and left its store in /tmp (QA)."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv"):
        (beir / name).write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    argv = [part.format(missing=tmp_path / "missing", beir=beir, out=tmp_path / "out") for part in command]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert "not found: is" in str(exit_info.value.code) and "a BEIR dataset" in str(exit_info.value.code)
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
    with _work_dir(str(tmp_path / "kept"), "search-eval-") as kept:
        kept.mkdir()
    assert kept == tmp_path / "kept" and kept.is_dir()


def test_reencode_of_a_data_dir_with_no_store_says_so_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Run in the wrong folder, it made ./data with a store and a LOCK file, then said "no collection" (QA)."""
    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path / "data"))
    assert main(["reencode", "--collection", "nope"]) == 2
    assert f"no store in {tmp_path / 'data'} (SEARCH_DATA_DIR)" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
