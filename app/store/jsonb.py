"""Metadata as the JSON text PostgreSQL's jsonb stores, such that it reads back as the same Python values (all but
-0.0, which jsonb's numeric cannot hold: it reads back as 0.0)."""

import json
import math
from collections.abc import Mapping
from typing import Any


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """Metadata as JSON whose numbers jsonb gives back as the same Python type. jsonb keeps a number's digits,
    not how it was written: Python writes a float of 1e16 or more as `1e+16`, which jsonb stores as
    10000000000000000 and every replica then read as an int. Those floats (all whole numbers) are written in full
    with a `.0` instead, which jsonb keeps; every other value goes through json.dumps as it is."""
    text = json.dumps(metadata)
    return text if "e+" not in text else _json(metadata)


def _json(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and abs(value) >= 1e16:
        return format(value, ".1f")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {_json(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_json(item) for item in value) + "]"
    return json.dumps(value)
