"""A collection's index snapshot: its lexical and dense indexes, and a manifest naming the collection, the store,
the store sequence they cover and the text analysis the lexical index holds. Written into a fresh folder of its
SnapshotDir (app/store/snapshots.py)."""

import json
from pathlib import Path

from app.engine.dense import DenseIndex
from app.engine.lexical import LexicalIndex
from app.engine.types import HnswSettings

FORMAT = 1


def write(directory: Path, lexical: LexicalIndex, dense: DenseIndex, *, uid: str, seq: int, store: str,
          analysis: dict[str, object]) -> None:
    """Both indexes and the manifest into `directory` (fresh, not yet published); `analysis` is the tokenizer's
    `config()`."""
    (directory / "lexical").mkdir()
    (directory / "dense").mkdir()
    lexical.save(directory / "lexical")
    dense.save(directory / "dense")
    (directory / "manifest.json").write_text(json.dumps(
        {"format": FORMAT, "uid": uid, "seq": seq, "count": len(lexical), "store": store, "analysis": analysis}))


def read(directory: Path, *, uid: str, store: str, store_seq: int | None, hnsw: HnswSettings, threads: int,
         analysis: dict[str, object]) -> tuple[LexicalIndex | None, DenseIndex, int]:
    """(lexical, dense, the store sequence they cover) of the snapshot in `directory`, which must be collection
    `uid`'s, made against store `store` and, given the store's sequence (`store_seq`), not past it. Raises
    on anything wrong with it: whatever is wrong with a cache, the store rebuilds it. The lexical index is None
    when it holds another analysis than `analysis` (the tokenizer's `config()`; a snapshot from before 2026-12-03
    names none): its terms must be made again from the store's texts, but the graph stands."""
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != FORMAT or manifest.get("uid") != uid:
        raise ValueError("snapshot belongs to another collection or format")
    if manifest.get("store", "") != store:
        raise ValueError("snapshot was made against another database")
    seq = int(manifest["seq"])
    if store_seq is not None and seq > store_seq:
        raise ValueError(f"snapshot is at sequence {seq}, past the store's {store_seq} "
                         "(the store was restored from an older copy?)")
    dense = DenseIndex.load(directory / "dense", hnsw, threads=threads)
    if manifest.get("analysis") != analysis:
        return None, dense, seq
    return LexicalIndex.load(directory / "lexical"), dense, seq
