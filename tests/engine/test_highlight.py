"""Highlighted fragments, with expectations worked out by hand."""

import html
import re
import unicodedata

from app.engine.highlight import ANALYSED_CHARS, fragments, highlight
from app.engine.tokenizer import Tokenizer

TOKENIZER = Tokenizer()


def terms(query: str) -> frozenset[str]:
    return frozenset(TOKENIZER(query))


def frags(text: str, query: str, chars: int = 160, count: int = 2) -> list[str]:
    return fragments(text, terms(query), TOKENIZER.spans, chars, count)


def test_spans_carry_the_bm25_terms_of_the_words() -> None:
    assert TOKENIZER.spans("The Fractures of a hip") == [(4, 13, "fractur"), (19, 22, "hip")]
    text = "Öl-Preise: the RUNNING runners ran, don't they? 3.14 e_mail"
    assert [term for _, _, term in TOKENIZER.spans(text)] == TOKENIZER(text)


def test_a_short_text_is_one_fragment_with_stems_marked_and_stop_words_not() -> None:
    assert frags("Vitamin D supplements and hip fracture", "fractures of vitamins") == [
        "<mark>Vitamin</mark> D supplements and hip <mark>fracture</mark>"]
    assert frags("vitamin D and supplements", "vitamin d and supplements") == [
        "<mark>vitamin</mark> <mark>D</mark> and <mark>supplements</mark>"]  # "and" is a stop word: never marked


def test_everything_outside_the_marks_is_escaped() -> None:
    assert frags('<script>alert("x")</script> & cats', "cats script") == [
        "&lt;<mark>script</mark>&gt;alert(&quot;x&quot;)&lt;/<mark>script</mark>&gt; &amp; <mark>cats</mark>"]


def test_no_match_gives_the_leading_fragment_cut_at_a_word() -> None:
    # 30 characters end right after the second "on"; the text goes on.
    assert frags("plain text that goes on and on for a while", "unicorn", chars=30) == [
        "plain text that goes on and on …"]


def test_terms_are_looked_for_in_the_first_analysed_characters_only() -> None:
    # A field of 100 hits x 90,000 characters took ~2 s to highlight (QA): analysis stops at ANALYSED_CHARS.
    filler = "filler " * (ANALYSED_CHARS // 7 + 1000)
    leading = frags(filler, "salmon", chars=30)
    assert frags(filler[:(ANALYSED_CHARS - 20) // 7 * 7] + "salmon " + filler, "salmon", chars=30) == [
        "… filler <mark>salmon</mark> filler …"]
    assert frags(filler + " salmon", "salmon", chars=30) == leading  # out of reach: the leading fragment
    # The cut does not split a word: "salmonberry" across it is not read as "salmon".
    straddling = "a " * ((ANALYSED_CHARS - 6) // 2) + "salmonberry " + filler
    assert straddling[ANALYSED_CHARS - 7:ANALYSED_CHARS] == " salmon"
    assert frags(straddling, "salmon", chars=30) == ["a a a a a a a a a a a a a a a …"]


def test_a_word_longer_than_a_fragment_is_cut_in_the_word() -> None:
    # Snapped off the word it cuts, the window was empty and the fragment " …" (QA: a 2,000-character title).
    assert frags("T" * 2000, "lorem", chars=30) == ["T" * 30 + " …"]
    assert frags("T" * 2000 + " lorem", "lorem", chars=30) == ["… <mark>lorem</mark>"]


def test_the_densest_window_wins_and_is_centred_on_its_matches() -> None:
    text = "cat " + "filler " * 10 + "dog cat dog " + "filler " * 10 + "end"
    # The window at "dog" (74) holds "dog cat dog" (two distinct terms, three words), up to 85: 19 characters
    # to spare, so it starts 9 earlier, at 65, and ends at 95. 65 cuts the "filler" at 60..66 and 95 the one at
    # 93..99: the fragment is 67..92.
    assert frags(text, "cat dog", chars=30, count=1) == ["… filler <mark>dog</mark> <mark>cat</mark> "
                                                         "<mark>dog</mark> filler …"]


def test_fragments_do_not_overlap_and_come_best_first() -> None:
    text = "cat " + "filler " * 10 + "dog cat dog " + "filler " * 10 + "cat"
    found = frags(text, "cat dog", chars=30, count=3)
    assert found == ["… filler <mark>dog</mark> <mark>cat</mark> <mark>dog</mark> filler …",
                     "<mark>cat</mark> filler filler filler …",
                     "… filler filler filler <mark>cat</mark>"]


def test_a_window_pushed_back_over_a_better_fragment_moves_into_the_gap() -> None:
    """A text under two fragments long: the window at "strokes" (79) is pushed back to start at 25 so as to hold
    60 characters, overlaps the first fragment (0..57) and was dropped, so "strokes" was never marked (QA)."""
    text = "Aspirin reduces the risk of heart attacks in many adults, the trial reported strokes."
    assert frags(text, "aspirin strokes", chars=60) == [
        "<mark>Aspirin</mark> reduces the risk of heart attacks in many adults, …",
        "… the trial reported <mark>strokes</mark>."]
    # A word already shown in a better fragment gets no second one.
    assert frags("aspirin aspirin " + "x " * 40, "aspirin", chars=30) == [
        "<mark>aspirin</mark> <mark>aspirin</mark> x x x x x x x …"]


def test_highlight_names_each_field_with_text() -> None:
    fields: dict[str, str | None] = {"title": "Cats", "text": "Cats purr.", "other": None}
    assert highlight(fields, terms("cat"), TOKENIZER.spans, 160, 2) == {
        "title": ["<mark>Cats</mark>"], "text": ["<mark>Cats</mark> purr."]}


def test_a_fragment_of_decomposed_text_keeps_each_accent_with_its_letter() -> None:
    """NFD text keeps an accent apart from its letter; cuts between them began "… ́sumé" or ended "Cafe …" (QA)."""
    text = unicodedata.normalize("NFD", "Le résumé du café est très long, " * 6 + "et le café final")
    for size in range(20, 61, 3):
        for fragment in frags(text, "café", chars=size, count=3):
            core = html.unescape(re.sub(r"</?mark>", "", fragment)).removeprefix("… ").removesuffix(" …")
            end = text.index(core) + len(core)
            assert not unicodedata.combining(core[0]), (size, fragment)
            assert end == len(text) or not unicodedata.combining(text[end]), (size, fragment)


def test_a_fragment_never_cuts_an_emoji_in_two() -> None:
    """A family joined by zero-width joiners, a hand and its skin tone, a flag's two letters, a keycap, a heart
    and its variation selector, a subdivision's flag of tag characters: each whole in a fragment or not at all."""
    symbols = ["👨\u200d👩\u200d👧", "👍🏽", "🇫🇷", "1\ufe0f\u20e3", "❤\ufe0f",
               "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"]
    text = " ".join(f"café{symbol}{symbol}n{n}" if n % 2 else f"{symbol} the café {symbol} n{n}"
                    for n, symbol in enumerate(symbols * 4))
    spans = [(m.start(), m.end()) for symbol in symbols for m in re.finditer(re.escape(symbol), text)]
    cuts = 0
    for size in range(12, 70):
        for fragment in frags(text, "café", chars=size, count=3):
            core = html.unescape(re.sub(r"</?mark>", "", fragment)).removeprefix("… ").removesuffix(" …")
            start = text.index(core)  # (numbered words make most cores unique)
            for edge in (start, start + len(core)):
                assert not any(a < edge < b for a, b in spans), (size, fragment)
                cuts += 0 < edge < len(text)
    assert cuts > 100  # the edges did fall among the symbols


def test_chinese_and_japanese_terms_are_marked_once_where_they_overlap() -> None:
    """Their terms are two characters a character apart: "東京都" matched as "東京" and "京都" was marked twice,
    overlapping, and rendered "東京京都"."""
    text = "東京都は日本の首都です。京都は古い都です。"
    assert frags(text, "東京都 京都") == ["<mark>東京都</mark>は日本の首都です。<mark>京都</mark>は古い都です。"]
    # A text of them with no space is analysed up to ANALYSED_CHARS, not cut back to nothing at a word's start.
    long = "日本の首都" * (ANALYSED_CHARS // 5 + 100)
    marked = "<mark>首都</mark>日本の"
    assert frags(long, "首都", chars=16, count=1) == ["… 本の" + marked * 2 + "<mark>首都</mark>日本 …"]


def test_accents_and_their_absence_meet() -> None:
    assert frags("Das Café in der Straße", "cafe strasse") == ["Das <mark>Café</mark> in der <mark>Straße</mark>"]
