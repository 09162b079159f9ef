"""`--alpha auto`: each hybrid's weight chosen on the dev pseudo-queries of the collection, never its topics.

The dev queries (train/sources.dev_split) are encoded like the topics, into
indexes/<dataset>/<model>-kq<Kq>/dev/queries/, every seat of the requested hybrids is searched for them, and
search.fusion.choose_alpha picks each hybrid's alpha. The choice and its dev figures are written to
runs/<dataset>/<tag>/alpha.json and reused while the fingerprint of what made them still matches.
"""
from __future__ import annotations

import logging
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.fingerprint import fingerprint
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.pipeline.cells import EncodedCell, encode_query_set, role_encoders
from diffret_pyserini.fingerprint import StageLog, folder_lock
from diffret_pyserini.search.systems import HYBRID_SYSTEMS, run_system, uses_bm25
from diffret_pyserini.train.sources import DevSet

__all__ = ["ALPHA_FILE", "MIN_DEV_QUERIES", "choose_alphas", "read_alphas"]

log = logging.getLogger("diffret_pyserini.pipeline")
ALPHA_FILE = "alpha.json"
MIN_DEV_QUERIES = 20  # fewer dev queries than this choose nothing: alpha stays at the equal-weight 0.5
DEFAULT_ALPHA = 0.5


def read_alphas(run_dir: Path) -> dict[str, float]:
    """{hybrid system: chosen alpha} recorded in run_dir/alpha.json ({} when none)."""
    import json

    path = Path(run_dir) / ALPHA_FILE
    if not path.is_file():
        return {}
    return {system: row["alpha"] for system, row in json.loads(path.read_text())["systems"].items()}


def choose_alphas(cell: EncodedCell, dev: DevSet, bm25: Path, model: str, args: PipelineArguments,
                  systems: list[str], index_fp: dict[str, str], run_dir: Path) -> dict[str, float]:
    """{hybrid system: alpha} for the hybrids among `systems`, chosen on `dev` (see the module docstring)."""
    from diffret_pyserini.search.fusion import ALPHA_GRID, choose_alpha

    hybrids = [s for s in systems if s in HYBRID_SYSTEMS]
    if not hybrids:
        return {}
    if len(dev.topics) < MIN_DEV_QUERIES:
        log.warning(f"--alpha auto: only {len(dev.topics)} dev pseudo-queries ({dev.source}); every hybrid "
                    f"keeps alpha {DEFAULT_ALPHA}")
        return dict.fromkeys(hybrids, DEFAULT_ALPHA)
    seats = sorted({seat for s in hybrids for seat in HYBRID_SYSTEMS[s]})
    fp = fingerprint(dev=dev.topics, qrels=dev.qrels, grid=ALPHA_GRID, hits=args.hits, hybrids=hybrids,
                     bm25=index_fp["bm25"] if any(uses_bm25(s) for s in hybrids) else None,
                     model=index_fp["model"])
    run_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(run_dir):
        stages = StageLog(run_dir / "stages.json", args.force)
        if stages.is_done("alpha", fp) and (run_dir / ALPHA_FILE).is_file():
            return read_alphas(run_dir)
        q_encoder = role_encoders(model, args)[0]
        dev_root = cell.queries.parent / "dev"
        encode_query_set(q_encoder, dev.topics, dev_root, args.batch_size, args.force)
        inputs = cell.search_inputs(bm25, dev.topics, queries=dev_root / "queries")
        runs = {seat: run_system(seat, inputs, hits=args.hits, threads=args.threads) for seat in seats}
        record = {"dev": dev.describe(), "grid": list(ALPHA_GRID), "metric": "nDCG@10", "systems": {}}
        for system in hybrids:
            dense_seat, sparse_seat = HYBRID_SYSTEMS[system]
            alpha, scores = choose_alpha(runs[dense_seat], runs[sparse_seat], dev.qrels, depth=args.hits)
            record["systems"][system] = {"alpha": alpha, "sparse_seat": sparse_seat, "dense_seat": dense_seat,
                                         "dev_ndcg@10": {str(a): v for a, v in scores.items()}}
            log.info(f"--alpha auto: {system} alpha {alpha} (dev nDCG@10 {scores[alpha]:.4f}; 0.5 gives "
                     f"{scores.get(0.5, float('nan')):.4f}; {len(dev.topics)} {dev.source} pseudo-queries)")
        atomic_write_json(run_dir / ALPHA_FILE, record)
        stages.mark("alpha", fp)
    return {system: row["alpha"] for system, row in record["systems"].items()}
