"""The fine-tuned embedded default: SPLADE-tiny trained on a collection's own pseudo-queries, made once and cached.

    from diffret_pyserini.train.default import finetuned_default
    folder = finetuned_default("cacm")          # -> indexes/cacm/finetuned/splade-tiny-ft
    python -m diffret_pyserini.train.default --dataset cacm     # the same from the shell

No topics or judgements of the collection are read: queries are the corpus's own titles and sentences
(`mine.py`), negatives come from BM25 over the corpus. The folder is reused while its fingerprint (corpus
digest, base model digest, mining and training arguments) matches; an interrupted run resumes from its last
checkpoint. Training runs as `python -m diffret_pyserini.train` in a child process (the command is logged in
finetune.json), so its thread settings cannot disturb the caller.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from diffret_pyserini.datasets import resolve_dataset
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.writers import atomic_write_json

BASE_MODEL = "splade-tiny"
FOLDER = "splade-tiny-ft"
STAMP = "finetune.json"
VERSION = 1  # bump when the recipe's code changes what it learns
# Pseudo-query sources and their BM25 hard negatives (see mine.MineArguments).
MINE = {"titles": dict(negatives=4, min_words=30), "sentences": dict(negatives=4)}
# Arguments of `python -m diffret_pyserini.train` (see train/arguments.py); ~8 CPU minutes on 2 cores.
TRAIN = dict(full_finetune=True, kq=4, kp=8, dropout=False, train_passage_max_length=128, train_group_size=3,
             per_device_train_batch_size=32, learning_rate=1e-3, warmup_ratio=0.1, max_steps=150,
             loss_single=1.0, loss_multi=1.0, loss_sparse=1.0, loss_flops=0.0, temperature=0.01,
             sparse_temperature=1.0, seed=42, save_steps=25)


def log(message: str) -> None:
    print(f"[finetune] {message}", flush=True)


def train_command(train_dir: Path, out: Path, resume: bool, threads: int) -> list[str]:
    cmd = [sys.executable, "-m", "diffret_pyserini.train", "--model", BASE_MODEL, "--train_data", str(train_dir),
           "--output_dir", str(out), "--threads", str(threads)]
    for key, value in TRAIN.items():
        cmd += [f"--{key}", str(value)]
    return cmd + (["--resume", "True"] if resume else ["--overwrite_output_dir", "True"])


def finetuned_default(dataset_dir_or_name: str | os.PathLike = "cacm", out_root: str | os.PathLike | None = None,
                      force: bool = False, indexes: str | os.PathLike = "indexes", threads: int = 2) -> Path:
    """Fine-tune SPLADE-tiny on the collection's pseudo-queries once; return the model folder.

    `out_root` defaults to `<indexes>/<dataset>/finetuned`; the BM25 index used for mining is the pipeline's own
    (`<indexes>/<dataset>/bm25`, built if missing). A second call with the same inputs returns at once.
    """
    from diffret_pyserini.models import resolve_model_path
    from diffret_pyserini.train.mine import MineArguments, mine

    dataset = resolve_dataset(dataset_dir_or_name)
    root = Path(out_root) if out_root is not None else Path(indexes) / dataset.name / "finetuned"
    out = root / FOLDER
    fp = fingerprint(corpus=path_digest(dataset.corpus_path), base=path_digest(resolve_model_path(BASE_MODEL)),
                     mine=MINE, train=TRAIN, version=VERSION)
    stamp_path = out / STAMP
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    same = stamp.get("fingerprint") == fp and not force
    if same and stamp.get("done") and (out / "diffret_config.json").is_file():
        log(f"up to date: {out}")
        return out
    if not same:
        shutil.rmtree(out, ignore_errors=True)
    train_dir = root / f"train-{fp}"
    for old in root.glob("train-*"):  # mined data of earlier recipes or corpora
        if old != train_dir:
            shutil.rmtree(old, ignore_errors=True)
    started = time.time()
    for source, extra in MINE.items():
        target = train_dir / f"{source}.jsonl"
        if not target.is_file():
            log(f"mining {source} pseudo-queries with BM25 negatives ...")
            mine(MineArguments(dataset=str(dataset_dir_or_name), output=str(target), source=source,
                               indexes=str(indexes), **extra))
    resume = same and any(out.glob("checkpoint-*"))
    cmd = train_command(train_dir, out, resume, threads)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp_path, {"fingerprint": fp, "done": False, "command": cmd})
    log(("resuming" if resume else "training") + f" {out} ...")
    # PASSIVE: idle OpenMP threads sleep instead of spinning; on a busy 2-core machine spinning threads made
    # small matrix products ~40x slower.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"fine-tuning failed (exit {proc.returncode}): {' '.join(cmd)}")
    atomic_write_json(stamp_path, {"fingerprint": fp, "done": True, "command": cmd, "mine": MINE,
                                   "seconds": round(time.time() - started, 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m diffret_pyserini.train.default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cacm", help="BEIR-layout folder or packaged dataset name")
    parser.add_argument("--out-root", default=None, help="default: INDEXES/<dataset>/finetuned")
    parser.add_argument("--indexes", default="indexes", help="root of the index folders")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--force", action="store_true", help="train again even if the cached folder matches")
    args = parser.parse_args(argv)
    print(finetuned_default(args.dataset, args.out_root, args.force, args.indexes, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
