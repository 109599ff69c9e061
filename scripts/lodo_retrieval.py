"""Leave-one-domain-out choice of the BM25 and fusion defaults over BEIR datasets (the README's table).

Usage: .venv/bin/python scripts/lodo_retrieval.py --cache /tmp/emb \
    --dataset ../shared/data/scifact:train --dataset ../shared/data/nfcorpus:train \
    --dataset ../shared/data/cisi:test --dataset ../shared/data/cacm:test

Each dataset's documents and queries are encoded once with the service's own encoder (cached as .npy under
--cache); dense search is exact (HNSW at ef 512 on these sizes finds the same top-100). For every BM25 (k1, b)
on a grid it scores lexical, dense, convex fusion (three normalisations, seven dense weights) and RRF with
nDCG@10, then, leaving each dataset out in turn, picks BM25 by mean lexical nDCG@10 on the others and the fusion
by mean hybrid nDCG@10 on the others, and reports both on the one left out. Use train splits where a dataset has
them: the defaults must generalise, not fit the figures they are reported on.
"""

import argparse
import itertools
import json
from pathlib import Path

from app.runtime import configure_environment

configure_environment()  # an entry point: the thread caps go in before the imports below load numpy and torch

import numpy as np  # noqa: E402

from app.engine.embedder import Embedder, document_text  # noqa: E402
from app.engine.fusion import convex_fusion, rank_by, rrf_fusion  # noqa: E402
from app.engine.lexical import LexicalIndex  # noqa: E402
from app.engine.tokenizer import Tokenizer  # noqa: E402
from app.engine.types import NORMALIZATIONS  # noqa: E402
from app.eval.beir import load_beir  # noqa: E402
from app.eval.runner import score  # noqa: E402
from app.settings import Settings  # noqa: E402

K1S = (0.6, 0.9, 1.2, 1.5, 2.0)
BS = (0.3, 0.4, 0.6, 0.75, 0.9)
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MAX_QUERIES = 600  # a dataset with more judged queries is cut to this many (drawn at random)
DEFAULT_BM25 = "1.2,0.75"


def encoded(embedder: Embedder, cache: Path, key: str, texts: list[str]) -> np.ndarray:
    path = cache / f"{key}.npy"
    if not path.exists():
        np.save(path, embedder.encode_documents(texts))
    return np.load(path)


def runs_of(dataset_dir: Path, split: str, embedder: Embedder, cache: Path) -> dict[str, dict[str, float]]:
    """nDCG@10 of every run at every (k1, b): {"k1,b": {run name: nDCG@10}}."""
    data = load_beir(dataset_dir, split)
    qids = sorted(q for q, judged in data.qrels.items() if q in data.queries and max(judged.values()) > 0)
    if len(qids) > MAX_QUERIES:
        qids = sorted(np.random.default_rng(0).choice(qids, MAX_QUERIES, replace=False).tolist())
    texts = [document_text(d.get("title") or None, d.get("text", "")) for d in data.corpus]
    docs = encoded(embedder, cache, f"{data.name}-docs", texts)
    queries = encoded(embedder, cache, f"{data.name}-{split}-queries", [data.queries[q] for q in qids])
    tokenizer = Tokenizer()
    tokens = [tokenizer(t) for t in texts]
    ids = [d["_id"] for d in data.corpus]
    table = {}
    for k1, b in itertools.product(K1S, BS):
        index = LexicalIndex(k1, b)
        index.upsert(list(range(len(tokens))), tokens)
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for qid, vector in zip(qids, queries, strict=True):
            words = tokenizer(data.queries[qid])
            lexical, _ = index.top_k(words, 100)
            sims = docs @ vector
            dense = np.argsort(-sims, kind="stable")[:100]
            labels = np.unique(np.concatenate([lexical, dense]).astype(np.int64))
            bm25, cosine = index.scores(words, labels), sims[labels].astype(np.float64)
            ranks = [np.array([{int(v): i + 1 for i, v in enumerate(r)}.get(int(x), 0) for x in labels])
                     for r in (lexical, dense)]
            fused = {"lexical": bm25, "dense": cosine, "rrf-60": rrf_fusion(ranks, 60)}
            for norm, alpha in itertools.product(NORMALIZATIONS, ALPHAS):
                fused[f"convex-{norm}-{alpha}"] = convex_fusion(bm25, cosine, alpha, norm)
            for name, scores in fused.items():
                order = rank_by(scores, labels)[:100]
                runs.setdefault(name, {})[qid] = {ids[int(labels[i])]: float(100 - r) for r, i in enumerate(order)}
        table[f"{k1},{b}"] = {name: score(run, data.qrels)["ndcg@10"] for name, run in runs.items()}
    print(f"{data.name} {split}: {len(qids)} queries", flush=True)
    return table


def leave_one_out(tables: dict[str, dict[str, dict[str, float]]]) -> None:
    names = list(tables)

    def mean(among: list[str], bm25: str, run: str) -> float:
        return float(np.mean([tables[n][bm25][run] for n in among]))

    for held in names:
        others = [n for n in names if n != held]
        bm25 = max(tables[held], key=lambda c: mean(others, c, "lexical"))
        fusions = [r for r in tables[held][DEFAULT_BM25] if r not in ("lexical", "dense")]
        fusion = max(fusions, key=lambda r: mean(others, DEFAULT_BM25, r))
        row = tables[held][DEFAULT_BM25]
        print(f"left out {held}: BM25 pick {bm25} (lexical there {tables[held][bm25]['lexical']:.3f}; at "
              f"{DEFAULT_BM25} {row['lexical']:.3f}); fusion pick at {DEFAULT_BM25}: {fusion} -> {row[fusion]:.3f} "
              f"(lexical {row['lexical']:.3f}, dense {row['dense']:.3f})")
    print("mean over all: (k1, b) lexical | convex-tm2c2-0.8")
    for bm25 in tables[names[0]]:
        print(f"  {bm25:<9}{np.mean([tables[n][bm25]['lexical'] for n in names]):.4f} | "
              f"{np.mean([tables[n][bm25]['convex-tm2c2-0.8'] for n in names]):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="DIR:SPLIT, repeated")
    parser.add_argument("--cache", required=True, help="folder for the encoded documents and queries")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(Settings().model_path(), threads=2)
    tables = {}
    for item in args.dataset:
        path, _, split = item.partition(":")
        tables[Path(path).name] = runs_of(Path(path), split or "train", embedder, cache)
    if args.json:
        Path(args.json).write_text(json.dumps(tables))
    leave_one_out(tables)


if __name__ == "__main__":
    main()
