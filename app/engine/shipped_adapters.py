"""The relevance adapters the service ships (config/): the default, which reads the query embedding of the model
it was fitted on, and the fallback, which reads no embedding and so serves any encoder."""

import logging
from pathlib import Path

from app.engine.encoders import Encoder
from app.engine.relevance import CosineAdapter

log = logging.getLogger("app.engine")


def fits_encoder(adapter: CosineAdapter, embedder: Encoder) -> bool:
    """Whether the adapter reads query embeddings of `embedder`'s model: the model it records (any backend of it:
    int8 moves a vector by ~0.01 in cosine, a network reading it does not notice), or, for an adapter from before
    models were recorded, its dimension. An adapter reading no embedding fits any."""
    if adapter.dim == 0:
        return True
    recorded = adapter.info.get("encoder")
    if isinstance(recorded, dict):
        return recorded.get("model") == embedder.model_name
    return adapter.dim == embedder.dim


def load_default_adapter(path: Path, embedder: Encoder) -> CosineAdapter | None:
    """The default adapter at `path`, or None (logged) when there is none or it was fitted on another model."""
    if not (path / "adapter.json").exists():
        log.warning("no default relevance adapter at %s: the fallback adapter (candidate statistics only), if "
                    "there is one, filters instead, else nothing does", path)
        return None
    adapter = CosineAdapter.load(path)
    if not fits_encoder(adapter, embedder):
        log.warning("the default adapter was fitted on %s, the service encodes with %s: the fallback adapter "
                    "(candidate statistics only) filters instead",
                    adapter.info.get("encoder", f"{adapter.dim}-d vectors"), embedder.identity)
        return None
    return adapter


def load_fallback_adapter(path: Path) -> CosineAdapter | None:
    """The adapter that reads no embedding (dimension 0) at `path`, or None when there is none."""
    if not (path / "adapter.json").exists():
        return None
    adapter = CosineAdapter.load(path)
    if adapter.dim != 0:
        raise ValueError(f"the fallback adapter at {path} reads a {adapter.dim}-d embedding; it must read none")
    return adapter
