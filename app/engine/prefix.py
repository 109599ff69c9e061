"""Prefix search: the terms a word being typed at the end of a query may become."""

from app.engine.collection import Collection
from app.engine.types import PREFIX_COMPLETIONS


def completed(collection: Collection, query: str, tokens: list[str], depth: int) -> list[str]:
    """The query's terms and, when it ends in a word (a word being typed: no space or punctuation after it) that
    is in fewer documents than the search reads (`depth`), up to PREFIX_COMPLETIONS terms of the collection it may
    become: the stems of the word with an English ending, then the commonest terms it begins (none the query has
    already). A word in that many is taken as typed: its completions, each a term of its own, outranked it
    ("gene" ranked "generalist" and "generic" first, rarer and so weightier in BM25). The query's own statistics
    (its number of terms, whether it names a topic) still read only its terms. Under the collection's read lock."""
    spans = collection.tokenizer.spans(query)
    if not spans or spans[-1][1] != len(query):
        return tokens
    start, _, last = spans[-1]
    lexical = collection.lexical
    if lexical.document_frequency(last) >= depth:
        return tokens
    # First the stems of the words it may become ("runni": "run", whose stem no completion of "runni" reaches),
    # the commonest first, then the terms it begins.
    ended = sorted({stem for stem in collection.tokenizer.stems_of_partial(query[start:])
                    if stem not in tokens and lexical.document_frequency(stem) > 0},
                   key=lambda stem: (-lexical.document_frequency(stem), stem))
    begun = [term for term in lexical.completions(last, PREFIX_COMPLETIONS) if term not in tokens and term not in ended]
    return tokens + (ended + begun)[:PREFIX_COMPLETIONS]
