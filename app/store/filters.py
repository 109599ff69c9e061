"""Compiles a metadata filter (exact, in, range) into SQL with the same meaning for both stores: lookups in
SQLite's flattened `metadata_values`, or a condition over PostgreSQL's jsonb."""

import json
import unicodedata
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


def _forms(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values, with each string's composed (NFC) and decomposed (NFD) forms beside it: the same text as a
    reader sees it, written either way ("Café" typed on macOS is decomposed), is the same value (QA: two "Café"
    facets, and a filter on one missed the other). Stored values are kept as written."""
    forms: dict[Any, None] = {}
    for value in values:
        forms[value] = None
        if isinstance(value, str) and not value.isascii():
            forms.update(dict.fromkeys((unicodedata.normalize("NFC", value), unicodedata.normalize("NFD", value))))
    return tuple(forms)


def _typed_in(values: tuple[Any, ...]) -> tuple[str, list[Any]]:
    """`value IN (...)` per JSON type, so that 1 never matches true (nor "1" 1), as with an exact match."""
    by_types: dict[str, list[Any]] = {}
    for value in _forms(values):
        by_types.setdefault(_json_types(value), []).append(_sql_value(value))
    parts = [f"(type IN {types} AND value IN ({','.join('?' * len(group))}))" for types, group in by_types.items()]
    return "(" + " OR ".join(parts) + ")", [v for group in by_types.values() for v in group]


# The SQLite store keeps every document's metadata flattened into `metadata_values` (app/store/sqlite.py): a row a
# key's value, or a row each element of a list, with json_each's decoded key, value and type. Triggers write them
# with the document's row and remove them with it, deleted or replaced: INSERT OR REPLACE fires no delete trigger
# unless recursive_triggers is on, so a trigger of its own removes the replaced version's, and any process that
# writes the file keeps the table right (this service's earlier versions included, which set no such pragma).
# A condition is then an indexed lookup on (collection, key, value) instead of a json_each over every document's
# metadata. Writing them costs: the store alone took 20,000 documents of four metadata values at ~8,800-10,600 a
# second, ~25,600 without.


def _flattened(document: str, source: str = "") -> str:
    """The `metadata_values` rows of the document row `document` (NEW in a trigger; with `source`, the rows of a
    table): one rule for the triggers and the fill, so rows written either way read alike."""
    return (f"SELECT {document}.collection, j.key, coalesce(e.value, j.value), coalesce(e.type, j.type), "
            f"{document}.label FROM {source}json_each({document}.metadata) AS j "
            "LEFT JOIN json_each(CASE WHEN j.type = 'array' THEN j.value END) AS e "
            "WHERE j.type <> 'array' OR e.type IS NOT NULL")


METADATA_VALUES_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS metadata_values (
    collection TEXT NOT NULL, key TEXT NOT NULL, value, type TEXT NOT NULL, label INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS metadata_values_lookup ON metadata_values (collection, key, value, type, label);
CREATE INDEX IF NOT EXISTS metadata_values_by_label ON metadata_values (label);
CREATE TRIGGER IF NOT EXISTS metadata_values_insert AFTER INSERT ON documents BEGIN
    INSERT INTO metadata_values {_flattened("NEW")};
END;
CREATE TRIGGER IF NOT EXISTS metadata_values_delete AFTER DELETE ON documents BEGIN
    DELETE FROM metadata_values WHERE label = OLD.label;
END;
CREATE TRIGGER IF NOT EXISTS metadata_values_replace BEFORE INSERT ON documents BEGIN
    DELETE FROM metadata_values WHERE label IN (
        SELECT label FROM documents WHERE collection = NEW.collection AND id = NEW.id);
END;
"""
# Fills the table from the documents (a data dir from before it, once).
METADATA_VALUES_FILL = (
    "DELETE FROM metadata_values",
    f"INSERT INTO metadata_values {_flattened('d', 'documents AS d, ')}",
)


def condition_queries(collection: str, conditions: Mapping[str, FilterCondition]) -> list[tuple[str, list[Any]]]:
    """One query and its parameters a condition, over `metadata_values`: the labels of the collection's documents
    it holds for, each at least once (a list field once for each matching element). All must hold (AND).

    A field holding a list matches when any of its elements matches, so {"tags": "a"} and
    {"tags": {"in": ["a", "b"]}} work on list fields as users of Elasticsearch expect.
    """
    queries = []
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
            predicate, values = _typed_in((condition.value,))
        else:
            raise TypeError(f"not a filter condition: {condition!r}")
        queries.append((f"SELECT label FROM metadata_values WHERE collection = ? AND key = ? AND {predicate}",
                        [collection, key, *values]))
    return queries


# A key's value as a set of elements: a list's elements, or the value itself.
_JSONB_ELEMENTS = ("jsonb_array_elements(CASE jsonb_typeof(metadata -> %s) WHEN 'array' THEN metadata -> %s "
                   "ELSE jsonb_build_array(metadata -> %s) END)")


def compile_jsonb_filter(conditions: Mapping[str, FilterCondition]) -> tuple[str, list[Any]]:
    """The same conditions as `compile_filter`, for PostgreSQL's jsonb: jsonb equality already keeps numbers,
    strings and booleans apart; strings compare byte-wise (COLLATE "C") as SQLite's do."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, condition in conditions.items():
        if isinstance(condition, In | Equals):
            predicate = "e.v = ANY(%s::jsonb[])"
            given = condition.values if isinstance(condition, In) else (condition.value,)
            values: list[Any] = [[json.dumps(v) for v in _forms(given)]]
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
        else:
            raise TypeError(f"not a filter condition: {condition!r}")
        clauses.append(f"EXISTS (SELECT 1 FROM {_JSONB_ELEMENTS} AS e(v) WHERE {predicate})")
        params.extend([key, key, key, *values])
    return " AND ".join(clauses) or "true", params
