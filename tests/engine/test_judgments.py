"""Training sets built from a collection's judgments: a min-max map is trained on the scale a search serves."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.engine import judgments
from app.engine.judgments import build_training_set, merge_judgments, probabilities, query_vectors
from app.engine.relevance import CosineAdapter, train_and_calibrate
from app.engine.relevance.calibration import Calibration
from app.engine.relevance.inputs import minmax_scaled
from app.engine.types import TrainingExample
from app.errors import InvalidInput


def test_judged_irrelevant_documents_beyond_the_shown_list_do_not_stretch_the_scale(animals: TestClient) -> None:
    """A search scales each cosine over its own shown top hits. A document judged irrelevant that the search never
    shows joins the training pool, but not that scale: with it, the pool's worst cosine would sit below anything
    a search of this query reads, and the map would learn every shown hit higher than it is served."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("animals")
    example = TrainingExample("a loyal pet that barks", relevant_ids=["dog"], irrelevant_ids=["rocket"])
    data = build_training_set(collection, engine.embedder, [example], depth=3)
    pool_size, shown = data.cosines[0].size, data.references[0]
    assert shown.size == 3 and pool_size == 4  # the top 3, and the rocket judged beyond them
    beyond = np.setdiff1d(data.cosines[0], shown)  # the rocket's cosine: well below what the search shows
    assert beyond.size == 1 and beyond[0] < shown.min()
    adapter = CosineAdapter("linear", CosineAdapter.identity_like(data.query_embs.shape[1], 8.0, -4.0).weights,
                            calibration=Calibration(0.5, 0.95, {0.95: 0.5}), cosine_scale="minmax")
    served = adapter.probabilities(data.query_embs[0], data.cosines[0], reference=shown)
    assert probabilities(adapter, data)[0].tolist() == pytest.approx(served.tolist())
    assert served.tolist() != pytest.approx(adapter.probabilities(data.query_embs[0], data.cosines[0]).tolist())


def test_a_minmax_adapter_is_fitted_on_the_cosines_scaled_over_the_references() -> None:
    """Trained with references, the members see exactly the pools scaled over them: the same networks as a raw
    map trained on those scaled pools."""
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((30, 4))
    labels = [np.r_[1.0, np.zeros(9)] for _ in range(30)]
    cosines = [np.r_[0.7, rng.uniform(0.2, 0.6, 9)] + 0.05 * rng.standard_normal(10) for _ in range(30)]
    references = [c[:6] for c in cosines]  # the last four: judged beyond the shown list
    fit = {"family": "linear", "folds": 3, "repeats": 1, "hidden": 4, "steps": 20, "val_fraction": 0.0}
    scaled = train_and_calibrate(queries, cosines, labels, cosine_scale="minmax", references=references, **fit)
    by_hand = train_and_calibrate(queries, [minmax_scaled(c, r) for c, r in zip(cosines, references, strict=True)],
                                  labels, cosine_scale="raw", **fit)
    for name, weights in scaled.weights.items():
        np.testing.assert_array_equal(weights, by_hand.weights[name])
    assert scaled.calibration is not None and by_hand.calibration is not None
    assert scaled.calibration.threshold == by_hand.calibration.threshold
    with pytest.raises(ValueError, match="references"):
        train_and_calibrate(queries, cosines, labels, cosine_scale="minmax", references=references[:5], **fit)


def test_judged_queries_are_encoded_as_a_search_encodes_them(animals: TestClient) -> None:
    """The adapter reads the query's vector: trained on the vectors a search serves. With int8, queries encoded in
    one batch with others are quantised with the batch's scale and come out different."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    queries = ["pets", "a loyal pet that barks at strangers and fetches sticks in the park", "fish", "x" * 3000]
    data = build_training_set(engine.collection("animals"), engine.embedder,
                              [TrainingExample(q, relevant_ids=["dog"]) for q in queries])
    served = np.vstack([engine.queries.encode(q) for q in queries])
    np.testing.assert_allclose(data.query_embs, served, atol=1e-6)
    assert query_vectors(engine.embedder, []).shape == (0, engine.embedder.dim)


def test_judgments_of_one_query_are_merged_into_one_example() -> None:
    """A query posted twice, or one row a judged document (a common export), is one query: otherwise it sat in
    every training fold and beside itself out of fold, and a row's siblings' documents counted as irrelevant."""
    rows = [TrainingExample("bone health", ["d1"]), TrainingExample("bone health", ["d2"], ["d9"]),
            TrainingExample("sleep", ["d3"]), TrainingExample("bone health", ["d1"], ["d8"])]
    assert merge_judgments(rows) == [TrainingExample("bone health", ("d1", "d2"), ("d9", "d8")),
                                     TrainingExample("sleep", ("d3",), ())]
    with pytest.raises(InvalidInput, match="both relevant and irrelevant") as conflict:
        merge_judgments([*rows, TrainingExample("sleep", ["d4"], ["d3"])])
    assert conflict.value.details == [{"query": "sleep", "ids": ["d3"]}]
    # Case and spacing do not make another query: "Rocket  thrust " judged the other way was accepted.
    with pytest.raises(InvalidInput, match="both relevant and irrelevant"):
        merge_judgments([TrainingExample("rocket thrust", ["d1"]), TrainingExample("Rocket  thrust ", [], ["d1"])])
    assert merge_judgments([TrainingExample("Bone health", ["d1"]), TrainingExample(" bone  HEALTH", ["d2"])]) == [
        TrainingExample("Bone health", ("d1", "d2"), ())]


def test_a_judged_document_deleted_while_the_set_is_built_is_skipped(
        animals: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are checked before the queries are encoded; a judged document deleted meanwhile failed the training
    ("Label not found", a 500 for a waited request). Now it is left out of the pool."""
    engine = animals.app.state.engine  # type: ignore[attr-defined]
    collection = engine.collection("animals")
    encode = judgments.query_vectors

    def encode_then_delete(embedder: object, queries: list[str], *rest: object) -> np.ndarray:
        vectors = encode(embedder, queries, *rest)  # type: ignore[arg-type]
        engine.delete("animals", "rocket")
        return vectors

    monkeypatch.setattr(judgments, "query_vectors", encode_then_delete)
    example = TrainingExample("a loyal pet that barks", relevant_ids=["dog"], irrelevant_ids=["rocket", "cat"])
    data = build_training_set(collection, engine.embedder, [example])
    assert data.labels[0].sum() == 1 and data.cosines[0].size == len(data.labels[0])
