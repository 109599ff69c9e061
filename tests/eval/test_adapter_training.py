"""The default adapter's training set: which queries weigh as which group, and the per-collection report."""

import re

import numpy as np

from app.engine.judgments import TrainingSet
from app.engine.tokenizer import ENGLISH_STOPWORDS
from app.eval.adapter_training import JUNK_GROUP, NONWORD_SEED, Collected
from app.eval.relevance_report import contentless_queries, nonword_queries, pseudoword_queries


def _collected() -> Collected:
    labels = [np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), np.zeros(3), np.zeros(3), np.array([0.0, 0.0, 1.0])]
    data = TrainingSet(np.zeros((5, 4)), [np.array([0.9, 0.5, 0.1])] * 5, labels, [np.zeros(3)] * 5,
                       np.zeros((5, 7)))
    return Collected(data, ["a", "a", "a", "a", "b"], ["judged", "judged", "non-word", "contentless", "judged"],
                     ["a test (2 judged queries)", "b test (1 judged queries)"])


def test_queries_with_no_topic_weigh_as_one_group_whatever_their_collection() -> None:
    assert _collected().groups == ["a", "a", JUNK_GROUP, JUNK_GROUP, "b"]
    made_up = Collected(_collected().data, ["a"] * 5, ["judged", "pseudo-word", "non-word", "judged", "judged"], [])
    assert made_up.groups == ["a", JUNK_GROUP, JUNK_GROUP, "a", "a"]


def test_the_report_gives_each_collections_recall_kept_and_junk_hits() -> None:
    probabilities = [np.array([0.9, 0.2, 0.1]), np.array([0.4, 0.3, 0.1]), np.array([0.6, 0.1, 0.1]),
                     np.array([0.1, 0.1, 0.1]), np.array([0.9, 0.9, 0.1])]
    report = _collected().out_of_fold_report(probabilities, 0.25)
    # a's judged queries keep 1 and 2 candidates, both relevant ones among them; its non-word query keeps 1
    assert report["a"] == {"recall_kept": 1.0, "kept_per_query": 1.5, "non-word_hits_per_query": 1.0,
                           "contentless_hits_per_query": 0.0}
    assert report["b"] == {"recall_kept": 0.0, "kept_per_query": 2.0}  # its relevant one is cut


def test_contentless_queries_are_stop_words_and_numbers_only() -> None:
    for query in contentless_queries(60, seed=3):
        assert query and all(w in ENGLISH_STOPWORDS or w.isdigit() for w in query.split())


def test_made_up_words_read_like_english_and_training_draws_other_ones_than_the_evaluation() -> None:
    queries = pseudoword_queries(200, seed=0)
    assert queries == pseudoword_queries(200, seed=0)
    words = [w for q in queries for w in q.split()]
    assert {len(q.split()) for q in queries} == {1, 2}
    # letters only, and no run of five consonants: every syllable has a vowel, where random strings of letters
    # (the other non-word queries) often have such runs
    assert all(w.isalpha() and w.islower() and not re.search("[^aeiou]{5}", w) for w in words)
    assert any(re.search("[^aeiou]{5}", w) for q in nonword_queries(50, seed=0) for w in q.split())
    assert not set(queries) & set(pseudoword_queries(200, seed=NONWORD_SEED))
