"""Chooses the defaults (BM25 k1/b, fusion alpha and normalisation) on a BEIR *train* split.

Usage: .venv/bin/python scripts/tune.py --dataset ../shared/data/scifact --data-dir /tmp/scifact-data
Never point it at a test split: the defaults must generalise, not fit the figures they are reported on.
"""

import argparse
from pathlib import Path

from app.runtime import configure_environment

configure_environment()  # an entry point: the thread caps go in before the imports below load numpy and torch

from app.engine.embedder import document_text
from app.engine.lexical import LexicalIndex
from app.engine.tokenizer import Tokenizer
from app.engine.types import NORMALIZATIONS
from app.eval.beir import load_beir
from app.eval.runner import ensure_corpus, in_process_client, run_queries, score


def tune_bm25(dataset_dir: Path, split: str) -> None:
    dataset = load_beir(dataset_dir, split)
    tokenizer = Tokenizer()
    docs = [tokenizer(document_text(d.get("title"), d.get("text", ""))) for d in dataset.corpus]
    queries = {qid: tokenizer(text) for qid, text in dataset.queries.items()}
    print(f"BM25 on {dataset.name} {split} ({len(queries)} queries): nDCG@10 / R@100")
    for k1 in (0.6, 0.9, 1.2, 1.5):
        row = []
        for b in (0.3, 0.4, 0.6, 0.75, 0.9):
            index = LexicalIndex(k1, b)
            index.upsert(list(range(len(docs))), docs)
            run = {}
            for qid, tokens in queries.items():
                labels, scores = index.top_k(tokens, 100)
                run[qid] = {dataset.corpus[int(i)]["_id"]: float(s) for i, s in zip(labels, scores, strict=True)}
            m = score(run, dataset.qrels)
            row.append(f"b={b}: {m['ndcg@10']:.3f}/{m['recall@100']:.3f}")
        print(f"k1={k1}: " + "  ".join(row))


def tune_fusion(dataset_dir: Path, split: str, data_dir: Path) -> None:
    dataset = load_beir(dataset_dir, split)
    collection = f"eval-{dataset.name}"
    with in_process_client(data_dir) as client:
        ensure_corpus(client, collection, dataset.corpus)
        print(f"fusion on {dataset.name} {split}: nDCG@10 / R@100")
        for normalization in NORMALIZATIONS:
            row = []
            for alpha in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
                body = {"k": 100, "candidates": 100, "relevance": {"enabled": False},
                        "fusion": {"method": "convex", "alpha": alpha, "normalization": normalization}}
                run, _ = run_queries(client, collection, dataset.queries, body)
                m = score(run, dataset.qrels)
                row.append(f"a={alpha}: {m['ndcg@10']:.3f}/{m['recall@100']:.3f}")
            print(f"{normalization:<7} " + "  ".join(row))
        for rrf_k in (10, 30, 60, 100):
            body = {"k": 100, "candidates": 100, "relevance": {"enabled": False},
                    "fusion": {"method": "rrf", "rrf_k": rrf_k}}
            run, _ = run_queries(client, collection, dataset.queries, body)
            m = score(run, dataset.qrels)
            print(f"rrf k={rrf_k}: {m['ndcg@10']:.3f}/{m['recall@100']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--only", choices=["bm25", "fusion"])
    args = parser.parse_args()
    if args.split == "test":
        parser.error("tune on a train split; the test split is for reporting")
    if args.only != "fusion":
        tune_bm25(Path(args.dataset), args.split)
    if args.only != "bm25":
        tune_fusion(Path(args.dataset), args.split, Path(args.data_dir))


if __name__ == "__main__":
    main()
