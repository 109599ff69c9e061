"""`python -m app export`: a collection's documents written to a JSONL file that `python -m app ingest` loads.

With `--vectors`, each line carries the document's stored unit vector, so the load encodes nothing again: how a
collection moves from the embedded store to replicas over PostgreSQL, or to another service. The file appears
only complete: it is written beside itself as `<name>.partial` and renamed at the end.
"""

import gzip
import json
import os
import sys
from pathlib import Path
from typing import IO

from tqdm import tqdm

from app.client import SearchClient
from app.commands.ingest import bar_width, documents_phrase


def export(client: SearchClient, collection: str, path: Path, *, vectors: bool = False, quiet: bool = False,
           page: int = 500) -> int:
    """Writes every document of `collection` to `path` (gzip-compressed when it ends in .gz), one JSON object a
    line in id order; returns how many. The collection is read while it may change: a document written meanwhile
    is in the file or not, whole either way, and none is there twice."""
    total = client.get_collection(collection)["count"]  # first: an unknown collection leaves no file behind
    partial = path.with_name(path.name + ".partial")
    written = 0
    try:
        with _open(partial, gzipped=path.suffix == ".gz") as out, tqdm(
                total=total, unit="doc", desc=f"export {collection}", disable=True if quiet else None,
                **bar_width()) as bar:
            for document in client.documents(collection, vectors=vectors, page=page):
                out.write(json.dumps(document, ensure_ascii=False) + "\n")
                written += 1
                bar.update(1)
        with partial.open("rb") as synced:  # on disk before it takes the name: a backup a power cut empties is none
            os.fsync(synced.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if not quiet:
        print(f"{documents_phrase(written)} of {collection!r} written to {path}", file=sys.stderr)
    return written


def _open(path: Path, gzipped: bool) -> IO[str]:
    return gzip.open(path, "wt", encoding="utf-8") if gzipped else path.open("w", encoding="utf-8")
