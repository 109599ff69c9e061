"""The search page at /ui/ in a real browser (headless Chromium driven by selenium) against a live server."""

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import quote

import pytest

from app.client import SearchClient
from tests.helpers import ANIMALS
from tests.server import Server

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
UI_DIR = Path(__file__).resolve().parents[2] / "app" / "ui"
# Not a document's markup but its text: the page must show it, not run it.
HOSTILE = {"id": "hostile", "title": "Cats <i>in</i> markup",
           "text": "Cats purr <img src=x onerror=\"document.title='owned'\"> "
                   "and <script>document.title='owned'</script>"}

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Chromium and ChromeDriver: run scripts/install-tools (apt-get install chromium chromium-driver)")

webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium: ./scripts/setup dev")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No background traffic: the machines' network is closed and Chromium would keep trying.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,800",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _showing(first: int, last: int, total: int) -> str:
    """The status line's start for hits first to last of total (an en dash between them)."""
    return f"{first}\u2013{last} of {total} hits"


def _hits(driver: Any) -> list[Any]:
    return list(driver.find_elements(By.CSS_SELECTOR, "#hits .hit"))


def _shown_ids(wait: Any) -> list[str]:
    """The ids of the hits shown, read through the wait: a click re-renders the hits, and a hit read as they
    are replaced is stale (CI)."""
    return cast(list[str], wait.until(
        lambda d: [hit.find_element(By.CSS_SELECTOR, ".meta").text.split(" · ")[0] for hit in _hits(d)]))


def _open_with(live_server: Server, browser: Any, collection: str) -> Any:
    """The page over a new collection of ANIMALS, picked; the wait it returns reads stale hits again (a click
    re-renders them, more than once when two searches answer)."""
    with SearchClient(live_server.url) as client:
        client.create_collection(collection)
        client.ingest(collection, ANIMALS)
    browser.get(f"{live_server.url}/ui/")
    wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
    picker = Select(browser.find_element(By.ID, "collection"))
    wait.until(lambda d: collection in [o.get_attribute("value") for o in picker.options])
    picker.select_by_value(collection)
    return wait


def test_search_page_finds_explains_and_unfilters(live_server: Server, browser: Any) -> None:
    with SearchClient(live_server.url) as client:
        client.create_collection("ui-animals")
        client.ingest("ui-animals", [*ANIMALS, HOSTILE])
    wait = WebDriverWait(browser, 20)
    browser.get(f"{live_server.url}/")  # the root sends a browser to /ui/
    assert browser.current_url == f"{live_server.url}/ui/"
    picker = Select(browser.find_element(By.ID, "collection"))
    wait.until(lambda d: "ui-animals" in [o.get_attribute("value") for o in picker.options])
    picker.select_by_value("ui-animals")

    browser.find_element(By.ID, "query").send_keys("cats that purr")  # typed, not submitted: search as you type
    wait.until(lambda d: _hits(d) and d.find_element(By.ID, "more").is_displayed())
    filtered = _hits(browser)
    titles = [hit.find_element(By.CSS_SELECTOR, ".title").text for hit in filtered]
    assert "Cats" in titles
    assert "hits" in browser.find_element(By.ID, "status").text
    more = int(browser.find_element(By.ID, "more-count").text)
    assert more > 0 and len(filtered) < len(ANIMALS) + 1
    bar = filtered[0].find_element(By.CSS_SELECTOR, ".bar")
    assert bar.size["height"] > 0  # the relevance bar shows the hit's probability

    # The hostile document is shown as text; nothing of it ran or became markup.
    assert "Cats <i>in</i> markup" in titles
    assert not browser.find_elements(By.CSS_SELECTOR, "#hits img, #hits script, #hits .title i")
    # The service's own highlights: the query's terms marked, the hostile markup still only text.
    assert "Cats" in [mark.text for mark in browser.find_elements(By.CSS_SELECTOR, "#hits .title mark")]
    assert browser.title == "Hybrid search"

    details = filtered[0].find_element(By.CSS_SELECTOR, "details.explain")
    details.find_element(By.TAG_NAME, "summary").click()
    wait.until(lambda d: '"bm25"' in details.find_element(By.TAG_NAME, "pre").text)

    browser.find_element(By.ID, "show-all").click()  # turn the filter off: what it had filtered out shows up
    wait.until(lambda d: len(_hits(d)) == len(filtered) + more)
    assert not browser.find_element(By.ID, "relevance").is_selected()
    assert not browser.find_element(By.ID, "more").is_displayed()

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_the_api_key_field_authorises_the_pages_requests(tmp_path: Path, browser: Any) -> None:
    server = Server(tmp_path / "data", SEARCH_API_KEYS="reader-key", SEARCH_ADMIN_KEYS="admin-key").start()
    try:
        with SearchClient(server.url, api_key="admin-key") as client:
            client.create_collection("keyed")
            client.ingest("keyed", ANIMALS)
        browser.get(f"{server.url}/ui/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda d: "API key" in d.find_element(By.ID, "status").text)  # the 401's message
        key = browser.find_element(By.ID, "api-key")
        key.send_keys("reader-key")
        browser.find_element(By.ID, "query").click()  # leaving the field commits it
        wait.until(lambda d: Select(d.find_element(By.ID, "collection")).options)
        browser.find_element(By.ID, "query").send_keys("eagles")
        wait.until(lambda d: _hits(d))
        assert _hits(browser)[0].find_element(By.CSS_SELECTOR, ".title").text == "Eagles"
    finally:
        server.stop()


def test_highlights_and_facets_are_shown_and_a_facet_filters(live_server: Server, browser: Any) -> None:
    """Until the service sends highlights and facets, the page renders an answer that carries them (as the
    contract's additions describe it); clicking a facet then filters a real search."""
    wait = _open_with(live_server, browser, "ui-facets")
    browser.find_element(By.ID, "relevance").click()  # filter off: every animal
    browser.find_element(By.ID, "query").send_keys("animals")
    wait.until(lambda d: len(_hits(d)) == len(ANIMALS))

    answer = {"total": 1, "filtered_out": 0, "took_ms": 1.0,
              "hits": [{"id": "cat", "score": 1.0, "relevance": 0.9, "title": "Cats", "metadata": {},
                        "text": "Cats are small.",
                        "highlights": {"text": ["<mark>Cats</mark> &lt;b&gt;purr&lt;/b&gt;"]}}],
              "facets": {"tags": [{"value": "pet", "count": 2}, {"value": "wild", "count": 2}],
                         "year": [{"value": 2021, "count": 3}, {"value": "2021", "count": 1},
                                  {"value": True, "count": 1}, {"value": "true", "count": 1}]}}
    body = {"query": "animals", "relevance": {"enabled": False}}
    browser.execute_script("render(arguments[0], 'ui-facets', arguments[1])", answer, body)
    text = browser.find_element(By.CSS_SELECTOR, "#hits .hit .text")
    assert text.find_element(By.TAG_NAME, "mark").text == "Cats"
    assert text.text == "Cats <b>purr</b>"  # escaped by the server, so shown as text

    # A string that reads as another JSON value is quoted, so 2021 and "2021" are told apart (QA).
    buttons = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#facets button")]
    assert buttons[2:] == ["2021 (3)", '"2021" (1)', "true (1)", '"true" (1)']
    facet = browser.find_element(By.XPATH, "//aside[@id='facets']/button[starts-with(., 'pet')]")
    assert facet.text == "pet (2)"
    facet.click()  # a real search now, filtered on tags = pet
    wait.until(lambda d: {h.find_element(By.CSS_SELECTOR, ".title").text for h in _hits(d)} == {"Cats", "Dogs"})
    chip = browser.find_element(By.CSS_SELECTOR, "#filters button")
    assert chip.text.startswith("tags: pet")
    chip.click()  # removing the filter brings every animal back
    wait.until(lambda d: len(_hits(d)) == len(ANIMALS))
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@pytest.fixture
def unfiltered_server(tmp_path: Path) -> Iterator[Server]:
    """A server with no relevance adapter at all (neither the default nor the fallback): its hits carry
    `"relevance": null`."""
    (tmp_path / "no-adapter").mkdir()  # an empty folder: no adapter
    nowhere = str(tmp_path / "no-adapter")
    server = Server(tmp_path / "data", SEARCH_ADAPTER_DIR=nowhere, SEARCH_FALLBACK_ADAPTER_DIR=nowhere).start()
    yield server
    server.stop()


def test_first_search_has_facets_unscored_hits_say_so_and_an_error_clears_the_hits(
        unfiltered_server: Server, browser: Any) -> None:
    """Facets used to show only from the second search (their fields were learnt from the first answer); a
    hit with no probability (relevance null) read "relevance 0.00"; a failed search left the previous query's
    hits under its error, and the error did not say why. The answer that taught the page its facet fields was
    drawn too, just before the one with their counts (a flicker)."""
    wait = _open_with(unfiltered_server, browser, "ui-first")
    browser.execute_script("const hits = document.getElementById('hits'), clear = hits.replaceChildren.bind(hits);"
                           "window.drawn = 0;"
                           "hits.replaceChildren = (...nodes) => { window.drawn++; clear(...nodes); };")
    browser.find_element(By.ID, "query").send_keys("cats")
    wait.until(lambda d: _hits(d) and d.find_elements(By.CSS_SELECTOR, "#facets button"))
    assert "relevance —" in _hits(browser)[0].find_element(By.CSS_SELECTOR, ".meta").text
    assert browser.execute_script("return window.drawn") == 1

    browser.execute_script("const q = document.getElementById('query'); q.value = 'x'.repeat(40000);"
                           "q.dispatchEvent(new Event('input'));")
    wait.until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert "query:" in browser.find_element(By.ID, "status").text  # the 422's details: which field, why
    assert _hits(browser) == []


def test_the_pager_moves_through_the_hits_and_a_new_query_starts_at_the_first_page(
        live_server: Server, browser: Any) -> None:
    """The page showed "10 of 136 hits" with no way to the 11th (QA)."""
    wait = _open_with(live_server, browser, "ui-pages")  # the 6 animals
    with SearchClient(live_server.url) as client:
        client.ingest("ui-pages", [{"id": f"cat-{n:02}", "text": f"cat number {n} purrs"} for n in range(19)])
    browser.find_element(By.ID, "relevance").click()  # filter off: all 25 documents
    status = browser.find_element(By.ID, "status")
    browser.find_element(By.ID, "query").send_keys("cat purrs")
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 25)))
    first = _shown_ids(wait)
    previous, following = browser.find_element(By.ID, "previous"), browser.find_element(By.ID, "next")
    assert not previous.is_enabled() and following.is_enabled()
    following.click()
    wait.until(lambda d: status.text.startswith(_showing(11, 20, 25)))
    second = _shown_ids(wait)
    assert len(second) == 10 and not set(first) & set(second)
    following.click()
    wait.until(lambda d: status.text.startswith(_showing(21, 25, 25)))
    assert len(_hits(browser)) == 5 and not following.is_enabled() and previous.is_enabled()
    previous.click()
    wait.until(lambda d: status.text.startswith(_showing(11, 20, 25)))
    browser.find_element(By.ID, "query").send_keys(" number")  # a new query: the first page again
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 25)))
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_word_being_typed_finds_what_it_begins(live_server: Server, browser: Any) -> None:
    """Searching as you type, "sourdo" found nothing by its words until the word was whole: the page asks for the
    last word's completions unless a space has ended it."""
    wait = _open_with(live_server, browser, "ui-prefix")
    Select(browser.find_element(By.ID, "mode")).select_by_value("lexical")
    browser.find_element(By.ID, "query").send_keys("sourdo")
    wait.until(lambda d: [m.text for m in d.find_elements(By.CSS_SELECTOR, "#hits .title mark")] == ["Sourdough"])
    browser.find_element(By.ID, "query").send_keys(" ")  # the word is ended: "sourdo" is a word of its own
    wait.until(lambda d: not _hits(d) and d.find_element(By.ID, "status").text.startswith("0 of 0 hits"))
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_pager_hides_focus_follows_a_facet_values_are_isolated_and_a_failed_explain_is_asked_again(
        live_server: Server, browser: Any) -> None:
    """From a QA pass in a real browser: the pager showed (its CSS display beat `hidden`), clearing the query left
    the last count, a facet or chip pressed from the keyboard dropped focus to <body>, a value's U+202E reversed
    the rest of its hit's line, a key of non-Latin-1 characters read as "cannot reach the service", and an
    Explain that failed once never asked again."""
    wait = _open_with(live_server, browser, "ui-keyboard")
    pager, status, query = (browser.find_element(By.ID, name) for name in ("pager", "status", "query"))
    assert not pager.is_displayed()
    browser.find_element(By.ID, "relevance").click()  # filter off: every animal, one page
    query.send_keys("animals")
    wait.until(lambda d: len(_hits(d)) == len(ANIMALS) and d.find_elements(By.CSS_SELECTOR, "#facets button"))
    assert status.text.startswith(_showing(1, 6, 6)) and not pager.is_displayed()

    facet = browser.find_element(By.XPATH, "//aside[@id='facets']/button[@data-field='kind'][1]")
    facet.send_keys(Keys.ENTER)
    wait.until(lambda d: d.switch_to.active_element.get_attribute("data-field") == "kind"
               and d.switch_to.active_element.find_element(By.XPATH, "..").get_attribute("id") == "filters")
    browser.switch_to.active_element.send_keys(Keys.ENTER)  # the chip: the filter goes, focus to its facet
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#filters button") and len(_hits(d)) == len(ANIMALS))
    wait.until(lambda d: d.switch_to.active_element.get_attribute("data-field") == "kind"
               and d.switch_to.active_element.find_element(By.XPATH, "..").get_attribute("id") == "facets")

    answer = {"total": 1, "filtered_out": 0, "took_ms": 1.0,
              "hits": [{"id": "cat", "score": 1.0, "relevance": 0.9, "title": "Cats", "text": "Cats.",
                        "metadata": {"a": "\u202e", "seller": "trusted"}}],
              "facets": {"kind": [{"value": "\u202eevil", "count": 1}]}}
    browser.execute_script("render(arguments[0], 'ui-keyboard', {relevance: {enabled: false}})", answer)
    isolated = {e.text: e for e in browser.find_elements(By.CSS_SELECTOR, "#hits .meta bdi")}
    assert {"a", "seller", "trusted"} <= set(isolated)
    assert isolated["a"].location["x"] < isolated["seller"].location["x"] < isolated["trusted"].location["x"]
    assert browser.find_elements(By.CSS_SELECTOR, "#facets button bdi")

    query.clear()
    query.send_keys("cats")  # a real search again (all six: the filter is off), then an Explain with a bad key
    wait.until(lambda d: status.text.startswith(_showing(1, 6, 6)))
    browser.execute_script("const k = document.getElementById('api-key'); k.value = 'ключ';"
                           "k.dispatchEvent(new Event('change'));")
    wait.until(lambda d: "API key holds a character" in status.text)
    details = _hits(browser)[0].find_element(By.CSS_SELECTOR, "details.explain")
    details.find_element(By.TAG_NAME, "summary").click()
    wait.until(lambda d: "API key holds a character" in details.find_element(By.TAG_NAME, "pre").text)
    browser.execute_script("document.getElementById('api-key').value = ''")  # no change event: same hits
    details.find_element(By.TAG_NAME, "summary").click()  # closed, then opened again: asked again
    wait.until(lambda d: details.get_attribute("open") is None)
    browser.execute_async_script("setTimeout(arguments[0], 100)")  # its toggle event first: two would be one
    details.find_element(By.TAG_NAME, "summary").click()
    wait.until(lambda d: '"bm25"' in details.find_element(By.TAG_NAME, "pre").text)

    browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
    wait.until(lambda d: status.text.startswith(_showing(1, 6, 6)))
    query.clear()
    query.send_keys(Keys.SPACE)  # an input event with an empty query: nothing shown, no count left over
    wait.until(lambda d: not _hits(d) and status.text == "")
    assert not pager.is_displayed()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_long_words_wrap_and_focus_stays_on_a_control_the_answer_disables_or_hides(
        live_server: Server, browser: Any) -> None:
    """From a QA pass in a real browser: a title holding a 121-character URL pushed the facets off the page (it
    scrolled sideways); Next pressed to the last page, Previous to the first and "Show them" dropped keyboard
    focus to <body>; a float field was offered as a facet of one-count buttons."""
    wait = _open_with(live_server, browser, "ui-long")
    url = "https://doi.org/10.1000/journal.pone.0123456/supplementary_materials/dataset_S1_full_genotype_table.xlsx"
    with SearchClient(live_server.url) as client:
        client.ingest("ui-long", [{"id": f"cat-{n:02}", "title": f"Cat {n}: {url}", "text": f"cat number {n} purrs",
                                   "metadata": {"kind": "x" * 300, "weight": n + 0.5 if n % 2 else n}}
                                  for n in range(11)])
    browser.find_element(By.ID, "relevance").click()  # filter off: all 17 documents, two pages
    status = browser.find_element(By.ID, "status")
    browser.find_element(By.ID, "query").send_keys("cat purrs")
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 17)))
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    facets = browser.find_element(By.ID, "facets")
    assert facets.location["x"] + facets.size["width"] <= width
    assert "dataset_S1" in " ".join(t.text for t in browser.find_elements(By.CSS_SELECTOR, "#hits .title"))
    # A measure with fractions in some hits is no facet, though others hold whole numbers (one button a value).
    assert browser.find_elements(By.CSS_SELECTOR, "#facets button[data-field='kind']")
    assert not browser.find_elements(By.CSS_SELECTOR, "#facets button[data-field='weight']")

    following, previous = browser.find_element(By.ID, "next"), browser.find_element(By.ID, "previous")
    following.send_keys(Keys.ENTER)  # to the last page: Next is disabled, focus goes to Previous
    wait.until(lambda d: status.text.startswith(_showing(11, 17, 17)))
    wait.until(lambda d: d.switch_to.active_element == previous)
    previous.send_keys(Keys.ENTER)  # back to the first: Previous is disabled, focus goes to Next
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 17)))
    wait.until(lambda d: d.switch_to.active_element == following)

    relevance = browser.find_element(By.ID, "relevance")
    relevance.click()  # the filter on again: "Show them" shows, pressed it hides, focus to the relevance box
    query = browser.find_element(By.ID, "query")
    query.clear()
    query.send_keys("a rocket launched into space")
    wait.until(lambda d: d.find_element(By.ID, "more").is_displayed())
    browser.find_element(By.ID, "show-all").send_keys(Keys.ENTER)
    wait.until(lambda d: not d.find_element(By.ID, "more").is_displayed())
    wait.until(lambda d: d.switch_to.active_element == relevance)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_address_keeps_the_search_so_a_reload_or_a_link_shows_it_again(live_server: Server,
                                                                          browser: Any) -> None:
    """The page kept nothing in its address: a reload, or a link sent to someone, lost the query, the page of
    hits, the settings and the filters (QA)."""
    wait = _open_with(live_server, browser, "ui-address")
    with SearchClient(live_server.url) as client:
        client.ingest("ui-address", [{"id": f"cat-{n:02}", "text": f"cat number {n} purrs"} for n in range(19)])
        client.create_collection("ui-other")
        client.ingest("ui-other", ANIMALS)
    status = browser.find_element(By.ID, "status")
    browser.find_element(By.ID, "relevance").click()  # filter off: all 25 documents
    Select(browser.find_element(By.ID, "mode")).select_by_value("dense")
    browser.find_element(By.ID, "query").send_keys("cat purrs")
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 25)))
    browser.find_element(By.ID, "next").click()
    wait.until(lambda d: status.text.startswith(_showing(11, 20, 25)))
    second = _shown_ids(wait)
    address = browser.current_url
    assert all(part in address for part in ("q=cat+purrs", "collection=ui-address", "mode=dense", "relevance=off",
                                            "offset=10"))
    browser.back()  # the page before, then forward to this one again
    wait.until(lambda d: status.text.startswith(_showing(1, 10, 25)) and "offset" not in d.current_url)
    browser.forward()
    wait.until(lambda d: status.text.startswith(_showing(11, 20, 25)) and d.current_url == address)
    browser.back()
    browser.back()  # two steps before the query was typed: the filter off, the mode not yet dense
    wait.until(lambda d: "q=" not in d.current_url and status.text == "" and not _hits(d))
    assert Select(browser.find_element(By.ID, "mode")).first_selected_option.get_attribute("value") == "hybrid"
    assert not browser.find_element(By.ID, "relevance").is_selected()
    browser.forward()
    browser.forward()
    wait.until(lambda d: status.text.startswith(_showing(11, 20, 25)) and d.current_url == address)

    browser.refresh()
    status = browser.find_element(By.ID, "status")
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(_showing(11, 20, 25)))
    # read through the wait: a reload may render the answer twice (a stale hit was read in a loaded CI run)
    wait.until(lambda d: _shown_ids(wait) == second)
    assert browser.find_element(By.ID, "query").get_attribute("value") == "cat purrs"
    assert Select(browser.find_element(By.ID, "mode")).first_selected_option.get_attribute("value") == "dense"
    assert not browser.find_element(By.ID, "relevance").is_selected()
    assert not browser.find_element(By.ID, "recall").is_enabled()
    assert browser.current_url == address

    # A link to another collection, with a filter; a value the page does not offer is left at its default.
    browser.get(f"{live_server.url}/ui/?q=animals&collection=ui-other&relevance=off&mode=bogus&offset=-5&filter="
                + quote(json.dumps({"kind": "mammal"})))
    wait.until(lambda d: {h.find_element(By.CSS_SELECTOR, ".title").text for h in _hits(d)} == {"Cats", "Dogs"}
               and d.find_elements(By.CSS_SELECTOR, "#facets h3 bdi"))  # a field's name is isolated too
    assert browser.find_element(By.ID, "status").text.startswith(_showing(1, 2, 2))
    assert Select(browser.find_element(By.ID, "collection")).first_selected_option.get_attribute("value") == "ui-other"
    assert Select(browser.find_element(By.ID, "mode")).first_selected_option.get_attribute("value") == "hybrid"
    assert browser.find_element(By.CSS_SELECTOR, "#filters button").text.startswith("kind: mammal")

    # An old link past the end shows the last page; "Infinity" is no page; a range reads as JSON, not
    # "[object Object]" (QA).
    for offset, shown in (("200", _showing(1, 2, 2)), ("99999999", _showing(1, 2, 2)),  # past what the service
                          ("Infinity", _showing(1, 2, 2))):  # takes: was its 422 (QA)
        browser.get(f"{live_server.url}/ui/?q=animals&collection=ui-other&relevance=off&offset={offset}&filter="
                    + quote(json.dumps({"kind": "mammal", "year": {"gte": 2020}})))
        wait.until(lambda d, shown=shown: d.find_element(By.ID, "status").text.startswith(shown))
    # read through the wait: the page may still be rendering the answer again (the last page, the facets' counts)
    chips = wait.until(lambda d: [chip.text for chip in d.find_elements(By.CSS_SELECTOR, "#filters button")])
    assert chips[1].startswith('year: {"gte":2020}')

    # Back pressed while a keystroke's search still waits goes back, and stays there (it rewrote that step).
    browser.get(f"{live_server.url}/ui/?q=cat+purrs&collection=ui-address&relevance=off")
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(_showing(1, 10, 25)))
    for shown in (_showing(11, 20, 25), _showing(21, 25, 25)):
        browser.find_element(By.ID, "next").click()
        wait.until(lambda d, shown=shown: d.find_element(By.ID, "status").text.startswith(shown))
    browser.find_element(By.ID, "query").send_keys("s")
    browser.back()
    wait.until(lambda d: "offset=10" in d.current_url and "q=cat+purrs&" in d.current_url)
    browser.execute_async_script("setTimeout(arguments[0], 600)")  # past the keystroke's 250 ms
    assert "q=cat+purrs&" in browser.current_url and "offset=10" in browser.current_url
    assert browser.find_element(By.ID, "status").text.startswith(_showing(11, 20, 25))
    assert browser.find_element(By.ID, "query").get_attribute("value") == "cat purrs"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


class _Starting(http.server.SimpleHTTPRequestHandler):
    """The page's files, and an API that answers 503 (as a starting service does) to its first two lists of
    collections, then lists one collection and answers its searches."""

    lists = 0
    posted: ClassVar[list[dict[str, Any]]] = []  # the search bodies, in order

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(UI_DIR.parent), **kwargs)

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/collections":
            type(self).lists += 1
            if type(self).lists <= 2:
                return self._json(503, {"error": {"code": "not_ready", "message": "still loading", "details": []}})
            return self._json(200, {"collections": [{"name": "late", "count": 1}]})
        if not self.path.startswith("/ui/"):
            return self._json(404, {"error": {"code": "not_found", "message": "no", "details": []}})
        super().do_GET()

    def do_POST(self) -> None:
        type(self).posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._json(200, {"hits": [{"id": "one", "score": 1.0, "relevance": 0.9, "title": "Late", "text": "late",
                                   "metadata": {}}], "total": 1, "filtered_out": 0, "took_ms": 1.0})


def test_a_page_opened_while_the_service_starts_lists_its_collections_once_it_is_ready(browser: Any) -> None:
    """The list of collections failed with 503 and was never asked for again: the picker stayed empty (QA). Then a
    facet of a metadata key "__proto__", and the service gone."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Starting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_address[1]}/ui/")
        wait = WebDriverWait(browser, 20)
        picker = Select(browser.find_element(By.ID, "collection"))
        wait.until(lambda d: [o.get_attribute("value") for o in picker.options] == ["late"])
        assert _Starting.lists == 3
        browser.find_element(By.ID, "query").send_keys("late")
        wait.until(lambda d: _hits(d))
        assert browser.find_element(By.ID, "status").text.startswith(_showing(1, 1, 1))
        # A metadata key "__proto__" filters like any other: set on a plain object, it set the prototype (QA).
        facets = json.dumps({"__proto__": [{"value": "x", "count": 1}]})  # parsed as the page parses answers
        browser.execute_script("render({hits: [], total: 0, filtered_out: 0, took_ms: 1,"
                               " facets: JSON.parse(arguments[0])}, 'late', {relevance: {enabled: true}})", facets)
        browser.find_element(By.XPATH, "//aside[@id='facets']/button").click()
        wait.until(lambda d: _Starting.posted and "filter" in _Starting.posted[-1])
        assert _Starting.posted[-1]["filter"] == {"__proto__": "x"}
    finally:
        server.shutdown()
        server.server_close()
    # The service gone: the page says so, where the browser says only "Failed to fetch" (QA).
    browser.find_element(By.ID, "query").send_keys(" again")
    wait.until(lambda d: "cannot reach the search service" in d.find_element(By.ID, "status").text)


def test_a_link_to_a_collection_the_service_lacks_says_which_one_the_page_shows(live_server: Server,
                                                                             browser: Any) -> None:
    """An address naming a collection that is gone (or that the key may not read) showed another collection's
    hits without a word, as if they were the named one's (QA)."""
    with SearchClient(live_server.url) as client:
        for name in ("ui-stand-a", "ui-stand-b"):
            client.create_collection(name)
            client.ingest(name, ANIMALS)
    wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
    browser.get(f"{live_server.url}/ui/?q=cats&collection=ui-gone&relevance=off")
    status = browser.find_element(By.ID, "status")
    wait.until(lambda d: _hits(d) and "hits" in status.text)
    shown = Select(browser.find_element(By.ID, "collection")).first_selected_option.get_attribute("value")
    note = f"No collection \u201cui-gone\u201d here (or none this key may read): showing {shown}. "
    assert status.text.startswith(note)
    assert "collection=" + quote(shown) in browser.current_url  # the address now names what the page shows
    other = "ui-stand-b" if shown == "ui-stand-a" else "ui-stand-a"
    Select(browser.find_element(By.ID, "collection")).select_by_value(other)  # a collection picked: no note
    wait.until(lambda d: "hits" in status.text and "No collection" not in status.text)
    assert "collection=" + quote(other) in browser.current_url
    browser.get(f"{live_server.url}/ui/?q=cats&collection={other}&relevance=off")  # a good link: no note
    wait.until(lambda d: _hits(d) and "hits" in d.find_element(By.ID, "status").text)
    assert not browser.find_element(By.ID, "status").text.startswith("No collection")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_api_documentation_pages_render_offline(live_server: Server, browser: Any) -> None:
    """/docs loaded Swagger UI from a CDN: on a machine with no internet, as this one, it was a blank page (QA).
    Served by the service, it shows the operations, and the browser fetched nothing from elsewhere."""
    wait = WebDriverWait(browser, 30)
    browser.get(f"{live_server.url}/docs")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= 10)
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/collections/{name}/search" in paths
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(url.startswith(live_server.url) for url in fetched), fetched
