"""The fine-tuned embedded default: SPLADE-tiny trained on a collection's own pseudo-queries, made once and cached.

    from diffret_pyserini.train.default import finetuned_default
    folder = finetuned_default("cacm")          # -> indexes/cacm/finetuned/splade-tiny-ft
    python -m diffret_pyserini.train.default --dataset cacm     # the same from the shell

No topics or judgements of the collection are read: queries are the corpus's own pseudo-queries (`source`:
its document titles, the positive being the text without its title, or sentences of the text; `mine.py`,
`sources.py` picks one per collection), negatives come from BM25 over the corpus. Documents held out for the
fusion dev set (`exclude`) give no training query. The folder is reused while its fingerprint (corpus digest,
base model digest, mining and training arguments) matches; an interrupted run resumes from its last checkpoint. Training runs as `python -m diffret_pyserini.train`
in a child process (the command is logged in <model>-ft.finetune.json beside the folder), so its thread settings
cannot disturb the caller.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.cli import InputError, ToolError
from diffret_pyserini.datasets import resolve_dataset
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.index.lucene import dataset_key

BASE_MODEL = "splade-tiny"
FOLDER = "splade-tiny-ft"
STAMP = "finetune.json"
VERSION = 2  # 2: transformers.Trainer engine. Bump when the recipe's code changes what it learns
# Pseudo-query sources and their BM25 hard negatives (see mine.MineArguments).
MINE = {"titles": dict(negatives=4, min_words=20), "sentences": dict(negatives=4, min_words=20),
        # SmolLM2 titles for up to 2,000 documents (a seeded sample): ~15 minutes of generation on 2 cores, cached
        # by content. 1,000 taught the model less: on CACM without titles the ensemble's best BM25 hybrid rose
        # from +0.018 to +0.025 with 2,000 (docs/collections.md)
        "lm": dict(negatives=4, min_words=20, max_queries=2000, lm_threads=1)}
# Arguments of `python -m diffret_pyserini.train` (see train/arguments.py). Measured on CACM (2,004 title
# queries): ~1.1 CPU-seconds a step, so 120 steps take ~2-3 minutes on 2 free cores. Learning rate 1e-3 is
# what moved the numbers most (2e-4 left dense near zero-shot); more steps (200) or more negatives did not help.
TRAIN = dict(full_finetune=True, kq=4, kp=8, dropout=False, train_passage_max_length=128, train_group_size=3,
             per_device_train_batch_size=32, learning_rate=1e-3, warmup_ratio=0.1, max_steps=120,
             loss_dense=1.0, loss_multi=1.0, loss_sparse=1.0, loss_flops=0.0, temperature=0.01,
             sparse_temperature=0.3, seed=42, save_steps=20)


log = logging.getLogger("diffret_pyserini.finetune")  # shown as [finetune]


# The baselines' recipes (kind diffembed / repllama) train the same way on the same data, with what the reference
# trains them with: their one dense InfoNCE term at temperature 0.02 (they make no multi-vector or sparse).
BASELINE_TRAIN = dict(loss_multi=0.0, loss_sparse=0.0, temperature=0.02)


def source_parts(source: str) -> list[str]:
    """The mined sources a training source joins: 'lm+sentences' -> ['lm', 'sentences']; 'titles' -> ['titles']."""
    parts = source.split("+")
    unknown = [p for p in parts if p not in MINE]
    if unknown or len(set(parts)) != len(parts):
        raise InputError(f"pseudo-query source {source!r}: choose from {sorted(MINE)}, or several joined by '+'")
    return parts


# Anything but SPLADE-tiny trains LoRA adapters (r=16, alpha=64) on frozen bf16 weights, with gradient
# checkpointing: SmolLM2-135M's 120 steps of 32 x 3 texts then take ~30 s a step and 8 GB on 2 AMX cores, where
# fp32 took 92 s and 15 GB. The adapters' own dropout is off like the model's (`dropout=False`): on a CPU its
# masks cost more than the matrix products.
LORA = dict(full_finetune=False, learning_rate=1e-4, lora_dropout=0.0, bf16=True, gradient_checkpointing=True)


def recipe(base_model: str, kind: str | None = None, k: dict[str, int] | None = None) -> dict:
    """Training arguments for a base model: the tuned recipe for SPLADE-tiny; LORA for anything else, which is
    too big to fine-tune fully on a CPU. `kind` diffembed / repllama: the same, with the baseline's dense-only
    loss (BASELINE_TRAIN); K does not apply to them. `k` ({'kq': .., 'kp': ..}, either or both) trains at
    another K than TRAIN's, the one the model will be read at."""
    from diffret_pyserini.model.packaged import resolve_model_path

    args = dict(TRAIN)
    if resolve_model_path(base_model) != resolve_model_path(BASE_MODEL):
        args.update(LORA)
    if kind is not None:
        args = {key: value for key, value in args.items() if key not in ("kq", "kp")}
        args.update(kind=kind, **BASELINE_TRAIN)
    elif k:
        args.update({key: int(value) for key, value in k.items() if key in ("kq", "kp")})
    return args


def k_suffix(k: dict[str, int] | None, kind: str | None = None) -> str:
    """'-k1-1' for a K other than TRAIN's (its folder must not be the default K's); '' otherwise."""
    if kind is not None or not k:
        return ""
    kq, kp = int(k.get("kq", TRAIN["kq"])), int(k.get("kp", TRAIN["kp"]))
    return "" if (kq, kp) == (TRAIN["kq"], TRAIN["kp"]) else f"-k{kq}-{kp}"


def train_command(base_model: str, train_dir: Path, out: Path, resume: bool, threads: int,
                  kind: str | None = None, k: dict[str, int] | None = None) -> list[str]:
    model = base_model if not Path(base_model).is_dir() else str(Path(base_model).resolve())
    cmd = [sys.executable, "-m", "diffret_pyserini.train", "--model", model, "--train_data", str(train_dir),
           "--output_dir", str(out), "--threads", str(threads)]
    for key, value in recipe(base_model, kind, k).items():
        cmd += [f"--{key}", str(value)]
    return cmd + (["--resume", "True"] if resume else ["--overwrite_output_dir", "True"])


def finetuned_default(dataset_dir_or_name: str | os.PathLike = "cacm", out_root: str | os.PathLike | None = None,
                      force: bool = False, base_model: str = BASE_MODEL, indexes: str | os.PathLike | None = None,
                      threads: int = 2, source: str = "titles", exclude: Iterable[str] | None = None,
                      kind: str | None = None, k: dict[str, int] | None = None) -> Path:
    """Fine-tune `base_model` (default SPLADE-tiny) on the collection's pseudo-queries once; return the folder
    `<out_root>/<model>-ft`.

    `kind` (diffembed, repllama) trains that baseline recipe instead, on the same data, into
    `<model>-<kind>-ft`. `k` trains DiffRetriever (or PromptReps) at the K it will be read at, into
    `<model>-ft-k<Kq>-<Kp>` when that is not TRAIN's K. `out_root` defaults to `<indexes>/<dataset>/finetuned`; mining uses the pipeline's
    own BM25 index `<indexes>/<dataset>/bm25` (built if missing), where `indexes` defaults to the folder two
    levels above `out_root`, else `indexes`. A second call with the same inputs returns at once; `force` trains again.
    """
    from diffret_pyserini.model.packaged import resolve_model_path
    from diffret_pyserini.train.data import read_examples, write_examples
    from diffret_pyserini.train.mine import MineArguments, mine

    dataset = resolve_dataset(dataset_dir_or_name)
    if indexes is None:
        indexes = Path(out_root).parent.parent if out_root is not None else Path("indexes")
    root = Path(out_root) if out_root is not None else Path(indexes) / dataset_key(dataset) / "finetuned"
    name = Path(base_model).name if Path(base_model).is_dir() else str(base_model)
    # one folder per source, so runs of models trained on different pseudo-queries never share a tag
    stem = (FOLDER if name == BASE_MODEL else f"{name}-ft") if kind is None else f"{name}-{kind}-ft"
    out = root / (stem + k_suffix(k, kind) + ("" if source == "titles" else "-" + source.replace("+", "-")))
    corpus = path_digest(dataset.corpus_path)
    parts = source_parts(source)
    if exclude is None:
        from diffret_pyserini.train.sources import dev_split

        exclude = dev_split(dataset.corpus_path, parts[0], queries="none").docids
    exclude = sorted(set(exclude))
    mined_with = MINE[source] if len(parts) == 1 else [MINE[p] for p in parts]
    data_fp = fingerprint(corpus=corpus, source=source, mine=mined_with, exclude=exclude, version=VERSION)
    fp = fingerprint(data=data_fp, base=path_digest(resolve_model_path(base_model)), train=recipe(base_model, kind, k))
    stamp_path = root / f"{out.name}.{STAMP}"  # beside the folder: the trainer owns the folder itself
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    same = stamp.get("fingerprint") == fp and not force
    if same and stamp.get("done") and (out / "diffret_config.json").is_file():
        log.info(f"up to date: {out}")
        return out
    if not same:
        shutil.rmtree(out, ignore_errors=True)
    train_dir = root / f"train-{data_fp}"  # shared by every base model
    for old in root.glob("train-*"):  # mined data of earlier recipes or corpora
        if old != train_dir:
            shutil.rmtree(old, ignore_errors=True)
    started = time.time()
    for part in parts:  # the trainer reads every file of train_dir: one per source
        target = train_dir / f"{part}.jsonl"
        if target.is_file():
            continue
        log.info(f"mining {part} pseudo-queries with BM25 negatives ...")
        mined = root / f"mined-{data_fp}.jsonl"  # outside train_dir, which the trainer reads whole
        mine(MineArguments(dataset=str(dataset_dir_or_name), output=str(mined), source=part,
                           indexes=str(indexes), **MINE[part]))
        held_out = set(exclude)
        examples = [e for e in read_examples(mined) if not held_out & {p.docid for p in e.positives}]
        write_examples(examples, target)
        mined.unlink()
        log.info(f"{len(examples)} {part} pseudo-queries to train on ({len(held_out)} documents held out)")
    resume = same and any(out.glob("checkpoint-*"))
    cmd = train_command(base_model, train_dir, out, resume, threads, kind, k)
    atomic_write_json(stamp_path, {"fingerprint": fp, "done": False, "command": cmd})
    log.info(("resuming" if resume else "training") + f" {out} ...")
    # PASSIVE: idle OpenMP threads sleep instead of spinning; on a busy 2-core machine spinning threads made
    # small matrix products ~40x slower.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise ToolError(f"fine-tuning failed (exit {proc.returncode}): {' '.join(cmd)}")
    atomic_write_json(stamp_path, {"fingerprint": fp, "done": True, "command": cmd, "source": source,
                                   "mine": mined_with, "held_out": len(exclude),
                                   "seconds": round(time.time() - started, 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    from diffret_pyserini.cli import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.train.default", description=__doc__)
    parser.add_argument("--dataset", default="cacm", help="BEIR-layout folder or packaged dataset name")
    parser.add_argument("--model", default=BASE_MODEL, help="base model folder or packaged name")
    parser.add_argument("--out-root", default=None, help="default: INDEXES/<dataset>/finetuned")
    parser.add_argument("--indexes", default=None, help="root of the index folders (default: indexes)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--force", action="store_true", help="train again even if the cached folder matches")
    parser.add_argument("--source", default="auto",
                        help=f"pseudo-queries: auto (train/sources.choose_source), one of {', '.join(MINE)}, or "
                             "several joined by '+' (lm+sentences: both, in one training set)")
    parser.add_argument("--kind", default=None, choices=["diffembed", "repllama"],
                        help="train a baseline recipe instead of DiffRetriever (dense InfoNCE, temperature 0.02)")
    parser.add_argument("--kq", type=int, default=None, help=f"query K to train at (default {TRAIN['kq']})")
    parser.add_argument("--kp", type=int, default=None, help=f"passage K to train at (default {TRAIN['kp']})")
    args = parser.parse_args(argv)
    k = {key: value for key, value in (("kq", args.kq), ("kp", args.kp)) if value is not None}
    source = args.source
    if source == "auto":
        from diffret_pyserini.train.sources import choose_source

        source, why = choose_source(resolve_dataset(args.dataset).corpus_path)
        log.info(f"pseudo-queries: {source} ({why})")
    print(finetuned_default(args.dataset, args.out_root, args.force, args.model, args.indexes, args.threads,
                            source=source, kind=args.kind, k=k or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
