"""`--finetune auto` on a collection without enough titles: which pseudo-queries to fine-tune on, chosen on the
dev queries, never the topics.

Each candidate source (train/sources.source_candidates: 'lm', then 'sentences') gets its own fine-tuned model
(cached per source). Each model encodes the corpus and its hybrids are searched for the dev queries, the
held-out documents that no candidate trained on, with their SmolLM2-written queries; `fusion_dev.choose_alphas`
records the dev nDCG@10 of every hybrid at every alpha. The source whose best hybrid (with BM25 in it when the
systems have one) scores highest at its chosen alpha wins; a tie keeps the candidates' order. The dev queries
are written by the same LM as the 'lm' training queries, which may favour that source: README, "Fine-tuning
without titles", has the figures of both sources on the topics as well.
"""
from __future__ import annotations

import logging
from pathlib import Path

from diffret_pyserini.datasets import Dataset
from diffret_pyserini.fingerprint import fingerprint
from diffret_pyserini.index.lucene import bm25_fingerprint
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, uses_bm25
from diffret_pyserini.train.sources import DevSet

__all__ = ["dev_score", "pick_source", "finetune_on_best_source"]

log = logging.getLogger("diffret_pyserini.pipeline")


def dev_score(alpha_record: dict) -> dict | None:
    """The best hybrid of an alpha.json record at its chosen alpha: {system, alpha, dev_ndcg@10}, among the
    hybrids with BM25 in them when there are any; None for a record without hybrids."""
    rows = alpha_record.get("systems", {})
    pool = [s for s in rows if uses_bm25(s)] or list(rows)
    best = None
    for system in pool:
        alpha = rows[system]["alpha"]
        value = rows[system]["dev_ndcg@10"][str(alpha)]
        if best is None or value > best["dev_ndcg@10"]:
            best = {"system": system, "alpha": alpha, "dev_ndcg@10": value}
    return best


def pick_source(scores: dict[str, dict | None]) -> str:
    """The source with the highest dev score ({source: dev_score(...)}, in order of preference); a tie or a
    source without a score keeps the earlier one (max returns the first of equal keys)."""
    if not scores:
        raise ValueError("no candidate source to choose from")
    return max(scores, key=lambda s: float("-inf") if scores[s] is None else scores[s]["dev_ndcg@10"])


def finetune_on_best_source(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], key: str,
                            bm25: Path, sources: list[str], dev: DevSet | None) -> tuple[str, Path, dict]:
    """Fine-tune on every candidate source and keep the best on `dev` (see the module docstring); returns
    (source, model folder, {source: its dev score}). One candidate, or no dev set or hybrid to compare on:
    the first, with no score."""
    import json

    from diffret_pyserini.pipeline.cells import encode_stages
    from diffret_pyserini.pipeline.fusion_dev import ALPHA_FILE, choose_alphas
    from diffret_pyserini.train.default import finetuned_default

    hybrids = [s for s in args.systems if s in HYBRID_SYSTEMS]
    compare = len(sources) > 1 and dev is not None and bool(hybrids)
    folders: dict[str, Path] = {}
    for source in sources if compare else sources[:1]:
        log.info(f"fine-tuning the model on {source} pseudo-queries from the corpus (cached once trained) ...")
        folders[source] = finetuned_default(args.dataset, Path(args.indexes) / key / "finetuned", force=args.force,
                                            base_model=args.model, source=source)
    if not compare:
        return sources[0], folders[sources[0]], {}
    scores: dict[str, dict | None] = {}
    for source, folder in folders.items():
        cell = encode_stages(dataset, args, topics, str(folder))
        run_dir = Path(args.runs) / key / cell.tag
        dev_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25)), "model": cell.fingerprint}
        choose_alphas(cell, dev, bm25, str(folder), args, hybrids, dev_fp, run_dir)
        record = run_dir / ALPHA_FILE  # absent when the dev set is too small to choose on
        scores[source] = s = dev_score(json.loads(record.read_text())) if record.is_file() else None
        if s is not None:
            log.info(f"pseudo-queries {source}: best dev hybrid {s['system']} nDCG@10 {s['dev_ndcg@10']:.4f} "
                     f"(alpha {s['alpha']}, {len(dev.topics)} dev queries)")
    source = pick_source(scores)
    return source, folders[source], scores
