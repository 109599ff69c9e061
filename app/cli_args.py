"""The command line's argument types: each refuses a bad value in one line that names the argument (argparse's
exit 2) before any work. Read as they were, "--steps -1", "--sizes abc" or an output path in a folder that is not
there were tracebacks, several of them after minutes of work (QA)."""

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def integer(minimum: int) -> Callable[[str], int]:
    """A whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


positive = integer(1)


def number(low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high], either end open if so marked."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open or math.isinf(high) else value <= high
        if not (above and below and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text} is not in {'(' if low_open else '['}{low:g}, {high:g}"
                                             f"{')' if high_open or math.isinf(high) else ']'}")
        return value

    return parse


seconds = number(0, low_open=True)


def api_key(args: argparse.Namespace) -> str | None:
    """The key a command sends to the server at its --url: --api-key, else $SEARCH_API_KEY, else none."""
    return args.api_key or os.environ.get("SEARCH_API_KEY") or None


def subset(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated choice of one or more of `allowed`, in the order given."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected one or more of {', '.join(allowed)}, "
                                             "comma-separated")
        return names

    return parse


def sizes(text: str) -> list[int]:
    """Comma-separated positive whole numbers."""
    values = [positive(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("no size given")
    return values


def strict_json(text: str) -> Any:
    """JSON as a request body can carry it: NaN, Infinity and 1e400, which Python's json reads, are a ValueError
    (json.JSONDecodeError for what is not JSON at all)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of a number's range")
    return value


def json_object(text: str) -> dict[str, object]:
    try:
        value = strict_json(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    except ValueError as exc:  # (the client refused it after connecting, naming no argument, QA)
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, {\"field\": value, ...}")
    return value


def collection_name(text: str) -> str:
    """A name the service takes: an empty one named no path segment (the client refused it with a traceback), and
    one outside the pattern was the server's 422 after connecting, or 20 retries with no server (QA)."""
    from app.schemas import COLLECTION_NAME_PATTERN

    if not text:
        raise argparse.ArgumentTypeError("cannot be empty")
    if not re.fullmatch(COLLECTION_NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a collection name: 1-128 letters, digits, '_', '.' or "
                                         "'-', the first a letter or a digit")
    return text


def query_text(text: str) -> str:
    """A query the service takes: a blank one was the server's 422 after connecting, exit 1 (or retries with no
    server), where every other bad argument is refused first."""
    from app.schemas import MAX_QUERY_CHARS

    if not text.strip():
        raise argparse.ArgumentTypeError("cannot be empty or only spaces")
    if len(text) > MAX_QUERY_CHARS:
        raise argparse.ArgumentTypeError(f"is {len(text):,} characters; the service takes at most {MAX_QUERY_CHARS:,}")
    return text


def service_url(text: str) -> str:
    from app.client import ClientError, check_service_url

    try:
        check_service_url(text)
    except ClientError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def database_url(text: str) -> str:
    from app.settings import check_database_url

    try:
        return check_database_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}") from None


def output_file(text: str) -> Path:
    """A file to write at the end: its folder must be there and writable now, and it must not be a folder."""
    path = Path(text).expanduser()  # (a shell leaves the ~ of --json=~/x.json as it is)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file")
    _check_writable(path.parent, text)
    return path


def output_dir(text: str) -> Path:
    """A folder to write in, made if it is not there: it, or the nearest folder above it that is, must be
    writable now. Checked by making and removing a folder there: as root, os.access says yes to /proc."""
    path = Path(text).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {existing} is not a folder")
    _check_writable(existing, text)
    return path


def adapter_dir(text: str) -> Path:
    """An output folder that an adapter replaces whole: not there, empty, or an adapter's (its files and
    nothing else). The real path, links and "." resolved: it is replaced by renaming a sibling over it. Any
    folder was emptied without a word (QA: --out models lost the notes and adapters beside it)."""
    from app.engine.relevance.adapter import META_FILE, WEIGHTS_FILE

    path = output_dir(text).resolve()
    if path.is_dir():
        others = sorted(p.name for p in path.iterdir() if p.name not in (META_FILE, WEIGHTS_FILE))
        if others:
            raise argparse.ArgumentTypeError(f"{text} holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}"
                                             ", which writing an adapter there would delete: name a new folder, or "
                                             "one that holds an adapter")
    elif path.exists():
        raise argparse.ArgumentTypeError(f"{text} is a file")
    if path.parent == path:
        raise argparse.ArgumentTypeError(f"{text}: an adapter cannot replace {path}")
    return path


def _check_writable(folder: Path, text: str) -> None:
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no folder {folder}")
    try:
        Path(tempfile.mkdtemp(prefix=".write-check-", dir=folder)).rmdir()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot write in {folder} ({exc.strerror})") from None
