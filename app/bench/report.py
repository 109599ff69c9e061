"""The benchmark's one table: a row per figure, with its comparison and target (met / NOT met)."""

import os
from dataclasses import dataclass

from app.bench.encoders import BASELINE, LOADED_CLIENTS, EncoderFigures
from app.bench.inprocess import DenseFigures, LexicalFigures
from app.bench.measures import median
from app.bench.phases import CLIENTS, LONG_QUERY_CHARS, MODES, IngestFigures, SizeFigures
from app.bench.replicas import ReplicaFigures, replica_rows

INGEST_TARGET, RANK_TARGET, BM25S_TARGET, ADD_TARGET_S, RECALL_TARGET = 0.9, 50.0, 2.0, 1.0, 0.95
# issue #14: the new default encoder against PyTorch, in the same run
P50_VS_TORCH_TARGET, QPS_VS_TORCH_TARGET, INGEST_VS_TORCH_TARGET, DURING_INGEST_TARGET = 0.5, 3.0, 1.4, 2.0


@dataclass
class Row:
    section: str
    measure: str
    value: str
    comparison: str = ""
    target: str = ""
    met: bool | None = None


@dataclass
class MemoryModel:
    dim: int
    m: int
    unique_terms_per_doc: float

    @property
    def vector(self) -> float:
        return 4.0 * self.dim

    @property
    def links(self) -> float:
        """hnswlib: 2M level-0 links + count, upper levels (1/M of nodes, M links each), then label, list
        pointer, level, lock and the label map entry (~100 bytes together)."""
        return 4.0 * (2 * self.m + 1) + 4.0 * (self.m + 1) / (self.m - 1) + 100.0

    @property
    def postings(self) -> float:
        """LexicalIndex exposes no byte count: ~12 bytes a posting (slot, tf, forward term id)."""
        return 12.0 * self.unique_terms_per_doc

    @property
    def total(self) -> float:
        return self.vector + self.links + self.postings


def size_label(n: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "K")):
        if n >= unit and n % (unit // 10) == 0:
            return f"{n / unit:g}{name}"
    return str(n)


def _ingest_rows(ingest: IngestFigures, per_pair: int, threads: int, batch: int) -> list[Row]:
    ratios = ", ".join(f"{i / e:.2f}" for i, e in zip(ingest.ingest_rates, ingest.encode_rates, strict=True))
    ratio = ingest.ratio
    return [
        Row("encoder", f"bare SentenceTransformer.encode, {per_pair} docs a run, batch {batch}, "
                       f"SEARCH_THREADS={threads}", f"{median(ingest.encode_rates):.1f} docs/s",
            f"runs: {', '.join(f'{r:.1f}' for r in ingest.encode_rates)}"),
        Row("encoder", f"bare single-query encode p50, SEARCH_THREADS={threads}", f"{median(ingest.query_p50s):.1f} ms",
            f"max QPS one thread: {1000 / median(ingest.query_p50s):.0f}"),
        Row("ingest", "POST /documents, text only, 256 a batch, encoded by the server",
            f"{median(ingest.ingest_rates):.1f} docs/s", f"{ratio:.2f}x bare encode (median of pairs on the same "
                                                         f"texts: {ratios})",
            f"≥ {INGEST_TARGET}x", ratio >= INGEST_TARGET),
    ]


def _query_rows(sizes: list[SizeFigures]) -> list[Row]:
    rows, base = [], sizes[0]
    for fig in sizes:
        label = size_label(fig.size)
        rows.append(Row("query", f"bulk load @{label}, {fig.batch} docs with vectors a request",
                        f"{fig.load_rate:.0f} docs/s"))
        for mode in MODES:
            for clients in CLIENTS:
                runs = fig.runs[(mode, clients)]
                p50, p99, qps = (median([getattr(r, a) for r in runs]) for a in ("p50", "p99", "qps"))
                vs_encode = median([r.p50 / e for r, e in zip(runs, fig.encode_p50s, strict=True)])
                qps_encode = median([r.qps * e / 1000 for r, e in zip(runs, fig.encode_p50s, strict=True)])
                base_p50, base_qps = (median([getattr(r, a) for r in base.runs[(mode, clients)]])
                                      for a in ("p50", "qps"))
                rows.append(Row(
                    "query", f"{mode} @{label}, {clients} client{'s' if clients > 1 else ''}",
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {qps:.1f} QPS",
                    f"p50 {vs_encode:.2f}x, QPS {qps_encode:.2f}x bare encode; p50 {p50 / base_p50:.2f}x, "
                    f"QPS {qps / base_qps:.2f}x @{size_label(base.size)}"))
        if fig.long_runs:
            p50, p99 = (median([getattr(r, a) for r in fig.long_runs]) for a in ("p50", "p99"))
            ordinary = median([r.p50 for r in fig.runs[("hybrid", 1)]])
            rows.append(Row("query", f"hybrid @{label}, 1 client, {LONG_QUERY_CHARS:,}-character queries",
                            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                            f"p50 {p50 / ordinary:.2f}x the ordinary hybrid p50"))
        if fig.during_load is not None:
            run, idle = fig.during_load, median([r.p50 for r in fig.runs[("hybrid", 1)]])
            rows.append(Row("query", f"hybrid @{label}, 1 client, while {fig.reposted} docs are re-posted",
                            f"p50 {run.p50:.1f} ms, p99 {run.p99:.1f} ms, {run.qps:.1f} QPS",
                            f"p50 {run.p50 / idle:.2f}x the idle hybrid p50"))
    errors = sum(fig.errors for fig in sizes)
    rows.append(Row("query", "HTTP errors in every query run", str(errors), "", "= 0", errors == 0))
    return rows


def _lexical_rows(lex: LexicalFigures) -> list[Row]:
    import bm25s

    label = size_label(lex.docs)
    return [
        Row("lexical", f"LexicalIndex top-10 p50 @{label} docs (in-process)", f"{lex.ours_p50_ms:.2f} ms"),
        Row("lexical", "rank_bm25.BM25Okapi top-10 p50, same tokens", f"{lex.rank_p50_ms:.1f} ms",
            f"LexicalIndex {lex.rank_vs_ours:.0f}x faster (same queries)", f"≥ {RANK_TARGET:g}x",
            lex.rank_vs_ours >= RANK_TARGET),
        Row("lexical", "top-10 scores, LexicalIndex vs BM25Okapi", f"max |Δ| {lex.max_score_diff:.1e}",
            "identical to 1e-6", "≤ 1e-6", lex.max_score_diff <= 1e-6),
        Row("lexical", f"bm25s {bm25s.__version__} (numpy backend) top-10 p50", f"{lex.bm25s_p50_ms:.2f} ms",
            f"LexicalIndex p50 {lex.ours_vs_bm25s:.2f}x bm25s's", f"≤ {BM25S_TARGET:g}x",
            lex.ours_vs_bm25s <= BM25S_TARGET),
        Row("lexical", f"add 1,000 docs to the {label} index", f"{lex.add_1000_s:.3f} s",
            f"rebuild instead: rank-bm25 {lex.rank_rebuild_s:.1f} s, bm25s {lex.bm25s_rebuild_s:.1f} s",
            f"≤ {ADD_TARGET_S:g} s", lex.add_1000_s <= ADD_TARGET_S),
    ]


def _dense_rows(dense: list[DenseFigures], control: DenseFigures, m: int) -> list[Row]:
    rows = []
    for d in [*dense, control]:
        others = ", ".join(f"ef {ef}: {r:.3f}" for ef, r in d.other_efs.items())
        measured = ("too few vectors to tune" if d.tuned_self_recall is None else
                    f"tuned in {d.tune_seconds:.1f} s to {d.tuned_self_recall:.3f} on its probe queries")
        comparison = (f"query p50 {d.p50_ms:.2f} ms; fixed ef {d.fixed_ef}: recall {d.fixed_recall:.3f}, "
                      f"p50 {d.fixed_p50_ms:.2f} ms; {others}")
        if d is control:
            rows.append(Row("dense", f"control: the {d.docs} real vectors alone (no noise-derived ones), self-tuned "
                                     f"ef {d.tuned_ef} ({measured})", f"{d.recall_at_10:.3f}", comparison))
            continue
        rows.append(Row("dense", f"HNSW recall@10 vs exact @{size_label(d.docs)}, self-tuned ef {d.tuned_ef} "
                                 f"({measured}; M {m}, in-process)", f"{d.recall_at_10:.3f}", comparison,
                        f"≥ {RECALL_TARGET}", d.recall_at_10 >= RECALL_TARGET))
    return rows


def _target(targeted: bool, text: str, met: bool) -> tuple[str, bool | None]:
    return (text, met) if targeted else ("", None)


def _encoder_rows(figures: list[EncoderFigures]) -> list[Row]:
    """The first backend is the candidate (the new default): the targets are its; every backend is compared
    with the bare PyTorch encode of its own rounds and, for throughput, with the PyTorch backend's figures."""
    if not figures:
        return []
    baseline = next((f for f in figures if f.backend == BASELINE), None)
    base_qps = median([r.qps for r in baseline.loaded]) if baseline else float("nan")
    base_ingest = baseline.ingest_rate if baseline else float("nan")
    rows = []
    for fig in figures:
        candidate = fig is figures[0]
        rows += _backend_rows(fig, candidate, candidate and baseline is not None and baseline is not fig,
                              base_qps, base_ingest)
    errors = sum(fig.errors for fig in figures)
    rows.append(Row("encoder", "HTTP errors in the encoder runs", str(errors), "", "= 0", errors == 0))
    return rows


def _backend_rows(fig: EncoderFigures, candidate: bool, versus: bool, base_qps: float, base_ingest: float
                  ) -> list[Row]:
    """`candidate`: the targets against the bare encode and idle are its; `versus`: so are the ones against
    the PyTorch backend's figures (base_qps, base_ingest)."""
    label, name = size_label(fig.size), f"SEARCH_ENCODER={fig.backend}"
    p50 = median([r.p50 for r in fig.single])
    vs_bare = median([r.p50 / b for r, b in zip(fig.single, fig.bare_p50s, strict=True)])
    qps, loaded_p50, p99 = (median([getattr(r, a) for r in fig.loaded]) for a in ("qps", "p50", "p99"))
    ingest = fig.ingest_rate / base_ingest
    cpu, cpus = median(fig.cpu_ms), os.cpu_count() or 1
    rows = [
        Row("encoder", f"hybrid @{label}, 1 client, {name}", f"p50 {p50:.1f} ms",
            f"{vs_bare:.2f}x a bare PyTorch single-query encode of the same rounds ({median(fig.bare_p50s):.1f} ms)",
            *_target(candidate, f"≤ {P50_VS_TORCH_TARGET}x", vs_bare <= P50_VS_TORCH_TARGET)),
        Row("encoder", f"hybrid @{label}, {LOADED_CLIENTS} clients, {name}",
            f"{qps:.1f} QPS, p50 {loaded_p50:.1f} ms, p99 {p99:.1f} ms",
            f"QPS {qps / base_qps:.2f}x {BASELINE}'s; {median(fig.per_pass):.1f} queries a forward pass; server CPU "
            f"{cpu:.1f} ms a search: {cpus} cores serve at most {1000 * cpus / cpu:.0f} QPS",
            *_target(versus, f"≥ {QPS_VS_TORCH_TARGET:g}x", qps / base_qps >= QPS_VS_TORCH_TARGET)),
        Row("encoder", f"POST /documents, text only, encoded by the server, {name}", f"{fig.ingest_rate:.1f} docs/s",
            f"{ingest:.2f}x {BASELINE}'s",
            *_target(versus, f"≥ {INGEST_VS_TORCH_TARGET:g}x", ingest >= INGEST_VS_TORCH_TARGET)),
    ]
    if fig.during_ingest is not None:
        during = fig.during_ingest.p50 / p50
        rows.append(Row("encoder", f"hybrid @{label}, 1 client, during a bulk text ingest, {name}",
                        f"p50 {fig.during_ingest.p50:.1f} ms, p99 {fig.during_ingest.p99:.1f} ms",
                        f"{during:.2f}x idle p50; the ingest meanwhile {fig.ingested_during:.1f} docs/s",
                        *_target(candidate, f"≤ {DURING_INGEST_TARGET:g}x", during <= DURING_INGEST_TARGET)))
    recall = "not measured" if fig.tuned_recall is None else f"recall@10 {fig.tuned_recall:.3f} of its probe queries"
    rows.append(Row("encoder", f"self-tuned ef_search @{label} over HTTP, {name}", str(fig.tuned_ef), recall))
    return rows


def _memory_rows(sizes: list[SizeFigures], model: MemoryModel) -> list[Row]:
    rows = []
    parts = (f"model {model.total:.0f} B = vector {model.vector:.0f} + HNSW {model.links:.0f} + postings "
             f"{model.postings:.0f} ({model.unique_terms_per_doc:.0f} terms x 12)")
    for fig in sizes:
        per_doc = (fig.rss_loaded - fig.rss_empty) / fig.size
        rows.append(Row("memory", f"server RSS per doc @{size_label(fig.size)} after load (empty server "
                                  f"{fig.rss_empty / 2**20:.0f} MiB)",
                        f"{per_doc:.0f} B", f"{per_doc / model.total:.2f}x {parts}"))
    last = sizes[-1]
    restart = last.restart
    if restart is not None:
        per_doc = (restart.rss - last.rss_empty) / last.size
        rows.append(Row("memory", f"server RSS per doc @{size_label(last.size)} after restart", f"{per_doc:.0f} B",
                        f"{per_doc / model.total:.2f}x model"))
        ratio = median([r / e for r, e in zip(restart.ready_s, restart.empty_s, strict=True)])
        rows.append(Row("restart", "process start → /ready, empty data dir", f"{median(restart.empty_s):.1f} s",
                        f"starts: {', '.join(f'{s:.1f}' for s in restart.empty_s)}"))
        rows.append(Row("restart", f"process start → /ready @{size_label(last.size)}, after a clean SIGTERM",
                        f"{median(restart.ready_s):.1f} s",
                        f"{ratio:.2f}x empty start (alternating); the SIGTERM with its snapshot took "
                        f"{last.shutdown_s:.1f} s"))
    return rows


def _replica_rows(replicas: ReplicaFigures) -> list[Row]:
    rows = [Row("replicas", *row) for row in replica_rows(replicas, size_label(replicas.size))]
    rows.append(Row("replicas", "HTTP errors in the replicas' query runs", str(replicas.errors), "", "= 0",
                    replicas.errors == 0))
    return rows


def build_rows(ingest: IngestFigures, per_pair: int, threads: int, batch: int, sizes: list[SizeFigures],
               lexical: LexicalFigures, dense: list[DenseFigures], control: DenseFigures, model: MemoryModel,
               encoders: list[EncoderFigures], replicas: ReplicaFigures) -> list[Row]:
    return [*_ingest_rows(ingest, per_pair, threads, batch), *_query_rows(sizes), *_encoder_rows(encoders),
            *_replica_rows(replicas),
            *_lexical_rows(lexical), *_dense_rows(dense, control, model.m), *_memory_rows(sizes, model)]


def render(rows: list[Row], title: str) -> str:
    header = Row("section", "measure", "value", "comparison", "target")
    cells = [[r.section, r.measure, r.value, r.comparison,
              r.target if r.met is None or not r.target else f"{r.target} {'met' if r.met else 'NOT met'}"]
             for r in [header, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = [" | ".join(c[i].ljust(widths[i]) for i in range(5)).rstrip() for c in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join([title, *lines])
