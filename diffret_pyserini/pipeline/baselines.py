"""The paper's single-vector baselines as systems of the main job, beside DiffRetriever and the peers:

    diffembed   the job's --model read the DiffEmbed way (--kind diffembed: the raw text, one bidirectional
                pass, the mean of the text tokens' states)                         rows diffembed, ft-diffembed
    repllama    --repllama_model (default: the packaged SmolLM2) read the RepLLaMA way (--kind repllama:
                'query: ' / 'passage: ', EOS, the causal state at EOS)   rows repllama-<model>, ft-repllama-<model>

Each goes through the pipeline's own cached stages (pipeline/cells.py): the corpus encoded once (dense only), a
FAISS index, the queries pre-encoded, FaissSearcher, trec_eval; its folders are tagged with the recipe, so it
never shares them with DiffRetriever on the same model. The `ft-` rows are the same recipe fine-tuned with the
same Trainer on the same pseudo-queries as the job's ft- model (train/default.py, dense InfoNCE at temperature
0.02, the reference's), whenever the job fine-tunes; RepLLaMA's base, a model other than the embedded default,
is fine-tuned only under `--finetune yes` (a 135M-parameter decoder takes hours on a CPU).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from diffret_pyserini.datasets import Dataset
from diffret_pyserini.fingerprint import fingerprint
from diffret_pyserini.index.lucene import bm25_fingerprint
from diffret_pyserini.pipeline.arguments import BASELINE_SYSTEMS, PipelineArguments
from diffret_pyserini.pipeline.cells import encode_stages, search_cell, slug

__all__ = ["BASELINE_SYSTEMS", "baseline_model", "row_name", "baselines_stage"]

log = logging.getLogger("diffret_pyserini.pipeline")


def baseline_model(system: str, args: PipelineArguments) -> str:
    """The model a baseline system reads: the job's model for DiffEmbed, --repllama_model for RepLLaMA."""
    return args.model if system == "diffembed" else args.repllama_model


def row_name(system: str, model: str) -> str:
    """'diffembed' (on the job's own model) or 'repllama-<model>' (named for the backbone it ran on)."""
    if system == "diffembed":
        return system
    return f"{system}-{slug(Path(model).name if Path(model).is_dir() else model)}"


def _finetunes(system: str, args: PipelineArguments, source: str | None) -> bool:
    from diffret_pyserini.model.packaged import resolve_model_path

    if source is None:
        return False
    model = baseline_model(system, args)
    if args.finetune == "yes" or resolve_model_path(model) == resolve_model_path(PipelineArguments.model):
        return True
    log.info(f"{system}: not fine-tuned, {model} is not the embedded default (--finetune yes forces it)")
    return False


def baselines_stage(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], key: str, bm25: Path,
                    systems: list[str], source: str | None) -> tuple[dict[str, dict[str, float]], dict[str, Path]]:
    """Every baseline system zero-shot, and fine-tuned on `source` pseudo-queries (None: the job does not
    fine-tune); returns ({row: metrics}, {row: run path})."""
    from diffret_pyserini.eval.trec_eval import evaluate_run
    from diffret_pyserini.train.default import finetuned_default

    metrics: dict[str, dict[str, float]] = {}
    paths: dict[str, Path] = {}
    for system in systems:
        model = baseline_model(system, args)
        # the job's flags, read the baseline's way: its kind, its one system; K and alpha do not apply
        sub = replace(args, kind=system, kq=None, kp=None, systems=["dense"], alpha=0.5)
        models = [("", model)]
        if _finetunes(system, args, source):
            log.info(f"{system}: fine-tuning {model} on {source} pseudo-queries (cached once trained) ...")
            models.append(("ft-", str(finetuned_default(args.dataset, Path(args.indexes) / key / "finetuned",
                                                        force=args.force, base_model=model, source=source,
                                                        kind=system))))
        for prefix, folder in models:
            cell = encode_stages(dataset, sub, topics, folder)
            index_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25), topics=topics), "model": cell.fingerprint}
            run_dir = Path(args.runs) / key / cell.tag
            run = search_cell(cell.search_inputs(bm25, topics), run_dir, index_fp, sub, ["dense"])["dense"]
            row = prefix + row_name(system, model)
            paths[row] = run
            if dataset.qrels_path is not None:
                metrics[row] = evaluate_run(dataset.qrels_path, run)
    return metrics, paths
