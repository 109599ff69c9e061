"""Behaviour of the query/document tokenizer."""

import json
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.engine.tokenizer import ENGLISH_STOPWORDS, Tokenizer, names_a_topic


def test_lower_cases_and_splits_on_non_word_characters() -> None:
    tok = Tokenizer(stem=False, stopwords=False)
    assert tok("Hello, WORLD! e-mail foo_bar 42") == ["hello", "world", "e", "mail", "foo_bar", "42"]
    assert tok("") == []
    assert tok("  ...  ") == []


def test_unicode_words_are_kept_whole_without_their_accents() -> None:
    """A query typed without accents finds the text written with them, and back (it found nothing: QA)."""
    tok = Tokenizer(stem=False)
    assert tok("Café naïve Ångström Straße Łódź Ελλάδα ΣΊΣΥΦΟΣ") == [
        "cafe", "naive", "angstrom", "strasse", "lodz", "ελλαδα", "σισυφοσ"]
    assert Tokenizer()("Café naïve") == Tokenizer()("cafe NAIVE") == ["cafe", "naiv"]
    # Marks that make another letter stay: a Cyrillic breve, a Devanagari vowel sign.
    assert tok("йод हिन्दी") == ["йод", "हिन्दी"]
    # Arabic's and Hebrew's vowel marks, written in some texts and left out of most, go (they were kept: QA).
    assert tok("كِتَاب الكـتاب שָׁלוֹם") == tok("كتاب الكتاب שלום") == ["كتاب", "الكتاب", "שלום"]


def test_chinese_and_japanese_are_read_two_characters_at_a_time() -> None:
    """They write no spaces between words: a run of their characters was one term, so "東京" did not find
    "東京は日本の首都です" (QA). Each two neighbours are a term, a lone character one; other scripts in the same
    run of word characters keep their words."""
    tok = Tokenizer(stem=False)
    assert tok("東京は日本の首都です") == ["東京", "京は", "は日", "日本", "本の", "の首", "首都", "都で", "です"]
    assert set(tok("東京")) <= set(tok("東京は日本の首都です")) and set(tok("首都")) <= set(tok("東京は日本の首都です"))
    assert tok("Python3は東京 京") == ["python3", "は東", "東京", "京"]
    # Korean writes spaces, but between words with their particles: "서울" (Seoul) finds "서울에서" (in Seoul).
    assert tok("서울에서 특별시") == ["서울", "울에", "에서", "특별", "별시"]
    # Thai (and Lao, Khmer, Burmese) writes spaces between phrases: "ภาษา" (language) found nothing in "ภาษาไทย".
    assert tok("ภาษา") == ["ภา", "าษ", "ษา"] and set(tok("ภาษา")) <= set(tok("ภาษาไทย เป็นภาษาราชการ"))
    assert set(tok("ភាសា")) <= set(tok("ភាសាខ្មែរ"))  # a letter keeps its vowel signs
    text = "Python3は東京 京"
    assert [(text[start:end], term) for start, end, term in tok.spans(text)] == [
        ("Python3", "python3"), ("は東", "は東"), ("東京", "東京"), ("京", "京")]


def test_a_point_or_comma_between_digits_stays_in_the_word() -> None:
    """Split, "python 3.11" ranked "Python 11.3" first (QA): as in Unicode's word boundaries, a number keeps its
    inner points and commas, a version or an address is one term, and a point that ends a sentence is not kept."""
    tok = Tokenizer(stem=False)
    assert tok("Python 3.11 in 1,000 cells at 0.5%; v2.4.1 on 192.168.0.1. Then 3, 4 and 5.") == [
        "python", "3.11", "1,000", "cells", "0.5", "v2.4.1", "192.168.0.1", "3", "4", "5"]
    assert tok("３．１１ e.g. a.b") == ["3.11", "e", "g", "b"]
    text = "Python 3.11, v2."
    assert [(text[start:end], term) for start, end, term in tok.spans(text)] == [
        ("Python", "python"), ("3.11", "3.11"), ("v2", "v2")]


def test_stop_words_are_dropped() -> None:
    assert Tokenizer(stem=False)("The cat and THE hat, don't you think?") == ["cat", "hat", "think"]
    assert Tokenizer(stem=False, stopwords=False)("the cat") == ["the", "cat"]
    assert len(ENGLISH_STOPWORDS) == 179 - 29  # NLTK's, without the halves of contractions
    assert {"the", "a", "wouldn't", "should've"} <= ENGLISH_STOPWORDS


def test_a_contraction_is_one_word_and_its_halves_are_content() -> None:
    """"don't" was "don" and "t", both stop words, which also dropped "vitamin d", "t cells" and "who won" to
    their other words (QA). A contraction is now one word, a stop word's contractions are stop words, Snowball
    takes "'s" off the others, and the letters and words it was made of count where they stand alone."""
    tok = Tokenizer()
    assert tok("Vitamin D and T cells: who won? Don’t, I'm, they've, can't, it's") == [
        "vitamin", "d", "t", "cell", "won"]
    assert tok("John’s and John's O'Brien; students' '90s") == ["john", "john", "o'brien", "student", "90s"]
    text = "Don’t take John’s vitamin D"
    assert [(text[start:end], term) for start, end, term in tok.spans(text)] == [
        ("take", "take"), ("John’s", "john"), ("vitamin", "vitamin"), ("D", "d")]


def test_stemming_after_stop_word_removal() -> None:
    tok = Tokenizer()
    assert tok("running runs ran") == ["run", "run", "ran"]
    # "doings" is not a stop word, so it survives and only then stems to "do" (which is one).
    assert tok("doings doing") == ["do"]
    assert Tokenizer(stem=False)("running") == ["running"]


def test_query_and_document_forms_meet() -> None:
    tok = Tokenizer()
    assert set(tok("Cycling cyclists cycled")) & set(tok("cycles"))


def test_config_is_json_and_describes_the_analysis() -> None:
    config = Tokenizer("porter", stem=False).config()
    assert json.loads(json.dumps(config)) == config
    assert config["language"] == "porter"
    assert config["stem"] is False
    assert config["stopwords"] is True
    assert Tokenizer().config() != Tokenizer(stem=False).config()


def test_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer language 'klingon'"):
        Tokenizer("klingon")


def test_other_languages_need_stopwords_off() -> None:
    with pytest.raises(ValueError, match="stopwords=False"):
        Tokenizer("french")
    assert Tokenizer("french", stopwords=False)("Les CHANTAIENT") == ["le", "chant"]


def test_safe_to_share_between_threads() -> None:
    tok = Tokenizer()
    texts = [f"Running searches over indexed documents number {i}" for i in range(400)]
    expected = [tok(t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(tok, texts)) == expected


@pytest.mark.parametrize(("query", "topic"), [("the", False), ("what is it", False), ("?!", False), ("42", False),
                                              ("of the 1999 42", False), ("3.14 or 2,000", False),
                                              ("covid 19", True), ("b12", True), ("v3.2", True),
                                              ("vitamin", True), ("Fourier", True)])
def test_a_topic_needs_a_word_that_is_not_a_number(query: str, topic: bool) -> None:
    assert names_a_topic(Tokenizer()(query)) is topic


def test_decomposed_and_composed_text_give_the_same_terms() -> None:
    """NFD text ("e" + U+0301) was split at each accent: "résumé" gave "re" and "sume" (QA)."""
    composed = "Ångström résumé naïve"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    tok = Tokenizer()
    assert tok(decomposed) == tok(composed) == ["angstrom", "resum", "naiv"]
    # Highlighting marks whole words in the original (decomposed) text, at its own offsets.
    spans = tok.spans(decomposed)
    assert [term for _, _, term in spans] == tok(composed)
    assert [decomposed[start:end] for start, end, _ in spans] == decomposed.split()


@pytest.mark.parametrize("text", ["The Fractures of a hip, don't they? 3.14 e_mail",
                                  "Öl-Preise: ǅemal's Straße ẞ, Σίσυφος ΣΊΣΥΦΟΣ, ﬁnance",
                                  "\uff21\uff42\uff43 \uff11\uff12\uff13 (full width)",
                                  "İstanbul ŞEHİR (a lower case two characters long)", "naïve café résumé",
                                  "हिन्दी भाषा, q\u0303x (marks with no composed form)",
                                  "東京都は日本の首都です。Straße 葛\U000e0100飾 ﾃｽﾄ"])
def test_the_one_pass_spans_are_the_word_by_word_ones(text: str) -> None:
    """Most texts take one pass over their lower case; a dot above (U+0307, which the analysis folds after an
    "i") anywhere sends a text word by word. A lone mark after a space belongs to no word, so both must give the
    same spans (SciFact, NFCorpus, CISI and CACM's 36,004 titles, texts and queries did, checked once)."""
    tokenizer = Tokenizer()
    assert tokenizer.spans(text) == tokenizer.spans(text + " \u0307")


def test_combining_marks_stay_in_their_words() -> None:
    """Python's \\w leaves combining marks out: Hindi's vowel signs and viramas split "हिन्दी भाषा" into "ह", "न",
    "द", "भ" and "ष", single letters that matched every word sharing one."""
    tok = Tokenizer(stem=False)
    # Then a mark with no composed form between two letters, Brahmi (marks past U+FFFF), and an ideograph with a
    # variation selector (U+E0100) before the next.
    text = "हिन्दी भाषा q\u0303x 𑀩𑁆𑀭𑀸𑀳𑁆𑀫𑀻 葛\U000e0100飾"
    assert tok(text) == ["हिन्दी", "भाषा", "qx", "𑀩𑁆𑀭𑀸𑀳𑁆𑀫𑀻", "葛\U000e0100飾"]
    assert [text[start:end] for start, end, _ in tok.spans(text)] == text.split()
    assert tok("भाषा") != tok("भ")


def test_a_dotted_capital_i_is_an_i() -> None:
    """"İ" lower-cases in Python to "i" + U+0307, which split words: "İstanbul" gave "i" and "stanbul", and a query
    for "istanbul" did not find it (QA). It is "i", as Lucene's lower case has it, composed or decomposed."""
    tok = Tokenizer()
    decomposed = unicodedata.normalize("NFD", "İSTANBUL ŞEHİR")
    assert tok("İstanbul ŞEHİR") == tok(decomposed) == tok("istanbul şehir") == ["istanbul", "sehir"]
    for text in ("İstanbul ŞEHİR", decomposed):
        assert tok.spans(text) == [(0, text.index(" "), "istanbul"), (text.index(" ") + 1, len(text), "sehir")]
    # The dot goes with the accents of Latin letters.
    assert Tokenizer(stem=False, stopwords=False)("ki\u0307\u0300s e\u0307") == ["kis", "e"]
    assert Tokenizer().config()["analysis"] == 4


def test_decomposed_korean_is_cut_for_highlights_as_for_the_index() -> None:
    """Korean written decomposed (NFD: two or three jamo a syllable, as macOS writes it) was found by a search but
    never highlighted: the word-by-word spans paired its jamo, the index its syllables (QA)."""
    tok = Tokenizer()
    composed = "서울에서 만나요 Café"
    decomposed = unicodedata.normalize("NFD", composed)
    assert len(decomposed) > len(composed)
    spans = tok.spans(decomposed)
    assert [term for _, _, term in spans] == tok(decomposed) == tok(composed)
    assert [unicodedata.normalize("NFC", decomposed[start:end]) for start, end, _ in spans] == [
        "서울", "울에", "에서", "만나", "나요", "Café"]


def test_a_word_is_read_in_its_compatibility_form() -> None:
    """Text extracted from PDFs writes ligatures ("signiﬁcant"), Japanese and Chinese text full-width letters and
    digits ("ＡＢＣ１２３") or half-width kana ("ﾃｽﾄ"): a query typed on an ordinary keyboard found none of them (QA).
    Each word is read in its NFKC form, after the words are found, so a symbol beside a word stays out of it."""
    tok = Tokenizer(stem=False)
    assert tok("signiﬁcant ﬂow") == tok("significant flow") == ["significant", "flow"]
    assert tok("ＡＢＣ１２３ Ｃａｆé") == ["abc123", "cafe"]
    assert tok("ﾃｽﾄ ｶﾞｽ") == tok("テスト ガス") == ["テス", "スト", "ガス"]
    assert tok("Brand™ ℌilbert") == ["brand", "hilbert"]
    assert tok("½") == ["1", "2"]
    # Highlights mark the word as the text writes it, each kana pair on its own characters.
    text = "A signiﬁcant ＡＢＣ ﾃｽﾄ"
    assert [(text[start:end], term) for start, end, term in tok.spans(text)] == [
        ("signiﬁcant", "significant"), ("ＡＢＣ", "abc"), ("ﾃｽ", "テス"), ("ｽﾄ", "スト")]
