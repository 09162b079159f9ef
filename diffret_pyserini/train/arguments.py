"""Arguments of `python -m diffret_pyserini.train`, as dataclasses parsed by transformers.HfArgumentParser."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from diffret_pyserini.arguments import EncoderOverrides, ModelLoadArguments


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
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in backward"})
    dropout: bool = field(default=True, metadata={
        "help": "keep the base model's dropout; false zeroes it (short CPU runs: ~2x faster forward)"})
    bf16: Optional[bool] = field(default=None, metadata={"help": "bf16 autocast (default: on GPU only)"})


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
class TrainingArguments:
    output_dir: str = field(default="", metadata={"help": "where the model folder and checkpoints go"})
    loss_dense: float = field(default=1.0, metadata={"help": "weight of InfoNCE on dense (single-vector) scores"})
    loss_multi: float = field(default=1.0, metadata={"help": "weight of InfoNCE on multi-vector MaxSim"})
    loss_sparse: float = field(default=1.0, metadata={"help": "weight of InfoNCE on sparse dot products"})
    loss_flops: float = field(default=0.0, metadata={"help": "weight of the FLOPS sparsity regulariser"})
    temperature: float = field(default=0.01, metadata={"help": "InfoNCE temperature of single and multi"})
    sparse_temperature: float = field(default=1.0, metadata={
        "help": "InfoNCE temperature of sparse (its scores are unnormalised sums of term weights)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "linear warm-up share of all steps"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "queries per step"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs (ignored when max_steps > 0)"})
    max_steps: int = field(default=0, metadata={"help": "total optimiser steps (overrides epochs)"})
    seed: int = field(default=42, metadata={"help": "seed of weights init (LoRA), sampling and dropout"})
    logging_steps: int = field(default=10, metadata={"help": "log the mean loss every N steps"})
    save_steps: int = field(default=100, metadata={"help": "checkpoint every N steps (0: never)"})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints after the final save"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest OUTPUT/checkpoint-N"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace a finished model folder"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)"})


def to_json(*parts) -> dict:
    """All argument dataclasses as one JSON-able dict (saved with the model and checked on resume)."""
    out: dict = {}
    for part in parts:
        out[type(part).__name__] = asdict(part)
    return out
