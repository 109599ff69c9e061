"""Reads a BEIR-layout dataset: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BeirDataset:
    name: str
    corpus: list[dict[str, str]]  # {"_id", "title", "text"}
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]


def check_beir(directory: Path, split: str) -> None:
    """FileNotFoundError unless `directory` holds a BEIR dataset with `split`."""
    for needed in (Path("qrels") / f"{split}.tsv", Path("corpus.jsonl"), Path("queries.jsonl")):
        if not (Path(directory) / needed).is_file():
            raise FileNotFoundError(f"{Path(directory) / needed} not found: is {directory} a BEIR dataset with a "
                                    f"{split!r} split?")


class BeirError(ValueError):
    """A file of the dataset that is not as BEIR lays it out: which file, which line, what is wrong."""


def _json_lines(path: Path, needed: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Each line's object, with the `needed` keys: a malformed line was a bare JSONDecodeError or KeyError
    (QA)."""
    with path.open("rb") as handle:  # (bytes: a line that is not UTF-8 is named too)
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError as exc:
                raise BeirError(f"{path} line {number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise BeirError(f"{path} line {number}: not JSON ({exc.msg})") from None
            missing = [key for key in needed if not isinstance(row, dict) or not isinstance(row.get(key), str)]
            if missing:
                raise BeirError(f"{path} line {number}: no {' or '.join(missing)} string")
            yield row


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BeirError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        header = ("query-id", "corpus-id", "score")
        if not set(header) <= set(reader.fieldnames or ()):
            raise BeirError(f"{path}: its first line must be the header {chr(9).join(header)!r} (tab-separated)")
        for row in reader:
            try:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
            except (TypeError, ValueError):
                raise BeirError(f"{path} line {reader.line_num}: expected a query id, a document id and a whole "
                                "number score") from None
    return qrels


def dataset_name(directory: Path) -> str:
    """The folder's own name (of "." too) as a collection may be named: `eval-<it>` holds the corpus. A space
    in it was a 422 without a reason over --url, a traceback in process; "." made "eval-" (QA)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(directory).resolve().name).strip("-.")
    return name[:100] or "dataset"


def load_beir(directory: Path, split: str) -> BeirDataset:
    directory = Path(directory)
    check_beir(directory, split)
    qrels = _qrels(directory / "qrels" / f"{split}.tsv")
    corpus = list(_json_lines(directory / "corpus.jsonl", ("_id", "text")))
    queries = {query["_id"]: query["text"] for query in _json_lines(directory / "queries.jsonl", ("_id", "text"))
               if query["_id"] in qrels}
    if not corpus:
        raise BeirError(f"{directory / 'corpus.jsonl'}: no document")
    if not queries:  # (everything after would divide by, or take percentiles of, nothing: QA)
        raise BeirError(f"no query of {directory / 'queries.jsonl'} is judged in {directory / 'qrels' / split}.tsv "
                        "(their ids must match exactly)")
    return BeirDataset(dataset_name(directory), corpus, queries, qrels)
