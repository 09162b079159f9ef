"""`--alpha auto`: each hybrid's weight chosen on the dev pseudo-queries of the collection, never its topics.

The dev queries (train/sources.dev_split) are encoded like the topics, into
indexes/<dataset>/<model>-kq<Kq>/dev/queries/, every seat of the requested hybrids is searched for them (the runs
are kept in runs/<dataset>/<tag>/dev/), and every alpha of the grid is scored per dev query. The weight is then
chosen safely (search.fusion.choose_safely): a hybrid keeps its anchor (BM25 alone, alpha 1.0, for a hybrid with
BM25 in it; equal weights for the others) unless another alpha's dev gain over it is sure at the lower end of
its bootstrap interval. Dev queries are written from single documents and judged by them, which can favour a
model trained on the documents' own text: a gain has to be clear before BM25's ranking is given up. The choice,
its dev figures and its interval go to runs/<dataset>/<tag>/alpha.json, reused while the fingerprint of what
made them still matches.
"""
from __future__ import annotations

import logging
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.fingerprint import StageLog, fingerprint, folder_lock
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.pipeline.cells import EncodedCell, encode_query_set, role_encoders
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, run_system, uses_bm25
from diffret_pyserini.train.sources import DevSet

__all__ = ["ALPHA_FILE", "DEV_DIR", "MIN_DEV_QUERIES", "BM25_ANCHOR", "EQUAL_ANCHOR", "RULE", "anchor_of",
           "grid_of", "choose_alphas", "read_alphas", "read_alpha_record", "alpha_record", "record_from_runs", "write_dev_set"]

log = logging.getLogger("diffret_pyserini.pipeline")
ALPHA_FILE = "alpha.json"
DEV_DIR = "dev"  # run_dir/dev/: the dev seats' runs and judgements
MIN_DEV_QUERIES = 20  # fewer dev queries than this choose nothing: every hybrid keeps its anchor
BM25_ANCHOR = 1.0   # BM25's weight a BM25 hybrid keeps without a sure dev gain: BM25's own ranking
EQUAL_ANCHOR = 0.5  # the other hybrids' weight without a sure dev gain: the paper's equal weights
RULE = "safe-1"     # names the choice rule in the fingerprint: a new rule chooses again


def anchor_of(system: str) -> float:
    """The alpha a hybrid keeps unless the dev queries show a sure gain elsewhere."""
    return BM25_ANCHOR if uses_bm25(system) else EQUAL_ANCHOR


def grid_of(system: str) -> tuple[float, ...]:
    """The alphas tried for a hybrid: the shared grid and its anchor."""
    from diffret_pyserini.search.fusion import ALPHA_GRID

    return tuple(sorted({*ALPHA_GRID, anchor_of(system)}))


def read_alpha_record(run_dir: Path) -> dict | None:
    """run_dir/alpha.json, or None."""
    import json

    path = Path(run_dir) / ALPHA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_alphas(run_dir: Path) -> dict[str, float]:
    """{hybrid system: chosen alpha} recorded in run_dir/alpha.json ({} when none)."""
    record = read_alpha_record(run_dir)
    return {system: row["alpha"] for system, row in record["systems"].items()} if record else {}


def alpha_record(curves: dict[str, dict[float, dict[str, float]]], dev: dict) -> dict:
    """alpha.json's content from {hybrid: {alpha: {dev qid: nDCG@10}}}: each hybrid's safe choice, its dev
    figure at every alpha, its gain over the anchor with the interval, and its per-query values at the chosen
    alpha (which the source and fine-tuning choices compare)."""
    from diffret_pyserini.search.fusion import BOOTSTRAP_TRIALS, CONFIDENCE, choose_safely

    record = {"dev": dev, "metric": "nDCG@10", "rule": RULE, "confidence": CONFIDENCE,
              "trials": BOOTSTRAP_TRIALS, "systems": {}}
    for system, by_alpha in curves.items():
        dense_seat, sparse_seat = HYBRID_SYSTEMS[system]
        choice = choose_safely(by_alpha, anchor_of(system))
        row = choice.to_json()
        record["systems"][system] = {"alpha": choice.chosen, "anchor": choice.anchor,
                                     "sparse_seat": sparse_seat, "dense_seat": dense_seat,
                                     "dev_ndcg@10": {str(a): round(m, 6) for a, m in choice.means.items()},
                                     "gain": row["gain"], "why": choice.why,
                                     "per_query": {q: round(v, 6) for q, v in by_alpha[choice.chosen].items()}}
    return record


def record_from_runs(runs: dict[str, dict], dev: DevSet, hybrids: list[str], depth: int) -> dict:
    """alpha.json's content for `hybrids` from the dev runs of their seats ({seat: run}): every alpha of each
    hybrid's grid scored per dev query, then chosen safely (alpha_record)."""
    from diffret_pyserini.search.fusion import alpha_curves

    curves = {s: alpha_curves(runs[HYBRID_SYSTEMS[s][0]], runs[HYBRID_SYSTEMS[s][1]], dev.qrels, grid_of(s),
                              depth=depth) for s in hybrids}
    return alpha_record(curves, dev.describe())


def write_dev_set(folder: Path, dev: DevSet) -> None:
    """folder/dev.json: the dev queries and their judgements beside the dev runs, for reading them back."""
    atomic_write_json(folder / "dev.json", {**dev.describe(), "topics": dev.topics, "qrels": dev.qrels})


def _dev_runs(cell: EncodedCell, dev: DevSet, bm25: Path, model: str, args: PipelineArguments, seats: list[str],
              fp: str, run_dir: Path, stages: StageLog) -> dict[str, dict]:
    """Every seat's run for the dev queries: searched once, then read back from run_dir/dev/."""
    from diffret_pyserini.eval.runs import read_trec_run, write_trec_run

    folder = run_dir / DEV_DIR
    if stages.is_done("dev-runs", fp) and all((folder / f"{s}.trec").is_file() for s in seats):
        return {seat: read_trec_run(folder / f"{seat}.trec") for seat in seats}
    dev_root = cell.queries.parent / "dev"
    encode_query_set(role_encoders(model, args)[0], dev.topics, dev_root, args.batch_size, args.force)
    inputs = cell.search_inputs(bm25, dev.topics, queries=dev_root / "queries")
    runs = {seat: run_system(seat, inputs, hits=args.hits, threads=args.threads) for seat in seats}
    for seat, run in runs.items():
        write_trec_run(run, folder / f"{seat}.trec", tag=seat, k=args.hits)
    write_dev_set(folder, dev)
    stages.mark("dev-runs", fp)
    return {seat: read_trec_run(folder / f"{seat}.trec") for seat in seats}  # as a later run will read them


def choose_alphas(cell: EncodedCell, dev: DevSet, bm25: Path, model: str, args: PipelineArguments,
                  systems: list[str], index_fp: dict[str, str], run_dir: Path) -> dict[str, float]:
    """{hybrid system: alpha} for the hybrids among `systems`, chosen on `dev` (see the module docstring)."""
    from diffret_pyserini.search.fusion import ALPHA_GRID

    hybrids = [s for s in systems if s in HYBRID_SYSTEMS]
    if not hybrids:
        return {}
    if len(dev.topics) < MIN_DEV_QUERIES:
        log.warning(f"--alpha auto: only {len(dev.topics)} dev pseudo-queries ({dev.source}); every hybrid "
                    "keeps its anchor (BM25 alone in a BM25 hybrid, else equal weights)")
        return {s: anchor_of(s) for s in hybrids}
    seats = sorted({seat for s in hybrids for seat in HYBRID_SYSTEMS[s]})
    runs_fp = fingerprint(dev=dev.topics, hits=args.hits, seats=seats, model=index_fp["model"],
                          bm25=index_fp["bm25"] if "bm25" in seats else None)
    fp = fingerprint(runs=runs_fp, qrels=dev.qrels, grid=ALPHA_GRID, rule=RULE, hybrids=hybrids)
    run_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(run_dir):
        stages = StageLog(run_dir / "stages.json", args.force)
        if stages.is_done("alpha", fp) and (run_dir / ALPHA_FILE).is_file():
            return read_alphas(run_dir)
        runs = _dev_runs(cell, dev, bm25, model, args, seats, runs_fp, run_dir, stages)
        record = record_from_runs(runs, dev, hybrids, args.hits)
        for system, row in record["systems"].items():
            log.info(f"--alpha auto: {system} alpha {row['alpha']} ({row['why']}; {len(dev.topics)} "
                     f"{dev.source} dev queries)")
        atomic_write_json(run_dir / ALPHA_FILE, record)
        stages.mark("alpha", fp)
    return {system: row["alpha"] for system, row in record["systems"].items()}
