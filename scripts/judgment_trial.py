"""A collection posts some of its judged queries; is the filter on its other queries ever worse? (README, "A handful
of judgments").

Usage: .venv/bin/python scripts/judgment_trial.py --dataset ../shared/data/scifact:train --post 100 --seeds 0,1 \
    [--data-dir DIR]

Through the HTTP API of an in-process app (the same routes as a server): the dataset's corpus in a collection
(reused from --data-dir when it is already there), then for each seed a random draw of `--post` judged queries
posted to `POST /v1/collections/{name}/relevance/train` (each query's relevant documents; the training treats its
other candidates as irrelevant), and the relevance report (`python -m app evaluate`'s) on the judged queries not
posted, once with the default adapter and once with what the training kept. Use train or dev splits: this is a
trial of the training, not a figure to report on a test split.
"""

import argparse
import dataclasses
import json
import random
import tempfile
from pathlib import Path

from app.runtime import configure_environment

configure_environment()  # an entry point: the thread caps go in before the imports below load numpy

from app.eval.beir import BeirDataset, load_beir  # noqa: E402
from app.eval.relevance_report import relevance_report  # noqa: E402
from app.eval.runner import ensure_corpus, in_process_client  # noqa: E402

FIGURES = ("served_recall_kept", "served_kept_per_query", "pr_auc_ratio", "nonword_hits_per_query")


def _figures(report: dict[str, object]) -> dict[str, object]:
    adapter_metrics = report["adapter_metrics"]
    assert isinstance(adapter_metrics, dict)
    return {"pr_auc": adapter_metrics["pr_auc"], **{name: report[name] for name in FIGURES}}


def trial(dataset: BeirDataset, data_dir: Path, post: int, seed: int, family: str | None = None) -> dict[str, object]:
    collection = f"eval-{dataset.name}"  # the collection `python -m app evaluate` makes: its data dir serves
    judged = sorted(qid for qid, grades in dataset.qrels.items() if qid in dataset.queries and max(grades.values()) > 0)
    posted = set(random.Random(seed).sample(judged, post))
    rest = [qid for qid in judged if qid not in posted]
    held_out = dataclasses.replace(dataset, queries={qid: dataset.queries[qid] for qid in rest})
    examples = [{"query": dataset.queries[qid],
                 "relevant_ids": sorted(d for d, grade in dataset.qrels[qid].items() if grade > 0)}
                for qid in sorted(posted)]
    with in_process_client(data_dir) as client:
        ensure_corpus(client, collection, dataset.corpus)
        client.reset_relevance(collection)
        before = _figures(relevance_report(client, collection, held_out))
        answer = client.train(collection, examples, family=family, wait=True)
        after = _figures(relevance_report(client, collection, held_out))
        client.reset_relevance(collection)
    info = answer["info"]
    return {"seed": seed, "posted": len(posted), "measured_on": len(rest), "kept": info["selection"]["kept"],
            "why": info["selection"]["why"], "fusion": info.get("fusion_selection", {}).get("kept"),
            "default": before, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="DIR:SPLIT (a train or dev split)")
    parser.add_argument("--post", type=int, default=100, help="judged queries posted to the training")
    parser.add_argument("--seeds", default="0", help="comma-separated: one draw of posted queries each")
    parser.add_argument("--family", help="the map family to train (another than the default's: fitted from scratch)")
    parser.add_argument("--data-dir", help="data dir to use (kept; reused if it already holds the corpus)")
    args = parser.parse_args()
    path, _, split = args.dataset.partition(":")
    dataset = load_beir(Path(path), split or "train")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="judgment-trial-"))
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps(trial(dataset, data_dir, args.post, seed, args.family)), flush=True)


if __name__ == "__main__":
    main()
