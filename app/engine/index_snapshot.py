"""A collection's index snapshot: its lexical and dense indexes, and a manifest naming the collection, the store
and the store sequence they cover. Written into a fresh folder of its SnapshotDir (app/store/snapshots.py)."""

import json
from pathlib import Path

from app.engine.dense import DenseIndex
from app.engine.lexical import LexicalIndex
from app.engine.types import HnswSettings

FORMAT = 1


def write(directory: Path, lexical: LexicalIndex, dense: DenseIndex, *, uid: str, seq: int, store: str) -> None:
    """Both indexes and the manifest into `directory` (fresh, not yet published)."""
    (directory / "lexical").mkdir()
    (directory / "dense").mkdir()
    lexical.save(directory / "lexical")
    dense.save(directory / "dense")
    (directory / "manifest.json").write_text(json.dumps(
        {"format": FORMAT, "uid": uid, "seq": seq, "count": len(lexical), "store": store}))


def read(directory: Path, *, uid: str, store: str, store_seq: int | None, hnsw: HnswSettings, threads: int
         ) -> tuple[LexicalIndex, DenseIndex, int]:
    """(lexical, dense, the store sequence they cover) of the snapshot in `directory`, which must be collection
    `uid`'s, made against store `store` and, given the store's sequence (`store_seq`), not past it. Raises
    on anything wrong with it: whatever is wrong with a cache, the store rebuilds it."""
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != FORMAT or manifest.get("uid") != uid:
        raise ValueError("snapshot belongs to another collection or format")
    if manifest.get("store", "") != store:
        raise ValueError("snapshot was made against another database")
    seq = int(manifest["seq"])
    if store_seq is not None and seq > store_seq:
        raise ValueError(f"snapshot is at sequence {seq}, past the store's {store_seq} "
                         "(the store was restored from an older copy?)")
    return LexicalIndex.load(directory / "lexical"), DenseIndex.load(directory / "dense", hnsw, threads=threads), seq
