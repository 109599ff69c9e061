"""Text-to-token analyser shared by indexing and querying so both see the same terms."""

from __future__ import annotations

import itertools
import re
import threading
import unicodedata
from collections.abc import Iterable

import Stemmer

# NLTK's English list (179 words), verbatim so it can be compared with other tools.
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
# Its halves of contractions ("don" and "t" of "don't") are left out: a contraction is one word (`_WORD`), and as
# words of their own they are content: "vitamin d" was searched as "vitamin", "t cells" as "cells", "who won" as
# "who" (QA). Lexical nDCG@10 on the four shared collections moved by +0.001 / -0.000 / -0.001 / -0.005 (SciFact,
# NFCorpus, CISI, CACM; CACM's is one query whose "W.M. Kahn" now has its "m").
_CONTRACTION_HALVES = frozenset({"s", "t", "d", "ll", "m", "o", "re", "ve", "y", "ma", "ain", "aren", "couldn", "didn",
                                 "doesn", "hadn", "hasn", "haven", "isn", "mightn", "mustn", "needn", "shan",
                                 "shouldn", "wasn", "weren", "won", "wouldn", "don"})
ENGLISH_STOPWORDS: frozenset[str] = frozenset(_NLTK_ENGLISH.split()) - _CONTRACTION_HALVES
# A stop word's contractions are stop words too ("i'm", "they've", "that's", "doesn't", "can't"); Snowball takes
# "'s" off other words ("john's" is "john").
_STOP_CONTRACTIONS = frozenset({f"{word}'{clitic}" for word in ENGLISH_STOPWORDS if "'" not in word
                                for clitic in ("s", "d", "m", "ll", "re", "ve")}
                               | {f"{word}n't" for word in ENGLISH_STOPWORDS} | {"can't", "won't", "shan't", "ain't"})
_STOP = ENGLISH_STOPWORDS | _STOP_CONTRACTIONS


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
# A "." or "," between two digits stays in the word, as Unicode's word boundaries (UAX #29) and Elasticsearch's
# standard tokenizer keep it: "3.11", "1,000", "v2.4.1" and "192.168.0.1" are one term each. Split, "python 3.11"
# ranked "Python 11.3" first (QA). Lexical nDCG@10 on the four shared collections moved by at most 0.0006.
# So does an apostrophe between two letters: "don't", "it's", "o'brien" are one word each, as they are there.
# Possessive (*+): nothing a word has taken is given back, which also made finding the words ~5% faster.
_WORD = re.compile(rf"\w[\w{_BMP_MARKS}]*+(?:[.,\uff0c\uff0e](?<=\d[.,\uff0c\uff0e])(?=\d)[\w{_BMP_MARKS}]*+"
                   rf"|['\u2019](?<=[^\W\d_]['\u2019])(?=[^\W\d_])[\w{_BMP_MARKS}]*+)*+"
                   rf"(?:(?=[\U00010000-\U0010ffff])[{_ASTRAL_MARKS}]++[\w{_BMP_MARKS}]*+)*+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Snowball has two English stemmers; the stop word list applies to both.
_ENGLISH = frozenset({"english", "porter"})
# Which analysis an index holds (`Tokenizer.config`); one made with another is analysed again from the store.
# 2 (2026-12-03): words keep their combining marks (Hindi's "हिन्दी" was "ह", "न", "द"), and "İ" lower-cases to "i"
# as Lucene's LowerCaseFilter has it (one code point to one), not to Python's "i" + U+0307, which split
# "İstanbul" into "i" and "stanbul", so "istanbul" did not find it (QA).
# 3 (2026-12-05): Latin and Greek letters lose their accents ("café" is "cafe") and Chinese and Japanese text is
# read two characters at a time ("東京は日本の首都です" holds "東京", "日本" and "首都"), as is Korean; see `unaccented`
# and `_pieces`.
# 4 (2026-12-05): a word is read in its compatibility form: "ﬁnding" is "finding", full-width "ＡＢＣ１２３" is
# "abc123", half-width "ﾃｽﾄ" is "テスト" (`_compatible`); and a point or comma between digits stays in the word
# ("3.11", "1,000"; `_WORD`), as does an apostrophe between letters ("don't"), and English stop words no longer
# hold contractions' halves ("vitamin d"; `ENGLISH_STOPWORDS`); Arabic and Hebrew lose their vowel marks
# (`_ACCENTS`); Thai, Lao, Khmer and Burmese are read two characters at a time (`UNSPACED`).
ANALYSIS_VERSION = 4
_DOT_ABOVE = "\u0307"
# The accents (U+0300-U+036F) on a Latin or Greek letter, once decomposed (NFD): a query typed without them finds
# the text written with them, and back ("cafe", "café"; "naive", "naïve"; "Ελλάδα", "ελλαδα"), as Meilisearch,
# Typesense and Algolia do by default and Elasticsearch with its `asciifolding` filter. Marks on other scripts
# stay: a Devanagari vowel sign or a Cyrillic breve ("й") makes another letter, not an accented one. Arabic's
# short vowels and shadda and its tatweel (a stretch for justification), and Hebrew's vowel points and
# cantillation, are written in some texts and left out of most: they go too, as Lucene's Arabic normaliser and
# Hebrew analysers drop them ("كِتَاب" is "كتاب", "שָׁלוֹם" is "שלום").
_ACCENTS = re.compile("(?<=[a-z\u00df-\u024f\u1e00-\u1eff\u0370-\u03ff])[\u0300-\u036f]+"
                      "|[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0640\u064b-\u0652]+")
# The letters with no decomposition that the same filters spell out, and Greek's final sigma as a sigma.
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ł": "l",
                          "\u0131": "i", "þ": "th", "ĳ": "ij", "ŀ": "l", "\u03c2": "\u03c3",  # dotless i, final sigma
                          "\u2019": "'"})  # a typographic apostrophe: "don’t" is "don't"
# Chinese and Japanese write no spaces between words, so a run of their characters was one "word" that only the
# same run could match: "東京" did not find "東京は日本の首都です". With no dictionary to cut words, each two
# neighbouring characters are a term (Elasticsearch's `cjk_bigram`, Lucene's CJKAnalyzer; a lone character is
# one), so a query's words meet the text's wherever they occur. Han (with its extensions and compatibility
# forms), kana, the iteration marks, and Hangul as CJKAnalyzer has it: Korean writes spaces, but between words
# that carry their particles ("서울에서", in Seoul), which "서울" did not find. Thai, Lao, Khmer and Burmese write
# spaces between phrases, not words, and are read the same way ("ภาษา" finds "ภาษาไทย"; a dictionary would cut
# their words better, and none is installable here: no ICU). A character keeps the marks that follow it (a
# variation selector, a Thai vowel sign).
_UNSPACED_CHARS = ("\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u2e80-\u2fdf\u3005\u3007\u3021-\u3029"
                   "\u3038-\u303b\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                   "\uf900-\ufaff\uff66-\uff9f\uffa0-\uffdc\U00020000-\U0003134f")
UNSPACED = re.compile(f"[{_UNSPACED_CHARS}]")
_UNSPACED_RUN = re.compile(f"(?:[{_UNSPACED_CHARS}][{MARKS}]*)+")
_UNSPACED_CHAR = re.compile(f"[{_UNSPACED_CHARS}][{MARKS}]*")


def fold(text: str) -> str:
    """The lower case the analysis finds words in: of the text's NFC form (a word then loses its accents:
    `unaccented`)."""
    return unicodedata.normalize("NFC", text).lower()


def unaccented(word: str) -> str:
    """A lower-case word without the accents of its Latin and Greek letters (`_ACCENTS`; "i" + U+0307, what "İ"
    lower-cases to, loses its dot with them), and `_SPELLED`'s letters spelled out ("straße" as "strasse")."""
    if word.isascii():
        return word
    bare = _ACCENTS.sub("", unicodedata.normalize("NFD", word))
    return unicodedata.normalize("NFC", bare).translate(_SPELLED)


def _terms(word: str) -> list[tuple[int, int, str]]:
    """(start, end, term) of each term of a word that is not ASCII and in its compatibility form (one match of
    `_WORD` in folded text; `_compatible`)."""
    return [(start, end, word[start:end] if paired else unaccented(word[start:end]))
            for start, end, paired in _pieces(word)]


def _compatible(word: str) -> str:
    """A folded word in its compatibility form (NFKC), lower case: "ﬁ" is "fi", full-width "Ａ１" is "a1", "ℌ" is
    "h", half-width "ｶﾞｽ" is the "ガス" of full-width Japanese (Elasticsearch's ICU normaliser, NFKC with case
    folding). Taken word by word, after the words are found, so "Brand™" stays "brand" and not "brandtm"."""
    return unicodedata.normalize("NFKC", word).lower()


def _word_terms(word: str) -> list[str]:
    """The terms of a word that is not ASCII (one match of `_WORD` in folded text): those of its compatibility
    form, which may hold more than one word ("½" is "1⁄2": "1" and "2")."""
    compatible = _compatible(word)
    if compatible == word:
        return [term for _, _, term in _terms(word)]
    return [term for part in _WORD.findall(compatible) for _, _, term in _terms(part)]


def _pieces(word: str) -> list[tuple[int, int, bool]]:
    """Where the terms of `word` (one match of `_WORD`) lie in it, and whether each is of characters read in
    pairs (`UNSPACED`: Chinese, Japanese, Korean, Thai...): the whole word, or, where it holds those, each two
    neighbours of theirs (a lone one alone) and each other part of it."""
    if not UNSPACED.search(word):
        return [(0, len(word), False)]
    pieces, at = [], 0
    for run in _UNSPACED_RUN.finditer(word):
        if run.start() > at:
            pieces.append((at, run.start(), False))
        chars = [(char.start(), char.end()) for char in _UNSPACED_CHAR.finditer(word, run.start(), run.end())]
        pieces.extend((chars[i][0], chars[i + 1][1], True) for i in range(len(chars) - 1))
        if len(chars) == 1:
            pieces.append((*chars[0], True))
        at = run.end()
    if at < len(word):
        pieces.append((at, len(word), False))
    return pieces


# A character and what composes with it under NFKC: its combining marks, for a Hangul leading jamo the vowel and
# final jamo that make one syllable with it, and half-width kana's voiced and semi-voiced sound marks.
_COMPOSING = f"{MARKS}\u1160-\u11ff\ud7b0-\ud7ff\uff9e\uff9f"
_CLUSTER = re.compile(f"[^{_COMPOSING}][{_COMPOSING}]*|[{_COMPOSING}]+")


def _folded_with_offsets(word: str) -> tuple[str, dict[int, int]]:
    """`word` folded cluster by cluster (`_CLUSTER`; as _compatible(fold(word)) but for a final sigma's case, which
    `unaccented` makes a sigma anyway), and for each offset between clusters of it, the offset in `word`: where a
    piece of the folded word lies in the original. Linear in the word: a long word took the square of its length."""
    parts, at, length = [], {0: 0}, 0
    for cluster in _CLUSTER.finditer(word):
        parts.append(_compatible(fold(cluster.group())))
        length += len(parts[-1])
        at[length] = cluster.end()
    return "".join(parts), at


def names_a_topic(terms: list[str]) -> bool:
    """Whether an analysed query holds a word: not only numbers, nor nothing at all (stop words alone, punctuation).
    The relevance filter lets such a query's candidates be relevant only where they match it lexically
    (app/engine/hybrid.py, `filter_by_relevance`)."""
    return any(not _NUMBER.fullmatch(term) for term in terms)


def _words(text: str) -> list[str]:
    """The text's terms before stop words and stems: its folded words, each non-ASCII one read in its
    compatibility form without accents, or in pairs of characters (`_word_terms`)."""
    folded = fold(text)
    words = _WORD.findall(folded)
    if folded.isascii():  # only words that are not ASCII can lose an accent or fall in pieces
        return words
    terms: list[str] = []
    for word in words:
        if word.isascii():
            terms.append(word)
        else:
            terms.extend(_word_terms(word))
    return terms


# English endings (inflections and common derivations) and every tail of each: the ways a word being typed may
# end ("runni" + "ng"). `Tokenizer.stems_of_partial`.
_ENDINGS = ("ing", "ings", "ed", "er", "ers", "est", "es", "s", "ion", "ions", "ation", "ations", "ness", "ly", "ment",
            "ments", "ity", "ities", "ies", "ied", "able", "ible", "al", "ally", "ive", "ful", "ous", "ize", "ized",
            "izing", "ise", "ised", "ising", "ence", "ance", "ent", "ant", "ism", "ist", "ists", "ic", "ical", "y", "e")
_TAILS = tuple(sorted({ending[i:] for ending in _ENDINGS for i in range(len(ending))}))


def _placed(word: str, offset: int, stop: frozenset[str]) -> list[tuple[int, int, str]]:
    """The spans of one word of a text, at `offset` in it: the folded word cut as __call__ cuts it, each piece placed
    back on the original word (decomposed Korean is two to three jamo a syllable, and its jamo pairs never met a
    query's syllable pairs; "ﾃｽﾄ" is read as "テスト")."""
    found = []
    folded, at = _folded_with_offsets(word)
    for start, end, _ in _pieces(folded):
        parts = [unaccented(w) for w in _WORD.findall(folded[start:end])]
        parts = [w for w in parts if w not in stop]
        if parts and start in at and end in at:
            found.append((offset + at[start], offset + at[end], parts[0]))
    return found


class Tokenizer:
    """Lower-case Unicode words of the text's NFC form, each in its compatibility form (`_compatible`) without
    accents (`unaccented`; Chinese, Japanese and Korean two characters at a time), English stop words removed,
    Snowball-stemmed."""

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
        words = _words(text)
        if self.stopwords:
            words = [w for w in words if w not in _STOP]
        if self.stem and words:
            words = list(self._stemmer().stemWords(words))
        return words

    def stems_of_partial(self, word: str) -> list[str]:
        """The stems of the words a partly typed English `word` may become with an ending: "runni" is "run" (as in
        "running"), "connecti" "connect", "studyi" "studi", where completing the stem itself finds nothing (the
        stem of "running" is no continuation of "runni"). Each ending's tails are tried ("ing", "ng", "g"), so
        most tries are no word at all and so no term of any collection."""
        words = _words(word)
        if not (self.stem and self.language in _ENGLISH and words and words[-1].isalpha()):
            return []
        return list(self._stemmer().stemWords([words[-1] + tail for tail in _TAILS]))

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, term) of each word of `text` that yields a term, with the analysis of __call__: what
        highlighting marks. A word of the original whose folded form splits gives the term of its first part."""
        lowered = text.lower()
        stop = _STOP if self.stopwords else frozenset()
        found = []
        if len(lowered) == len(text) and unicodedata.is_normalized("NFC", text) and _DOT_ABOVE not in lowered:
            # Most texts: already NFC, with a lower case of the same length, so one pass over the lower-cased text
            # finds the same words at the same offsets, and only a word that is not ASCII is folded again. Word by
            # word, a 90,000-character text took ~60 ms, most of it the per-word NFC and lower case (QA:
            # highlights of 100 such hits took seconds).
            for match in _WORD.finditer(lowered):
                word = match.group()
                if word.isascii():
                    if word not in stop:
                        found.append((match.start(), match.end(), word))
                    continue
                if _compatible(word) != word:  # "ﬁnance", full-width or half-width letters: placed as below
                    found.extend(_placed(word, match.start(), stop))
                    continue
                for start, end, term in _terms(word):
                    if term not in stop:
                        found.append((match.start() + start, match.start() + end, term))
        else:
            for match in _WORD.finditer(text):
                found.extend(_placed(match.group(), match.start(), stop))
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
            "words": "\\w then \\w or combining marks, a point or comma between digits, an apostrophe between "
                     "letters",
            "unicode_version": unicodedata.unidata_version,  # which \w, marks, NFC and lower case follow
            "lowercase": True,
            "unicode": "NFC, then each word NFKC",
            "accents": "removed from Latin and Greek letters; Arabic and Hebrew vowel marks removed",
            "cjk": "bigrams, as are Thai, Lao, Khmer and Burmese",
            "analysis": ANALYSIS_VERSION,
        }
