"""The command line: serve, evaluate, train-adapter, bench; ingest and search (app/commands) against a server."""

import argparse
import importlib.metadata
import json
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, get_args

from app import cli_args as types
from app.runtime import configure_environment, interruptible, stopped_by

PROJECT = "hybrid-search"


def missing_extra(extra: str) -> list[str]:
    """The distributions of the project's `extra` (as pyproject.toml lists them) that are not installed."""
    try:
        metadata = importlib.metadata.metadata(PROJECT)
    except importlib.metadata.PackageNotFoundError:
        return []  # run from a checkout that was never installed: nothing to check against
    if extra not in (metadata.get_all("Provides-Extra") or []):
        raise ValueError(f"{PROJECT} declares no extra {extra!r}")
    missing = []
    for requirement in metadata.get_all("Requires-Dist") or []:
        name, _, marker = requirement.partition(";")
        if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", marker):
            dist = re.split(r"[\s\[<>=!~]", name.strip(), maxsplit=1)[0]
            try:
                importlib.metadata.distribution(dist)
            except importlib.metadata.PackageNotFoundError:
                missing.append(dist)
    return missing


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure_logging
    from app.runtime import STARTUP_FAILED
    from app.settings import load_settings

    try:
        settings = load_settings()
    except SystemExit as refused:  # the status of every other start that fails (exit 1 before; QA)
        print(refused.code, file=sys.stderr)
        return STARTUP_FAILED
    configure_logging(settings.log_level)  # here, not by uvicorn's log_config: Python's warnings are logged too
    # One worker: the process holds its indexes in memory and owns the data dir exclusively.
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, workers=1,
                timeout_graceful_shutdown=30, log_config=None)
    return 0


def _floors(text: str) -> dict[str, float]:
    """RUN=FLOOR,... of the evaluation's runs, each floor an nDCG@10 in [0, 1]."""
    from app.eval.runner import RUNS

    floors: dict[str, float] = {}
    for part in text.split(","):
        if part.strip():
            name, _, value = part.partition("=")
            if name.strip() not in RUNS:
                raise argparse.ArgumentTypeError(f"unknown run {name.strip()!r}; expected some of {', '.join(RUNS)}")
            floors[name.strip()] = types.number(0, 1)(value)
    if not floors:
        raise argparse.ArgumentTypeError("no floor given: RUN=FLOOR, comma-separated")
    return floors


def _relevance_checks(text: str) -> list[str]:
    """`all` (or nothing) checks every target; otherwise the named ones, each of which must exist."""
    from app.eval.report import RELEVANCE_TARGETS

    if text.strip() in ("", "all"):
        return list(RELEVANCE_TARGETS)
    return list(types.subset(list(RELEVANCE_TARGETS))(text))


class UsageError(Exception):
    """Arguments that parse but do not go together (or name what is not there), found before any work: one
    line and exit 2, as argparse's own refusals (they were exit 1, QA)."""


def _datasets(items: list[str], default_split: str) -> list[tuple[Path, str]]:
    """Each DIR or DIR:SPLIT, checked before any work: a missing one failed after the model had loaded, with a
    traceback (QA)."""
    from app.eval.beir import check_beir

    datasets = []
    for item in items:
        path, _, split = item.partition(":")
        datasets.append((Path(path), split or default_split))
        try:
            check_beir(*datasets[-1])
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    return datasets


@contextmanager
def _work_dir(given: Path | None, prefix: str) -> Iterator[Path]:
    """--data-dir as given (kept), else a temporary one removed at the end: each run of evaluate, lodo or
    train-adapter without one left its store and indexes in /tmp (30-60 MB an evaluation)."""
    if given:
        yield given
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        yield Path(temporary)


def _evaluate(args: argparse.Namespace) -> int:
    from app.eval.report import evaluate_dataset

    if args.url and args.data_dir:
        raise UsageError("--data-dir is for the in-process service; one at --url keeps its own")
    import httpx

    from app.client import ApiError

    ((dataset, split),) = _datasets([args.dataset], args.split)
    key = types.api_key(args)
    try:
        if args.url:
            _reachable(args.url, key)
        with _work_dir(args.data_dir, "search-eval-") as data_dir:
            failures = evaluate_dataset(dataset, split, data_dir, floors=args.check or {},
                                        relevance_checks=args.check_relevance, plot=args.plot, out=args.json,
                                        url=args.url, api_key=key)
    except (ApiError, httpx.HTTPError) as exc:  # a server at --url that is down or refuses: one line, not a trace
        if not args.url:
            raise
        raise SystemExit(f"python -m app evaluate: {args.url}: {exc}") from None
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _reachable(url: str, api_key: str | None) -> None:
    """One quick look at the server before any work, with the search command's short retry: one that is down, or
    that refuses the key, is said within a second or two, where the evaluation's first call printed the client's
    six retry lines over 5 s first (the evaluation's own calls keep those: a long run rides out a restart)."""
    from app.client import SearchClient
    from app.commands import SEARCH_RETRY

    with SearchClient(url, api_key=api_key, retry=SEARCH_RETRY) as client:
        client.list_collections()


def _train_adapter(args: argparse.Namespace) -> int:
    from app.eval.adapter_training import train_default_adapter

    if args.fallback_out == args.out:
        raise UsageError("--fallback-out is --out: the stats-only adapter would replace the one trained")
    datasets = _datasets(args.dataset, args.split)
    with _work_dir(args.data_dir, "search-train-") as data_dir:
        report: dict[str, Any] = train_default_adapter(
            datasets, args.out, data_dir, family=args.family, recall_target=args.recall_target,
            inputs=args.inputs, folds=args.folds, repeats=args.repeats, fallback_out=args.fallback_out,
            contentless=args.contentless, pseudowords=args.pseudowords, fit=_fit_settings(args))
    print(json.dumps(report, indent=1))
    return 0


def _fit_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"hidden": args.hidden, "steps": args.steps, "val_fraction": args.val_fraction,
            "cosine_scale": args.cosine_scale, "query_noise": args.query_noise}


def _add_fit_arguments(parser: argparse.ArgumentParser, folds: int, repeats: int) -> None:
    """The arguments of train-adapter and lodo alike: what the networks read and how they are fitted."""
    from app.engine.relevance.inputs import COSINE_SCALES, DEFAULT_COSINE_SCALE, INPUTS
    from app.eval.adapter_training import TRAINING_CONTENTLESS, TRAINING_PSEUDOWORDS

    # The shipped default was trained with --hidden 32 --steps 300 --val-fraction 0 (README).
    parser.add_argument("--inputs", type=types.subset(INPUTS), default="embedding,stats",
                        help="what the network reads of a query: embedding, stats or both (comma-separated)")
    parser.add_argument("--folds", type=types.integer(2), default=folds)
    parser.add_argument("--repeats", type=types.positive, default=repeats, help="networks (seeds) a fold")
    parser.add_argument("--data-dir", type=types.output_dir,
                        help="data dir to use (kept; reused if it already holds the corpora)")
    parser.add_argument("--hidden", type=types.positive, default=64, help="hidden units of each network")
    parser.add_argument("--steps", type=types.positive, default=600,
                        help="full-batch steps (at most, with a validation split)")
    parser.add_argument("--val-fraction", type=types.number(0, 1, high_open=True), default=0.2,
                        help="queries held out of each network's fit to stop it early (0: train every step)")
    parser.add_argument("--cosine-scale", default=DEFAULT_COSINE_SCALE, choices=COSINE_SCALES,
                        help="how the map reads a cosine: min-max scaled over the query's list (default) or raw")
    parser.add_argument("--query-noise", type=types.number(0), default=0.0,
                        help="Gaussian noise on each coordinate of the query embedding at every training step")
    parser.add_argument("--contentless", type=types.integer(0), default=TRAINING_CONTENTLESS,
                        help="queries of stop words or numbers a collection, all irrelevant, beside the non-words")
    parser.add_argument("--pseudowords", type=types.integer(0), default=TRAINING_PSEUDOWORDS,
                        help="queries of made-up words that read like English a collection, all irrelevant")


def _lodo(args: argparse.Namespace) -> int:
    from app.eval.lodo import leave_one_domain_out

    datasets = _datasets(args.dataset, "test")
    from app.eval.beir import dataset_name

    if len({dataset_name(path) for path, _ in datasets}) < 2:  # (each folder is one collection, eval-<name>)
        raise UsageError("give --dataset for at least two collections (folders of different names): each is left "
                         "out in turn and the adapter trained on the others")
    with _work_dir(args.data_dir, "search-lodo-") as data_dir:
        results = leave_one_domain_out(datasets, data_dir, inputs=args.inputs, folds=args.folds,
                                       repeats=args.repeats, contentless=args.contentless,
                                       pseudowords=args.pseudowords, fit=_fit_settings(args))
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from app.bench.run import BenchConfig, run

    if args.database_url:  # before the phases before it: "postgresql://" with no server failed ~2 min in (QA)
        import psycopg

        try:
            psycopg.connect(args.database_url, connect_timeout=5).close()
        except psycopg.Error as exc:  # (its message, not the URL: that may carry a password)
            why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise SystemExit(f"python -m app bench: --database-url: cannot connect ({why})") from None

    sizes = args.sizes
    config = BenchConfig.quick(sizes) if args.quick else BenchConfig(sizes=sizes) if sizes else BenchConfig()
    config.rounds = args.rounds or config.rounds
    if args.encoders:
        config.encoders = list(args.encoders)
    config.keep = args.keep
    config.database_url = args.database_url
    print(run(config))
    return 0


def _parser() -> argparse.ArgumentParser:
    """Every command, its arguments, its function and the extra it needs (one declaration after another: past
    ~60 lines, but split it would only scatter the list)."""
    from app.engine.encoders import BACKENDS
    from app.engine.relevance import DEFAULT_FAMILY, DEFAULT_RECALL_TARGET, Family
    from app.eval.report import RELEVANCE_TARGETS

    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service (settings from config/ and SEARCH_*)")
    serve.set_defaults(func=_serve, extra=None)

    evaluate = commands.add_parser("evaluate", help="ingest a BEIR dataset through the API and score every mode")
    evaluate.add_argument("--dataset", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--data-dir", type=types.output_dir,
                          help="data dir to use (kept; reused if it already holds the corpus)")
    evaluate.add_argument("--check", type=_floors,
                          help="nDCG@10 floors, e.g. lexical=0.66,dense=0.64,hybrid-convex=0.71")
    evaluate.add_argument("--check-relevance", nargs="?", const="all", default=None, type=_relevance_checks,
                          help="fail unless the relevance filter meets its targets: all, or a comma-separated subset "
                               f"of {', '.join(RELEVANCE_TARGETS)}")
    evaluate.add_argument("--url", type=types.service_url,
                          help="evaluate this running server instead (collection eval-<dataset folder>, ingested "
                               "unless it already holds the corpus)")
    evaluate.add_argument("--api-key", help="the --url server's key (default $SEARCH_API_KEY)")
    evaluate.add_argument("--plot", type=types.output_file, help="write the precision-recall curves (PNG) here")
    evaluate.add_argument("--json", type=types.output_file, help="write every figure (JSON) here")
    evaluate.set_defaults(func=_evaluate, extra="eval")

    train = commands.add_parser("train-adapter", help="fit a Cosine Adapter from a BEIR dataset's judgments")
    train.add_argument("--dataset", required=True, action="append",
                       help="a BEIR dataset folder, DIR or DIR:SPLIT; repeat it to train across collections")
    train.add_argument("--split", default="train", help="the split of every --dataset that names none")
    train.add_argument("--fallback-out", type=types.adapter_dir,
                       help="also write the stats-only adapter (any encoder) to this folder")
    _add_fit_arguments(train, folds=5, repeats=3)
    # Required: its default was the shipped adapter's folder, which a trial run then overwrote without a word (QA).
    train.add_argument("--out", required=True, type=types.adapter_dir,
                       help="folder to write the adapter to (config/adapter replaces the shipped default)")
    train.add_argument("--family", default=DEFAULT_FAMILY, choices=get_args(Family),
                       help=f"{DEFAULT_FAMILY} (default); hybrid also reads BM25 evidence, linear and power are "
                            "the paper's maps")
    train.add_argument("--recall-target", type=types.number(0, 1, low_open=True), default=DEFAULT_RECALL_TARGET)
    train.set_defaults(func=_train_adapter, extra=None)

    lodo = commands.add_parser("lodo", help="leave-one-domain-out runs of the relevance filter over BEIR datasets")
    lodo.add_argument("--dataset", required=True, action="append", help="DIR:SPLIT; repeat for each domain")
    lodo.add_argument("--json", type=types.output_file, help="also write the figures to this JSON file")
    _add_fit_arguments(lodo, folds=3, repeats=1)
    lodo.set_defaults(func=_lodo, extra=None)

    bench = commands.add_parser("bench", help="benchmark a real server over HTTP and the indexes against peers")
    bench.add_argument("--sizes", type=types.sizes,
                       help="corpus sizes, e.g. 10000,100000,1000000 (default 10000,100000)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and few requests: a smoke test")
    bench.add_argument("--rounds", type=types.positive, help="repetitions each figure is the median of (default 3)")
    bench.add_argument("--keep", type=types.output_dir, help="keep the data dirs and server logs under this folder")
    bench.add_argument("--database-url", type=types.database_url,
                       help="an empty PostgreSQL database for the replica rows (default: the benchmark starts its "
                            "own, with pgserver)")
    bench.add_argument("--encoders", type=types.subset(BACKENDS),
                       help="SEARCH_ENCODER backends to compare, the candidate first and compared with torch, "
                            "(default onnx-int8,torch)")
    bench.set_defaults(func=_bench, extra="bench")

    from app.commands import add_commands

    add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.errors import DataDirLocked
    from app.eval.beir import BeirError

    configure_environment()  # before any command imports numpy or torch
    args = _parser().parse_args(argv)
    # Before any work: evaluate used to ingest a whole corpus for minutes and then die on a missing import.
    missing = missing_extra(args.extra) if args.extra else []
    if missing:
        print(f"python -m app {args.command} needs the '{args.extra}' extra ({', '.join(missing)} not installed): "
              f"pip install -e '.[{args.extra}]' (or ./scripts/setup dev)", file=sys.stderr)
        return 2
    try:
        with nullcontext() if args.command == "serve" else interruptible():  # (serve's are uvicorn's)
            result: int = args.func(args)
        return result
    except KeyboardInterrupt as exc:  # the work dirs and servers of the command are gone by now
        said, status = stopped_by(exc)
        print(f"python -m app {args.command}: {said}", file=sys.stderr)
        return status
    except (BeirError, UsageError) as exc:
        print(f"python -m app {args.command}: {exc}", file=sys.stderr)
        return 2
    except DataDirLocked as exc:  # --data-dir of a running server's (a 118-line traceback, QA)
        print(f"python -m app {args.command}: {exc.message}", file=sys.stderr)
        return 1
