"""Facet counts, worked out by hand."""

from app.engine.facets import count_facets

DOCS = [
    {"tags": ["bone", "vitamin"], "year": 2020, "official": True},
    {"tags": ["bone", "bone"], "year": 2021},
    {"tags": ["diet"], "year": 2020, "official": False},
    {"tags": "bone", "year": 2020.0, "official": 1},
    {"title": "no tags"},
]


def test_counts_documents_per_value_most_frequent_first_ties_by_value() -> None:
    assert count_facets(DOCS, ["tags", "year"]) == {
        # "bone" is in three documents (once each, however often it is listed); diet and vitamin tie at 1.
        "tags": [{"value": "bone", "count": 3}, {"value": "diet", "count": 1}, {"value": "vitamin", "count": 1}],
        # 2020 and 2020.0 are the same JSON number.
        "year": [{"value": 2020, "count": 3}, {"value": 2021, "count": 1}],
    }


def test_a_whole_number_is_shown_as_one_whichever_way_the_first_document_wrote_it() -> None:
    years = count_facets([{"year": 2020.0}, {"year": 2020}, {"year": 2.5}], ["year"])["year"]
    assert years == [{"value": 2020, "count": 2}, {"value": 2.5, "count": 1}]
    assert type(years[0]["value"]) is int


def test_booleans_are_not_numbers_and_missing_fields_count_for_nothing() -> None:
    assert count_facets(DOCS, ["official", "colour"]) == {
        "official": [{"value": False, "count": 1}, {"value": True, "count": 1}, {"value": 1, "count": 1}],
        "colour": [],
    }


def test_at_most_limit_values() -> None:
    docs = [{"n": i % 5} for i in range(12)]  # 0 and 1 three times; 2, 3 and 4 twice
    assert count_facets(docs, ["n"], limit=3) == {
        "n": [{"value": 0, "count": 3}, {"value": 1, "count": 3}, {"value": 2, "count": 2}]}


def test_a_string_written_composed_or_decomposed_is_one_value_shown_composed() -> None:
    """Two "Café" buttons that looked the same and filtered apart (QA)."""
    places = count_facets([{"place": "Cafe\u0301"}, {"place": "Caf\u00e9"}, {"place": ["Cafe\u0301", "Cafe"]}],
                          ["place"])["place"]
    assert places == [{"value": "Caf\u00e9", "count": 3}, {"value": "Cafe", "count": 1}]
