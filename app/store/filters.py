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


def _typed_in(values: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """`value IN (...)` per JSON type, so that 1 never matches true (nor "1" 1), as with an exact match."""
    by_types: dict[str, list[Any]] = {}
    for value in values:
        by_types.setdefault(_json_types(value), []).append(_sql_value(value))
    parts = [f"(type IN {types} AND value IN ({','.join('?' * len(group))}))" for types, group in by_types.items()]
    return "(" + " OR ".join(parts) + ")", [v for group in by_types.values() for v in group]


def _plain_key(key: str) -> bool:
    # A JSON path reaches a key only as json.dumps wrote it: non-ASCII is written escaped (\u00e9), and SQLite's
    # path syntax has no escape for '"' or '\\'. Such keys are found by comparing json_each's decoded keys instead.
    return key.isascii() and '"' not in key and "\\" not in key


def _elements(key: str) -> tuple[str, list[Any]]:
    """A FROM clause whose rows (value, type) are the key's value, or its elements when it holds a list."""
    if _plain_key(key):
        return "json_each(metadata, ?)", ['$."' + key + '"']
    return ("(SELECT value, type FROM json_each(metadata) WHERE key = ? AND type <> 'array' UNION ALL "
            "SELECT e.value, e.type FROM json_each(metadata) AS f, json_each(f.value) AS e "
            "WHERE f.key = ? AND f.type = 'array')"), [key, key]


def compile_filter(conditions: Mapping[str, FilterCondition]) -> tuple[str, list[Any]]:
    """WHERE fragment and parameters; all conditions must hold (AND).

    A field holding a list matches when any of its elements matches, so {"tags": "a"} and
    {"tags": {"in": ["a", "b"]}} work on list fields as users of Elasticsearch expect.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in conditions.items():
        if isinstance(condition, In):
            predicate, values = _typed_in(condition.values)
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
        source, source_params = _elements(key)
        clauses.append(f"EXISTS (SELECT 1 FROM {source} WHERE {predicate})")
        params.extend(source_params)
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
                    # CASE, not AND: PostgreSQL may cast before it checks the type, and a string then fails
                    parts.append(f"(CASE WHEN jsonb_typeof(e.v) = 'number' THEN (e.v)::numeric {op} %s END)")
                values.append(bound)
            predicate = " AND ".join(parts)
        elif isinstance(condition, Equals):
            predicate, values = "e.v = %s::jsonb", [json.dumps(condition.value)]
        else:
            raise TypeError(f"not a filter condition: {condition!r}")
        clauses.append(f"EXISTS (SELECT 1 FROM {_JSONB_ELEMENTS} AS e(v) WHERE {predicate})")
        params.extend([key, key, key, *values])
    return " AND ".join(clauses) or "true", params
