"""Behaviour of the Cosine Adapter: monotone maps, thresholds, metrics, persistence and training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine.relevance import (
    Calibration,
    CosineAdapter,
    choose_threshold,
    filter_metrics,
    fit_adapter,
    fit_logistic_1d,
    precision_at_recall,
    train_and_calibrate,
)
from app.engine.relevance.adapter import WEIGHT_NAMES
from app.engine.relevance.descent import logits as torch_logits
from app.engine.relevance.inputs import STATS


def _random_adapter(family: str, dim: int, hidden: int, rng: np.random.Generator) -> CosineAdapter:
    n_out = {"linear": 2, "power": 3, "hybrid": 3}[family]
    scale = rng.choice([0.1, 1.0, 5.0])
    weights = {
        "w1": rng.normal(0.0, scale, (dim, hidden)),
        "b1": rng.normal(0.0, 1.0, hidden),
        "w2": rng.normal(0.0, 3.0, (hidden, n_out)),
        "b2": rng.normal(0.0, 3.0, n_out),
    }
    return CosineAdapter(family, weights)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _clustered(
    n: int, seed: int, dependent: bool, dim: int = 8, k: int = 20
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Queries in two clusters; relevant candidates sit 0.2 above the rest, shifted per cluster if dependent."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 2, n)
    queries = _unit(np.eye(dim)[cluster] + 0.3 * rng.standard_normal((n, dim)))
    cosines, labels = [], []
    for c in cluster:
        offset = (0.2 if c else -0.1) if dependent else 0.0
        y = np.zeros(k)
        y[: rng.integers(1, 4)] = 1.0
        x = np.where(y == 1, 0.6, 0.4) + offset + 0.08 * rng.standard_normal(k)
        order = np.argsort(-x)
        cosines.append(x[order])
        labels.append(y[order])
    return queries, cosines, labels


@pytest.mark.parametrize("family", ["linear", "power"])
def test_probabilities_are_monotone_in_cosine(family: str) -> None:
    rng = np.random.default_rng(0)
    cosines = np.linspace(-1.0, 1.0, 4001)
    for _ in range(50):
        adapter = _random_adapter(family, dim=12, hidden=6, rng=rng)
        query = _unit(rng.standard_normal(12))
        assert np.all(np.diff(adapter.logits(query, cosines)) >= 0.0)
        assert np.all(np.diff(adapter.probabilities(query, cosines)) >= 0.0)
        params = adapter.map_params(query)
        assert params["a"] > 0.0
        if family == "power":
            assert 0.0 < params["k"] <= 2.0


def test_hybrid_map_is_monotone_in_cosine_and_lexical_evidence() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        adapter = _random_adapter("hybrid", dim=12, hidden=6, rng=rng)
        query = _unit(rng.standard_normal(12))
        cosines = np.sort(rng.uniform(-1.0, 1.0, 200))
        lexical = rng.uniform(0.0, 1.0, 200)
        # Within one candidate list: a higher cosine at equal lexical evidence never scores lower ...
        same_lexical = adapter.logits(query, cosines, np.full(200, 0.3))
        assert np.all(np.diff(same_lexical) >= 0.0)
        # ... and more lexical evidence at equal cosine never scores lower.
        more = adapter.logits(query, cosines, np.minimum(lexical + 0.2, 1.0))
        assert np.all(more >= adapter.logits(query, cosines, lexical))
        params = adapter.map_params(query)
        assert params["a"] > 0 and params["c"] > 0
    with pytest.raises(ValueError, match="lexical"):
        adapter.probabilities(query, cosines)


def test_hybrid_adapter_learns_from_lexical_evidence() -> None:
    queries, cosines, labels = _clustered(150, seed=11, dependent=False)
    rng = np.random.default_rng(11)
    # Relevant candidates also tend to match the query's words: evidence raw cosine cannot see.
    lexical = [np.clip(0.5 * y + 0.5 * rng.uniform(0, 1, y.size), 0, 1) for y in labels]
    adapter = train_and_calibrate(queries, cosines, labels, family="hybrid", lexical=lexical, hidden=8, steps=300)
    assert adapter.calibration is not None
    m = adapter.calibration.metrics
    assert m["pr_auc"] > m["raw_cosine_pr_auc"] + 0.1
    assert m["recall"] >= 0.95
    with pytest.raises(ValueError, match="lexical"):
        train_and_calibrate(queries, cosines, labels, family="hybrid", steps=5)


@pytest.mark.parametrize("family", ["linear", "power", "hybrid"])
def test_an_ensemble_averages_its_members_logits(family: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    members = [_random_adapter(family, dim=8, hidden=4, rng=rng) for _ in range(3)]
    ensemble = CosineAdapter.ensemble(members)
    query, x, y = _unit(rng.standard_normal(8)), np.linspace(-1.0, 1.0, 101), rng.uniform(0, 1, 101)
    lexical = y if family == "hybrid" else None
    expected = np.mean([m.logits(query, x, lexical) for m in members], axis=0)
    assert np.allclose(ensemble.logits(query, x, lexical), expected)
    assert np.all(np.diff(ensemble.logits(query, x, None if lexical is None else np.full(101, 0.5))) >= 0)
    if family != "power":  # the averaged map is a map of the same family with the averaged parameters
        params = ensemble.map_params(query)
        assert params["a"] == pytest.approx(np.mean([m.map_params(query)["a"] for m in members]))
    ensemble.save(tmp_path)
    assert np.array_equal(CosineAdapter.load(tmp_path).logits(query, x, lexical), ensemble.logits(query, x, lexical))


def test_power_map_matches_its_formula() -> None:
    adapter = _random_adapter("power", dim=4, hidden=3, rng=np.random.default_rng(1))
    query = _unit(np.ones(4))
    p = adapter.map_params(query)
    x = np.array([-0.5, -0.1, 0.0, 0.3, 0.9])
    expected = np.sign(x) * p["a"] * np.abs(x) ** p["k"] + p["b"]
    np.testing.assert_allclose(adapter.logits(query, x), expected, atol=1e-12)
    np.testing.assert_allclose(adapter.probabilities(query, x), 1.0 / (1.0 + np.exp(-expected)), rtol=1e-12)


@pytest.mark.parametrize("family", ["linear", "power", "hybrid"])
def test_torch_training_maps_match_numpy_serving_maps(family: str) -> None:
    # Each map is written twice, in torch to train it and in numpy to serve it: they must not drift apart.
    rng = np.random.default_rng(21)
    for _ in range(20):
        adapter = _random_adapter(family, dim=8, hidden=5, rng=rng)
        queries = _unit(rng.standard_normal((4, 8)))
        sizes = rng.integers(1, 30, 4)
        cosines = [rng.uniform(-1.0, 1.0, n) for n in sizes]
        cosines[0][0] = 0.0  # where the power map floors |x| and takes its sign
        lexical = [rng.uniform(0.0, 1.0, n) for n in sizes]
        expected = np.concatenate([
            adapter.logits(q, x, lex if family == "hybrid" else None)
            for q, x, lex in zip(queries, cosines, lexical, strict=True)
        ])
        trained = torch_logits(
            family,
            [torch.from_numpy(adapter.weights[name][0]) for name in WEIGHT_NAMES],
            torch.from_numpy(queries),
            torch.from_numpy(np.concatenate(cosines)),
            torch.from_numpy(np.repeat(np.arange(4), sizes)),
            torch.from_numpy(np.concatenate(lexical)),
        )
        np.testing.assert_allclose(trained.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_choose_threshold_hand_example() -> None:
    probs = np.array([0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1])
    # 4 positives (0.9, 0.7, 0.4, 0.2); 75% of them needs the 3rd highest.
    t = choose_threshold(probs, labels, 0.75)
    assert t == 0.4
    assert labels[probs >= t].sum() / 4 >= 0.75
    # Nothing higher still reaches the target.
    assert labels[probs >= np.nextafter(t, 1.0)].sum() / 4 < 0.75
    assert choose_threshold(probs, labels, 1.0) == 0.2
    assert choose_threshold(probs, labels, 0.25) == 0.9
    assert choose_threshold(probs, labels, 0.5) == 0.7


def test_choose_threshold_is_robust_to_float_products() -> None:
    # 0.7 * 10 is 7.000000000000001 in floating point; it must still ask for 7 positives, not 8.
    probs = np.arange(10, 0, -1) / 10.0
    assert choose_threshold(probs, np.ones(10), 0.7) == pytest.approx(0.4)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, math.nan])
def test_choose_threshold_rejects_bad_targets(target: float) -> None:
    with pytest.raises(ValueError, match="recall target"):
        choose_threshold(np.array([0.5]), np.array([1]), target)


def test_choose_threshold_needs_positives() -> None:
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(np.array([0.5, 0.4]), np.array([0, 0]), 0.9)


def test_filter_metrics_two_query_example() -> None:
    scores = [np.array([0.9, 0.8, 0.3]), np.array([0.6, 0.2])]
    labels = [np.array([1, 0, 1]), np.array([0, 1])]
    m = filter_metrics(scores, labels, threshold=0.7)
    # Kept: 0.9 (rel) and 0.8 (non-rel) of query 1, nothing of query 2.
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["recall_kept"] == pytest.approx(1 / 3)
    assert m["kept_per_query"] == pytest.approx(1.0)
    assert m["fraction_filtered"] == pytest.approx(3 / 5)
    assert m["empty_query_rate"] == pytest.approx(0.5)
    # Pooled ranking 1,0,0,1,1: AP = (1/1 + 2/4 + 3/5) / 3.
    assert m["pr_auc"] == pytest.approx((1.0 + 0.5 + 0.6) / 3)
    with_judged = filter_metrics(scores, labels, threshold=0.7, n_relevant=[2, 2])
    assert with_judged["recall"] == pytest.approx(1 / 4)
    assert with_judged["recall_kept"] == pytest.approx(1 / 3)


def test_average_precision_scores_ties_as_one_point() -> None:
    m = filter_metrics([np.array([0.5, 0.5])], [np.array([1, 0])], threshold=0.0)
    assert m["pr_auc"] == pytest.approx(0.5)


def test_precision_at_recall_hand_checked() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 0, 1, 0, 0, 1])
    assert precision_at_recall(scores, labels, 2 / 3) == pytest.approx(2 / 3)
    assert precision_at_recall(scores, labels, 1.0) == pytest.approx(0.5)
    assert precision_at_recall(scores, labels, 0.3) == pytest.approx(1.0)


def test_fit_logistic_1d_recovers_known_map() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.2, 1.0, 20000)
    y = (rng.uniform(size=x.size) < 1.0 / (1.0 + np.exp(-(10.0 * x - 8.0)))).astype(float)
    slope, intercept = fit_logistic_1d(x, y)
    assert slope == pytest.approx(10.0, abs=1.0)
    assert intercept == pytest.approx(-8.0, abs=0.8)


def _calibrated(adapter: CosineAdapter) -> CosineAdapter:
    adapter.calibration = Calibration(
        threshold=0.3,
        recall_target=0.95,
        thresholds={0.8: 0.6, 0.9: 0.4, 0.95: 0.3, 0.99: 0.1},
        metrics={"pr_auc": 0.43, "raw_cosine_pr_auc": 0.31},
    )
    return adapter


def test_threshold_for_picks_stored_threshold() -> None:
    adapter = _calibrated(CosineAdapter.identity_like(4, slope=10.0, intercept=-8.0))
    assert adapter.threshold_for() == 0.3
    assert adapter.threshold_for(0.9) == 0.4
    assert adapter.threshold_for(0.85) == 0.4  # rounds up to the next stored target
    assert adapter.threshold_for(0.99) == 0.1
    assert adapter.threshold_for(0.995) == adapter.threshold_for(1.0) == 0.0  # above them all: keep everything
    for bad in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError):
            adapter.threshold_for(bad)
    with pytest.raises(ValueError, match="calibration"):
        CosineAdapter.identity_like(4, 10.0, -8.0).threshold_for()


def test_identity_like_is_query_independent() -> None:
    adapter = CosineAdapter.identity_like(6, slope=10.0, intercept=-8.0)
    x = np.array([-0.2, 0.5, 0.8, 1.0])
    for query in _unit(np.random.default_rng(4).standard_normal((3, 6))):
        assert adapter.map_params(query) == pytest.approx({"a": 10.0, "b": -8.0})
        np.testing.assert_allclose(adapter.probabilities(query, x), 1.0 / (1.0 + np.exp(-(10.0 * x - 8.0))))
    with pytest.raises(ValueError):
        CosineAdapter.identity_like(6, slope=0.0, intercept=0.0)
    with pytest.raises(ValueError, match="shape"):
        adapter.map_params(np.ones(5))


@pytest.mark.parametrize("family", ["linear", "power"])
def test_save_load_round_trip(tmp_path: Path, family: str) -> None:
    rng = np.random.default_rng(5)
    adapter = _calibrated(_random_adapter(family, dim=8, hidden=4, rng=rng))
    adapter.info = {"trained_on": "unit-test", "steps": 3}
    adapter.save(tmp_path / "adapter")
    loaded = CosineAdapter.load(tmp_path / "adapter")
    assert loaded.family == family
    assert loaded.calibration == adapter.calibration
    assert loaded.info == adapter.info
    x = np.linspace(-1.0, 1.0, 101)
    for query in _unit(rng.standard_normal((5, 8))):
        assert np.array_equal(loaded.probabilities(query, x), adapter.probabilities(query, x))
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta["format_version"] == 2 and meta["dim"] == 8 and meta["family"] == family and meta["members"] == 1


def _damage(directory: Path, how: str) -> None:
    meta_path, weights_path = directory / "adapter.json", directory / "weights.npz"
    if how == "no_meta":
        meta_path.unlink()
    elif how == "no_weights":
        weights_path.unlink()
    elif how == "truncated_weights":
        weights_path.write_bytes(weights_path.read_bytes()[:40])
    elif how == "garbage_meta":
        meta_path.write_text("{not json")
    elif how == "wrong_dim":
        meta = json.loads(meta_path.read_text())
        meta["dim"] = 99
        meta_path.write_text(json.dumps(meta))
    elif how == "bad_version":
        meta = json.loads(meta_path.read_text())
        meta["format_version"] = 42
        meta_path.write_text(json.dumps(meta))
    elif how == "bad_calibration":
        meta = json.loads(meta_path.read_text())
        meta["calibration"] = {"threshold": "high"}
        meta_path.write_text(json.dumps(meta))
    elif how == "object_array":
        np.savez(weights_path, w1=np.array([None], dtype=object), b1=1, w2=1, b2=1)


@pytest.mark.parametrize(
    "how",
    [
        "no_meta",
        "no_weights",
        "truncated_weights",
        "garbage_meta",
        "wrong_dim",
        "bad_version",
        "bad_calibration",
        "object_array",
    ],
)
def test_load_of_damaged_dir_raises_value_error(tmp_path: Path, how: str) -> None:
    _calibrated(CosineAdapter.identity_like(8, 10.0, -8.0)).save(tmp_path)
    _damage(tmp_path, how)
    with pytest.raises(ValueError):
        CosineAdapter.load(tmp_path)


def test_training_starts_at_global_logistic_fit() -> None:
    queries, cosines, labels = _clustered(40, seed=6, dependent=True)
    adapter = fit_adapter(queries, cosines, labels, family="linear", steps=0, hidden=4, val_fraction=0.0)
    slope, intercept = fit_logistic_1d(np.concatenate(cosines), np.concatenate(labels))
    for query in queries[:5]:
        assert adapter.map_params(query) == pytest.approx({"a": slope, "b": intercept}, rel=1e-9)


@pytest.mark.parametrize("family", ["linear", "power"])
def test_numpy_inference_matches_torch_training_loss(family: str) -> None:
    queries, cosines, labels = _clustered(40, seed=7, dependent=True)
    adapter = fit_adapter(queries, cosines, labels, family=family, steps=30, hidden=4, val_fraction=0.0)
    z = np.concatenate([adapter.logits(q, x) for q, x in zip(queries, cosines, strict=True)])
    y = np.concatenate(labels)
    bce = float(np.mean(np.logaddexp(0.0, z) - y * z))
    assert bce == pytest.approx(float(adapter.info["final_loss"]), rel=1e-9)  # type: ignore[arg-type]
    assert bce < float(adapter.info["initial_loss"])  # type: ignore[arg-type]


@pytest.mark.parametrize("family", ["linear", "power"])
def test_training_learns_query_dependent_relevance(family: str) -> None:
    queries, cosines, labels = _clustered(150, seed=8, dependent=True)
    adapter = train_and_calibrate(queries, cosines, labels, family=family, hidden=8, steps=300, threads=1)
    assert adapter.calibration is not None
    m = adapter.calibration.metrics
    assert m["pr_auc"] > m["raw_cosine_pr_auc"] + 0.1
    assert m["precision"] > m["raw_cosine_precision"]
    # Both thresholds were chosen on the held-out part, so both meet the target there.
    assert m["recall"] >= 0.95 and m["raw_cosine_recall"] >= 0.95
    assert set(adapter.calibration.thresholds) >= {0.8, 0.85, 0.9, 0.95, 0.99}
    assert adapter.threshold_for() == adapter.calibration.thresholds[0.95]
    assert adapter.threshold_for(0.99) <= adapter.threshold_for(0.8)


def test_training_matches_raw_cosine_on_query_independent_signal() -> None:
    queries, cosines, labels = _clustered(150, seed=9, dependent=False)
    adapter = train_and_calibrate(queries, cosines, labels, family="linear", hidden=8, steps=300)
    assert adapter.calibration is not None
    m = adapter.calibration.metrics
    assert m["pr_auc"] >= m["raw_cosine_pr_auc"] - 0.01


def test_each_fold_fits_several_seeds_and_all_are_served() -> None:
    queries, cosines, labels = _clustered(60, seed=11, dependent=True)
    adapter = train_and_calibrate(queries, cosines, labels, family="linear", folds=3, repeats=2, hidden=4, steps=20)
    assert adapter.members == 6 and adapter.info["folds"] == 3 and adapter.info["repeats"] == 2
    single = train_and_calibrate(queries, cosines, labels, family="linear", folds=3, repeats=1, hidden=4, steps=20)
    assert single.members == 3
    with pytest.raises(ValueError, match="repeats"):
        train_and_calibrate(queries, cosines, labels, family="linear", repeats=0, steps=5)


def test_train_and_calibrate_needs_five_positive_queries() -> None:
    queries, cosines, labels = _clustered(10, seed=10, dependent=True)
    labels = [np.zeros_like(y) if i >= 4 else y for i, y in enumerate(labels)]
    with pytest.raises(ValueError, match="at least 5 queries"):
        train_and_calibrate(queries, cosines, labels, family="linear", steps=5)


def test_inference_path_does_not_import_torch() -> None:
    code = "import sys, app.engine.relevance; assert 'torch' not in sys.modules, 'torch imported'"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_query_noise_is_seeded_and_reaches_only_the_embeddings_columns() -> None:
    from app.engine.relevance import descent

    queries, cosines, labels = _clustered(40, seed=12, dependent=True)
    fit = {"family": "linear", "steps": 30, "hidden": 4, "val_fraction": 0.0}
    noisy = [fit_adapter(queries, cosines, labels, query_noise=0.2, seed=s, **fit) for s in (1, 1, 2)]
    clean = fit_adapter(queries, cosines, labels, seed=1, **fit)
    assert noisy[0].info["query_noise"] == 0.2 and clean.info["query_noise"] == 0.0
    assert all(np.array_equal(noisy[0].weights[n], noisy[1].weights[n]) for n in WEIGHT_NAMES)  # same seed
    assert not np.allclose(noisy[0].weights["w2"], noisy[2].weights["w2"])
    assert not np.allclose(noisy[0].weights["w2"], clean.weights["w2"])
    # Of a batch's query rows, only the leading `columns` (the embedding's) move; the STATS after them do not.
    batch = descent.batch(np.ones((3, 5)), [np.zeros(2)] * 3, [np.zeros(2)] * 3, None, None, np.arange(3))
    moved = descent.with_noise(batch, descent.noise(1.0, 3, seed=0)).queries.numpy()
    assert np.all(moved[:, :3] != 1.0) and np.all(moved[:, 3:] == 1.0)
    assert descent.noise(0.0, 3, seed=0) is None and descent.noise(1.0, 0, seed=0) is None
    with pytest.raises(ValueError, match="query_noise"):
        fit_adapter(queries, cosines, labels, query_noise=-0.1, **fit)


def test_a_network_reading_only_the_statistics_gets_no_query_noise() -> None:
    queries, cosines, labels = _clustered(40, seed=13, dependent=True)
    stats = np.random.default_rng(0).standard_normal((40, len(STATS)))
    fit = {"family": "linear", "inputs": ("stats",), "stats": stats, "folds": 2, "steps": 20, "hidden": 4}
    quiet, noisy = (train_and_calibrate(queries, cosines, labels, query_noise=s, **fit) for s in (0.0, 0.5))
    assert all(np.array_equal(quiet.weights[n], noisy.weights[n]) for n in WEIGHT_NAMES)
    both = train_and_calibrate(queries, cosines, labels, query_noise=0.5, **{**fit, "inputs": ("embedding", "stats")})
    assert both.info["query_noise"] == 0.5
