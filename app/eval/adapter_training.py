"""`python -m app train-adapter`: fit the Cosine Adapter on BEIR datasets' judgments, through the engine."""

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.client import SearchClient
from app.engine.judgments import TrainingSet, build_training_set, describe_adapter
from app.engine.relevance import DEFAULT_FAMILY, DEFAULT_RECALL_TARGET, CosineAdapter, Family, train_and_calibrate
from app.engine.types import TrainingExample
from app.eval.beir import load_beir
from app.eval.relevance_report import nonword_queries
from app.eval.runner import engine_of, ensure_corpus, in_process_client

# A collection with many judged queries is cut to this many (drawn at random), so that it does not decide the
# map alone; the loss also weighs every collection the same (train_and_calibrate's groups).
MAX_QUERIES_PER_DATASET = 600
# Queries of random non-words, whose candidates are all irrelevant: every collection has such queries (typos,
# gibberish), and the filter should return them nothing. Another seed than the evaluation's non-word queries.
TRAINING_NONWORDS = 100
NONWORD_SEED = 12345


def _judged_examples(dataset_dir: Path, split: str, seed: int
                     ) -> tuple[str, list[dict[str, str]], list[TrainingExample]]:
    dataset = load_beir(dataset_dir, split)
    examples = [TrainingExample(query=dataset.queries[qid], relevant_ids=[d for d, g in judged.items() if g > 0])
                for qid, judged in dataset.qrels.items()
                if qid in dataset.queries and any(grade > 0 for grade in judged.values())]
    if len(examples) > MAX_QUERIES_PER_DATASET:
        keep = sorted(np.random.default_rng(seed).choice(len(examples), MAX_QUERIES_PER_DATASET, replace=False))
        examples = [examples[i] for i in keep]
    return dataset.name, dataset.corpus, examples


def collect(client: SearchClient, datasets: Sequence[tuple[Path, str]], nonwords: int, seed: int
            ) -> tuple[TrainingSet, list[str], list[str], list[str]]:
    """Every dataset's judged queries (and its non-word queries) with their candidates: (the set, each query's
    group for the loss weights, each query's dataset, a description of what was collected)."""
    engine = engine_of(client)
    parts: list[TrainingSet] = []
    groups: list[str] = []
    sources: list[str] = []
    described = []
    for dataset_dir, split in datasets:
        name, corpus, examples = _judged_examples(dataset_dir, split, seed)
        collection_name = f"eval-{name}"
        ensure_corpus(client, collection_name, corpus)
        collection = engine.collection(collection_name)
        junk = [TrainingExample(query=q, relevant_ids=()) for q in nonword_queries(nonwords, NONWORD_SEED)]
        parts.append(build_training_set(collection, engine.embedder, [*examples, *junk],
                                        engine.settings.search_defaults))
        groups += [name] * len(examples) + ["non-words"] * len(junk)
        sources += [name] * (len(examples) + len(junk))
        described.append(f"{name} {split} ({len(examples)} judged queries)")
    return merge(parts), groups, sources, described


def merge(parts: Sequence[TrainingSet]) -> TrainingSet:
    return TrainingSet(np.vstack([p.query_embs for p in parts]), [c for p in parts for c in p.cosines],
                       [y for p in parts for y in p.labels], [x for p in parts for x in p.lexical],
                       np.vstack([p.stats for p in parts]), [f for p in parts for f in p.fusion_cases],
                       [r for p in parts for r in p.references])


def _save(adapter: CosineAdapter, out: Path) -> None:
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    adapter.save(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def train_default_adapter(datasets: Sequence[tuple[Path, str]], out: Path, data_dir: Path | None, *,
                          family: Family = DEFAULT_FAMILY, recall_target: float = DEFAULT_RECALL_TARGET,
                          inputs: tuple[str, ...] = ("embedding", "stats"), threads: int = 2,
                          nonwords: int = TRAINING_NONWORDS, folds: int = 5, repeats: int = 3,
                          fallback_out: Path | None = None, seed: int = 0,
                          fit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ingests each corpus, collects each judged query's hybrid top-100 candidates (and those of random
    non-word queries, all irrelevant), fits and calibrates an adapter on them with every dataset weighing the
    same (thresholds out of fold), and writes it to `out`; with `fallback_out`, also the adapter that reads
    only the dimension-free STATS (for collections whose encoder is not the one `out` was trained for)."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="search-train-"))
    # No default adapter while collecting candidates: training must not depend on a previous one.
    with in_process_client(data_dir, adapter_dir=data_dir / "no-adapter") as client:
        data, groups, _, described = collect(client, datasets, nonwords, seed)
        encoder = engine_of(client).embedder.identity.to_dict()
    trained_on = f"{', '.join(described)}, {nonwords} non-word queries each; hybrid top-100 candidates"
    reports = {}
    # The fallback reads raw cosine: reading no embedding, with the cosine scaled it has only the STATS to tell a
    # non-word query's best hit from a real one, and on a 16-document collection that hit passed it.
    for spec_inputs, path, scale in ((inputs, out, None), (("stats",), fallback_out, "raw")):
        if path is None:
            continue
        settings = {**(fit or {}), **({} if scale is None else {"cosine_scale": scale})}
        adapter = train_and_calibrate(data.query_embs, data.cosines, data.labels, lexical=data.lexical,
                                      stats=data.stats, references=data.references,
                                      inputs=spec_inputs, groups=groups, family=family,
                                      recall_target=recall_target, folds=folds, repeats=repeats, seed=seed,
                                      threads=threads, progress=True, **settings)
        adapter.info["trained_on"] = trained_on
        adapter.info["encoder"] = encoder  # the engine serves it only to collections of this model
        _save(adapter, path)
        reports[str(path)] = describe_adapter(adapter)
    return reports
