"""Command-line arguments shared by every CLI (pipeline, encode, train), as dataclasses for HfArgumentParser.

Each concept is declared once and inherited: `ModelLoadArguments` (which model, how to load it),
`EncoderOverrides` (the encoder settings, derived field by field from `EncoderSettings`, all optional: None keeps
the model's own) and `EncodingArguments` (how a corpus is pushed through the encoder). A CLI's own dataclass
subclasses the parts it needs, so `--kq` means the same thing, with the same help, everywhere.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Optional

from diffret_pyserini.cli import ArgumentError, check_at_least, check_choice
from diffret_pyserini.model.backbones.load import KINDS
from diffret_pyserini.model.encoder import EncoderSettings

__all__ = ["ModelLoadArguments", "EncoderOverrides", "EncodingArguments", "DTYPES", "DEVICE_HELP"]

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_HELP = "cpu, cuda, cuda:N or auto (a GPU when there is one)"


@dataclass
class ModelLoadArguments:
    """Which model, and how it is loaded."""

    model: str = field(default="splade-tiny", metadata={
        "help": "model folder (Hugging Face layout, or one saved by diffret_pyserini.train) or packaged name "
                "(splade-tiny, smollm2); a spec 'NAME?kp=16&top_n=128' also works", "aliases": ["--encoder"]})
    kind: Optional[str] = field(default=None, metadata={
        "help": "backbone kind (default: read off the model's config); diffembed and repllama run the paper's "
                "single-vector baselines on the model (dense only)", "choices": list(KINDS)})
    slot_token: Optional[str] = field(default=None, metadata={"help": "token placed in the K slots (decoders)"})
    dtype: str = field(default="auto", metadata={
        "help": "weights dtype; auto: bfloat16 on GPU, float32 on CPU", "choices": list(DTYPES)})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "allow a model folder's own Python code to run, as in transformers (Dream and LLaDA load "
                "natively without it; with it they run the code their checkpoints ship)"})
    base_model: Optional[str] = field(default=None, metadata={
        "help": "for a released DiffRetriever checkpoint (a folder with retriever_config.json and a LoRA "
                "adapter): the local folder of its base model (Dream or LLaDA), which nothing downloads"})

    def check_model_load(self) -> None:
        """Fail fast on a bad --device (a malformed one, or cuda without CUDA) or --dtype, before any work."""
        from diffret_pyserini.model.device import parse_device

        parse_device(self.device)
        check_choice("dtype", self.dtype, DTYPES)

    def load_options(self) -> dict:
        """Keyword arguments for `model.spec.get_encoder` / `load_backbone` (defaults left out)."""
        out: dict = {}
        if self.kind:
            out["kind"] = self.kind
        if self.slot_token:
            out["slot_token"] = self.slot_token
        if self.dtype != "auto":
            out["dtype"] = self.dtype
        if self.trust_remote_code:
            out["trust_remote_code"] = True
        if self.base_model:
            out["base_model"] = self.base_model
        return out


def _optional_setting(f) -> tuple[str, object, object]:
    hint = typing.get_type_hints(EncoderSettings)[f.name]
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    metadata = {**f.metadata, "help": f"{f.metadata['help']}; None: the model's own, else {f.default!r}"}
    return f.name, Optional[base], field(default=None, metadata=metadata)


def _settings(self) -> dict:
    """The EncoderSettings overrides that were given (None means: keep the model's own)."""
    return {f.name: getattr(self, f.name) for f in fields(EncoderSettings) if getattr(self, f.name) is not None}


def _check_settings(self) -> None:
    """The overrides checked by EncoderSettings itself (one rule per setting, declared there)."""
    EncoderSettings(**self.settings())


# Derived, not declared: a new EncoderSettings field becomes a flag of every CLI and a spec key at once.
EncoderOverrides = make_dataclass(
    "EncoderOverrides", [_optional_setting(f) for f in fields(EncoderSettings)],
    namespace={"settings": _settings, "check_settings": _check_settings,
               "__doc__": "EncoderSettings fields as optional overrides."})
EncoderOverrides.__module__ = __name__


@dataclass
class EncodingArguments:
    """How a corpus goes through the encoder."""

    batch_size: int = field(default=32, metadata={"help": "texts per forward pass (at most)"})
    max_tokens: Optional[int] = field(default=None, metadata={
        "help": "token budget of a forward pass: rows x longest row (prompt included) at most this many, so "
                "long documents do not run out of memory (a single longer document still runs alone); "
                "default: no budget, --batch_size rows"})
    length_buckets: bool = field(default=True, metadata={
        "help": "sort each chunk's documents by token length before batching (less padding; outputs are "
                "written in corpus order and equal corpus-order batching to float rounding); false: corpus "
                "order"})
    ray: Optional[str] = field(default=None, metadata={
        "help": "encode on Ray Data: 'local' starts a Ray instance on this machine (its CPUs, or GPUs), "
                "anything else is a cluster address (ray://HOST:10001 or HOST:6379); default: no Ray, one "
                "process"})
    ray_workers: Optional[int] = field(default=None, metadata={
        "help": "with --ray: encoding actors, each loading the model once (one GPU each where there are "
                "GPUs); default: one per GPU, else 2"})

    def check_encoding(self) -> None:
        """Every encoding flag checked before any work (one line naming the flag)."""
        check_at_least("batch_size", self.batch_size, 1)
        if self.max_tokens is not None:
            check_at_least("max_tokens", self.max_tokens, 1)
        if self.ray_workers is not None:
            check_at_least("ray_workers", self.ray_workers, 1)
            if self.ray is None:
                raise ArgumentError(f"--ray_workers {self.ray_workers}: needs --ray (local or a cluster address)")
        if self.ray is not None and not self.ray.strip():
            raise ArgumentError("--ray '': must be 'local' or a cluster address")

    def encoding_options(self) -> dict:
        """Keyword arguments of `encode.jobs.encode_corpus` for these flags."""
        return {"batch_size": self.batch_size, "max_tokens": self.max_tokens, "length_buckets": self.length_buckets}
