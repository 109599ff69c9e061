"""Facet counts: how many of the hits carry each value of a metadata field."""

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_FACET_VALUES = 20  # values reported per field: enough for a column of filter chips


def _key(value: Any) -> tuple[int, Any] | None:
    """A value's identity for counting and its place among equal counts: booleans, then numbers, then strings
    (True is not 1 here, as it is not in a filter); None for what is not a scalar."""
    if isinstance(value, bool):
        return (0, value)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        # 2021.0 is the JSON number 2021: shown as 2021, not as whichever of the two the first hit wrote (QA);
        # 1e300 stays as written rather than as 301 digits
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):  # written composed or decomposed, one value, shown composed (as filters match it)
        return (2, unicodedata.normalize("NFC", value))
    return None


def count_facets(metadata: Iterable[Mapping[str, Any]], fields: Sequence[str],
                 limit: int = MAX_FACET_VALUES) -> dict[str, list[dict[str, Any]]]:
    """For each field, its values with the number of documents that carry them, most frequent first, ties by
    value, at most `limit`. A list counts each distinct element once per document; a document without the
    field counts for none of its values."""
    counts: dict[str, Counter[tuple[int, Any]]] = {field: Counter() for field in fields}
    for document in metadata:
        for field, counter in counts.items():
            value = document.get(field)
            values = value if isinstance(value, list) else [value]
            counter.update({key for key in map(_key, values) if key is not None})
    return {field: [{"value": value, "count": n} for (_, value), n in
                    sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]]
            for field, counter in counts.items()}
