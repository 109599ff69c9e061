"""`python -m app ingest`: load a JSONL file or a BEIR folder into a running server, resumably.

Resuming: after every acknowledged batch, `<input>.progress.json` (or `--progress-file`, for an input in a
read-only folder) records how many lines of the input are stored: every line up to there, in order. A re-run
with the same URL, collection and input starts after them; the file is removed once the whole input is
stored. Upserts are by id, so lines sent again after an interruption (in flight, not yet recorded) are
replaced, not duplicated.
"""

import codecs
import gzip
import json
import os
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from tqdm import tqdm

from app.cli_args import strict_json
from app.client import ApiError, DocumentTooLarge, SearchClient


class NotResumable(Exception):
    """A failure that running the same command again would meet again (the message says what to change)."""


class BadLine(Exception):
    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number, self.reason = number, reason


GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Source:
    """The JSONL file to read: PATH itself, or PATH/corpus.jsonl for a BEIR folder; gzip-compressed or not (known
    by its first bytes: a `.jsonl.gz` was read as lines that were not UTF-8, QA)."""

    path: Path

    @classmethod
    def at(cls, path: Path) -> "Source":
        if path.is_dir():
            corpus = next((path / name for name in ("corpus.jsonl", "corpus.jsonl.gz") if (path / name).is_file()),
                          None)
            if corpus is None:
                raise FileNotFoundError(f"{path} is a folder without corpus.jsonl (a BEIR dataset has one)")
            return cls(corpus)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist" + (" (the input is a file: standard input cannot be "
                                                                "read twice, and resuming reads it again)"
                                                                if str(path) == "-" else ""))
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a regular file: save the input to a file (resuming reads it "
                                    "again from a line number)")
        return cls(path)

    def open(self) -> BinaryIO:
        with self.path.open("rb") as f:
            compressed = f.read(2) == GZIP_MAGIC
        return cast(BinaryIO, gzip.open(self.path, "rb")) if compressed else self.path.open("rb")

    def count_documents(self, skip: int) -> tuple[int, int, int]:
        """Non-blank lines in all, among the first `skip` lines, and lines in all. Reads it all before anything is
        sent, so a damaged gzip file is refused here."""
        total = before = number = 0
        try:
            with self.open() as f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        total += 1
                        before += number <= skip
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise NotResumable(f"{self.path} is a damaged gzip file ({str(exc) or 'it ends early'}) after line "
                               f"{number}: compress it again") from None
        return total, before, number

    def lines(self, skip: int) -> Iterator[tuple[int, bytes]]:
        # Bytes: a line that is not UTF-8 is then a bad line with its number, not a crash of the whole run.
        with self.open() as f:
            for number, line in enumerate(f, start=1):
                if number == 1:
                    line = line.removeprefix(codecs.BOM_UTF8)  # editors on Windows write one
                if number > skip and line.strip():
                    yield number, line


def parse_line(number: int, raw: bytes) -> dict[str, Any]:
    """A document of the documents route; BEIR's `_id` is read as `id` and an empty title as none."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(number, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
    try:
        doc = strict_json(line)
    except json.JSONDecodeError as exc:
        # ("Invalid control character at": its message ends where json's own position would follow)
        raise BadLine(number, f"not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})") from None
    except ValueError as exc:  # NaN, Infinity or 1e400, which Python's json reads and no JSON body can carry
        raise BadLine(number, str(exc)) from None
    if not isinstance(doc, dict):
        raise BadLine(number, f"a document is a JSON object, not {type(doc).__name__}")
    if "id" not in doc and "_id" in doc:
        doc["id"] = doc.pop("_id")
    for field in ("id", "text"):
        if field not in doc:
            raise BadLine(number, f"no {field!r}" + (" (or BEIR's '_id')" if field == "id" else ""))
        if not isinstance(doc[field], str) or (field == "id" and not doc[field]):
            raise BadLine(number, f"{field!r} must be a {'non-empty ' if field == 'id' else ''}string, "
                                  f"not {json.dumps(doc[field])}")
    if not doc.get("title"):
        doc.pop("title", None)
    return doc


class Progress:
    """The progress file: how many lines of this input are stored in this collection at this URL."""

    def __init__(self, source: Source, url: str, collection: str, path: Path | None = None) -> None:
        self.path = path or source.path.with_name(source.path.name + ".progress.json")
        # Not the file's size or time: the fix of a bad line changes both, and the run should resume from it.
        self.key = {"url": url.rstrip("/"), "collection": collection, "input": str(source.path.resolve())}

    def load(self) -> int:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        same = all(saved.get(name) == value for name, value in self.key.items())
        return int(saved.get("lines", 0)) if same else 0

    def save(self, lines: int) -> None:
        staging = self.path.with_name(self.path.name + ".tmp")
        try:
            staging.write_text(json.dumps({**self.key, "lines": lines}))
            os.replace(staging, self.path)
        except OSError:  # (a folder at the path: the staging file was left beside it, QA)
            staging.unlink(missing_ok=True)
            raise

    def check_writable(self, lines: int) -> None:
        """Before anything is sent: a progress file that cannot be written failed the run after its first
        batch, and again on every re-run."""
        try:
            self.save(lines)
        except OSError as exc:
            raise NotResumable(f"cannot write the progress file {self.path} ({exc.strerror}): give "
                               "--progress-file in a writable folder") from None
        if not lines:  # written, so writable; a record of no line would only be left behind by a failed run
            self.clear()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _server_bad_line(error: ApiError, batch: list[tuple[int, dict[str, Any]]]) -> tuple[int, str] | None:
    """The batch's first document the service refused (422 details name its index), as (index, why). The
    service says ["body", "documents", i, ...]; before 2026-12-05 its engine's checks (a vector's dimension) said
    ["documents", i, ...], still read here."""
    for detail in error.details:
        loc = detail.get("loc", []) if isinstance(detail, dict) else []
        loc = loc[1:] if loc[:1] == ["body"] else loc
        if len(loc) >= 2 and loc[0] == "documents" and isinstance(loc[1], int) and loc[1] < len(batch):
            field = ".".join(str(part) for part in loc[2:]) or "document"
            return loc[1], f"{field}: {detail.get('msg', error.message)}"
    return None


class BatchRefused(NotResumable):
    """The service refused a batch without naming a line: running again would fail again."""


def _refused_batch(error: ApiError, batch: list[tuple[int, dict[str, Any]]], size: int) -> BatchRefused:
    lines = f"lines {batch[0][0]}-{batch[-1][0]}" if batch else "a batch"
    if error.status == 413 and len(batch) == 1:
        return BatchRefused(f"the service refused line {batch[0][0]} alone as too large ({error.message}): the "
                            "line is over its body limit (SEARCH_MAX_BODY_BYTES); shorten it")
    if error.status == 413:
        return BatchRefused(f"the service refused {lines} as too large ({error.message}); run again with a "
                            f"smaller --batch than {size}")
    return BatchRefused(f"the service refused {lines} ({error}); a line among them is at fault: fix it and run "
                        f"the same command to resume from line {batch[0][0] if batch else 1}")


def ingest(client: SearchClient, path: Path, collection: str, *, url: str, batch: int = 256,
           concurrency: int = 2, resume: bool = True, quiet: bool = False,
           progress_file: Path | None = None) -> int:
    """Loads PATH; returns the exit status (0 when every line is stored, 1 on a bad line).

    Kept as one function past ~60 lines on purpose: the reader, the acknowledgement callback and the error path
    share the queue of sent lines and the count of stored ones, and split apart they would pass them around."""
    source = Source.at(path)
    progress = Progress(source, url, collection, progress_file)
    if progress.path.resolve() == source.path.resolve():  # (it replaced the input with its JSON, QA)
        raise NotResumable(f"--progress-file {progress_file} is the input itself: name another file")
    done = progress.load() if resume else 0
    progress.check_writable(done)
    total, skipped, in_file = source.count_documents(done)
    if done > in_file:  # (it was "resumed" past the end: nothing sent, exit 0 and the record deleted, QA)
        raise NotResumable(f"{progress.path} records lines 1-{done} as stored, but {source.path} has {in_file} "
                           "lines: it is not the input that run read. Run with --restart to send it from line 1 "
                           "(documents already stored are upserted again, unchanged)")
    opening = next(source.lines(skip=done), None)
    if opening is not None:  # a bad first line created the collection and stored nothing (QA)
        try:
            parse_line(*opening)
        except BadLine as exc:
            print(f"{source.path}: {exc}. Nothing was sent; fix the line and run the same command.", file=sys.stderr)
            return 1
    if done:
        print(f"resuming after line {done} ({progress.path} records lines 1-{done} as stored; --restart ignores it)",
              file=sys.stderr)
    conflict = None
    try:
        client.create_collection(collection)
    except ApiError as error:
        if error.code != "collection_conflict":
            raise
        # It exists with settings of its own (a bare PUT asks for the defaults): load into it as it is.
        conflict = error
    try:
        before = client.get_collection(collection)["count"]
    except ApiError as error:  # exists, but not here: the 409 says why (a replica running another encoder, QA)
        if conflict is not None and error.status == 404:
            raise conflict from None
        raise

    bad: list[BadLine] = []
    sent: deque[tuple[int, dict[str, Any]]] = deque()  # read, not yet acknowledged, in input order

    def documents() -> Iterator[dict[str, Any]]:
        for number, line in source.lines(skip=done):
            try:
                doc = parse_line(number, line)
            except BadLine as exc:
                bad.append(exc)  # stop reading; the batches before this line still complete
                return
            sent.append((number, doc))
            yield doc

    stored = done
    # disable=None: no bar when stderr is not a terminal, where its frames ran together on one line of a log.
    bar = tqdm(total=total, initial=skipped, unit="doc", desc=f"ingest {collection}", disable=True if quiet else None,
               smoothing=0.1, **bar_width())

    upserted = 0  # acknowledged: the count survives a batch that fails after others were stored

    def acknowledge(n: int) -> None:
        nonlocal stored, upserted
        for _ in range(n):
            stored = sent.popleft()[0]
        upserted += n
        bar.update(n)
        progress.save(stored)

    started = time.perf_counter()
    try:
        client.ingest(collection, documents(), batch=batch, concurrency=concurrency, on_batch=acknowledge)
    except DocumentTooLarge as error:  # the lines before it, its batch's halves too, are stored and acknowledged
        bad.append(BadLine(sent[0][0], f"refused by the service as too large on its own ({error.message}): it is "
                                       "over the body limit (SEARCH_MAX_BODY_BYTES); shorten it"))
    except ApiError as error:
        failed = list(sent)[:batch]
        refused = _server_bad_line(error, failed) if error.status == 422 else None
        if refused is None:
            if error.status in (413, 422):
                raise _refused_batch(error, failed, batch) from None
            raise
        index, reason = refused
        if index:  # store the lines before the bad one, as a reader of the message expects
            client.upsert(collection, [doc for _, doc in failed[:index]])
            acknowledge(index)
        bad.append(BadLine(failed[index][0], f"refused by the service: {reason}"))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    count = client.get_collection(collection)["count"]
    rate = upserted / seconds if seconds > 0 else 0.0
    lines = f"lines 1-{stored}" if stored else "no line"
    # Batches in flight when one failed may have been stored unacknowledged: "399 upserted" beside "+487" read
    # as a miscount (QA). (Another writer's documents would show here too.)
    beyond = " (more than were acknowledged: batches in flight when the load stopped were stored too)" \
        if count - before > upserted else ""
    print(f"{documents_phrase(upserted)} upserted in {seconds:.1f} s ({rate:.0f} docs/s); {lines} of "
          f"{source.path.name} stored; collection {collection!r} holds {documents_phrase(count)} "
          f"({count - before:+d}){beyond}", file=sys.stderr)
    if bad:  # the reader may stop at a later line than a batch in flight is refused for: name the first
        first = min(bad, key=lambda line: line.number)
        print(f"{source.path}: {first}. Lines before it are stored; fix the line and run the same command to "
              f"resume from it.", file=sys.stderr)
        return 1
    progress.clear()
    return 0


def documents_phrase(n: int) -> str:
    return "1 document" if n == 1 else f"{n} documents"


def bar_width() -> dict[str, Any]:
    """The progress bar's width: the terminal's, followed as it changes, unless the terminal says it has none (a
    new pseudo-terminal is 0 x 0 until its owner sets a size, as under `script` or some `docker exec -t`), where
    tqdm drew nothing for the whole run (QA; it hides a bar below a screen of 0 rows): 80 x 24 then."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):  # not a terminal, or a stream without a descriptor: tqdm's own rules
        return {"dynamic_ncols": True}
    return {"dynamic_ncols": True} if size.columns and size.lines else {"ncols": 80, "nrows": 24}
