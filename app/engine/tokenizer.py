"""Text-to-token analyser shared by indexing and querying so both see the same terms."""

from __future__ import annotations

import re
import threading
import unicodedata

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

_WORD = re.compile(r"\w+")
# A word of the original text for `spans`, combining diacritics included: decomposed (NFD) text, as macOS and some
# PDFs write it, has "re" + U+0301 + "sume" + U+0301 for "résumé", which \w+ split in two. The analysis works on
# the NFC form, where such a word is one; this finds the same words in the original, whose offsets marks need.
MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_WORD_WITH_MARKS = re.compile(rf"\w[\w{MARKS}]*")
_MARK = re.compile(rf"[{MARKS}]")
# Snowball has two English stemmers; the stop word list applies to both.
_ENGLISH = frozenset({"english", "porter"})
# Which analysis an index holds (`Tokenizer.config`); one made with another is analysed again from the store.
# 2 (2026-12-03): "İ" lower-cases to "i" as Lucene's LowerCaseFilter has it (one code point to one), not to Python's
# "i" + U+0307, which \w+ split: "İstanbul" gave "i" and "stanbul", and "istanbul" did not find it (QA).
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
        highlighting marks. A word the analysis splits (a mark with no composed form between letters) gives the
        term of its first part."""
        lowered = text.lower()
        if len(lowered) == len(text) and unicodedata.is_normalized("NFC", text) and not _MARK.search(text):
            # Most texts: already NFC, with no combining marks and a lower case of the same length, so one pass
            # over the lower-cased text finds the same words at the same offsets. Word by word, a 90,000-character
            # text took ~60 ms, most of it the per-word NFC and lower case (QA: highlights of 100 such hits took
            # seconds).
            stop = ENGLISH_STOPWORDS if self.stopwords else frozenset()
            found = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(lowered) if m.group() not in stop]
        else:
            found = []
            for match in _WORD_WITH_MARKS.finditer(text):
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
            "pattern": _WORD.pattern,
            "lowercase": True,
            "unicode": "NFC",
            "analysis": ANALYSIS_VERSION,
        }
