"""The trainable encoder: the inference code path (prompts -> Backbone.read_slots -> representations), with grads.

`DiffRetEncoder.encode` runs `DiffRetEncoder.represent` under inference_mode, then quantises; training calls
that same `represent` with grads on (one forward, not a copy), over one sparse column space per batch.

Causal backbones (the AR PromptReps baseline) train through the same path: vector 0 is the hidden state at the
end of the prompt; with K > 1 the K-1 greedy tokens are generated without gradient and treated as constants,
while the hidden states read at them get gradients through the KV cache (teacher forcing on the model's own
greedy answer). K = 1 (`--kq 1 --kp 1`) is the plain single-token case.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.cli import InputError
from diffret_pyserini.model.backbones import Backbone, load_backbone
from diffret_pyserini.model.backbones.load import DIFFRET_CONFIG
from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings
from diffret_pyserini.train.arguments import ModelArguments


class TrainableEncoder(nn.Module):
    """Wraps a Backbone (optionally with LoRA adapters injected) and yields differentiable representations."""

    def __init__(self, backbone: Backbone, settings: EncoderSettings, autocast_dtype: torch.dtype | None = None):
        super().__init__()
        self.max_lengths: dict[str, int | None] = {"query": None, "passage": None}  # training-time text caps
        self.backbone = backbone
        self.model = backbone.model  # registered, so .parameters() / .train() reach the weights
        self.encoder = DiffRetEncoder(backbone, settings)
        self.autocast_dtype = autocast_dtype
        self.peft_model = None

    @property
    def settings(self) -> EncoderSettings:
        return self.encoder.settings

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.backbone.device.type, dtype=self.autocast_dtype)

    def encode(self, texts: Sequence[str], role: str, want: Sequence[str],
               columns: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Differentiable 'dense' [B,H], 'multi' [B,K,H] + 'valid' [B,K], 'sparse' [B,C] (float, unquantised):
        `DiffRetEncoder.represent`, the very forward inference runs, with the training-time text caps.

        For 'sparse', `columns`/`allowed` come from `DiffRetEncoder.content_columns` (see `forward`).
        """
        with self.autocast():
            return self.encoder.represent(list(texts), role, want, max_length=self.max_lengths.get(role),
                                          columns=columns, allowed=allowed)

    def forward(self, queries: Sequence[str], passages: Sequence[str], want: Sequence[str],
                others: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Encode a training batch; sparse vectors of queries and passages share one column space: the
        candidates of these texts and of `others` (the other processes' texts, so every process scores in the
        column space one process would use for the whole global batch)."""
        columns = allowed = None
        if "sparse" in want:
            columns, allowed = self.encoder.content_columns(list(queries) + list(passages) + list(others))
        nq, n = len(queries), len(queries) + len(passages)
        q = self.encode(queries, "query", want, columns, None if allowed is None else allowed[:nq])
        p = self.encode(passages, "passage", want, columns, None if allowed is None else allowed[nq:n])
        return q, p

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **options) -> None:
        """What transformers 4's Trainer calls for --gradient_checkpointing; non-reentrant, which needs no input
        that requires grad (frozen embeddings under LoRA). `options` (every_n_layers, offload) are 5.x's."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **options)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        **options) -> None:
        """What transformers 5's Trainer calls for --gradient_checkpointing (same as above)."""
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs, **options)

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path, base_model: str, extra: dict | None = None) -> Path:
        """Write the adapter (or full weights + tokenizer) and `diffret_config.json` (written last: its presence
        marks a complete folder that `load_backbone` and every CLI accept)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec = getattr(self.backbone, "spec", None)
        # load_kind: a baseline recipe saves its own name (diffembed, repllama), so the folder loads as one again
        config = {"kind": self.backbone.load_kind, "settings": self.settings.to_dict(), **(extra or {})}
        if spec is not None and spec.slot_token:
            config["slot_token"] = spec.slot_token
        if self.backbone.read_offset:
            config["read_offset"] = self.backbone.read_offset
        if self.peft_model is not None:
            self.peft_model.save_pretrained(str(out / "adapter"))
            config.update(base_model=base_model, adapter="adapter")
        else:
            self.model.save_pretrained(str(out), safe_serialization=True)
            self.backbone.tokenizer.save_pretrained(str(out))
            config.update(base_model=".", adapter=None)
        atomic_write_json(out / DIFFRET_CONFIG, config)
        return out


def disable_dropout(model: nn.Module) -> int:
    """Zero every dropout of the base model (before LoRA is added): nn.Dropout modules and the float
    probabilities attention code reads directly (e.g. BERT's sdpa `dropout_prob`, Qwen2's `attention_dropout`).
    Returns how many were changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p:
            module.p, changed = 0.0, changed + 1
        for name in ("dropout_prob", "attention_dropout", "dropout_p", "attn_dropout"):
            if isinstance(getattr(module, name, None), float) and getattr(module, name):
                setattr(module, name, 0.0)
                changed += 1
    return changed


def add_lora(encoder: TrainableEncoder, r: int, alpha: int, dropout: float, target_modules: str) -> None:
    """Inject LoRA adapters in place (the Backbone keeps calling the same model object); freeze the rest."""
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = target_modules
    if target_modules != "all-linear":
        targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    # The vocabulary decoder is never adapted: the Backbone reads its weight directly (vocab_logits).
    exclude = [encoder.backbone.head_path]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        exclude_modules=exclude, bias="none")
    encoder.peft_model = get_peft_model(encoder.model, config)


def build_encoder(args: ModelArguments, settings: dict | None = None, device: str | None = None,
                  bf16: bool | None = None, gradient_checkpointing: bool = False) -> TrainableEncoder:
    """Load `args.model` as a Backbone and make it trainable (LoRA by default, all weights with
    `args.full_finetune`).

    `settings` (default: `args.settings()`) override the model's own encoder settings (a packaged model's, or a
    fine-tuned folder's). `device` (default: `args.device`) is where it trains. bf16 (default: on GPU) runs the
    forward under autocast; LoRA keeps frozen base weights in bf16, full fine-tuning keeps fp32 master weights.
    """
    from diffret_pyserini.model.backbones.load import read_spec
    from diffret_pyserini.model.device import parse_device

    model, full_finetune = args.model, args.full_finetune
    settings = args.settings() if settings is None else settings
    spec = read_spec(model, args.kind)
    if spec.adapter_path is not None and not full_finetune:
        raise InputError(f"{model}: holds a LoRA adapter; continue with --full_finetune, or train from its base "
                         f"({json.loads((spec.path / DIFFRET_CONFIG).read_text()).get('base_model')})")
    dev = parse_device(args.device if device is None else device)
    bf16 = dev.type == "cuda" if bf16 is None else bf16
    dtype = args.dtype if args.dtype != "auto" else (torch.bfloat16 if bf16 and not full_finetune else torch.float32)
    remote = {"trust_remote_code": True} if args.trust_remote_code else {}
    backbone = load_backbone(model, kind=args.kind, device=str(dev), dtype=dtype, slot_token=args.slot_token,
                             **remote)
    merged = {**spec.settings, **{k: v for k, v in settings.items() if v is not None}}
    encoder = TrainableEncoder(backbone, EncoderSettings.from_dict(merged),
                               autocast_dtype=torch.bfloat16 if bf16 else None)
    if gradient_checkpointing:
        encoder.gradient_checkpointing_enable()
    if not args.dropout:
        disable_dropout(backbone.model)
    if not full_finetune:
        add_lora(encoder, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    return encoder
