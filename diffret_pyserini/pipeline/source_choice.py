"""`--finetune auto` on a collection without enough titles: which fine-tuned side to read, chosen on the dev
queries, never the topics; and whether the fine-tuned side is kept at all.

Each candidate source (train/sources.source_candidates: 'lm', then 'sentences') gets its own fine-tuned model
(cached per source). Each model encodes the corpus and its hybrids are searched for the dev queries, the
held-out documents that no candidate trained on, with their SmolLM2-written queries; `fusion_dev.choose_alphas`
records every hybrid's dev nDCG@10 per query at its chosen alpha. The options are the ensemble of all the models
(pipeline/ensemble.py), first, then each model alone. An option's dev figure is its best hybrid (with BM25 in it
when the systems have one) at its alpha. The ensemble is kept unless one model's per-query gain over it is sure
(search.fusion.choose_safely: the lower end of its bootstrap interval above zero): the dev queries are written
like the 'lm' training queries, so a small lead of that model says little about real topics. `keep_finetuned`
asks the same of the chosen side against the zero-shot model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from diffret_pyserini.datasets import Dataset
from diffret_pyserini.fingerprint import fingerprint
from diffret_pyserini.index.lucene import bm25_fingerprint
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, uses_bm25
from diffret_pyserini.train.sources import DevSet

__all__ = ["dev_score", "dev_values", "pick_source", "choose_source_safely", "keep_finetuned",
           "FineTuned", "finetune_on_best_source"]

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


def dev_values(alpha_record: dict | None) -> dict[str, float] | None:
    """{dev qid: nDCG@10} of the record's `dev_score` hybrid at its chosen alpha; None without one."""
    best = dev_score(alpha_record) if alpha_record else None
    if best is None or "per_query" not in alpha_record["systems"][best["system"]]:
        return None
    return alpha_record["systems"][best["system"]]["per_query"]


def choose_source_safely(records: dict[str, dict | None]):
    """(source, Choice or None, why) from {source: its model's alpha.json record}, in order of preference: the
    first unless another's dev gain over it is sure. A source without per-query dev values cannot be compared:
    with fewer than two that can, the first that can (else the first) is taken, with no Choice."""
    from diffret_pyserini.search.fusion import choose_safely

    values = {s: v for s, r in records.items() if (v := dev_values(r)) is not None}
    if len(values) < 2:
        source = next(iter(values), next(iter(records)))
        return source, None, f"{source}: the only candidate with dev figures"
    choice = choose_safely(values, anchor=next(iter(values)))
    if choice.chosen != choice.anchor:
        why = f"{choice.chosen} has the best dev hybrid of {' / '.join(values)}, a sure gain ({choice.why})"
    else:
        why = f"{choice.anchor}, the first candidate of {' / '.join(values)}: {choice.why}"
    return choice.chosen, choice, why


def keep_finetuned(zero_shot: dict | None, finetuned: dict | None):
    """(keep, Choice or None, why): the fine-tuned model's best hybrid against the zero-shot one's on the same
    dev queries (their alpha.json records); kept only on a sure gain. Without dev figures for both: kept (the
    choice cannot be made on evidence, and fine-tuning was asked for)."""
    from diffret_pyserini.search.fusion import choose_safely

    ours, theirs = dev_values(finetuned), dev_values(zero_shot)
    if ours is None or theirs is None:
        return True, None, "kept: no dev figures to compare the fine-tuned and zero-shot hybrids on"
    choice = choose_safely({"zero-shot": theirs, "fine-tuned": ours}, anchor="zero-shot")
    if choice.chosen == "fine-tuned":
        return True, choice, f"kept: its best hybrid beats the zero-shot one on dev ({choice.why})"
    return False, choice, f"left out: {choice.why}"


def trained_k(args: PipelineArguments) -> dict[str, int] | None:
    """The K the job reads its model at, when given (--kq N / --kp N): the fine-tuned model trains at it."""
    k = {key: value for key, value in args.settings().items() if key in ("kq", "kp")}
    return k or None


@dataclass
class FineTuned:
    """The fine-tuned side the job reads: one model (`folder`), or the ensemble of `members` (pipeline.ensemble);
    `record` is its alpha.json record on dev (None without one), `info` what the choice saw ({} without one)."""

    source: str
    folder: Path | None = None
    members: list | None = None
    record: dict | None = None
    info: dict = field(default_factory=dict)


def finetune_on_best_source(dataset: Dataset, args: PipelineArguments, topics: dict[str, str], key: str,
                            bm25: Path, sources: list[str], dev: DevSet | None) -> FineTuned:
    """Fine-tune on every candidate source; with several, the ensemble of their models unless one of them
    alone beats it surely on `dev` (see the module docstring). One candidate, or no dev set or hybrid to compare
    on: the first source's model, with info {}."""
    from diffret_pyserini.pipeline.cells import encode_stages
    from diffret_pyserini.pipeline.ensemble import Member, ensemble_dev_record, ensemble_dir, ensemble_label
    from diffret_pyserini.pipeline.fusion_dev import choose_alphas, read_alpha_record
    from diffret_pyserini.train.default import finetuned_default

    hybrids = [s for s in args.systems if s in HYBRID_SYSTEMS]
    compare = len(sources) > 1 and dev is not None and bool(hybrids)
    folders: dict[str, Path] = {}
    for source in sources if compare else sources[:1]:
        log.info(f"fine-tuning the model on {source} pseudo-queries from the corpus (cached once trained) ...")
        folders[source] = finetuned_default(args.dataset, Path(args.indexes) / key / "finetuned", force=args.force,
                                            base_model=args.model, source=source, k=trained_k(args))
    if not compare:
        return FineTuned(sources[0], folders[sources[0]])
    records: dict[str, dict | None] = {}
    members = []
    for source, folder in folders.items():
        cell = encode_stages(dataset, args, topics, str(folder))
        run_dir = Path(args.runs) / key / cell.tag
        dev_fp = {"bm25": fingerprint(bm25=bm25_fingerprint(bm25)), "model": cell.fingerprint}
        choose_alphas(cell, dev, bm25, str(folder), args, hybrids, dev_fp, run_dir)
        records[source] = read_alpha_record(run_dir)  # None when the dev set is too small to choose on
        members.append(Member(source, cell, run_dir))
    label = ensemble_label(members)
    out = ensemble_dir(Path(args.runs) / key, members)
    records = {label: ensemble_dev_record(members, dev, hybrids, args.hits, out), **records}
    for option, record in records.items():
        s = dev_score(record) if record else None
        if s is not None:
            log.info(f"pseudo-queries {option}: best dev hybrid {s['system']} nDCG@10 {s['dev_ndcg@10']:.4f} "
                     f"(alpha {s['alpha']}, {len(dev.topics)} dev queries)")
    chosen, choice, why = choose_source_safely(records)
    scores = {s: dev_score(r) if r else None for s, r in records.items()}
    log.info(f"pseudo-queries: {why}")
    info = {"scores": scores, "why": why, "best_on_dev": pick_source(scores),
            "choice": choice.to_json() if choice else None}
    if chosen == label:
        return FineTuned(label, None, members, records[label], info)
    return FineTuned(chosen, folders[chosen], None, records[chosen], info)
