"""Counting a batch's documents before validating them."""

import json

import pytest

from app.api.batch_size import json_over, ndjson_over


def _batch(n: int, **extra: object) -> bytes:
    return json.dumps({**extra, "documents": [{"id": str(i), "text": "t", "metadata": {"id": i}}
                                              for i in range(n)]}).encode()


@pytest.mark.parametrize("n", [0, 1, 3, 4, 9])
def test_json_over_counts_the_documents_not_the_id_keys(n: int) -> None:
    assert json_over(_batch(n), 3) is (n > 3)
    assert json_over(_batch(n, before={"documents": [1, 2, 3, 4, 5]}), 3) is (n > 3)  # another key first
    spaced = json.dumps({"documents": [{"id": str(i)} for i in range(n)]}, indent=4).encode()
    assert json_over(spaced, 3) is (n > 3)


@pytest.mark.parametrize("body", [
    b'["id", "id", "id", "id"]', b'{"documents": 5, "id": "id", "x": "id", "y": "id"}',
    b'{"documents": [{"id": "a"} {"id": "b"}, {"id": "c"}, {"id": "d"}]}', b'"id" "id" "id" "id" "id"',
    b'{"documents": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": ',
    b'{"documents" [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]}'])
def test_a_body_that_is_not_a_batch_is_left_to_validation(body: bytes) -> None:
    """Only a well-formed batch of more than the limit is told here; anything else is validation's to explain
    (`"id"` appears more than the limit in each, so each is walked)."""
    assert json_over(body, 3) is False


def test_ndjson_over_counts_non_blank_lines() -> None:
    assert ndjson_over(b'{"id": "a"}\n\n{"id": "b"}\n  \n', 2) is False
    assert ndjson_over(b'{"id": "a"}\n{"id": "b"}\r\n{"id": "c"}', 2) is True
