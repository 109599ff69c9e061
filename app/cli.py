"""The command line: serve, evaluate, train-adapter, bench; ingest and search (app/commands) against a server."""

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import log_config
    from app.settings import Settings

    settings = Settings()
    # One worker: the process holds its indexes in memory and owns the data dir exclusively.
    uvicorn.run("app.main:app", host=settings.host, port=settings.port, workers=1,
                timeout_graceful_shutdown=30, log_config=log_config(settings.log_level))
    return 0


def _parse_floors(text: str | None) -> dict[str, float]:
    floors: dict[str, float] = {}
    for part in (text or "").split(","):
        if part.strip():
            name, _, value = part.partition("=")
            floors[name.strip()] = float(value)
    return floors


def _relevance_checks(text: str) -> list[str]:
    """`all` (or nothing) checks every target; otherwise the named ones, each of which must exist."""
    from app.eval.report import RELEVANCE_TARGETS

    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names or names == ["all"]:
        return list(RELEVANCE_TARGETS)
    unknown = sorted(set(names) - set(RELEVANCE_TARGETS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown relevance targets {unknown}; expected all or some of "
                                         f"{', '.join(RELEVANCE_TARGETS)}")
    return names


def _evaluate(args: argparse.Namespace) -> int:
    from app.eval.report import evaluate_dataset

    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="search-eval-"))
    failures = evaluate_dataset(Path(args.dataset), args.split, data_dir, floors=_parse_floors(args.check),
                                relevance_checks=args.check_relevance,
                                plot=Path(args.plot) if args.plot else None,
                                out=Path(args.json) if args.json else None, url=args.url)
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _train_adapter(args: argparse.Namespace) -> int:
    from app.eval.adapter_training import train_default_adapter

    report: dict[str, Any] = train_default_adapter(Path(args.dataset), args.split, Path(args.out),
                                                   Path(args.data_dir) if args.data_dir else None,
                                                   family=args.family, recall_target=args.recall_target)
    print(json.dumps(report, indent=1))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from app.bench.run import BenchConfig, run

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()] if args.sizes else None
    config = BenchConfig.quick(sizes) if args.quick else BenchConfig(sizes=sizes) if sizes else BenchConfig()
    config.rounds = args.rounds or config.rounds
    config.keep = Path(args.keep) if args.keep else None
    print(run(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service (settings from config/ and SEARCH_*)")
    serve.set_defaults(func=_serve)

    evaluate = commands.add_parser("evaluate", help="ingest a BEIR dataset through the API and score every mode")
    evaluate.add_argument("--dataset", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--data-dir", help="data dir to use (kept; reused if it already holds the corpus)")
    evaluate.add_argument("--check", help="nDCG@10 floors, e.g. lexical=0.66,dense=0.64,hybrid-convex=0.71")
    evaluate.add_argument("--check-relevance", nargs="?", const="all", default=None, type=_relevance_checks,
                          help="fail unless the relevance filter meets its targets: all, or a comma-separated subset "
                               "of pr_auc_ratio, served_recall_kept, served_kept_per_query, nonword_hits_per_query")
    evaluate.add_argument("--url", help="evaluate this running server instead (collection eval-<dataset folder>, "
                                        "ingested unless it already holds the corpus)")
    evaluate.add_argument("--plot", help="write the precision-recall curves (PNG) here")
    evaluate.add_argument("--json", help="write every figure (JSON) here")
    evaluate.set_defaults(func=_evaluate)

    train = commands.add_parser("train-adapter", help="fit a Cosine Adapter from a BEIR dataset's judgments")
    train.add_argument("--dataset", required=True)
    train.add_argument("--split", default="train")
    train.add_argument("--out", default="config/adapter", help="folder to write the adapter to")
    train.add_argument("--data-dir", help="data dir to use (kept; reused if it already holds the corpus)")
    train.add_argument("--family", default="hybrid", choices=["hybrid", "linear", "power"],
                       help="hybrid (default) also reads BM25 evidence; linear and power are the paper's maps")
    train.add_argument("--recall-target", type=float, default=0.95)
    train.set_defaults(func=_train_adapter)

    bench = commands.add_parser("bench", help="benchmark a real server over HTTP and the indexes against peers")
    bench.add_argument("--sizes", help="corpus sizes, e.g. 10000,100000,1000000 (default 10000,100000)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and few requests: a smoke test")
    bench.add_argument("--rounds", type=int, help="repetitions each figure is the median of (default 3)")
    bench.add_argument("--keep", help="keep the data dirs and server logs under this folder")
    bench.set_defaults(func=_bench)

    from app.commands import add_commands

    add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
