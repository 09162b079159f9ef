"""The fine-tuned side as an ensemble of the models trained on each pseudo-query source.

A collection without titles has two candidate sources of pseudo-queries (train/sources.py: SmolLM2-written
queries, 'lm', and sentences of the text). The dev queries cannot compare them fairly: they are written by
SmolLM2 like the 'lm' training queries, so they favour the model trained on them, whatever real topics do. The
job therefore does not bet on one source: each seat of the fine-tuned side (sparse, dense, multi) is the
equal-weight fusion of the models' runs of that seat (search.fusion.ensemble_run: per-query min-max, then the
mean), and its hybrids fuse those seats with the alphas chosen on dev like any hybrid's. A single source replaces
the ensemble only when its dev gain over the ensemble is sure (source_choice.choose_source_safely, the ensemble
as anchor).

    runs/<dataset>/<members' model>/            each member's own runs of the seats (searched with Pyserini)
    runs/<dataset>/ensemble-<sources>-<tag>/    the ensemble's seat and hybrid runs, alpha.json, dev/, metrics
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.fingerprint import fingerprint
from diffret_pyserini.index.lucene import bm25_fingerprint
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.pipeline.cells import EncodedCell, hybrid_alpha, link_path, run_file_name, search_cell
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, SINGLE_SYSTEMS
from diffret_pyserini.train.sources import DevSet

__all__ = ["Member", "ensemble_label", "ensemble_dir", "seats_of", "ensemble_dev_record", "ensemble_stage"]

log = logging.getLogger("diffret_pyserini.pipeline")


@dataclass
class Member:
    """One model of the ensemble: the source it was trained on, its encoded cell and its run folder."""

    source: str
    cell: EncodedCell
    run_dir: Path


def ensemble_label(members: list[Member]) -> str:
    """How the ensemble is named in the choices: 'lm & sentences'."""
    return " & ".join(m.source for m in members)


def ensemble_dir(runs_root: Path, members: list[Member]) -> Path:
    """runs/<dataset>/ensemble-<source>-<source>-<first member's tag>/."""
    return runs_root / ("ensemble-" + "-".join(m.source for m in members) + "-" + members[0].cell.tag)


def seats_of(systems: list[str]) -> list[str]:
    """The single seats that `systems` read (their own rows and their hybrids' seats), in the systems' order."""
    seats: list[str] = []
    for system in systems:
        for seat in HYBRID_SYSTEMS.get(system, (system,)):
            if seat in SINGLE_SYSTEMS and seat not in seats:
                seats.append(seat)
    return seats


def _ensemble(runs: list[dict], seat: str, qids: list[str], depth: int) -> dict:
    """BM25 is the same in every member: its first member's run; any other seat fused across the members."""
    from diffret_pyserini.search.fusion import ensemble_run

    return dict(runs[0]) if seat == "bm25" else ensemble_run(runs, qids, depth)


def ensemble_dev_record(members: list[Member], dev: DevSet, hybrids: list[str], depth: int, out: Path,
                        ) -> dict | None:
    """The ensemble's alpha.json record on the dev queries, from the dev runs each member's `choose_alphas` left
    in <member run_dir>/dev/ (written to out/dev/ and out/alpha.json); None when a member has none (too few dev
    queries to choose on)."""
    from diffret_pyserini.eval.runs import read_trec_run, write_trec_run
    from diffret_pyserini.pipeline.fusion_dev import ALPHA_FILE, DEV_DIR, record_from_runs, write_dev_set

    seats = sorted({seat for s in hybrids for seat in HYBRID_SYSTEMS[s]})
    files = {m.source: {seat: m.run_dir / DEV_DIR / f"{seat}.trec" for seat in seats} for m in members}
    if not hybrids or not all(p.is_file() for f in files.values() for p in f.values()):
        return None
    qids = list(dev.topics)
    runs = {seat: _ensemble([read_trec_run(files[m.source][seat]) for m in members], seat, qids, depth)
            for seat in seats}
    for seat, run in runs.items():
        write_trec_run(run, out / DEV_DIR / f"{seat}.trec", tag=f"ensemble-{seat}", k=depth)
    write_dev_set(out / DEV_DIR, dev)
    record = record_from_runs(runs, dev, hybrids, depth)
    record["members"] = [m.source for m in members]
    atomic_write_json(out / ALPHA_FILE, record)
    return record


def ensemble_stage(members: list[Member], bm25: Path, topics: dict[str, str], args: PipelineArguments,
                   systems: list[str], alphas: dict[str, float] | None, out: Path) -> dict[str, Path]:
    """Every system of `systems` for the ensemble, as run files in `out` ({system: path}): each member's seats
    searched through Pyserini (cached in its own run folder), the seats fused across members, the hybrids fused
    from the ensemble's seats at their `alphas` (else --alpha, else 0.5)."""
    from diffret_pyserini.eval.runs import read_trec_run, write_trec_run
    from diffret_pyserini.search.fusion import fuse_run

    seats = seats_of(systems)
    bm25_fp = fingerprint(bm25=bm25_fingerprint(bm25), topics=topics)
    member_runs = {}
    for m in members:
        index_fp = {"bm25": bm25_fp, "model": m.cell.fingerprint}
        paths = search_cell(m.cell.search_inputs(bm25, topics), m.run_dir, index_fp, args, seats)
        member_runs[m.source] = {seat: read_trec_run(path) for seat, path in paths.items()}
    qids = list(topics)
    runs = {seat: _ensemble([member_runs[m.source][seat] for m in members], seat, qids, args.hits)
            for seat in seats}
    paths: dict[str, Path] = {}
    for system in systems:
        if system in HYBRID_SYSTEMS:
            alpha = hybrid_alpha(system, alphas, args)
            dense_seat, sparse_seat = HYBRID_SYSTEMS[system]
            run = fuse_run(runs[dense_seat], runs[sparse_seat], alpha, qids, args.hits)
            path = write_trec_run(run, out / run_file_name(system, alpha), tag=f"{system}-alpha{alpha:g}",
                                  k=args.hits)
            link_path(out / f"{system}.trec", path, replace_file=True)
        else:
            path = write_trec_run(runs[system], out / f"{system}.trec", tag=system, k=args.hits)
        paths[system] = path
    log.info(f"ensemble of {ensemble_label(members)}: {len(paths)} runs fused -> {out}")
    return paths
