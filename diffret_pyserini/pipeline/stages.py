"""The main job's stages: BM25, encoding, impact index, search and evaluation, each cached by fingerprint.

See the package docstring for the folder layout. Indexing and stage bookkeeping live below (indexing.py,
stage_log.py), shared with training; this module only orders the stages and names the outputs.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from diffret_pyserini.datasets import Dataset, check_dataset, load_queries, normalize_text, resolve_dataset
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.indexing import bm25_fingerprint, bm25_index, build_lucene_index, dataset_key
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.stage_log import StageLog, folder_lock
from diffret_pyserini.systems import SearchInputs, run_system, uses_bm25, uses_model

log = logging.getLogger("diffret_pyserini.pipeline")  # shown as [pipeline]

MIN_TITLE_QUERIES = 200  # 'auto' fine-tunes only a corpus with this many title pseudo-queries


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def model_tag(model: str, settings: dict, defaults: dict) -> str:
    """'splade-tiny-kq4-kp16', plus a short hash when other settings differ from the model's defaults."""
    name = slug(Path(model).name if os.path.isdir(model) else model)
    extra = {k: v for k, v in settings.items() if k not in ("kq", "kp") and defaults.get(k) != v}
    tag = f"{name}-kq{settings['kq']}-kp{settings['kp']}"
    return f"{tag}-{fingerprint(**extra)[:8]}" if extra else tag


def encode_stages(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], model: str):
    """Encode corpus (resumable) and queries; build the impact index. Returns (tag, index root, fingerprint)."""
    from diffret_pyserini.encode_jobs import encode_corpus, encode_queries, encoder_fingerprint
    from diffret_pyserini.encoder_spec import get_encoder
    from diffret_pyserini.writers import ResumeError

    load = args.load_options()
    encoder = get_encoder(model, device=args.device, **load, **args.settings())
    defaults = get_encoder(model, device=args.device, **load).settings.to_dict()
    tag = model_tag(model, encoder.settings.to_dict(), defaults)
    tag = f"{args.tag}-{tag}" if args.tag else tag
    root = Path(args.indexes) / dataset_key(dataset) / tag
    with folder_lock(root):  # a second run on the same folder waits, then reuses what the first made
        stages = StageLog(root / "stages.json", args.force)
        log.info(f"model {model} ({encoder.backbone.kind}), tag {tag}")
        def encode(overwrite: bool) -> dict:
            if args.ray is None:
                return encode_corpus(encoder, dataset.corpus_path, root, overwrite=overwrite,
                                     **args.encoding_options())
            from diffret_pyserini.ray_encode import EncoderRecipe, encode_corpus_ray

            recipe = EncoderRecipe(model, args.device, load, args.settings())
            return encode_corpus_ray(recipe, dataset.corpus_path, root, args.ray, args.ray_workers,
                                     overwrite=overwrite, **args.encoding_options())

        try:
            paths = encode(args.force)
        except ResumeError as err:
            log.info(f"earlier encoding used other inputs; re-encoding ({err})")
            paths = encode(True)
        enc_fp = fingerprint(encoder=encoder_fingerprint(encoder))
        q_fp = fingerprint(topics=topics, encoder=enc_fp)
        if not (stages.is_done("queries", q_fp) and (root / "queries" / "topics.tsv").is_file()):
            encode_queries(encoder, topics, root / "queries", batch_size=args.batch_size)
            stages.mark("queries", q_fp)
        impact_fp = fingerprint(sparse=path_digest(paths["sparse"]))
        if not (stages.is_done("impact", impact_fp) and (root / "impact").is_dir()):
            log.info("indexing impact vectors ...")
            build_lucene_index("JsonVectorCollection", paths["sparse"].parent, root / "impact", args.threads,
                               impact=True)
            stages.mark("impact", impact_fp)
    return tag, root, fingerprint(q=q_fp, impact=impact_fp, dense=path_digest(paths["dense"]),
                                  multi=path_digest(paths["multi"]))


def search_and_evaluate(dataset: Dataset, inputs: SearchInputs, run_dir: Path, index_fp: dict[str, str],
                        args: PipelineArguments, systems: list[str]) -> dict[str, dict[str, float]]:
    from diffret_pyserini.evaluation import convert_qrels, evaluate_run, write_report
    from diffret_pyserini.runs import write_trec_run

    with folder_lock(run_dir):
        stages = StageLog(run_dir / "stages.json", args.force)
        if dataset.qrels_path is not None:  # TREC qrels beside the runs, for `python -m pyserini.eval.trec_eval`
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
                log.info(f"{system}: {len(results)} queries searched in {time.time() - start:.1f}s -> {run_path}")
            if dataset.qrels_path is not None:
                metrics[system] = evaluate_run(dataset.qrels_path, run_path)
        if metrics:
            write_report(metrics, run_dir, f"{dataset.name} / {run_dir.name}")
    return metrics


def wants_finetune(args: PipelineArguments, dataset) -> bool:
    """'yes'/'no' as given; 'auto': the embedded default model on a corpus with enough titled documents (the
    pseudo-queries the fine-tuning recipe learns from); otherwise say why it is skipped."""
    from diffret_pyserini.packaged_models import resolve_model_path
    from diffret_pyserini.train.default import MINE
    from diffret_pyserini.train.mine import has_title_queries

    if args.finetune != "auto":
        return args.finetune == "yes"
    if resolve_model_path(args.model) != resolve_model_path(PipelineArguments.model):
        return False
    if not has_title_queries(dataset.corpus_path, MINE["titles"]["min_words"], MIN_TITLE_QUERIES):
        log.info(f"--finetune auto: skipped, {dataset.corpus_path} has fewer than {MIN_TITLE_QUERIES} documents "
                 "with a title and a text to make pseudo-queries from (--finetune yes forces it)")
        return False
    return True


def run(args: PipelineArguments) -> dict[str, dict[str, float]]:
    """Run every stage; returns {system: {metric: value}} (fine-tuned systems prefixed 'ft-')."""
    from diffret_pyserini.encoder_spec import get_encoder
    from diffret_pyserini.evaluation import format_table, write_report

    args.validate()  # every flag, then every input file, then the model: all before any index or encoding
    dataset = resolve_dataset(args.dataset)
    for warning in check_dataset(dataset):
        log.warning(f"warning: {warning}")
    topics = {qid: normalize_text(text) for qid, text in load_queries(dataset.queries_path).items()}
    get_encoder(args.model, device=args.device, **args.load_options(), **args.settings()).check_lengths()
    key = dataset_key(dataset)
    bm25 = bm25_index(dataset, Path(args.indexes) / key / "bm25", args.threads, args.force)
    models = [("", args.model)]
    if wants_finetune(args, dataset):
        from diffret_pyserini.train.default import finetuned_default

        log.info("fine-tuning the model on pseudo-queries from the corpus (cached once trained) ...")
        folder = finetuned_default(args.dataset, Path(args.indexes) / key / "finetuned", force=args.force,
                                   base_model=args.model)
        models.append(("ft-", str(folder)))
    combined: dict[str, dict[str, float]] = {}
    for prefix, model in models:
        tag, root, model_fp = encode_stages(dataset, args, topics, model)
        inputs = SearchInputs(bm25_index=bm25, impact_index=root / "impact", faiss_dir=root / "dense",
                              multi_dir=root / "multi", queries_dir=root / "queries", topics=topics)
        index_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25), topics=topics), "model": model_fp}
        systems = [s for s in args.systems if not (prefix and s == "bm25")]
        metrics = search_and_evaluate(dataset, inputs, Path(args.runs) / key / tag, index_fp, args, systems)
        combined.update({prefix + system: row for system, row in metrics.items()})
    if combined:
        if len(models) > 1:  # zero-shot and fine-tuned side by side
            write_report(combined, Path(args.runs) / key, f"{dataset.name}: zero-shot and fine-tuned")
        print(format_table(combined))
    return combined
