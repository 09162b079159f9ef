"""The main job: a dataset folder and a model -> indexes, TREC runs, metrics.json, a table and a chart.

    python -m diffret_pyserini.pipeline                      # CACM (shipped) + SPLADE-tiny (packaged)
    python -m diffret_pyserini.pipeline --dataset DIR --model FOLDER --kq 4 --kp 16

Stages (each skipped when its recorded content fingerprint - inputs, model, settings - still matches;
`--force` redoes them):
 1. BM25 index of title + text          indexes/<dataset>/bm25/index
 2. encode the corpus once (one pass)   indexes/<dataset>/<tag>/{dense,multi,sparse}   (resumable)
 3. encode the queries                  indexes/<dataset>/<tag>/queries/
 4. Lucene impact index                 indexes/<dataset>/<tag>/impact   (pyserini.index.lucene)
 5. search every system                 runs/<dataset>/<tag>/<system>.trec
 6. trec_eval                           runs/<dataset>/<tag>/metrics.{json,md,png}
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffret_pyserini.datasets import Dataset, check_dataset, iter_corpus, load_queries, resolve_dataset
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.systems import SYSTEMS, SearchInputs, run_system, uses_bm25, uses_model


@dataclass
class PipelineArguments:
    dataset: str = field(default="cacm", metadata={"help": "BEIR-layout folder (corpus.jsonl, queries.jsonl, "
                                                           "qrels/test.tsv), TREC-layout folder, or 'cacm'"})
    model: str = field(default="splade-tiny", metadata={"help": "model folder or packaged name"})
    kind: str | None = field(default=None, metadata={"help": "backbone kind; default read off the model"})
    kq: int | None = field(default=None, metadata={"help": "query slots (default 4, or the model's own)"})
    kp: int | None = field(default=None, metadata={"help": "passage slots (default 16, or the model's own)"})
    top_n: int | None = field(default=None, metadata={"help": "sparse top-N per slot (default 128)"})
    sparse_activation: str | None = field(default=None, metadata={"help": "relu or softplus"})
    query_max_length: int | None = field(default=None, metadata={"help": "query text tokens (default 64)"})
    passage_max_length: int | None = field(default=None, metadata={"help": "passage text tokens (default 256)"})
    alpha: float = field(default=0.5, metadata={
        "help": "hybrid weight of the sparse seat (0.5 = equal): our sparse side, or BM25 in hybrid-bm25-*"})
    hits: int = field(default=1000, metadata={"help": "depth of every run"})
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS), metadata={"help": "systems to run"})
    batch_size: int = field(default=32, metadata={"help": "encoding batch size"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto"})
    threads: int = field(default=2, metadata={"help": "indexing and search threads"})
    indexes: str = field(default="indexes", metadata={"help": "root of the index folders"})
    runs: str = field(default="runs", metadata={"help": "root of the run folders"})
    tag: str | None = field(default=None, metadata={"help": "prefix for the derived model tags in output paths"})
    finetune: str = field(default="auto", metadata={
        "help": "also fine-tune the model on pseudo-queries from the corpus itself (never the test topics) and "
                "report it beside the zero-shot systems: 'auto' (the embedded default model on a corpus with "
                "titles), 'yes', 'no'. Trained once, cached by content.", "choices": ["auto", "yes", "no"]})
    force: bool = field(default=False, metadata={"help": "redo every stage"})


class StageLog:
    """Fingerprints of finished stages, kept in one JSON file written atomically."""

    def __init__(self, path: Path, force: bool = False):
        self.path = path
        self.force = force
        self.done = json.loads(path.read_text()) if path.is_file() else {}

    def is_done(self, stage: str, fp: str) -> bool:
        return not self.force and self.done.get(stage) == fp

    def mark(self, stage: str, fp: str) -> None:
        from diffret_pyserini.writers import atomic_write_json

        self.done[stage] = fp
        atomic_write_json(self.path, self.done)


def log(message: str) -> None:
    print(f"[pipeline] {message}", flush=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def model_tag(model: str, settings: dict, defaults: dict) -> str:
    """'splade-tiny-kq4-kp16', plus a short hash when other settings differ from the model's defaults."""
    name = slug(Path(model).name if os.path.isdir(model) else model)
    extra = {k: v for k, v in settings.items() if k not in ("kq", "kp") and defaults.get(k) != v}
    tag = f"{name}-kq{settings['kq']}-kp{settings['kp']}"
    return f"{tag}-{fingerprint(**extra)[:8]}" if extra else tag


def run_quiet(cmd: list[str], log_path: Path) -> None:
    """Run a Pyserini CLI, its (long, Java) output into a log file; a failure shows the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as handle:
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}), see {log_path}: "
                           + " | ".join(tail))


def build_lucene_index(collection: str, input_dir: Path, index_dir: Path, threads: int, impact: bool) -> None:
    """`python -m pyserini.index.lucene` into a temp folder, renamed into place when complete."""
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pyserini.index.lucene", "--collection", collection, "--input", str(input_dir),
           "--index", str(tmp), "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads)]
    cmd += ["--impact", "--pretokenized"] if impact else ["--storePositions", "--storeDocvectors", "--storeRaw"]
    run_quiet(cmd, index_dir.with_name(index_dir.name + ".log"))
    shutil.rmtree(index_dir, ignore_errors=True)
    os.replace(tmp, index_dir)


def bm25_stage(dataset: Dataset, root: Path, args: PipelineArguments) -> Path:
    """Index title + text (the contents our encoders see) for BM25."""
    from diffret_pyserini.writers import atomic_write

    stages = StageLog(root / "stages.json", args.force)
    fp = fingerprint(corpus=path_digest(dataset.corpus_path))
    index = root / "index"
    if stages.is_done("bm25", fp) and index.is_dir():
        log(f"bm25 index up to date: {index}")
        return index
    collection = root / "collection" / "docs.jsonl"
    with atomic_write(collection) as out:
        for doc in iter_corpus(dataset.corpus_path):
            out.write(json.dumps({"id": doc.docid, "contents": doc.contents}, ensure_ascii=False) + "\n")
    log("indexing BM25 ...")
    build_lucene_index("JsonCollection", collection.parent, index, args.threads, impact=False)
    stages.mark("bm25", fp)
    return index


def encoder_settings(args: PipelineArguments) -> dict:
    keys = ("kq", "kp", "top_n", "sparse_activation", "query_max_length", "passage_max_length")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def encode_stages(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], model: str):
    """Encode corpus (resumable) and queries; build the impact index. Returns (tag, index root, fingerprint)."""
    from diffret_pyserini.encode import encode_corpus, encode_queries, encoder_fingerprint
    from diffret_pyserini.pyserini_encoders import get_encoder
    from diffret_pyserini.writers import ResumeError

    load = {"kind": args.kind} if args.kind else {}
    encoder = get_encoder(model, device=args.device, **load, **encoder_settings(args))
    defaults = get_encoder(model, device=args.device, **load).settings.to_dict()
    tag = model_tag(model, encoder.settings.to_dict(), defaults)
    tag = f"{args.tag}-{tag}" if args.tag else tag
    root = Path(args.indexes) / dataset.name / tag
    stages = StageLog(root / "stages.json", args.force)
    log(f"model {model} ({encoder.backbone.kind}), tag {tag}")
    try:
        paths = encode_corpus(encoder, dataset.corpus_path, root, batch_size=args.batch_size, overwrite=args.force)
    except ResumeError as err:
        log(f"earlier encoding used other inputs; re-encoding ({err})")
        paths = encode_corpus(encoder, dataset.corpus_path, root, batch_size=args.batch_size, overwrite=True)
    enc_fp = fingerprint(encoder=encoder_fingerprint(encoder))
    q_fp = fingerprint(topics=topics, encoder=enc_fp)
    if not (stages.is_done("queries", q_fp) and (root / "queries" / "topics.tsv").is_file()):
        encode_queries(encoder, topics, root / "queries", batch_size=args.batch_size)
        stages.mark("queries", q_fp)
    impact_fp = fingerprint(sparse=path_digest(paths["sparse"]))
    if not (stages.is_done("impact", impact_fp) and (root / "impact").is_dir()):
        log("indexing impact vectors ...")
        build_lucene_index("JsonVectorCollection", paths["sparse"].parent, root / "impact", args.threads,
                           impact=True)
        stages.mark("impact", impact_fp)
    return tag, root, fingerprint(q=q_fp, impact=impact_fp, dense=path_digest(paths["dense"]),
                                  multi=path_digest(paths["multi"]))


def write_report(metrics: dict[str, dict[str, float]], out: Path, title: str) -> str:
    """metrics.json, metrics.md (table) and metrics.png (chart) in `out`; returns the table."""
    from diffret_pyserini.atomic import atomic_write_text
    from diffret_pyserini.evaluation import format_table, plot_metrics, write_metrics

    write_metrics(metrics, out / "metrics.json")
    table = format_table(metrics)
    atomic_write_text(out / "metrics.md", table + "\n")
    plot_metrics(metrics, out / "metrics.png", title=title)
    return table


def search_and_evaluate(dataset: Dataset, inputs: SearchInputs, run_dir: Path, index_fp: dict[str, str],
                        args: PipelineArguments, systems: list[str]) -> dict[str, dict[str, float]]:
    from diffret_pyserini.evaluation import convert_qrels, evaluate_run
    from diffret_pyserini.runs import write_trec_run

    run_dir.mkdir(parents=True, exist_ok=True)
    stages = StageLog(run_dir / "stages.json", args.force)
    if dataset.qrels_path is not None:  # TREC-format qrels beside the runs, for `python -m pyserini.eval.trec_eval`
        convert_qrels(dataset.qrels_path, run_dir.parent / "qrels.txt")
    metrics: dict[str, dict[str, float]] = {}
    for system in systems:
        run_path = run_dir / f"{system}.trec"
        fp = fingerprint(bm25=index_fp["bm25"] if uses_bm25(system) else None,
                         model=index_fp["model"] if uses_model(system) else None, hits=args.hits,
                         alpha=args.alpha if system.startswith("hybrid") else None)
        if not (stages.is_done(system, fp) and run_path.is_file()):
            start = time.time()
            results = run_system(system, inputs, hits=args.hits, alpha=args.alpha, threads=args.threads)
            write_trec_run(results, run_path, tag=slug(system), k=args.hits)
            stages.mark(system, fp)
            log(f"{system}: {len(results)} queries searched in {time.time() - start:.1f}s -> {run_path}")
        if dataset.qrels_path is not None:
            metrics[system] = evaluate_run(dataset.qrels_path, run_path)
    if metrics:
        write_report(metrics, run_dir, f"{dataset.name} / {run_dir.name}")
    return metrics


MIN_TITLE_QUERIES = 200  # 'auto' fine-tunes only a corpus with this many title pseudo-queries


def wants_finetune(args: PipelineArguments, dataset) -> bool:
    """'yes'/'no' as given; 'auto': the embedded default model on a corpus with enough titled documents (the
    pseudo-queries the fine-tuning recipe learns from); otherwise say why it is skipped."""
    from diffret_pyserini.models import resolve_model_path
    from diffret_pyserini.train.default import MINE
    from diffret_pyserini.train.mine import has_title_queries

    if args.finetune != "auto":
        return args.finetune == "yes"
    if resolve_model_path(args.model) != resolve_model_path(PipelineArguments.model):
        return False
    if not has_title_queries(dataset.corpus_path, MINE["titles"]["min_words"], MIN_TITLE_QUERIES):
        log(f"--finetune auto: skipped, {dataset.corpus_path} has fewer than {MIN_TITLE_QUERIES} documents with "
            "a title and a text to make pseudo-queries from (--finetune yes forces it)")
        return False
    return True


def run(args: PipelineArguments) -> dict[str, dict[str, float]]:
    """Run every stage; returns {system: {metric: value}} (fine-tuned systems prefixed 'ft-')."""
    from diffret_pyserini.evaluation import format_table

    dataset = resolve_dataset(args.dataset)
    for warning in check_dataset(dataset):
        log(f"warning: {warning}")
    topics = {qid: " ".join(text.split()) for qid, text in load_queries(dataset.queries_path).items()}
    bm25_index = bm25_stage(dataset, Path(args.indexes) / dataset.name / "bm25", args)
    models = [("", args.model)]
    if wants_finetune(args, dataset):
        from diffret_pyserini.train.default import finetuned_default

        log("fine-tuning the model on pseudo-queries from the corpus (cached once trained) ...")
        folder = finetuned_default(args.dataset, Path(args.indexes) / dataset.name / "finetuned", force=args.force,
                                   base_model=args.model)
        models.append(("ft-", str(folder)))
    combined: dict[str, dict[str, float]] = {}
    for prefix, model in models:
        tag, root, model_fp = encode_stages(dataset, args, topics, model)
        inputs = SearchInputs(bm25_index=bm25_index, impact_index=root / "impact", faiss_dir=root / "dense",
                              multi_dir=root / "multi", queries_dir=root / "queries", topics=topics)
        index_fp = {"bm25": fingerprint(bm25=StageLog(bm25_index.parent / "stages.json").done.get("bm25"),
                                        topics=topics),
                    "model": model_fp}
        systems = [s for s in args.systems if not (prefix and s == "bm25")]
        metrics = search_and_evaluate(dataset, inputs, Path(args.runs) / dataset.name / tag, index_fp, args,
                                      systems)
        combined.update({prefix + system: row for system, row in metrics.items()})
    if combined:
        out = Path(args.runs) / dataset.name
        if len(models) > 1:  # zero-shot and fine-tuned side by side
            write_report(combined, out, f"{dataset.name}: zero-shot and fine-tuned")
        print(format_table(combined))
    return combined


def main(argv: list[str] | None = None) -> int:
    from diffret_pyserini.cli import run_dataclass_cli

    return run_dataclass_cli((PipelineArguments,), run, "python -m diffret_pyserini.pipeline", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
