"""`python -m app train-adapter`: fit the Cosine Adapter on a BEIR dataset's judgments, through the engine."""

import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.engine.judgments import build_training_set, describe_adapter
from app.engine.relevance import train_and_calibrate
from app.eval.beir import load_beir
from app.eval.runner import ensure_corpus, in_process_client
from app.schemas import TrainingExample


def train_default_adapter(dataset_dir: Path, split: str, out: Path, data_dir: Path | None, *,
                          family: str = "hybrid", recall_target: float = 0.95, threads: int = 2) -> dict[str, Any]:
    """Ingests the corpus, collects each judged query's hybrid top-100 candidates, fits and calibrates
    an adapter on them (thresholds on held-out queries), and writes it to `out`."""
    dataset = load_beir(dataset_dir, split)
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="search-train-"))
    collection_name = f"eval-{dataset.name}"
    # No default adapter while collecting candidates: training must not depend on a previous one.
    with in_process_client(data_dir, adapter_dir=data_dir / "no-adapter") as client:
        ensure_corpus(client, collection_name, dataset.corpus)
        engine = client.http.app.state.engine  # type: ignore[attr-defined]  # the in-process app's TestClient
        collection = engine.collection(collection_name)
        examples = [TrainingExample(query=dataset.queries[qid],
                                    relevant_ids=[d for d, grade in judged.items() if grade > 0])
                    for qid, judged in dataset.qrels.items()
                    if qid in dataset.queries and any(grade > 0 for grade in judged.values())]
        data = build_training_set(collection, engine.embedder, examples, engine.settings.search_defaults)
    adapter = train_and_calibrate(data.query_embs, data.cosines, data.labels, lexical=data.lexical, family=family,
                                  recall_target=recall_target, threads=threads, progress=True)
    adapter.info["trained_on"] = f"{dataset.name} {split} split: {len(examples)} judged queries, " \
                                 "hybrid top-100 candidates"
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    adapter.save(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return describe_adapter(adapter)
