"""`python -m diffret_pyserini.bench`: run the benchmark sections, print markdown tables, write JSON + PNG.

    python -m diffret_pyserini.bench                       # everything, packaged models, CPU here
    python -m diffret_pyserini.bench --sections cost-of-k --models /models/dream --ks 1 4 16
    python -m diffret_pyserini.bench --quick               # a seconds-long smoke configuration
    python -m diffret_pyserini.bench --sections throughput # whole-corpus encode: before, after, the limit
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Sequence

from diffret_pyserini.bench.common import SECTIONS, BenchOptions, device_info, log, set_threads
from diffret_pyserini.cli import InputError, OneLineArgumentParser
from diffret_pyserini.model.device import parse_device

DEFAULTS = BenchOptions()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineArgumentParser(prog="python -m diffret_pyserini.bench", description=__doc__)
    p.add_argument("--sections", nargs="+", choices=SECTIONS,
                   help=f"sections to run (default: {' '.join(DEFAULTS.sections)}; 'scale' only when named)")
    p.add_argument("--decoder", help="decoder model run both bidirectionally (one pass) and causally (PromptReps, "
                   f"K greedy steps); 'none' to skip (default {DEFAULTS.decoder})")
    p.add_argument("--masked", help=f"masked-LM model (default {DEFAULTS.masked}); 'none' to skip")
    p.add_argument("--models", nargs="+", help="extra one-pass model folders (Dream, LLaDA, ...); kind from config")
    p.add_argument("--ks", nargs="+", type=int, help=f"slot counts K (default {' '.join(map(str, DEFAULTS.ks))})")
    p.add_argument("--overhead-k", type=int,
                   help=f"K of the overhead and passes sections (default {DEFAULTS.overhead_k})")
    p.add_argument("--doc-tokens", type=int, help=f"text tokens per passage (default {DEFAULTS.doc_tokens})")
    p.add_argument("--doc-batch", type=int, help=f"passages per batch for throughput (default {DEFAULTS.doc_batch})")
    p.add_argument("--query-tokens", type=int, help=f"max text tokens per query (default {DEFAULTS.query_tokens})")
    p.add_argument("--n-queries", type=int, help="real CACM queries per query@1 sample, each at batch 1 "
                   f"(default {DEFAULTS.n_queries})")
    p.add_argument("--repeats", type=int, help="timed rounds per group of interleaved cells "
                   f"(default {DEFAULTS.repeats}; fewer when a group would pass --budget)")
    p.add_argument("--budget", type=float, dest="budget_s", help="seconds a group may take before further rounds "
                   f"are skipped (at least one round always runs; default {DEFAULTS.budget_s:g})")
    p.add_argument("--min-sample", type=float, dest="min_sample_s", help="a sample repeats a cheap call until it "
                   f"lasts this many seconds (default {DEFAULTS.min_sample_s:g})")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default auto: CUDA when present)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 or auto (bf16 on GPU, fp32 on CPU)")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="let the --models folders' own Python code run (Dream and LLaDA "
                   "load natively without it)")
    p.add_argument("--threads", type=int, help=f"torch/FAISS/indexer threads (default {DEFAULTS.threads})")
    p.add_argument("--out", help=f"output folder for JSON and PNG files (default {DEFAULTS.out})")
    p.add_argument("--sizes", nargs="+", type=int, help="corpus sizes of the search section "
                   f"(default {' '.join(map(str, DEFAULTS.sizes))})")
    p.add_argument("--search-queries", nargs="+", type=int, help="timed queries per size (default: 200 at 1k, "
                   "fewer at larger sizes, at least 30)")
    p.add_argument("--search-dim", type=int, help=f"vector dimension of the synthetic search corpora (default "
                   f"{DEFAULTS.search_dim}, SPLADE-tiny's hidden size; SmolLM2's is 576)")
    p.add_argument("--search-kp", type=int,
                   help=f"vectors per document in the MaxSim store (default {DEFAULTS.search_kp})")
    p.add_argument("--search-kq", type=int, help=f"vectors per query for MaxSim (default {DEFAULTS.search_kq})")
    p.add_argument("--hits", type=int, help=f"hits per query (default {DEFAULTS.hits})")
    p.add_argument("--throughput-kp", nargs="+", type=int, help="passage slots K of the throughput section "
                   f"(default {' '.join(map(str, DEFAULTS.throughput_kp))})")
    p.add_argument("--throughput-rows", type=int, help="rows cap of a length-bucketed batch in the throughput "
                   f"section (default {DEFAULTS.throughput_rows})")
    p.add_argument("--throughput-max-tokens", type=int, help="padded positions per length-bucketed batch in the "
                   f"throughput section (default {DEFAULTS.throughput_max_tokens}; raise it to fill a GPU)")
    p.add_argument("--scale-sizes", nargs="+", type=int, help="corpus sizes of the scale section "
                   f"(default {' '.join(map(str, DEFAULTS.scale_sizes))}); --scale-model-sizes: real-model encodes")
    p.add_argument("--scale-model-sizes", nargs="+", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help="where synthetic indexes are built (default <out>/work, removed afterwards)")
    p.add_argument("--keep-work", action="store_true", default=None, help="keep the synthetic indexes")
    p.add_argument("--quick", action="store_true", help="seconds-long configuration: tiny texts and corpora, "
                   "K in {1,4}, one round (explicit options still apply on top)")
    return p


def options_from(args: argparse.Namespace) -> BenchOptions:
    """Defaults (or the quick configuration), with every option given on the command line on top."""
    given = {f.name: getattr(args, f.name) for f in fields(BenchOptions)
             if getattr(args, f.name, None) is not None}
    for name in ("decoder", "masked"):
        if isinstance(given.get(name), str) and given[name].lower() == "none":
            given[name] = None
    for name in ("sections", "models", "ks", "sizes", "search_queries", "scale_sizes", "scale_model_sizes",
                 "throughput_kp"):
        if name in given:
            given[name] = tuple(given[name])
    base = BenchOptions.quick_config() if args.quick else BenchOptions()
    opts = replace(base, **given)
    if min(opts.ks) < 1 or min(opts.throughput_kp) < 1:
        raise InputError("--ks, --throughput-kp: every K must be >= 1")
    return opts


def run_sections(opts: BenchOptions) -> tuple[str, list[Path]]:
    """Run the chosen sections in order; returns the markdown and the files written."""
    from diffret_pyserini.bench import cost_of_k, overhead, passes, report, scale, search_scaling, throughput

    modules = {"cost-of-k": cost_of_k, "overhead": overhead, "passes": passes, "search": search_scaling,
               "scale": scale, "throughput": throughput}
    # the throughput section renders its own table and plot (report.py could hold them with the others)
    report.RENDERERS.setdefault("throughput", (throughput.tables, throughput.plot))
    report.TITLES.setdefault("throughput", "Whole-corpus encoding throughput: length buckets and a token budget")
    set_threads(opts.threads)
    device = parse_device(opts.device)
    parts, files = [], []
    for name in opts.sections:
        start = time.perf_counter()
        meta = {**device_info(device, opts.threads), "options": opts.to_dict(), "section": name}
        doc = {"meta": meta, **modules[name].run(opts)}
        doc["meta"]["seconds"] = time.perf_counter() - start
        markdown, written = report.write_section(name, doc, Path(opts.out))
        print(markdown, flush=True)
        parts.append(markdown)
        files += written
        log(f"{name} done in {doc['meta']['seconds']:.0f}s: {', '.join(map(str, written))}")
    return "\n".join(parts), files


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        opts = options_from(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from diffret_pyserini.model.packaged import set_offline_env

    set_offline_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_sections(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
