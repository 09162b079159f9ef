"""What every backbone shares: the vocabulary head split off the body, so logits are computed only where read.

A backbone turns a `PromptBatch` into `SlotStates` at K positions. The model's output-embedding layer (the
Linear to the vocabulary) is swapped for an identity during the forward pass, so the pass returns the
pre-decoder features at every position; the decoder is then applied to the K read positions only, and, for
sparse vectors with a content filter, to the vocabulary columns that can survive the filter only.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffret_pyserini.model.backbones.checks import ModelLoadError
from diffret_pyserini.model.prompts import PromptBatch

# Config keys that hold the position limit: transformers' usual name, GPT-2's, and LLaDA/OLMo's.
POSITION_LIMIT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


@dataclass
class SlotStates:
    """Model states at the K read positions of each row.

    hidden:   [B,K,H] last-layer hidden states (dense vectors come from these);
    features: [B,K,F] inputs of the vocabulary decoder (equal to `hidden` for decoders; after the MLM transform
              for BERT-style heads);
    valid:    [B,K] bool, False where a generated sequence already stopped (autoregressive only).
    """

    hidden: torch.Tensor
    features: torch.Tensor
    valid: torch.Tensor


def module_path(root: nn.Module, target: nn.Module) -> str | None:
    for name, module in root.named_modules():
        if module is target:
            return name
    return None


@contextlib.contextmanager
def swapped(root: nn.Module, path: str, replacement: nn.Module):
    """Temporarily replace the sub-module at dotted `path` (restored even if the forward raises)."""
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    original = getattr(parent, leaf)
    setattr(parent, leaf, replacement)
    try:
        yield original
    finally:
        setattr(parent, leaf, original)


class Backbone:
    """A loaded model + tokenizer that yields `SlotStates`. Subclasses implement `read_slots`.

    Attributes every backbone has:
      kind:          'dream' | 'llada' | 'bidirectional' | 'masked' | 'causal';
      slot_id:       the token placed in the K slots (the mask id for diffusion/masked LMs);
      read_offset:   which position is read for slot i: `slot_position + read_offset`. 0 everywhere, as in the
                     DiffRetriever reference, which reads Dream and LLaDA at the mask positions themselves
                     although Dream's own generation shifts logits by one (position i-1 predicts token i);
                     set -1 to read Dream the way its generator does;
      one_pass:      True when all K positions come from one forward pass (not the autoregressive baseline);
      max_positions: the model's position limit from its config (None when unknown);
      spec:          the ModelSpec it was loaded from (folder, kind, base and adapter, saved settings), or None
                     for a backbone built around a model in memory;
      recipe:        'diffretriever', or a baseline read from the same backbone ('diffembed', 'repllama';
                     model/recipes.py), set by the loader from `--kind`;
      prompt_layouts: {role: (prefix ids, suffix ids, tail ids)} a checkpoint ships with its prompt already
                     tokenised (a released DiffRetriever checkpoint), used in place of our templates; else None.
    """

    kind: str = "base"
    one_pass: bool = True
    recipe: str = "diffretriever"

    @property
    def load_kind(self) -> str:
        """The `--kind` that loads this backbone again: the recipe's name for a baseline, else the kind."""
        return self.kind if self.recipe == "diffretriever" else self.recipe

    def __init__(self, model: nn.Module, tokenizer, slot_id: int, device: torch.device, dtype: torch.dtype,
                 read_offset: int = 0, name: str = "", spec: Any = None,
                 prompt_layouts: dict[str, tuple] | None = None):
        self.model = model
        self.spec = spec
        self.prompt_layouts = prompt_layouts
        self.recipe = getattr(spec, "recipe", None) or "diffretriever"
        self.tokenizer = tokenizer
        self.slot_id = int(slot_id)
        self.device = device
        self.dtype = dtype
        self.read_offset = int(read_offset)
        self.name = name
        head = model.get_output_embeddings()
        self.head_path = module_path(model, head) if isinstance(head, nn.Linear) else None
        if self.head_path is None:
            raise ModelLoadError(f"{name or type(model).__name__}: no Linear output-embedding layer to read logits from")
        self.vocab_size = head.out_features
        self.forward_calls = 0  # counted by tests and benchmarks: one pass per batch for any K
        model.register_forward_pre_hook(self._count_call)

    def _count_call(self, module, args):
        self.forward_calls += 1

    # ------------------------------------------------------------------ the vocabulary decoder, split from the body
    @property
    def decoder(self) -> nn.Linear:
        return self.model.get_submodule(self.head_path)

    @property
    def hidden_size(self) -> int:
        return self.decoder.in_features

    @property
    def max_positions(self) -> int | None:
        """The most positions the model takes (prompt, text and slots together), from its config; None when the
        config names no limit. Callers check max lengths against it before encoding."""
        config = self.model.config
        for key in POSITION_LIMIT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, getattr(self.model.config, "pad_token_id", None), tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def vocab_logits(self, features: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder logits for [..., F] features over all vocabulary ids, only the 1-D ids `columns` (shared by every
        row), or per-row ids `columns` [B,C] for features [B,K,F] (each text scores only its own candidates)."""
        dec = self.decoder
        if columns is not None and columns.dim() == 2:
            weight = dec.weight[columns]                                     # [B,C,F]
            logits = torch.bmm(features.to(weight.dtype), weight.transpose(1, 2))
            if dec.bias is not None:
                logits = logits + dec.bias[columns].unsqueeze(1)
            return logits * self.logit_scale
        weight = dec.weight if columns is None else dec.weight.index_select(0, columns)
        bias = dec.bias if (dec.bias is None or columns is None) else dec.bias.index_select(0, columns)
        logits = nn.functional.linear(features.to(weight.dtype), weight, bias)
        return logits * self.logit_scale

    @property
    def logit_scale(self) -> float:
        return 1.0

    def body_features(self, **inputs) -> tuple[torch.Tensor, torch.Tensor | None, object]:
        """Run the model with the decoder replaced by an identity: (features [B,L,F], hidden [B,L,H] or None, out).

        `hidden` is None when the features already are the last hidden states (decoders); masked LMs have a
        transform before their decoder, so their hidden states are asked for separately.
        """
        want_hidden = self.kind == "masked"
        with swapped(self.model, self.head_path, nn.Identity()):
            out = self.model(**inputs, output_hidden_states=want_hidden, return_dict=True)
        features = out.logits
        hidden = out.hidden_states[-1] if want_hidden else None
        return features, hidden, out

    def read_slots(self, batch: PromptBatch) -> SlotStates:
        raise NotImplementedError

    def gather(self, states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B,L,D] at per-row positions [B,K] (+ read_offset) -> [B,K,D]."""
        index = (positions + self.read_offset).clamp(0, states.shape[1] - 1)
        return states.gather(1, index.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
