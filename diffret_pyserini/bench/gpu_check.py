"""`python -m diffret_pyserini.bench.gpu_check`: the scale issue's GPU measurements as one prepared run.

    python -m diffret_pyserini.bench.gpu_check --dream-code ../shared/fixtures/dream-tiny \\
        --like models/smollm2-135m-instruct --out OUT            # --quick: the CPU dry run, in seconds

1. Model folders (random weights, `bench.shaped_model`): a Dream folder (the checkpoint's config and code, the
   weights made natively) shaped like `--like`, and a causal decoder of the same shape for PromptReps. `--like`
   needs only config.json and the tokenizer files: no weights are read.
2. `throughput` on the Dream folder at K=1 and K=16: whole-corpus docs/s and padding before (corpus order) and
   after (length buckets under a token budget), beside the body's own forward on the same batches; bf16 on a GPU.
3. `cost-of-k` at K=1 and K=16: one-pass latency (the Dream folder, and the decoder read bidirectionally) against
   PromptReps' K greedy steps on the decoder, for a query and a passage at batch 1 and a batch of passages.

Each section writes OUT/<section>.{json,png} and prints its tables. The Dream folder loads natively
(transformers' Qwen2, non-causal): none of `--dream-code`'s Python runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

from diffret_pyserini.cli import OneLineArgumentParser

GPU_MAX_TOKENS = 65_536   # padded positions per bucketed batch on a GPU: ~500 CACM documents a forward
GPU_ROWS = 1024


def sections(dream: Path, decoder: Path, out: Path, device: str, quick: bool) -> list[list[str]]:
    """The two bench command lines (argv of `python -m diffret_pyserini.bench`)."""
    common = ["--device", device, "--dtype", "auto", "--out", str(out)]
    common += ["--quick"] if quick else ["--repeats", "2", "--budget", "60"]
    budget = [] if quick else ["--throughput-rows", str(GPU_ROWS), "--throughput-max-tokens", str(GPU_MAX_TOKENS)]
    return [["--sections", "throughput", "--decoder", "none", "--masked", "none", "--models", str(dream),
             "--throughput-kp", "1", "16", *budget, *common],
            ["--sections", "cost-of-k", "--decoder", str(decoder), "--masked", "none", "--models", str(dream),
             "--ks", "1", "16", *common]]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.bench.gpu_check", description=__doc__)
    parser.add_argument("--dream-code", required=True, help="folder with Dream's model code and a config.json")
    parser.add_argument("--like", required=True, help="decoder folder (config.json + tokenizer) giving the shape")
    parser.add_argument("--out", required=True, help="folder for the sections' JSON, PNG and markdown")
    parser.add_argument("--work", help="where the model folders are built (default OUT/../gpu-check-models)")
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    parser.add_argument("--quick", action="store_true", help="the seconds-long configuration (a CPU dry run)")
    args = parser.parse_args(argv)

    from diffret_pyserini.bench import __main__ as bench
    from diffret_pyserini.bench.shaped_model import build, random_decoder
    from diffret_pyserini.model.packaged import set_offline_env

    set_offline_env()
    out = Path(args.out)
    work = Path(args.work) if args.work else out.parent / "gpu-check-models"
    try:
        dream = build(Path(args.dream_code), args.like, work / "dream-shaped")
        decoder = random_decoder(args.like, work / "decoder-shaped")
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for argv_ in sections(dream, decoder, out, args.device, args.quick):
        code = bench.main(argv_)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
