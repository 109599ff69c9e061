"""`python -m app search`: the table it prints, against a live server and for highlighted hits."""

import time

import pytest

from app.cli import main
from app.client import SearchClient, SearchResult
from app.commands.search import plain, render
from tests.helpers import ANIMALS
from tests.server import Server


def test_search_prints_a_table_of_hits(live_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("search-cli")
        client.ingest("search-cli", ANIMALS)
    url = ["--url", live_server.url, "--collection", "search-cli"]
    assert main(["search", *url, "cats that purr", "--all", "-k", "3"]) == 0
    header, first, *rest = capsys.readouterr().out.splitlines()
    assert header.split()[:5] == ["#", "id", "relevance", "score", "title"]
    assert first.split()[:2] == ["1", "cat"] and "Cats are small domesticated felines" in first
    assert len(rest) == 3 and rest[-1].startswith("3 of 6 hits")

    assert main(["search", *url, "cats that purr"]) == 0  # the relevance filter on: the rest filtered out
    assert "more filtered out as not relevant (--all shows them)" in capsys.readouterr().out


def test_highlights_print_as_plain_text_with_terms_in_brackets() -> None:
    assert plain("… <mark>vitamin</mark> D &amp; &lt;b&gt; <mark>bones</mark> …") == "… [vitamin] D & <b> [bones] …"
    result: SearchResult = {"total": 1, "filtered_out": 0, "took_ms": 1.0, "hits": [
        {"id": "d1", "score": 0.5, "relevance": 0.9, "title": "Vitamin D", "text": "unused", "metadata": {},
         "highlights": {"text": ["<mark>vitamin</mark> D helps"]}}]}
    header, row, _ = render(result, width=100).splitlines()
    assert header.rstrip().endswith("highlight")
    assert row.split() == ["1", "d1", "0.900", "0.500", "Vitamin", "D", "[vitamin]", "D", "helps"]


def test_control_characters_in_a_document_never_reach_the_terminal() -> None:
    """A document's escape sequences (clear the screen, set the window's title, a hyperlink) were printed as they
    were, to the terminal of whoever searched (QA)."""
    result: SearchResult = {"total": 1, "filtered_out": 0, "took_ms": 1.0, "hits": [
        {"id": "d\x1b[2J1", "score": 0.5, "relevance": 0.9, "title": "T\x1b]0;owned\x07itle",
         "text": "a\x1b]8;;http://x\x1b\\link\x9b31m\x00 b\nc", "metadata": {}}]}
    _, row, _ = render(result, width=200).splitlines()
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in row), repr(row)
    assert "d?[2J1" in row and "T?]0;owned?itle" in row and "b c" in row
    result["hits"][0]["title"] = "evil\u202eyrt\u202c and \u2067isolated\u2069"
    _, row, _ = render(result, width=200).splitlines()
    assert "evil?yrt? and ?isolated?" in row  # a right-to-left override would reorder the columns after it


def test_an_unknown_collection_is_a_message_not_a_traceback(live_server: Server,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--url", live_server.url, "--collection", "nowhere", "cats"]) == 1
    assert capsys.readouterr().err.startswith("search failed: 404 collection_not_found")


def test_a_server_that_cannot_be_reached_or_a_blank_query_is_a_message(
        live_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert main(["search", "--url", "http://127.0.0.1:9", "--collection", "c", "cats"]) == 1
    assert time.monotonic() - start < 2.0  # one quick retry, not the client's default ~7 s of them (QA)
    err = capsys.readouterr().err
    assert err.startswith("search failed: could not reach http://127.0.0.1:9") and "Traceback" not in err
    assert main(["search", "--url", live_server.url, "--collection", "nowhere", "-k", "5000", "cats"]) == 1
    assert "k: Input should be less than or equal to 1000" in capsys.readouterr().err  # the details too
    for blank in ("", "  "):  # refused before any work, as every other bad argument is
        with pytest.raises(SystemExit) as exit_info:
            main(["search", "--url", "http://127.0.0.1:9", "--collection", "nowhere", blank])
        assert exit_info.value.code == 2 and "argument query: cannot be empty" in capsys.readouterr().err


def test_a_filter_and_a_page_are_passed_on_and_a_bad_filter_refused_before_asking(
        live_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("search-cli-filter")
        client.ingest("search-cli-filter", ANIMALS)
    url = ["--url", live_server.url, "--collection", "search-cli-filter"]
    assert main(["search", *url, "animals", "--all", "--filter", '{"kind": "mammal"}']) == 0
    *rows, footer = capsys.readouterr().out.splitlines()[1:]
    assert {row.split()[1] for row in rows} == {"cat", "dog"} and footer.startswith("2 of 2 hits")
    assert main(["search", *url, "animals", "--all", "-k", "2", "--offset", "2"]) == 0
    *rows, footer = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["3", "4"] and footer.startswith("3-4 of 6 hits")
    for bad in ('{"kind": ', '["mammal"]'):
        with pytest.raises(SystemExit) as exit_info:
            main(["search", *url, "animals", "--filter", bad])
        assert exit_info.value.code == 2 and "argument --filter" in capsys.readouterr().err
