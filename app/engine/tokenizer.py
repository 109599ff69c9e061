"""Text-to-token analyser shared by indexing and querying so both see the same terms."""

from __future__ import annotations

import itertools
import re
import threading
import unicodedata
from collections.abc import Iterable

import Stemmer

# NLTK's English list (179 words), verbatim so it can be compared with other tools. Entries with an
# apostrophe never match a \w+ token; they are kept only so the list stays the recognisable one.
_NLTK_ENGLISH = """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves
    he him his himself she she's her hers herself it it's its itself they them their theirs themselves
    what which who whom this that that'll these those am is are was were be been being have has had
    having do does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on off over
    under again further then once here there when where why how all any both each few more most other
    some such no nor not only own same so than too very s t can will just don don't should should've
    now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
    hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn
    shouldn't wasn wasn't weren weren't won won't wouldn wouldn't"""
ENGLISH_STOPWORDS: frozenset[str] = frozenset(_NLTK_ENGLISH.split())


def _mark_ranges(code_points: Iterable[int]) -> str:
    """The combining marks (Unicode categories Mn, Mc, Me) among `code_points`, as the body of a regex class."""
    marks = [cp for cp in code_points if unicodedata.category(chr(cp))[0] == "M"]
    runs = itertools.groupby(enumerate(marks), key=lambda pair: pair[1] - pair[0])
    bounds = [(group[0][1], group[-1][1]) for group in (list(run) for _, run in runs)]
    return "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in bounds)


# Python's word class is `str.isalnum`, which leaves combining marks out: Hindi's vowel signs and viramas split
# "हिन्दी" into "ह", "न" and "द", and decomposed (NFD) text, as macOS and some PDFs write it, split "résumé" at each
# accent. So a word is a letter, digit or "_", then any of those or marks (a lone mark after a space is none).
# Marks lie in planes 0, 1 and 14, scanned once at import (the `regex` package's word class has them, but it is
# here only as a dependency of a dependency). A class holding any code point past U+FFFF is matched by a scan of
# its ranges rather than a table, which doubled the time to find the words, so the astral marks (historic
# scripts, ideographic variation selectors) are looked for only where a non-BMP character follows a word.
_BMP_MARKS = _mark_ranges(range(0x10000))
_ASTRAL_MARKS = _mark_ranges(itertools.chain(range(0x10000, 0x20000), range(0xE0000, 0xE1000)))
MARKS = _BMP_MARKS + _ASTRAL_MARKS
_WORD = re.compile(rf"\w[\w{_BMP_MARKS}]*(?:(?=[\U00010000-\U0010ffff])[{_ASTRAL_MARKS}]+[\w{_BMP_MARKS}]*)*")
# Snowball has two English stemmers; the stop word list applies to both.
_ENGLISH = frozenset({"english", "porter"})
# Which analysis an index holds (`Tokenizer.config`); one made with another is analysed again from the store.
# 2 (2026-12-03): words keep their combining marks (Hindi's "हिन्दी" was "ह", "न", "द"), and "İ" lower-cases to "i"
# as Lucene's LowerCaseFilter has it (one code point to one), not to Python's "i" + U+0307, which split
# "İstanbul" into "i" and "stanbul", so "istanbul" did not find it (QA).
ANALYSIS_VERSION = 2
_DOT_ABOVE = "\u0307"


def fold(text: str) -> str:
    """The lower case the analysis reads: of the text's NFC form, with "i" + U+0307 (what "İ" lower-cases to)
    as "i"."""
    lowered = unicodedata.normalize("NFC", text).lower()
    if _DOT_ABOVE in lowered:  # rare; NFC again, as the dot may have sat between a letter and its other marks
        lowered = unicodedata.normalize("NFC", lowered.replace("i" + _DOT_ABOVE, "i"))
    return lowered


def names_a_topic(terms: list[str]) -> bool:
    """Whether an analysed query holds a word: not only numbers, nor nothing at all (stop words alone, punctuation).
    The relevance filter lets such a query's candidates be relevant only where they match it lexically
    (app/engine/hybrid.py, `filter_by_relevance`)."""
    return any(not term.isdigit() for term in terms)


class Tokenizer:
    """Lower-case Unicode words of the text's NFC form (`fold`), English stop words removed, Snowball-stemmed."""

    def __init__(self, language: str = "english", stem: bool = True, stopwords: bool = True) -> None:
        if language not in Stemmer.algorithms():
            known = ", ".join(sorted(Stemmer.algorithms()))
            raise ValueError(f"unknown tokenizer language {language!r}; known languages: {known}")
        if stopwords and language not in _ENGLISH:
            raise ValueError(f"no stop word list for language {language!r} (only English); pass stopwords=False")
        self.language = language
        self.stem = stem
        self.stopwords = stopwords
        # A PyStemmer object is not thread-safe (it keeps a word cache), and requests tokenise
        # concurrently, so each thread gets its own stemmer.
        self._local = threading.local()

    def _stemmer(self) -> Stemmer.Stemmer:
        stemmer: Stemmer.Stemmer | None = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = Stemmer.Stemmer(self.language)
            self._local.stemmer = stemmer
        return stemmer

    def __call__(self, text: str) -> list[str]:
        words = _WORD.findall(fold(text))
        if self.stopwords:
            words = [w for w in words if w not in ENGLISH_STOPWORDS]
        if self.stem and words:
            words = list(self._stemmer().stemWords(words))
        return words

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, term) of each word of `text` that yields a term, with the analysis of __call__: what
        highlighting marks. A word of the original whose folded form splits gives the term of its first part."""
        lowered = text.lower()
        if len(lowered) == len(text) and unicodedata.is_normalized("NFC", text) and _DOT_ABOVE not in lowered:
            # Most texts: already NFC, with a lower case of the same length that `fold` leaves alone, so one pass
            # over the lower-cased text finds the same words at the same offsets. Word by word, a 90,000-character
            # text took ~60 ms, most of it the per-word NFC and lower case (QA: highlights of 100 such hits took
            # seconds).
            stop = ENGLISH_STOPWORDS if self.stopwords else frozenset()
            found = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(lowered) if m.group() not in stop]
        else:
            found = []
            for match in _WORD.finditer(text):
                parts = _WORD.findall(fold(match.group()))
                if self.stopwords:
                    parts = [w for w in parts if w not in ENGLISH_STOPWORDS]
                if parts:
                    found.append((match.start(), match.end(), parts[0]))
        if self.stem and found:
            stems = self._stemmer().stemWords([term for _, _, term in found])
            found = [(start, end, stem) for (start, end, _), stem in zip(found, stems, strict=True)]
        return found

    def config(self) -> dict[str, object]:
        """JSON-able description; an index must be queried with the tokenizer it was built with."""
        return {
            "kind": "snowball",
            "language": self.language,
            "stem": self.stem,
            "stopwords": self.stopwords,
            "words": "\\w then \\w or combining marks",
            "unicode_version": unicodedata.unidata_version,  # which \w, marks, NFC and lower case follow
            "lowercase": True,
            "unicode": "NFC",
            "analysis": ANALYSIS_VERSION,
        }
