"""Reads a BEIR-layout dataset: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path


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


def load_beir(directory: Path, split: str) -> BeirDataset:
    directory = Path(directory)
    check_beir(directory, split)
    qrels_path = directory / "qrels" / f"{split}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    with (directory / "corpus.jsonl").open() as handle:
        corpus = [json.loads(line) for line in handle if line.strip()]
    queries = {}
    with (directory / "queries.jsonl").open() as handle:
        for line in handle:
            if line.strip():
                query = json.loads(line)
                if query["_id"] in qrels:
                    queries[query["_id"]] = query["text"]
    return BeirDataset(directory.name, corpus, queries, qrels)
