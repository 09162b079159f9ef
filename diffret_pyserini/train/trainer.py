"""Training on transformers.Trainer: our loss, our batches, atomic checkpoints, exact resume, the tqdm loss bar.

`ContrastiveTrainer` overrides what is ours and nothing else: the data (GroupBatches split over processes by
data.RankBatchSampler), `compute_loss` (InfoNCE on single / multi / sparse + FLOPS, with the representations of
every process gathered so N processes train like one with N times the batch), checkpoint files (trainable
weights as safetensors, RNG state without pickled objects) and the history/progress bar. Optimiser, schedule,
gradient accumulation, mixed precision, DDP and DeepSpeed are transformers' and accelerate's.

A checkpoint is written whole into OUTPUT/.staging/checkpoint-N and renamed to OUTPUT/checkpoint-N only when
every process has finished writing, so a kill, even mid-save, never leaves a `checkpoint-N` that looks complete
(a stale .staging is removed on the next start). Batches are drawn from (seed, epoch, position) alone
(data.GroupBatches), so a resumed run sees the same batches and reaches the same weights as an uninterrupted one.
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
import transformers
from tqdm import tqdm

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.cli import InputError
from diffret_pyserini.model.backbones.load import DIFFRET_CONFIG
from diffret_pyserini.train.arguments import RESUME_FREE, DataArguments, ModelArguments, TrainingArguments, to_json
from diffret_pyserini.train.data import GroupBatches, GroupDataset, RankBatchSampler, collate_groups, read_examples
from diffret_pyserini.train.distributed import gather, gather_texts, world
from diffret_pyserini.train.loss import LossWeights, combined_loss
from diffret_pyserini.train.trainable_encoder import TrainableEncoder, build_encoder

log = logging.getLogger("diffret_pyserini.train")

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STAGING = ".staging"
WEIGHTS = "trainable.safetensors"  # the trainable parameters (all of them, or the LoRA adapters)
# Our record, per checkpoint (arguments, loss history, the unlogged window) and for the finished run (plus
# steps, examples, processes, seconds); transformers' own trainer_state.json stays inside checkpoints.
OURS = "diffret_train.json"
PICKLED = (".pt", ".pth", ".bin")


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
    """A checkpoint's torch file as data only (`weights_only=True`): unpickling arbitrary objects from a folder
    would run whatever code it names."""
    import pickle

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(f"{path}: not a checkpoint this trainer wrote; it holds objects that would run code "
                         f"when unpickled, refused ({str(err).splitlines()[0]})") from None


def check_checkpoint(folder: Path) -> dict:
    """Refuse a checkpoint before transformers reads it: every torch file in it must load as plain data (what
    we and transformers write: optimizer, scheduler, our RNG state). Returns our OURS record."""
    for f in sorted(folder.iterdir()):
        if f.suffix in PICKLED and f.is_file():
            load_checkpoint_state(f)
    return json.loads((folder / OURS).read_text())


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (a checkpoint-N folder exists only once complete: see _save_checkpoint)."""
    found = []
    for p in output_dir.glob("checkpoint-*"):
        m = CHECKPOINT.match(p.name)
        if m and (p / OURS).is_file() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


class _DataLoader(torch.utils.data.DataLoader):
    """Trainer calls `set_epoch` on its dataloader each epoch; the epoch decides the batches."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class _StepRecorder(transformers.TrainerCallback):
    """After each optimiser step: the loss history and progress bar; the last step saves a model folder (by the
    caller), not a checkpoint."""

    def __init__(self, trainer: ContrastiveTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._record_step()
        if state.global_step >= state.max_steps:
            control.should_save = False
        return control


class ContrastiveTrainer(transformers.Trainer):
    """transformers.Trainer with our groups as batches and InfoNCE (+ FLOPS) over every process's batch."""

    def __init__(self, encoder: TrainableEncoder, args: TrainingArguments, batches: GroupBatches, group_size: int,
                 weights: LossWeights, args_json: dict):
        super().__init__(model=encoder, args=args)
        self.encoder, self.batches, self.group_size = encoder, batches, group_size
        self.weights, self.args_json = weights, args_json
        self.want = [name for name, w in (("dense", weights.dense), ("multi", weights.multi),
                                          ("sparse", weights.sparse or weights.flops)) if w]
        self.history: list[dict] = []
        self.window: list[float] = []     # step losses since the last history entry
        self._micro: list[dict] = []      # loss parts of this optimiser step's micro-batches
        self._recorded = -1
        self.bar: tqdm | None = None
        self._staging: Path | None = None
        for printer in (transformers.trainer_callback.ProgressCallback, transformers.trainer_callback.PrinterCallback):
            self.remove_callback(printer)  # our bar shows the loss; the history goes to diffret_train.json
        self.add_callback(_StepRecorder(self))

    # ------------------------------------------------------------------ data and loss
    def get_train_dataloader(self) -> _DataLoader:
        sampler = RankBatchSampler(self.batches, self.args.process_index, self.args.world_size)
        return _DataLoader(GroupDataset(self.batches), batch_sampler=sampler, num_workers=0,
                           collate_fn=lambda items: collate_groups(items, self.group_size))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        queries, passages = inputs["queries"], inputs["passages"]
        others: list[str] = []
        if world() > 1 and "sparse" in self.want:
            # One sparse column space for the global batch: what a single process would score in.
            others = gather_texts(list(queries) + list(passages))
        q, p = model(queries, passages, self.want, others)
        if world() > 1:
            q, p = {k: gather(v) for k, v in q.items()}, {k: gather(v) for k, v in p.items()}
        loss, parts = combined_loss(q, p, self.weights)
        if model.training:
            self._micro.append(parts)
        return (loss, (q, p)) if return_outputs else loss

    # ------------------------------------------------------------------ history and progress
    def _record_step(self) -> None:
        step = self.state.global_step
        if step == self._recorded or not self._micro:
            return
        self._recorded = step
        parts = {k: sum(m[k] for m in self._micro) / len(self._micro) for k in self._micro[0]}
        self._micro = []
        self.window.append(parts["loss"])
        epoch = max(math.ceil(self.state.epoch or 0) - 1, 0)
        if self.bar is None:
            self.bar = tqdm(total=self.state.max_steps, initial=step - 1, desc="train", unit="step",
                            disable=not self.is_world_process_zero())
        self.bar.update(1)
        recent = self.window[-10:]
        self.bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", epoch=epoch)
        every = max(int(self.args.logging_steps), 1)
        if step % every == 0 or step >= self.state.max_steps:
            self.history.append({"step": step, "epoch": epoch, "lr": self.lr_scheduler.get_last_lr()[0],
                                 **{k: round(v, 5) for k, v in parts.items()},
                                 "mean_loss": round(sum(self.window) / len(self.window), 5)})
            self.window = []

    # ------------------------------------------------------------------ checkpoint files
    # The private methods below are the Trainer's own extension points for checkpoint files (as Tevatron uses
    # `_save`); each override says what it changes.
    def _get_output_dir(self, trial):
        """Checkpoints are written into a staging folder (see `_save_checkpoint`)."""
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Atomic checkpoints: staged, fsynced, then renamed to checkpoint-N with our record (arguments, loss
        history), so a kill mid-save never leaves a checkpoint that looks complete."""
        out = Path(self.args.output_dir)
        self._staging = out / STAGING
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        name = f"checkpoint-{self.state.global_step}"
        self.accelerator.wait_for_everyone()  # every process's files are in before it counts as complete
        if self.is_world_process_zero():
            staged = out / STAGING / name
            atomic_write_json(staged / OURS, {"args": self.args_json, "history": self.history,
                                              "window": self.window})
            for f in staged.iterdir():  # on disk before the rename makes the checkpoint visible
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
            shutil.rmtree(out / name, ignore_errors=True)
            os.replace(staged, out / name)
            shutil.rmtree(out / STAGING, ignore_errors=True)
            for _, old in checkpoints(out)[:-max(self.args.save_total_limit or 0, 1)]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict=None):
        """Checkpoint weights: the trainable parameters only (LoRA: the adapters), as safetensors."""
        from safetensors.torch import save_file

        os.makedirs(output_dir, exist_ok=True)
        weights = {name: p.detach().cpu().contiguous().clone()
                   for name, p in self.encoder.model.named_parameters() if p.requires_grad}
        save_file(weights, os.path.join(output_dir, WEIGHTS))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """The trainable parameters back from `_save`'s file (the frozen base is loaded with the model)."""
        from safetensors.torch import load_file

        named = dict(self.encoder.model.named_parameters())
        with torch.no_grad():
            for name, value in load_file(os.path.join(resume_from_checkpoint, WEIGHTS)).items():
                named[name].copy_(value)

    def _rng_file(self, folder) -> str:
        name = f"rng_state_{self.args.process_index}.pth" if self.args.world_size > 1 else "rng_state.pth"
        return os.path.join(folder, name)

    def _save_rng_state(self, output_dir):
        """RNG states as plain tensors (transformers' file pickles numpy state), so every file of a checkpoint
        loads with `weights_only=True` and a planted pickle is refused before it runs (check_checkpoint)."""
        os.makedirs(output_dir, exist_ok=True)
        torch.save(rng_state(), self._rng_file(output_dir))

    def _load_rng_state(self, checkpoint):
        """The states `_save_rng_state` wrote."""
        if checkpoint is not None and os.path.isfile(self._rng_file(checkpoint)):
            set_rng_state(load_checkpoint_state(Path(self._rng_file(checkpoint))))


def _changed(saved: dict, now: dict) -> list[str]:
    out = []
    for group, values in now.items():
        for key, value in values.items():
            if key not in RESUME_FREE and saved.get(group, {}).get(key) != value:
                out.append(f"{key}: {saved.get(group, {}).get(key)!r} -> {value!r}")
    return out


def prepare_output(out: Path, args: TrainingArguments, main: bool = True) -> bool:
    """Check and make the output folder; True when `--resume` finds the run already finished."""
    resume = args.resume or bool(args.resume_from_checkpoint)
    finished = (out / DIFFRET_CONFIG).is_file() and (out / OURS).is_file() and not checkpoints(out)
    if resume and finished:
        return True
    if (out / DIFFRET_CONFIG).is_file() and not (args.overwrite_output_dir or resume):
        raise InputError(f"{out}: already holds a trained model; pass --overwrite_output_dir to replace it")
    if checkpoints(out) and not resume and not args.overwrite_output_dir:
        raise InputError(f"{out}: holds checkpoints; pass --resume to continue or --overwrite_output_dir")
    if main:
        if args.overwrite_output_dir and not resume and out.exists():
            shutil.rmtree(out)
        shutil.rmtree(out / STAGING, ignore_errors=True)  # a save that was killed half-way
        out.mkdir(parents=True, exist_ok=True)
    return False


def resume_checkpoint(out: Path, args: TrainingArguments) -> Path | None:
    """The checkpoint to continue from: --resume_from_checkpoint DIR (or True/last), or with --resume the newest
    complete one; None to start afresh."""
    given = args.resume_from_checkpoint
    if given and given.lower() not in ("true", "last"):
        if not (Path(given) / OURS).is_file():
            raise InputError(f"--resume_from_checkpoint {given}: not a complete checkpoint of this trainer")
        return Path(given)
    found = checkpoints(out)
    return found[-1][1] if found and (args.resume or given) else None


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


def _training_data(data_args: DataArguments, out: Path) -> Path:
    train_data = Path(data_args.train_data)
    if train_data.is_dir() and (train_data / "qrels" / "train.tsv").is_file():
        from diffret_pyserini.train.mine import MineArguments, mine

        mined = out / "train.jsonl"
        if not mined.is_file():
            mine(MineArguments(dataset=str(train_data), output=str(mined), source="qrels",
                               negatives=max(data_args.train_group_size - 1, 1)))
        return mined
    return train_data


def _train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> Path:
    if not args.output_dir:
        raise InputError("--output_dir: missing")
    if not data_args.train_data:
        raise InputError("--train_data: missing")
    if args.n_gpu > 1:
        raise InputError("several GPUs in one process: launch with torchrun or accelerate launch (one per GPU)")
    if args.world_size > 1 and args.parallel_mode != transformers.training_args.ParallelMode.DISTRIBUTED:
        raise InputError(f"{args.world_size} processes but no distributed data parallel (pass --use_cpu on CPU)")
    if model_args.device == "cpu" and args.device.type != "cpu":
        raise InputError("--device cpu: pass --use_cpu too (transformers places the model)")
    out = Path(args.output_dir)
    main = args.process_index == 0
    if prepare_output(out, args, main):
        log.info(f"{out}: already trained ({OURS}); nothing to resume")
        return out
    train_data = _training_data(data_args, out) if main else None
    if args.world_size > 1:  # rank 0 may have mined the data; everyone reads the same file
        torch.distributed.barrier()
        train_data = _training_data(data_args, out)
    examples = read_examples(train_data)[:data_args.max_examples]
    args_json = to_json(model_args, data_args, args)

    set_seed(args.seed)
    device = str(args.device) if model_args.device == "auto" else model_args.device
    encoder = build_encoder(model_args, device=device, bf16=args.bf16)
    encoder.autocast_dtype = None  # mixed precision is the Trainer's (--bf16 / --fp16)
    encoder.max_lengths = {"query": data_args.train_query_max_length,
                           "passage": data_args.train_passage_max_length}
    weights = LossWeights(args.loss_dense, args.loss_multi, args.loss_sparse, args.loss_flops, args.temperature,
                          args.sparse_temperature)
    if not (weights.dense or weights.multi or weights.sparse or weights.flops):
        raise InputError("every loss weight is zero: nothing to train")
    made = encoder.encoder.representations
    asked = [f"--loss_{name} {w:g}" for name, w, rep in (("multi", weights.multi, "multi"),
                                                          ("sparse", weights.sparse, "sparse"),
                                                          ("flops", weights.flops, "sparse")) if w and rep not in made]
    if asked:
        raise InputError(f"--kind {encoder.backbone.load_kind}: makes {', '.join(made)} vectors only, so "
                         f"{', '.join(asked)} has nothing to train; set it to 0")
    # The global batch: every process's queries are in-batch negatives of every other's.
    batches = GroupBatches(examples, args.per_device_train_batch_size * args.world_size,
                           data_args.train_group_size, args.seed)
    checkpoint = resume_checkpoint(out, args)
    saved = None
    if checkpoint is not None:
        saved = check_checkpoint(checkpoint)
        changed = _changed(saved["args"], args_json)
        if changed:
            raise InputError(f"{checkpoint}: was made with other arguments ({'; '.join(changed)})")
    trainer = ContrastiveTrainer(encoder, args, batches, data_args.train_group_size, weights, args_json)
    if saved is not None:
        trainer.history, trainer.window = saved["history"], saved["window"]
    started = time.time()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    if trainer.bar is not None:
        trainer.bar.close()
    if trainer.is_world_process_zero():
        encoder.eval()
        base = model_args.model if not Path(model_args.model).is_dir() else str(Path(model_args.model).resolve())
        encoder.save(out, base_model=base)
        atomic_write_json(out / OURS, {
            "args": args_json, "history": trainer.history, "steps": trainer.state.global_step,
            "examples": len(examples), "processes": args.world_size, "seconds": round(time.time() - started, 1)})
        if not args.keep_checkpoints:
            for _, ckpt in checkpoints(out):
                shutil.rmtree(ckpt, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return out


def read_history(out: str | os.PathLike) -> list[dict]:
    """The logged losses of a finished run (diffret_train.json)."""
    return json.loads((Path(out) / OURS).read_text())["history"]
