"""Compiles a metadata filter (exact, in, range) into a condition over the JSON metadata: SQLite's or PostgreSQL's
(jsonb), with the same meaning."""

import json
from collections.abc import Mapping
from typing import Any

from app.engine.types import Equals, FilterCondition, In, Range

_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NUMBER, _TEXT, _BOOL = "('integer','real')", "('text')", "('true','false')"


def _json_types(value: Any) -> str:
    """The json_each types a value may match: a number never equals a boolean or a string."""
    if isinstance(value, bool):
        return _BOOL
    return _NUMBER if isinstance(value, int | float) else _TEXT


def _sql_value(value: Any) -> Any:
    # SQLite's JSON functions give booleans as 1/0.
    return int(value) if isinstance(value, bool) else value


def compile_filter(conditions: Mapping[str, FilterCondition]) -> tuple[str, list[Any]]:
    """WHERE fragment and parameters; all conditions must hold (AND).

    A field holding a list matches when any of its elements matches, so {"tags": "a"} and
    {"tags": {"in": ["a", "b"]}} work on list fields as users of Elasticsearch expect.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in conditions.items():
        path = '$."' + key.replace('"', '""') + '"'
        if isinstance(condition, In):
            marks = ",".join("?" * len(condition.values))
            predicate = f"value IN ({marks})"
            values = [_sql_value(v) for v in condition.values]
        elif isinstance(condition, Range):
            parts, values = [], []
            for name, op in _RANGE_OPS.items():
                bound = getattr(condition, name)
                if bound is not None:
                    # Compare like with like: numbers against numbers, strings against strings.
                    parts.append(f"(type IN {_json_types(bound)} AND value {op} ?)")
                    values.append(bound)
            predicate = " AND ".join(parts)
        elif isinstance(condition, Equals):
            predicate = f"value = ? AND type IN {_json_types(condition.value)}"
            values = [_sql_value(condition.value)]
        else:
            raise TypeError(f"not a filter condition: {condition!r}")
        clauses.append(f"EXISTS (SELECT 1 FROM json_each(metadata, ?) WHERE {predicate})")
        params.append(path)
        params.extend(values)
    return " AND ".join(clauses) or "1", params


# A key's value as a set of elements: a list's elements, or the value itself.
_JSONB_ELEMENTS = ("jsonb_array_elements(CASE jsonb_typeof(metadata -> %s) WHEN 'array' THEN metadata -> %s "
                   "ELSE jsonb_build_array(metadata -> %s) END)")


def compile_jsonb_filter(conditions: Mapping[str, FilterCondition]) -> tuple[str, list[Any]]:
    """The same conditions as `compile_filter`, for PostgreSQL's jsonb: jsonb equality already keeps numbers,
    strings and booleans apart; strings compare byte-wise (COLLATE "C") as SQLite's do."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in conditions.items():
        if isinstance(condition, In):
            predicate = "e.v = ANY(%s::jsonb[])"
            values: list[Any] = [[json.dumps(v) for v in condition.values]]
        elif isinstance(condition, Range):
            parts, values = [], []
            for name, op in _RANGE_OPS.items():
                bound = getattr(condition, name)
                if bound is None:
                    continue
                if isinstance(bound, str):
                    parts.append(f"(jsonb_typeof(e.v) = 'string' AND (e.v #>> '{{}}') COLLATE \"C\" {op} %s)")
                else:
                    parts.append(f"(jsonb_typeof(e.v) = 'number' AND (e.v)::numeric {op} %s)")
                values.append(bound)
            predicate = " AND ".join(parts)
        elif isinstance(condition, Equals):
            predicate, values = "e.v = %s::jsonb", [json.dumps(condition.value)]
        else:
            raise TypeError(f"not a filter condition: {condition!r}")
        clauses.append(f"EXISTS (SELECT 1 FROM {_JSONB_ELEMENTS} AS e(v) WHERE {predicate})")
        params.extend([key, key, key, *values])
    return " AND ".join(clauses) or "true", params
