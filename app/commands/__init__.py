"""The commands of `python -m app` that work beside the server: ingest and search talk to a running one over HTTP;
reencode and export-onnx work on the data directory and the environment while none runs."""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import cli_args as types
from app.client import ApiError, ClientError, Retry, SearchClient
from app.client_retry import RETRY_STATUSES
from app.runtime import stopped_by

if TYPE_CHECKING:
    from app.commands.reencode import Outcome

# A bulk load rides out a server's restart: a replica answers 503 (Retry-After: 1) while it loads, 6-11 s in QA's
# runs, and the client's default 6 attempts gave up after 5-8 s. 20 retries wait ~20 s of 503s, or up to ~2 min
# of refused connections (the backoff doubles to 10 s); `--retries` changes it (0: a wrong --url fails at once).
INGEST_RETRIES = 20


def ingest_retry(retries: int = INGEST_RETRIES) -> Retry:
    return Retry(attempts=retries + 1)


# A person waits at the terminal: one more try after a short wait (a 503's Retry-After, at most 2 s), so a server
# that is down is said so in under a second instead of after the client's default ~7 s of retries (QA).
SEARCH_RETRY = Retry(attempts=2, max_wait=2.0)


def _client(args: argparse.Namespace, retry: Retry | None = None) -> SearchClient:
    return SearchClient(args.url, api_key=types.api_key(args), retry=retry, timeout=args.timeout)


def _retried(args: argparse.Namespace) -> str:
    spent = f"{args.retries} retr{'y' if args.retries == 1 else 'ies'}"
    return f" (after {spent}: --retries sets how many)" if args.retries else ""


def _ingest(args: argparse.Namespace) -> int:
    import httpx

    from app.commands.ingest import NotResumable, ingest

    try:
        with _client(args, ingest_retry(args.retries)) as client:
            return ingest(client, Path(args.path), args.collection, url=args.url, batch=args.batch,
                          concurrency=args.concurrency, resume=not args.restart, quiet=args.quiet,
                          progress_file=args.progress_file)
    except KeyboardInterrupt as exc:
        said, status = stopped_by(exc)
        print(f"{said}: run the same command again to resume", file=sys.stderr)
        return status
    except FileNotFoundError as exc:  # an argument that names nothing: exit 2, as argparse's refusals
        print(f"python -m app ingest: argument path: {exc}", file=sys.stderr)
        return 2
    except (NotResumable, OSError) as exc:  # (OSError: the input is not readable)
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:  # the service's 4xx (a bad key, say) would answer a re-run the same way
        again = exc.status >= 500 or exc.status == 429
        retried = _retried(args) if exc.status in RETRY_STATUSES else ""  # (a 507 is not sent again: QA)
        print(f"ingest failed: {exc}" + (f"{retried}; run the same command again to resume" if again else ""),
              file=sys.stderr)
        return 1
    except ClientError as exc:  # the URL is not one
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    except httpx.ReadTimeout:  # not sent again: the service may still be storing it (app/client.py)
        print(f"ingest failed: no answer to a batch within {args.timeout:g} s; the service may still be storing it. "
              "Run the same command again to resume, with a smaller --batch or a larger --timeout", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:  # the retries spent: say how many, and how to wait longer or not at all
        print(f"ingest failed: {exc}{_retried(args)}; run the same command again to resume", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"ingest failed: {exc}; run the same command again to resume", file=sys.stderr)
        return 1


def _export(args: argparse.Namespace) -> int:
    import httpx

    from app.commands.export import export

    try:  # retried as a load is: a replica's restart midway must not cost the pages read so far
        with _client(args, ingest_retry(args.retries)) as client:
            export(client, args.collection, Path(args.path), vectors=args.vectors, quiet=args.quiet)
    except KeyboardInterrupt as exc:
        said, status = stopped_by(exc)
        print(f"{said}: no file written", file=sys.stderr)
        return status
    except (ClientError, OSError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"export failed: could not reach {args.url}: {exc}{_retried(args)}", file=sys.stderr)
        return 1
    return 0


def _search(args: argparse.Namespace) -> int:
    import httpx

    from app.commands.search import render

    body: dict[str, Any] = {"k": args.k, "mode": args.mode}
    if args.offset:
        body["offset"] = args.offset
    if args.filter:
        body["filter"] = args.filter
    if args.all:
        body["relevance"] = {"enabled": False}
    if args.highlight:
        body["highlight"] = {"fields": ["title", "text"]}
    try:
        with _client(args, SEARCH_RETRY) as client:
            print(render(client.search(args.collection, args.query, **body), offset=args.offset))
    except ApiError as exc:
        print(f"search failed: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"search failed: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"search failed: could not reach {args.url}: {exc}", file=sys.stderr)
        return 1
    return 0


def _reencode(args: argparse.Namespace) -> int:
    from app.commands.reencode import ReencodeFailed, reencode
    from app.errors import DataDirLocked
    from app.settings import load_settings

    settings = load_settings()
    if settings.database_url:
        # Vectors rewritten in place carry no new sequence numbers, so the other replicas would never see them.
        print("reencode: works on the embedded store only; over a shared PostgreSQL store, create a collection "
              "and ingest its documents again with the new encoder", file=sys.stderr)
        return 2
    try:
        outcomes = reencode(settings, args.collection or None, progress=not args.quiet)
    except DataDirLocked as exc:
        print(f"reencode: {exc.message}; re-encoding needs the service stopped", file=sys.stderr)
        return 1
    except (KeyError, FileNotFoundError) as exc:
        print(f"reencode: {exc.args[0]}", file=sys.stderr)
        return 2
    except ReencodeFailed as exc:
        _print_reencoded(exc.done)
        print(f"reencode: {exc}", file=sys.stderr)
        return 1
    _print_reencoded(outcomes)
    return 0


def _print_reencoded(outcomes: "list[Outcome]") -> None:
    for outcome in outcomes:
        if outcome.skipped:
            print(f"{outcome.collection}: already encoded by {outcome.after}; nothing to do")
            continue
        print(f"{outcome.collection}: {outcome.documents} documents re-encoded, {outcome.before} -> {outcome.after}"
              + (f"; {outcome.brought} of them had brought their own vectors, now replaced by this encoder's of "
                 "their text" if outcome.brought else "")
              + ("; its own relevance adapter (fitted on the old model) was removed: post its judgments again"
                 if outcome.adapter_removed else ""))


def _export_onnx(args: argparse.Namespace) -> int:
    from app.engine.onnx_export import ensure_exported
    from app.settings import load_settings

    settings = load_settings()
    graphs = ensure_exported(settings.model_path(), settings.onnx_dir)
    print(f"{graphs.fp32}\n{graphs.int8}")
    return 0


def _remote(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", type=types.service_url, default="http://127.0.0.1:8000",
                        help="the server (default %(default)s)")
    parser.add_argument("--collection", required=True, type=types.collection_name)
    parser.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' (default $SEARCH_API_KEY)")
    parser.add_argument("--timeout", type=types.seconds, default=120.0,
                        help="seconds to wait for each answer (default %(default)g)")


def _retries(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retries", type=types.integer(0), default=INGEST_RETRIES,
                        help="times a request that finds no server, or a 429 or 503, is sent again, with a growing "
                             "wait (default %(default)s: rides out a restart; 0 fails at once)")


def add_commands(commands: Any) -> None:
    """Adds ingest, export, search, reencode and export-onnx to the command line's subparsers."""
    load = commands.add_parser("ingest", help="load a JSONL file or a BEIR folder into a running server")
    _remote(load)
    load.add_argument("path", help="JSONL file (one document a line, as the documents route takes them) "
                                   "or a BEIR folder (its corpus.jsonl: _id, title, text)")
    load.add_argument("--batch", type=types.positive, default=256, help="documents a request (default %(default)s)")
    load.add_argument("--concurrency", type=types.positive, default=2, help="requests in flight (default %(default)s)")
    _retries(load)
    load.add_argument("--restart", action="store_true", help="ignore the progress file of an interrupted run")
    load.add_argument("--quiet", action="store_true", help="no progress bar (none either when stderr is not a "
                                                           "terminal)")
    load.add_argument("--progress-file", type=types.output_file,
                      help="where to record progress (default: PATH.progress.json beside the input, or beside a "
                           "BEIR folder's corpus.jsonl)")
    load.set_defaults(func=_ingest, extra=None)

    dump = commands.add_parser("export", help="write a collection of a running server to a JSONL file that ingest "
                                              "loads")
    _remote(dump)
    dump.add_argument("path", type=types.output_file, help="the JSONL file to write (gzip-compressed when it ends in "
                                                           ".gz); it appears only once complete")
    dump.add_argument("--vectors", action="store_true",
                      help="each document with its stored vector: the load encodes nothing again (a move to replicas "
                           "over PostgreSQL, say)")
    _retries(dump)
    dump.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    dump.set_defaults(func=_export, extra=None)

    find = commands.add_parser("search", help="search a running server and print the hits as a table")
    _remote(find)
    find.add_argument("query", type=types.query_text)
    find.add_argument("-k", type=types.positive, default=10)
    find.add_argument("--offset", type=types.integer(0), default=0, help="hits to skip: the page after -k hits is "
                                                                         "--offset k")
    find.add_argument("--filter", type=types.json_object,
                      help='metadata filter as the search body takes it, e.g. \'{"year": {"gte": 2020}}\'')
    find.add_argument("--mode", default="hybrid", choices=["hybrid", "lexical", "dense"])
    find.add_argument("--all", action="store_true", help="relevance filter off: show what it would filter out")
    find.add_argument("--highlight", action="store_true",
                      help="ask for highlighted fragments of title and text (a server with highlights)")
    find.set_defaults(func=_search, extra=None)

    again = commands.add_parser("reencode", help="re-encode collections' stored texts with the configured encoder "
                                                 "(SEARCH_ENCODER, SEARCH_MODEL), the service stopped")
    again.add_argument("--collection", action="append",
                       help="a collection to re-encode; repeat for more (default: every collection)")
    again.add_argument("--quiet", action="store_true", help="no progress bar")
    again.set_defaults(func=_reencode, extra=None)

    export = commands.add_parser("export-onnx", help="export the model to ONNX (fp32 and int8) where the ONNX "
                                                     "encoders load it (./scripts/setup runs it)")
    export.set_defaults(func=_export_onnx, extra=None)
