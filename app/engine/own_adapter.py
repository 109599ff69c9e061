"""A collection's own relevance adapter, fitted from the judgments posted to it: fine-tuned from the default
(or the fallback), set against it out of sample, its fusion fitted alike. The engine swaps it in
(SearchEngine.train_relevance)."""

from collections.abc import Callable, Sequence

import numpy as np

from app.engine.collection import Collection
from app.engine.encoders import Encoder
from app.engine.fusion_fit import describe as describe_fusion
from app.engine.fusion_fit import fit_fusion
from app.engine.judgments import better_of, build_training_set, merge_judgments
from app.engine.relevance import CosineAdapter, Family, train_and_calibrate
from app.engine.types import TrainingExample
from app.errors import InvalidInput
from app.settings import Settings

# Coarse progress of a training, as a fraction: the training set is built (queries encoded, candidates
# retrieved), then the adapter is fitted and calibrated; the swap that follows is the end (1.0).
PROGRESS_SET_BUILT, PROGRESS_FITTED = 0.2, 0.95


def fit_own_adapter(collection: Collection, embedder: Encoder, settings: Settings, base: CosineAdapter | None,
                    examples: Sequence[TrainingExample], recall_target: float, family: Family | None,
                    report: Callable[[float], None]) -> CosineAdapter:
    """The adapter `collection` should serve after these judgments: the fine-tuned one or `base` (with its own
    thresholds, or recalibrated), as `better_of` chooses, with the fusion `fit_fusion` chooses. The choices are
    in info["selection"] and info["fusion_selection"]. `report` hears the fraction done at coarse steps; an
    exception it raises ends the training."""
    examples = merge_judgments(examples)  # one example a query: the folds and the guard count queries

    def stage(start: float, end: float) -> Callable[[float], None]:
        """A phase's own fraction, reported within [start, end]. A deleted collection's training ends at the
        phase's next step (a chunk of queries, a member), not minutes later at the swap: until then it held
        the name, and a collection created again under it could not train (409)."""
        def heard(fraction: float) -> None:
            collection.check_live()
            report(start + fraction * (end - start))
        return heard

    data = build_training_set(collection, embedder, examples, settings.search_defaults,
                              progress=stage(0.0, PROGRESS_SET_BUILT))
    report(PROGRESS_SET_BUILT)
    warm = base is not None and family in (None, base.family)
    out_of_fold: list[np.ndarray] = []
    try:
        tuned = train_and_calibrate(data.query_embs, data.cosines, data.labels, lexical=data.lexical,
                                    stats=data.stats, references=data.references, recall_target=recall_target,
                                    family=family or settings.adapter_family, start=base if warm else None,
                                    threads=settings.threads, out_of_fold_into=out_of_fold,
                                    on_member=stage(PROGRESS_SET_BUILT, PROGRESS_FITTED))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    adapter = tuned if base is None else better_of(base, tuned, out_of_fold, data, recall_target, warm=warm)
    fitted, adapter.info["fusion_selection"] = fit_fusion(data.fusion_cases, settings.search_defaults)
    adapter.fusion = None if fitted is None else describe_fusion(fitted)
    adapter.info["trained_on"] = f"{len(examples)} judged queries posted to collection {collection.name!r}"
    adapter.info["encoder"] = embedder.identity.to_dict()
    report(PROGRESS_FITTED)
    return adapter
