"""Encoded cells: the corpus encoded once per Kp, the queries once per Kq, and the (Kq, Kp) cell that joins them.

    indexes/<dataset>/<model>-kp<Kp>/{dense,multi,sparse,impact}   corpus encoding (resumable) + impact index
    indexes/<dataset>/<model>-kq<Kq>/queries/                      query encoding
    indexes/<dataset>/<model>-kq<Kq>-kp<Kp>/                       links to both (the layout the README documents)

So a sweep over Kq x Kp encodes the corpus len(Kp) times and the queries len(Kq) times. Used by the pipeline,
the sweep and the adaptive-budget selectors.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from diffret_pyserini.datasets import Dataset
from diffret_pyserini.fingerprint import StageLog, fingerprint, folder_lock, path_digest
from diffret_pyserini.index.lucene import build_lucene_index, dataset_key
from diffret_pyserini.model.recipes import DEFAULT_RECIPE
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.search.systems import SearchInputs, run_system, uses_bm25, uses_model

log = logging.getLogger("diffret_pyserini.pipeline")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def model_tag(model: str, settings: dict, defaults: dict, roles: tuple[str, ...] = ("kq", "kp")) -> str:
    """'splade-tiny-kq4-kp16', plus a short hash when other settings differ from the model's defaults.

    `roles` names the budgets in the tag: ('kp',) for a corpus encoding ('splade-tiny-kp16'), ('kq',) for a
    query encoding; the hash is over the same other settings either way."""
    name = slug(Path(model).name if os.path.isdir(model) else model)
    extra = {k: v for k, v in settings.items() if k not in ("kq", "kp") and defaults.get(k) != v}
    tag = name + "".join(f"-{role}{settings[role]}" for role in roles)
    return f"{tag}-{fingerprint(**extra)[:8]}" if extra else tag


@dataclass
class EncodedCell:
    """One (Kq, Kp) cell: the corpus encoding (one per Kp) and the query encoding (one per Kq) it reads."""

    tag: str             # the cell's tag, <model>-kq<Kq>-kp<Kp>: the run folder's name
    root: Path           # indexes/<dataset>/<tag>/: links to the two encodings below, as documented
    passages: Path       # indexes/<dataset>/<model>-kp<Kp>/{dense,multi,sparse,impact}
    queries: Path        # indexes/<dataset>/<model>-kq<Kq>/queries/
    fingerprint: str     # of everything a search over this cell reads

    def search_inputs(self, bm25: Path, topics: dict[str, str], queries: Path | None = None):
        """SearchInputs over this cell (`queries`: another pre-encoded query folder, e.g. pseudo-queries)."""
        return SearchInputs(bm25_index=bm25, impact_index=self.passages / "impact", faiss_dir=self.passages / "dense",
                            multi_dir=self.passages / "multi", queries_dir=queries or self.queries, topics=topics)


def link_path(link: Path, target: Path, replace_file: bool = False) -> None:
    """`link` -> `target` (relative), unless something is already there (a folder from before the split; a
    file too unless `replace_file`)."""
    if link.is_symlink() and os.readlink(link) == os.path.relpath(target, link.parent):
        return
    if link.is_symlink():
        link.unlink()
    elif link.exists() and (link.is_dir() or not replace_file):
        return
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


def encode_passages(dataset: Dataset, args: PipelineArguments, encoder, root: Path, model: str,
                    ) -> tuple[dict, str]:
    """Encode the corpus (resumable) into `root` and build its impact index; returns (paths, fingerprint)."""
    from diffret_pyserini.encode.jobs import EncodeOptions, encode_corpus
    from diffret_pyserini.encode.writers import ResumeError

    with folder_lock(root):  # a second run on the same folder waits, then reuses what the first made
        stages = StageLog(root / "stages.json", args.force)
        def encode(overwrite: bool) -> dict:
            if args.ray is None:
                return encode_corpus(encoder, dataset.corpus_path, root,
                                     EncodeOptions(overwrite=overwrite, **args.encoding_options()))
            from diffret_pyserini.encode.ray_data import EncoderRecipe, encode_corpus_ray

            # every setting of this role's encoder, so each actor builds exactly it
            recipe = EncoderRecipe(model, args.device, args.load_options(), encoder.settings.to_dict())
            options = EncodeOptions(tuple(encoder.representations), overwrite=overwrite, **args.encoding_options())
            return encode_corpus_ray(recipe, dataset.corpus_path, root, options, args.ray, args.ray_workers)

        try:
            paths = encode(args.force)
        except ResumeError as err:
            log.info(f"earlier encoding used other inputs; re-encoding ({err})")
            paths = encode(True)
        parts = {name: path_digest(paths[name]) for name in ("dense", "multi") if name in paths}
        if "sparse" in paths:  # the baselines (model/recipes.py) make dense vectors only
            parts["impact"] = impact_fp = fingerprint(sparse=path_digest(paths["sparse"]))
            if not (stages.is_done("impact", impact_fp) and (root / "impact").is_dir()):
                log.info("indexing impact vectors ...")
                build_lucene_index("JsonVectorCollection", paths["sparse"].parent, root / "impact", args.threads,
                                   impact=True)
                stages.mark("impact", impact_fp)
    return paths, fingerprint(**parts)


def encode_query_set(encoder, topics: dict[str, str], root: Path, batch_size: int, force: bool = False) -> str:
    """Encode `topics` into `root`/queries unless the recorded fingerprint matches; returns that fingerprint."""
    from diffret_pyserini.encode.jobs import encode_queries, encoder_fingerprint

    with folder_lock(root):
        stages = StageLog(root / "stages.json", force)
        q_fp = fingerprint(topics=topics, encoder=fingerprint(encoder=encoder_fingerprint(encoder)))
        if not (stages.is_done("queries", q_fp) and (root / "queries" / "topics.tsv").is_file()):
            encode_queries(encoder, topics, root / "queries", batch_size=batch_size)
            stages.mark("queries", q_fp)
    return q_fp


def role_encoders(model: str, args: PipelineArguments):
    """(query encoder, passage encoder, settings, defaults): each role's encoder has the OTHER role's budget at
    the model's default, so a corpus encoding's fingerprint depends on Kp only and a query encoding's on Kq."""
    from diffret_pyserini.model.spec import get_encoder

    load = args.load_options()
    encoder = get_encoder(model, device=args.device, **load, **args.settings())
    defaults = get_encoder(model, device=args.device, **load).settings.to_dict()
    settings = encoder.settings
    queries = type(encoder)(encoder.backbone, replace(settings, kp=defaults["kp"]))
    passages = type(encoder)(encoder.backbone, replace(settings, kq=defaults["kq"]))
    return queries, passages, settings.to_dict(), defaults


def encode_stages(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], model: str) -> EncodedCell:
    """Encode the corpus once per Kp (resumable, with its impact index) and the queries once per Kq; the cell
    folder indexes/<dataset>/<model>-kq<Kq>-kp<Kp>/ links to both (dense, multi, sparse, impact, queries)."""
    q_encoder, p_encoder, settings, defaults = role_encoders(model, args)
    prefix = f"{args.tag}-" if args.tag else ""
    if p_encoder.recipe != DEFAULT_RECIPE and p_encoder.recipe not in slug(Path(model).name):
        prefix += f"{p_encoder.recipe}-"  # a baseline read from the same model never shares its folders
    tag = prefix + model_tag(model, settings, defaults)
    base = Path(args.indexes) / dataset_key(dataset)
    p_root = base / (prefix + model_tag(model, settings, defaults, ("kp",)))
    q_root = base / (prefix + model_tag(model, settings, defaults, ("kq",)))
    log.info(f"model {model} ({p_encoder.backbone.kind}), tag {tag}")
    paths, p_fp = encode_passages(dataset, args, p_encoder, p_root, model)
    q_fp = encode_query_set(q_encoder, topics, q_root, args.batch_size, args.force)
    root = base / tag
    root.mkdir(parents=True, exist_ok=True)
    for part in ("dense", "multi", "sparse", "impact"):
        if (p_root / part).exists():
            link_path(root / part, p_root / part)
    link_path(root / "queries", q_root / "queries")
    return EncodedCell(tag, root, p_root, q_root / "queries", fingerprint(q=q_fp, passages=p_fp))


def run_file_name(system: str, alpha: float | None) -> str:
    """A run's file name: hybrids carry their alpha ('hybrid-bm25-sparse.alpha-0.7.trec'), so runs with
    another weight never overwrite each other; <system>.trec links to the latest."""
    return f"{system}.trec" if alpha is None else f"{system}.alpha-{alpha:g}.trec"


def hybrid_alpha(system: str, alphas: dict[str, float] | None, args: PipelineArguments) -> float:
    """A hybrid's weight: from `alphas` (chosen on dev pseudo-queries), else --alpha, else 0.5."""
    return (alphas or {}).get(system, args.alpha if isinstance(args.alpha, (int, float)) else 0.5)


def search_cell(inputs: SearchInputs, run_dir: Path, index_fp: dict[str, str], args: PipelineArguments,
                systems: list[str], alphas: dict[str, float] | None = None) -> dict[str, Path]:
    """Search every system over one cell into run_dir/<system>.trec (skipped while its fingerprint matches).

    A hybrid's alpha comes from `alphas` (chosen on dev pseudo-queries), else --alpha, else 0.5."""
    from diffret_pyserini.eval.runs import write_trec_run

    paths = {}
    with folder_lock(run_dir):
        stages = StageLog(run_dir / "stages.json", args.force)
        for system in systems:
            alpha = None
            if system.startswith("hybrid"):
                alpha = hybrid_alpha(system, alphas, args)
            run_path = run_dir / run_file_name(system, alpha)
            fp = fingerprint(bm25=index_fp["bm25"] if uses_bm25(system) else None,
                             model=index_fp["model"] if uses_model(system) else None, hits=args.hits,
                             alpha=alpha)
            if not (stages.is_done(run_path.name, fp) and run_path.is_file()):
                start = time.time()
                results = run_system(system, inputs, hits=args.hits, alpha=alpha if alpha is not None else 0.5,
                                     threads=args.threads)
                tag = slug(system) if alpha is None else f"{slug(system)}-alpha{alpha:g}"
                write_trec_run(results, run_path, tag=tag, k=args.hits)
                stages.mark(run_path.name, fp)
                log.info(f"{system}: {len(results)} queries searched in {time.time() - start:.1f}s -> {run_path}")
            if alpha is not None:
                link_path(run_dir / f"{system}.trec", run_path, replace_file=True)
            paths[system] = run_path
    return paths
