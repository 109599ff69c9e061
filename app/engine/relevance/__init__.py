"""Cosine Adapter relevance filtering: query-conditioned calibration of raw cosine into P(relevant)."""

from app.engine.relevance.adapter import DEFAULT_FAMILY, CosineAdapter, Family
from app.engine.relevance.calibration import (
    DEFAULT_RECALL_TARGET,
    DEFAULT_RECALL_TARGETS,
    Calibration,
    average_precision,
    choose_threshold,
    filter_metrics,
    fit_logistic_1d,
    kept_at_recall,
    precision_at_recall,
)
from app.engine.relevance.cross_fit import recalibrate, train_and_calibrate
from app.engine.relevance.training import fit_adapter

__all__ = [
    "DEFAULT_FAMILY",
    "DEFAULT_RECALL_TARGET",
    "DEFAULT_RECALL_TARGETS",
    "Calibration",
    "CosineAdapter",
    "Family",
    "average_precision",
    "choose_threshold",
    "filter_metrics",
    "fit_adapter",
    "fit_logistic_1d",
    "kept_at_recall",
    "precision_at_recall",
    "recalibrate",
    "train_and_calibrate",
]
