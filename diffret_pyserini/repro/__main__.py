"""`python -m diffret_pyserini.repro`: the paper's comparison as a matrix of cells, each run through the pipeline's
cached stages and held against an expected figure, in the spirit of `python -m pyserini.2cr.beir`.

    python -m diffret_pyserini.repro --list-conditions
    python -m diffret_pyserini.repro --all --dry-run                      # every cell's commands, nothing run
    python -m diffret_pyserini.repro --condition diffembed.splade-tiny.ft --dataset cacm
    python -m diffret_pyserini.repro --all --data-root DATA --models-root MODELS --device cuda

Cells whose dataset or model folder is not here are skipped (said so, with what is missing); every cell that
runs prints [OK] / [FAIL] against expected.yaml (CACM and CACM without titles: measured here, with a
tolerance), and one table: nDCG@10 and R@100 per dataset, the mean over BEIR-7, and the paper's BEIR-7 figure
beside it (marked as the paper's, never asserted). Exit status 1 when a figure failed its check.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

from diffret_pyserini.cli import ArgumentError, OneLineArgumentParser, configure_logging, guarded, pop_debug
from diffret_pyserini.repro.matrix import (
    BEIR7,
    LOCAL_DATASETS,
    Condition,
    Roots,
    commands,
    conditions,
    datasets_of,
    find,
    missing_inputs,
    model_arg,
    pipeline_argv,
    row_of,
    shell,
)

log = logging.getLogger("diffret_pyserini.repro")
DATASETS = (*LOCAL_DATASETS, *BEIR7)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.repro", description=__doc__.split("\n")[0])
    parser.add_argument("--list-conditions", action="store_true", help="list every condition and exit")
    parser.add_argument("--condition", action="append", default=[], help="a condition to run (repeatable)")
    parser.add_argument("--dataset", action="append", default=[], choices=DATASETS,
                        help="a dataset to run the conditions on (repeatable; default: every one they apply to)")
    parser.add_argument("--all", action="store_true", help="every condition")
    parser.add_argument("--display-commands", action="store_true", help="print each cell's commands")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--data-root", default="data", help="folder holding the BEIR-7 folders (BEIR layout) and "
                        "msmarco-train.jsonl")
    parser.add_argument("--models-root", default="models", help="folder holding the paper's backbones, the "
                        "released DiffRetriever checkpoints and the fine-tuned baselines (ft/)")
    parser.add_argument("--indexes", default="indexes", help="the pipeline's index root (its cache)")
    parser.add_argument("--runs", default="runs", help="the pipeline's run root")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--expected", default=None, help="YAML of expected figures (default: the packaged one)")
    parser.add_argument("--output", default=None, help="also write the table to this markdown file")
    return parser


def cells(opts) -> list[tuple[Condition, str]]:
    """The (condition, dataset) cells the flags select, in matrix order."""
    if opts.all and opts.condition:
        raise ArgumentError("--all and --condition: give one or the other")
    if not (opts.all or opts.condition):
        raise ArgumentError("nothing selected: give --all or --condition NAME (--list-conditions lists them)")
    chosen = conditions() if opts.all else [find(name) for name in opts.condition]
    out = [(c, d) for c in chosen for d in datasets_of(c) if not opts.dataset or d in opts.dataset]
    if not out:
        raise ArgumentError(f"--dataset {' '.join(opts.dataset)}: none of the chosen conditions applies to it")
    return out


def run_group(argv: list[str]) -> dict[str, dict[str, float]]:
    """One pipeline invocation, in this process (models stay loaded between cells); its rows' metrics."""
    from diffret_pyserini.cli import dataclass_parser
    from diffret_pyserini.pipeline import PipelineArguments, run

    (args,) = dataclass_parser([PipelineArguments]).parse_args_into_dataclasses(args=argv)
    return run(args)


def grouped(selected: list[tuple[Condition, str]], roots: Roots) -> dict[tuple, list[tuple[Condition, str]]]:
    """Cells whose pipeline commands differ only in --systems share one invocation (the union of systems)."""
    groups: dict[tuple, list[tuple[Condition, str]]] = {}
    for cell in selected:
        argv = pipeline_argv(*cell, roots)
        at = argv.index("--systems")
        key = (*argv[:at], *argv[at + 2:])
        groups.setdefault(key, []).append(cell)
    return groups


def execute(selected: list[tuple[Condition, str]], roots: Roots, display: bool) -> dict[tuple[str, str], dict]:
    """Run every runnable cell; {(condition, dataset): metrics}."""
    import subprocess

    results: dict[tuple[str, str], dict] = {}
    for key, members in grouped(selected, roots).items():
        runnable = []
        for cell in members:
            missing = missing_inputs(*cell, roots)
            if missing:
                print(f"[SKIP] {cell[1]:<12} {cell[0].name:<40} not here: {', '.join(missing)}")
            else:
                runnable.append(cell)
        if not runnable:
            continue
        for condition, dataset in runnable:
            for command in commands(condition, dataset, roots)[:-1]:  # training before the pipeline
                if display:
                    print(shell(command))
                out = Path(command[command.index("--output_dir") + 1])
                if not (out / "diffret_config.json").is_file():
                    subprocess.run(command, check=True)
        systems = list(dict.fromkeys(pipeline_argv(c, d, roots)[pipeline_argv(c, d, roots).index("--systems") + 1]
                                     for c, d in runnable))
        at = list(key).index("--finetune")
        argv = [*key[:at], "--systems", *systems, *key[at:]]
        if display:
            print(shell(["python", "-m", "diffret_pyserini.pipeline", *argv]))
        metrics = run_group(argv)
        for condition, dataset in runnable:
            row = row_of(condition, model_arg(condition, roots) if condition.backbone else "")
            if row in metrics:
                results[(condition.name, dataset)] = metrics[row]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from diffret_pyserini.repro.check import checks, load_expected, table

    args, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(args)
    configure_logging()
    if opts.list_conditions:
        for c in conditions():
            print(f"{c.name:<44} {', '.join(datasets_of(c))}")
        return 0
    roots = Roots(Path(opts.data_root), Path(opts.models_root), Path(opts.indexes), Path(opts.runs), opts.device)
    failed = False

    def call():
        nonlocal failed
        expected = load_expected(opts.expected)
        selected = cells(opts)
        if opts.dry_run or opts.display_commands:
            for condition, dataset in selected:
                print(f"# {condition.name} on {dataset}")
                for command in commands(condition, dataset, roots):
                    print(shell(command))
        if opts.dry_run:
            return
        results = execute(selected, roots, opts.display_commands)
        found = checks(results, expected)
        print()
        for check in found:
            print(check.line())
        unchecked = sorted(k for k in results if not any((c.condition, c.dataset) == k for c in found))
        for name, dataset in unchecked:
            print(f"[--]   {dataset:<12} {name:<40} no expected figure")
        text = table([c for c in conditions() if c in {s for s, _ in selected}], results, expected)
        print("\n" + text)
        if opts.output:
            Path(opts.output).write_text(text, encoding="utf-8")
        failed = any(not c.ok for c in found)

    code, _ = guarded(call, debug)
    return code if code else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
