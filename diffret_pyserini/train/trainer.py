"""The training loop: AdamW + linear warm-up/decay, tqdm with the loss, atomic checkpoints, exact resume.

A checkpoint `OUTPUT/checkpoint-N/state.pt` holds the trainable weights, optimiser, scheduler, step and every RNG
state; it is written to a temporary folder and renamed, so a crash never leaves a half checkpoint. Batches are
drawn from (seed, epoch, position) alone (see data.GroupBatches), so a resumed run sees the same batches and
reaches the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffret_pyserini.backbones.load import DIFFRET_CONFIG
from diffret_pyserini.train.arguments import DataArguments, ModelArguments, TrainingArguments, to_json
from diffret_pyserini.train.data import GroupBatches, read_examples
from diffret_pyserini.train.loss import LossWeights, combined_loss
from diffret_pyserini.train.trainable_encoder import TrainableEncoder, build_encoder
from diffret_pyserini.atomic import atomic_write_json

log = logging.getLogger("diffret_pyserini.train")

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Arguments that may change between a run and its resume without changing what is learned.
RESUME_FREE = {"resume", "overwrite_output_dir", "save_steps", "save_total_limit", "logging_steps",
               "keep_checkpoints", "threads", "device"}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG's state in types `torch.load(weights_only=True)` accepts (no numpy arrays, nothing pickled)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint_state(path: Path) -> dict:
    """A checkpoint's state.pt as data only (`weights_only=True`): unpickling arbitrary objects from a folder
    would run whatever code it names."""
    import pickle

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(f"{path}: not a checkpoint this trainer wrote; it holds objects that would run code "
                           f"when unpickled, refused ({str(err).splitlines()[0]})") from None


def trainable_state(encoder: TrainableEncoder) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in encoder.model.named_parameters() if p.requires_grad}


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = []
    for p in output_dir.glob("checkpoint-*"):
        m = CHECKPOINT.match(p.name)
        if m and (p / "state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(output_dir: Path, step: int, encoder: TrainableEncoder, optimizer, scheduler,
                    history: list[dict], window: list[float], args_json: dict, keep: int) -> Path:
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {"step": step, "weights": trainable_state(encoder), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng_state(), "history": history, "window": window, "args": args_json}
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in checkpoints(output_dir)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _changed(saved: dict, now: dict) -> list[str]:
    out = []
    for group, values in now.items():
        for key, value in values.items():
            if key not in RESUME_FREE and saved.get(group, {}).get(key) != value:
                out.append(f"{key}: {saved.get(group, {}).get(key)!r} -> {value!r}")
    return out


def prepare_output(out: Path, args: TrainingArguments) -> bool:
    """Check and make the output folder; True when `--resume` finds the run already finished."""
    finished = (out / DIFFRET_CONFIG).is_file() and (out / "trainer_state.json").is_file() and not checkpoints(out)
    if args.resume and finished:
        return True
    if (out / DIFFRET_CONFIG).is_file() and not (args.overwrite_output_dir or args.resume):
        raise ValueError(f"{out}: already holds a trained model; pass --overwrite_output_dir to replace it")
    if checkpoints(out) and not args.resume and not args.overwrite_output_dir:
        raise ValueError(f"{out}: holds checkpoints; pass --resume to continue or --overwrite_output_dir")
    if args.overwrite_output_dir and not args.resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return False


def train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> Path:
    """Fine-tune and save the model folder `args.output_dir`; returns its path.

    `args.threads` holds only while training: the caller's torch thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return _train(model_args, data_args, args)
    finally:
        torch.set_num_threads(threads)


def _train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> Path:
    if not args.output_dir:
        raise ValueError("--output_dir: missing")
    out = Path(args.output_dir)
    if prepare_output(out, args):
        log.info(f"{out}: already trained (trainer_state.json); nothing to resume")
        return out
    train_data = Path(data_args.train_data)
    if not data_args.train_data:
        raise ValueError("--train_data: missing")
    if train_data.is_dir() and (train_data / "qrels" / "train.tsv").is_file():
        from diffret_pyserini.train.mine import MineArguments, mine

        mined = out / "train.jsonl"
        if not mined.is_file():
            mine(MineArguments(dataset=str(train_data), output=str(mined), source="qrels",
                               negatives=max(data_args.train_group_size - 1, 1)))
        train_data = mined
    examples = read_examples(train_data)[:data_args.max_examples]
    args_json = to_json(model_args, data_args, args)

    set_seed(args.seed)
    encoder = build_encoder(model_args.model, model_args.settings(), kind=model_args.kind,
                            device=model_args.device, full_finetune=model_args.full_finetune,
                            lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                            lora_dropout=model_args.lora_dropout, lora_target_modules=model_args.lora_target_modules,
                            gradient_checkpointing=model_args.gradient_checkpointing, bf16=model_args.bf16,
                            slot_token=model_args.slot_token, dropout=model_args.dropout,
                            dtype=None if model_args.dtype == "auto" else model_args.dtype,
                            trust_remote_code=model_args.trust_remote_code)
    encoder.max_lengths = {"query": data_args.train_query_max_length,
                           "passage": data_args.train_passage_max_length}
    weights = LossWeights(args.loss_dense, args.loss_multi, args.loss_sparse, args.loss_flops, args.temperature,
                          args.sparse_temperature)
    want = [name for name, w in (("dense", weights.dense), ("multi", weights.multi),
                                 ("sparse", weights.sparse or weights.flops)) if w]
    if not want:
        raise ValueError("every loss weight is zero: nothing to train")
    batches = GroupBatches(examples, args.per_device_train_batch_size, data_args.train_group_size, args.seed)
    per_epoch = len(batches)
    total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * per_epoch))
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total), total)

    step, history, window = 0, [], []  # window: losses since the last log line
    found = checkpoints(out)
    if args.resume and found:
        state = load_checkpoint_state(found[-1][1] / "state.pt")
        changed = _changed(state["args"], args_json)
        if changed:
            raise ValueError(f"{found[-1][1]}: was made with other arguments ({'; '.join(changed)})")
        named = dict(encoder.model.named_parameters())
        with torch.no_grad():
            for name, value in state["weights"].items():
                named[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, history, window = state["step"], state["history"], state["window"]

    encoder.train()
    started = time.time()
    with tqdm(total=total, initial=step, desc="train", unit="step") as bar:
        while step < total:
            epoch, start = divmod(step, per_epoch)
            for batch in batches.epoch(epoch, start):
                q, p = encoder(batch.queries, batch.passages, want)
                loss, parts = combined_loss(q, p, weights)
                loss.backward()
                if args.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window.append(parts["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{sum(window[-10:]) / len(window[-10:]):.3f}", epoch=epoch)
                if step % args.logging_steps == 0 or step == total:
                    history.append({"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                                    **{k: round(v, 5) for k, v in parts.items()},
                                    "mean_loss": round(sum(window) / len(window), 5)})
                    window = []
                if args.save_steps and step % args.save_steps == 0 and step < total:
                    save_checkpoint(out, step, encoder, optimizer, scheduler, history, window, args_json,
                                    args.save_total_limit)
                if step >= total:
                    break
    encoder.eval()
    base = model_args.model if not Path(model_args.model).is_dir() else str(Path(model_args.model).resolve())
    encoder.save(out, base_model=base)
    atomic_write_json(out / "trainer_state.json", {"args": args_json, "history": history, "steps": step,
                                                   "examples": len(examples), "seconds": round(time.time() - started, 1)})
    if not args.keep_checkpoints:
        for _, ckpt in checkpoints(out):
            shutil.rmtree(ckpt, ignore_errors=True)
    return out


def read_history(out: str | os.PathLike) -> list[dict]:
    """The logged losses of a finished run (trainer_state.json)."""
    return json.loads((Path(out) / "trainer_state.json").read_text())["history"]
