"""Arguments of `python -m diffret_pyserini.train`, as dataclasses parsed by transformers.HfArgumentParser.

`TrainingArguments` extends `transformers.TrainingArguments`, so every Hugging Face flag
(--gradient_accumulation_steps, --deepspeed, --bf16, --gradient_checkpointing, --report_to, --save_total_limit,
--max_steps, --learning_rate, --warmup_ratio, --seed, --save_steps, --logging_steps, --resume_from_checkpoint,
...) means what it means there; ours are the loss weights and temperatures, --threads, --resume and
--keep_checkpoints. Defaults that differ from Hugging Face's: the ones below (report_to none, save_steps 100,
save_total_limit 2, learning_rate 1e-4, warmup_ratio 0.1, per_device_train_batch_size 32, seed 42,
logging_steps 10); --save_steps 0 means no checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import transformers

from diffret_pyserini.model.arguments import EncoderOverrides, ModelLoadArguments


@dataclass
class ModelArguments(EncoderOverrides, ModelLoadArguments):
    """The shared model and encoder flags (arguments.py), plus how the model is made trainable."""

    full_finetune: bool = field(default=False, metadata={
        "help": "train every weight (small models) and save full weights; default: LoRA adapters only"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "comma-separated module-name suffixes to adapt (e.g. q_proj,v_proj), or 'all-linear'"})
    dropout: bool = field(default=True, metadata={
        "help": "keep the base model's dropout; false zeroes it (short CPU runs: ~2x faster forward)"})


@dataclass
class DataArguments:
    train_data: str = field(default="", metadata={
        "help": "Tevatron-style jsonl file (or folder of them), or a BEIR folder with qrels/train.tsv "
                "(hard negatives are then mined with BM25 into OUTPUT/train.jsonl)"})
    train_group_size: int = field(default=3, metadata={"help": "passages per query: 1 positive + N-1 negatives"})
    max_examples: int | None = field(default=None, metadata={"help": "use only the first N examples"})
    train_query_max_length: int | None = field(default=None, metadata={
        "help": "query text tokens while training (default: the encoder setting, which is what gets saved)"})
    train_passage_max_length: int | None = field(default=None, metadata={
        "help": "passage text tokens while training (default: the encoder setting, which is what gets saved)"})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers.TrainingArguments with our defaults, plus the loss and what the CLI adds."""

    output_dir: Optional[str] = field(default="", metadata={"help": "where the model folder and checkpoints go"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up share of all steps"})
    per_device_train_batch_size: int = field(default=32, metadata={
        "help": "queries per device and micro-step (in-batch negatives: every process's queries, see README)"})
    seed: int = field(default=42, metadata={"help": "seed of weights init (LoRA), sampling and dropout"})
    logging_steps: float = field(default=10, metadata={"help": "log the mean loss every N steps"})
    save_steps: float = field(default=100, metadata={"help": "checkpoint every N steps (0: never)"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "checkpoints kept"})
    report_to: Optional[str] = field(default="none", metadata={
        "help": "integrations to report to (tensorboard, wandb, ...; 'all', or 'none')"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "unused: batches are our own groups"})
    # transformers 5 dropped this flag (its Trainer never read it); ours keeps its meaning on every release
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "replace a trained model or checkpoints already in --output_dir"})

    loss_dense: float = field(default=1.0, metadata={"help": "weight of InfoNCE on dense (single-vector) scores"})
    loss_multi: float = field(default=1.0, metadata={"help": "weight of InfoNCE on multi-vector MaxSim"})
    loss_sparse: float = field(default=1.0, metadata={"help": "weight of InfoNCE on sparse dot products"})
    loss_flops: float = field(default=0.0, metadata={"help": "weight of the FLOPS sparsity regulariser"})
    temperature: float = field(default=0.01, metadata={"help": "InfoNCE temperature of single and multi"})
    sparse_temperature: float = field(default=1.0, metadata={
        "help": "InfoNCE temperature of sparse (its scores are unnormalised sums of term weights)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints after the final save"})
    resume: bool = field(default=False, metadata={
        "help": "continue from the newest complete OUTPUT/checkpoint-N (--resume_from_checkpoint DIR names one)"})
    threads: Optional[int] = field(default=None, metadata={"help": "torch CPU threads (default: torch's)"})

    def __post_init__(self):
        if self.save_steps == 0:  # ours: 0 means never (Hugging Face's spelling is --save_strategy no)
            self.save_strategy = "no"
        if not self.use_cpu and not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Without use_cpu, accelerate gives CPU processes under torchrun DistributedType.NO: no DDP, every
            # process would update its own copy from its own half of the gradient.
            self.use_cpu = True
        if self.bf16 and not self.use_cpu and not _accelerator():
            # transformers refuses --bf16 without a GPU unless told to run on the CPU, where it means CPU autocast
            self.use_cpu = True
        if "warmup_ratio" not in transformers.TrainingArguments.__dataclass_fields__ and not self.warmup_steps:
            # transformers 5 dropped warmup_ratio: there a warmup_steps below 1 is the share of all steps
            self.warmup_steps = self.warmup_ratio if self.warmup_ratio < 1 else 0
        super().__post_init__()


def _accelerator() -> bool:
    """Whether torch sees a GPU (CUDA/ROCm, XPU or Apple's MPS) that transformers would train on."""
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return (torch.cuda.is_available() or bool(xpu and xpu.is_available())
            or bool(mps and mps.is_available()))


# Arguments that may change between a run and its resume without changing what is learned; every other field
# of ours, and the Hugging Face fields in LEARNING, must match the checkpoint's.
RESUME_FREE = {"resume", "overwrite_output_dir", "save_steps", "save_total_limit", "logging_steps",
               "keep_checkpoints", "threads", "device", "resume_from_checkpoint", "output_dir"}
LEARNING = ("learning_rate", "warmup_ratio", "warmup_steps", "per_device_train_batch_size", "seed", "max_steps",
            "num_train_epochs", "weight_decay", "max_grad_norm", "gradient_accumulation_steps", "lr_scheduler_type",
            "optim", "adam_beta1", "adam_beta2", "adam_epsilon", "bf16", "fp16", "gradient_checkpointing",
            "loss_dense", "loss_multi", "loss_sparse", "loss_flops", "temperature", "sparse_temperature")


def to_json(*parts) -> dict:
    """The argument dataclasses as one JSON-able dict (saved with the model and checked on resume); of
    transformers' TrainingArguments only the fields that change what is learned (LEARNING)."""
    out: dict = {}
    for part in parts:
        if isinstance(part, transformers.TrainingArguments):
            values = part.to_dict()
            out[type(part).__name__] = {k: values[k] for k in LEARNING if k in values}
        else:
            out[type(part).__name__] = asdict(part)
    return out
