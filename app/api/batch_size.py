"""How many documents a batch holds, told before any of them is validated."""

import json
import re

_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_DECODER = json.JSONDecoder()


def ndjson_over(body: bytes, limit: int) -> bool:
    """Whether NDJSON `body` holds more than `limit` documents (non-blank lines)."""
    return sum(1 for line in body.splitlines() if line.strip()) > limit


def json_over(body: bytes, limit: int) -> bool:
    """Whether the JSON batch `body` (`{"documents": [...]}`) holds more than `limit` documents, told without
    validating them: validation built every document first, so 1.28M tiny ones in a 32 MiB body took ~1 GB and
    5-7 s before their 413 (QA). Every document holds `"id"`, so a body with at most `limit` of those is under
    (a metadata key "id" only adds to the count; an id key written with \\u escapes is counted by validation, as
    before). Otherwise the array is walked one document at a time with the standard library's C scanner, up to
    `limit` + 1. A body that is not such a batch says False here and fails validation. (A streaming JSON parser
    would do the walk; this one check does not justify the dependency.)"""
    if body.count(b'"id"') <= limit:
        return False
    text = body.decode("utf-8", errors="replace")
    try:
        at = _after_space(text, 0)
        if text[at : at + 1] != "{":
            return False
        at += 1
        while True:
            key, at = _DECODER.raw_decode(text, _after_space(text, at))
            at = _after_space(text, at)
            if text[at : at + 1] != ":":
                return False
            at = _after_space(text, at + 1)
            if key == "documents" and text[at : at + 1] == "[":
                return _array_over(text, at + 1, limit)
            _, at = _DECODER.raw_decode(text, at)
            at = _after_space(text, at)
            if text[at : at + 1] != ",":
                return False
            at += 1
    except ValueError:  # not JSON: validation says where
        return False


def _array_over(text: str, at: int, limit: int) -> bool:
    at = _after_space(text, at)
    if text[at : at + 1] == "]":
        return False
    count = 0
    while True:
        _, at = _DECODER.raw_decode(text, at)
        count += 1
        if count > limit:
            return True
        at = _after_space(text, at)
        if text[at : at + 1] != ",":
            return False
        at = _after_space(text, at + 1)


def _after_space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    return match.end() if match else at
