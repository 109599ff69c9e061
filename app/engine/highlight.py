"""Highlighted fragments of a hit's text: the query's terms in <mark>, everything else HTML-escaped.

Terms match with the collection's own analysis (the tokenizer BM25 uses), so a query for "fractures" marks
"fracture" and stop words are never marked. A fragment is a window of at most `fragment_chars` characters of
the original text, cut at word boundaries, with "… " before and " …" after when the text goes on. The best
fragments come first: the most distinct query terms, then the most matched words, then the earliest. A text
with no matched word gets its leading fragment.
"""

import html
import re
from collections import Counter
from collections.abc import Callable, Collection

from app.engine.tokenizer import MARKS, UNSPACED

ELLIPSIS = "…"
# Terms are looked for in a field's first this many characters only, cut back to a word's end: analysing costs
# ~0.2 ms per 1,000 characters, and a page of 100 hits of 90,000 characters each took ~2 s (QA); now at most
# ~2 ms a field. A term further on is not marked, and a field with none in reach gets its leading fragment.
# Elasticsearch bounds it the same way (`index.highlight.max_analyzed_offset`, there 1,000,000).
ANALYSED_CHARS = 10_000
# A word's character, combining marks included: decomposed (NFD) text keeps an accent apart from its letter, and
# a fragment cut between them began "… ́sumé" or ended "Cafe …" (QA).
_WORD_CHAR = re.compile(rf"[\w{MARKS}]")
# What joins the character before it into one symbol: a combining mark, a zero-width joiner (and, below, what
# follows one), a variation selector, a skin tone, a keycap's enclosing mark, a tag character (a subdivision's
# flag); and of two regional indicators, the second (a country's flag). A cut before one left half an emoji: "👨‍👩"
# of a family "👨‍👩‍👧", a hand without its tone, a flag's one letter. (A run of flags stays whole: no cut in it.)
_GLUE = re.compile(f"[{MARKS}\u200d\ufe00-\ufe0f\u20e3\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]")
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")

Spans = Callable[[str], list[tuple[int, int, str]]]


def _is_word(char: str) -> bool:
    return bool(_WORD_CHAR.match(char))


def _joined(text: str, at: int) -> bool:
    """Whether a cut before text[at] (0 < at < len(text)) would split a word or a symbol."""
    before, after = text[at - 1], text[at]
    return (_is_word(before) and _is_word(after)) or bool(_GLUE.match(after)) or before == "\u200d" \
        or bool(_REGIONAL.match(before) and _REGIONAL.match(after))


def _snap(text: str, low: int, high: int) -> tuple[int, int]:
    """Moves the window's edges inward off any word or symbol they cut, then off the whitespace they leave; a
    window inside one word longer than itself is cut in the word (snapped, it was empty: a fragment of " …")."""
    start, end = low, high
    while 0 < start < end and _joined(text, start):
        start += 1
    while start < end < len(text) and _joined(text, end):
        end -= 1
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else (low, high)


def _render(text: str, start: int, end: int, marks: list[tuple[int, int]]) -> str:
    out, at = [ELLIPSIS + " "] if start > 0 else [], start
    for mark_start, mark_end in marks:
        if mark_start < start or mark_end > end:
            continue
        out.append(html.escape(text[at:mark_start]))
        out.append("<mark>" + html.escape(text[mark_start:mark_end]) + "</mark>")
        at = mark_end
    out.append(html.escape(text[at:end]))
    if end < len(text):
        out.append(" " + ELLIPSIS)
    return "".join(out)


def _windows(text: str, matched: list[tuple[int, int, str]], size: int) -> list[tuple[tuple[int, int, int], int, int]]:
    """For each matched word, the window starting there: ((distinct terms, words, -start), start, end), the
    window widened around its matches to `size` characters."""
    windows = []
    last, counts = 0, Counter[str]()
    for first, (start, _, _) in enumerate(matched):
        while last < len(matched) and (last <= first or matched[last][1] - start <= size):
            counts[matched[last][2]] += 1
            last += 1
        # matched[first:last] fit in the window; centre them in it
        end = matched[last - 1][1]
        slack = size - (end - start)
        low = max(0, min(start - slack // 2, len(text) - size))
        windows.append(((len(counts), last - first, -start), low, min(len(text), low + size)))
        counts[matched[first][2]] -= 1
        if not counts[matched[first][2]]:
            del counts[matched[first][2]]
    return windows


def fragments(text: str, terms: Collection[str], spans: Spans, fragment_chars: int, count: int) -> list[str]:
    """Up to `count` non-overlapping fragments of `text`, best first; the leading fragment when no word matches.

    `spans` gives (start, end, term) of each word that yields a term (Tokenizer.spans)."""
    if not text:
        return []
    matched = [span for span in spans(_analysed(text)) if span[2] in terms]
    marks = _merged([(start, end) for start, end, _ in matched])
    if len(text) <= fragment_chars:
        return [_render(text, 0, len(text), marks)]
    if not matched:
        start, end = _snap(text, 0, fragment_chars)
        return [_render(text, start, end, [])]
    ends = {start: end for start, end, _ in matched}
    chosen: list[tuple[int, int]] = []
    for key, low, high in sorted(_windows(text, matched, fragment_chars), reverse=True):
        start, end = _snap(text, low, high)
        if any(start < b and a < end for a, b in chosen):
            # Overlapping a better fragment (a window near the text's end is pushed back into it): moved into the
            # gap around its first matched word, if that word is not shown already (QA: a second term of a text
            # shorter than two fragments was never marked).
            first = -key[2]
            start, end = _in_gap(text, chosen, low, high, (first, ends[first]), fragment_chars)
            if start == end:
                continue
        chosen.append((start, end))
        if len(chosen) == count:
            break
    return [_render(text, start, end, marks) for start, end in chosen]


def _merged(marks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Marks in order, those that overlap as one: Chinese, Japanese and Korean terms are two characters a
    character apart (app/engine/tokenizer.py), and "東京都" matched as "東京" and "京都" was rendered "東京京都"."""
    merged: list[tuple[int, int]] = []
    for start, end in marks:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _analysed(text: str) -> str:
    """The text's first ANALYSED_CHARS characters, less a word the cut would split (whose stem would be wrong)."""
    if len(text) <= ANALYSED_CHARS:
        return text
    end = ANALYSED_CHARS
    # (Chinese, Japanese, Korean and Thai characters are terms two at a time, not words to keep whole: a Chinese or
    # Japanese text with no space was cut back to nothing, and none of its terms was marked.)
    while end > 0 and _is_word(text[end - 1]) and _is_word(text[end]) and not UNSPACED.match(text[end]):
        end -= 1
    return text[:end]


def _in_gap(text: str, chosen: list[tuple[int, int]], low: int, high: int, word: tuple[int, int],
            size: int) -> tuple[int, int]:
    """The window [low, high) moved into the gap between the chosen fragments that holds `word`, at most `size`
    wide and snapped to words; (0, 0) when `word` is in a chosen fragment or no window of the gap holds it."""
    if any(a < word[1] and word[0] < b for a, b in chosen):
        return 0, 0
    gap_low = max((b for a, b in chosen if b <= word[0]), default=0)
    gap_high = min((a for a, b in chosen if a >= word[1]), default=len(text))
    low, high = max(low, gap_low), min(high, gap_high)
    high = min(gap_high, max(high, low + size))  # widened again within the gap
    low = max(gap_low, min(low, high - size))
    start, end = _snap(text, low, high)
    return (start, end) if start <= word[0] and word[1] <= end else (0, 0)


def highlight(fields: dict[str, str | None], terms: Collection[str], spans: Spans, fragment_chars: int,
              count: int) -> dict[str, list[str]]:
    """Fragments of each named field that has text."""
    return {name: fragments(value, terms, spans, fragment_chars, count) for name, value in fields.items() if value}
