"""The map's min-max cosine scale, and thresholds that hold on every collection they were chosen on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.engine.hybrid import Candidates, filter_by_relevance
from app.engine.relevance import CosineAdapter, choose_threshold, train_and_calibrate
from app.engine.relevance.adapter import META_FILE
from app.engine.relevance.calibration import Calibration, group_threshold
from app.engine.relevance.inputs import STATS_DEPTH, minmax_scaled
from app.engine.types import SearchQuery


def _adapter(cosine_scale: str, slope: float = 8.0, intercept: float = -4.0) -> CosineAdapter:
    """A query-independent linear map (slope * x + intercept) reading the cosines on `cosine_scale`."""
    base = CosineAdapter.identity_like(3, slope, intercept)
    return CosineAdapter("linear", base.weights, calibration=Calibration(0.5, 0.95, {0.95: 0.5}),
                         cosine_scale=cosine_scale)


def test_minmax_scaled_hand_example() -> None:
    assert minmax_scaled(np.array([0.2, 0.6, 0.4])).tolist() == pytest.approx([0.0, 1.0, 0.5])
    # Against a reference list: its best is 1, its worst 0, and what lies below it goes below 0.
    assert minmax_scaled(np.array([0.1, 0.5]), np.array([0.3, 0.5])).tolist() == pytest.approx([-1.0, 1.0])
    assert minmax_scaled(np.array([0.4, 0.4])).tolist() == [0.0, 0.0]  # all alike: no division by zero


def test_a_minmax_map_reads_where_a_candidate_sits_in_its_list_not_the_level() -> None:
    query = np.ones(3) / np.sqrt(3)
    cosines = np.array([0.30, 0.45, 0.60])
    scaled, raw = _adapter("minmax"), _adapter("raw")
    # The same list shifted and stretched (another encoder's or collection's level) gets the same probabilities.
    assert scaled.probabilities(query, cosines).tolist() == pytest.approx(
        scaled.probabilities(query, 0.2 + 1.5 * cosines).tolist())
    assert raw.probabilities(query, cosines).tolist() != pytest.approx(
        raw.probabilities(query, 0.2 + 1.5 * cosines).tolist())
    assert scaled.probabilities(query, cosines).tolist() == pytest.approx(
        raw.probabilities(query, np.array([0.0, 0.5, 1.0])).tolist())


def test_the_cosine_scale_is_saved_and_old_adapters_load_as_raw(tmp_path: Path) -> None:
    _adapter("minmax").save(tmp_path / "scaled")
    assert CosineAdapter.load(tmp_path / "scaled").cosine_scale == "minmax"
    _adapter("raw").save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / META_FILE).read_text())
    del meta["cosine_scale"]  # as adapters saved before the scale was written
    (tmp_path / "old" / META_FILE).write_text(json.dumps(meta))
    assert CosineAdapter.load(tmp_path / "old").cosine_scale == "raw"
    with pytest.raises(ValueError, match="cosine_scale"):
        CosineAdapter("linear", _adapter("raw").weights, cosine_scale="z")


def test_a_search_scales_over_its_top_hits_not_every_candidate() -> None:
    """The filter is trained on each query's top-100 as the search ranks them; a search's deeper candidates
    (lexical-only ones, say) must not move the scale of the ones it was trained on."""
    n = STATS_DEPTH + 50
    cosine = np.r_[np.linspace(0.8, 0.4, STATS_DEPTH), np.full(50, 0.05)]
    candidates = Candidates(np.arange(n), np.zeros(n), cosine, np.zeros(n, np.int64), np.arange(1, n + 1))
    adapter, query = _adapter("minmax"), np.ones(3) / np.sqrt(3)
    relevance = filter_by_relevance(candidates, np.arange(n), SearchQuery("q", 10, 0, "hybrid"), query, adapter)
    assert relevance.probabilities is not None
    expected = adapter.probabilities(query, cosine, np.zeros(n), reference=cosine[:STATS_DEPTH])
    assert relevance.probabilities.tolist() == pytest.approx(expected.tolist())
    # Scaled over every candidate instead, the 100th hit would sit well above 0 and more would pass.
    assert relevance.order.size == int((expected >= 0.5).sum()) < int(
        (adapter.probabilities(query, cosine) >= 0.5).sum())


def test_group_threshold_meets_the_target_on_every_group() -> None:
    # A sharp group (its relevant documents score high) and a loose one (they score like the rest).
    probs = [np.array([0.9, 0.2, 0.1]), np.array([0.8, 0.3]), np.array([0.5, 0.4, 0.2, 0.1])]
    labels = [np.array([1, 0, 0]), np.array([1, 0]), np.array([1, 0, 1, 1])]
    groups = ["sharp", "sharp", "loose"]
    pooled = choose_threshold(np.concatenate(probs), np.concatenate(labels), 0.6)
    per_group = group_threshold(probs, labels, groups, 0.6)
    assert pooled == 0.5 and per_group == 0.2  # pooled, "loose" keeps 1 of its 3; per group, 2 of 3
    assert group_threshold(probs, labels, groups, 0.9) == 0.1  # "sharp" needs 0.8, "loose" all three
    with pytest.raises(ValueError, match="one group per query"):
        group_threshold(probs, labels, groups[:2], 0.6)


def _two_collections(n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    queries, cosines, labels, groups = [], [], [], []
    for i in range(n):
        loose = i % 2 == 1
        y = np.zeros(40)
        y[: 8 if loose else 1] = 1
        x = np.where(y == 1, 0.5 if loose else 0.8, 0.45) + 0.05 * rng.standard_normal(40)
        queries.append(rng.standard_normal(4))
        cosines.append(x)
        labels.append(y)
        groups.append("loose" if loose else "sharp")
    return np.asarray(queries), cosines, labels, groups


def test_trained_across_groups_the_thresholds_hold_on_each_and_the_scale_is_served() -> None:
    queries, cosines, labels, groups = _two_collections(60, seed=3)
    fit = {"family": "linear", "folds": 3, "repeats": 1, "hidden": 4, "steps": 30, "val_fraction": 0.0}
    pooled = train_and_calibrate(queries, cosines, labels, cosine_scale="raw", **fit)
    grouped = train_and_calibrate(queries, cosines, labels, groups=groups, cosine_scale="minmax", **fit)
    assert grouped.cosine_scale == "minmax" and pooled.cosine_scale == "raw"
    assert grouped.calibration is not None and pooled.calibration is not None
    threshold = grouped.calibration.threshold
    loose = [i for i, g in enumerate(groups) if g == "loose"]
    probs = [grouped.probabilities(queries[i], cosines[i]) for i in loose]
    kept = sum(float(labels[i][p >= threshold].sum()) for i, p in zip(loose, probs, strict=True))
    assert kept / sum(float(labels[i].sum()) for i in loose) >= 0.9  # in sample: the loose group keeps its recall
    # Warm-started from it, a collection's own adapter reads the cosines on the same scale.
    tuned = train_and_calibrate(queries[:20], cosines[:20], labels[:20], start=grouped,
                                **{k: v for k, v in fit.items() if k not in ("family", "hidden")})
    assert tuned.cosine_scale == "minmax"
