"""One-pass backbones: every position sees every other one, so all K slots are read from ONE forward pass.

They differ only in the attention inputs their model code honours. Dream and LLaDA load natively by default
(`native.py`: Qwen2 / Llama classes that build their own all-visible 4D mask from either input below); the
inputs are the ones their shipped code needs (measured on it), so a folder loaded through its own code
(`trust_remote_code`) reads the same:
- Dream:  a 4D mask [B,1,L,L] (bool, True = may attend); a 2D mask raises in its own code. Takes position_ids.
- LLaDA:  a 2D padding mask; a 4D mask runs silently and gives WRONG outputs in its own code, which takes no
          position_ids: RoPE uses absolute positions 0..L-1, and left padding only shifts every real token by
          the same amount, which rotary attention does not see (scores depend on relative positions only). The
          native class takes position_ids and is given them.
- Native bidirectional decoder (Qwen2 - Dream's architecture - or Llama, no remote code): transformers uses
          a 4D float mask as given, so an additive mask that hides only padded keys makes it non-causal.
- Masked LM (BERT family): the ordinary 2D mask; it is bidirectional already.
"""
from __future__ import annotations

import inspect

import torch

from diffret_pyserini.model.backbones.base import Backbone, SlotStates
from diffret_pyserini.model.prompts import PromptBatch


class OnePassBackbone(Backbone):
    """Reads hidden states and pre-decoder features at the K slot positions of one forward pass."""

    one_pass = True

    @property
    def takes_position_ids(self) -> bool:
        """Whether the model's forward accepts position_ids (read off its signature once)."""
        if not hasattr(self, "_takes_position_ids"):
            self._takes_position_ids = "position_ids" in inspect.signature(self.model.forward).parameters
        return self._takes_position_ids

    def attention_inputs(self, batch: PromptBatch) -> dict:
        raise NotImplementedError

    def read_slots(self, batch: PromptBatch) -> SlotStates:
        batch = batch.to(self.device)
        inputs = {"input_ids": batch.input_ids, **self.attention_inputs(batch)}
        if self.takes_position_ids:
            inputs["position_ids"] = batch.position_ids
        features, hidden, _ = self.body_features(**inputs)
        slot_features = self.gather(features, batch.slot_positions)
        slot_hidden = slot_features if hidden is None else self.gather(hidden, batch.slot_positions)
        valid = batch.slot_valid  # the DiffEmbed recipe reads a different number of text positions per row
        if valid is None:
            valid = torch.ones(slot_features.shape[:2], dtype=torch.bool, device=slot_features.device)
        return SlotStates(hidden=slot_hidden, features=slot_features, valid=valid)


def bool_key_mask_4d(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B,L] padding mask -> [B,1,L,L] bool: every position may attend to every non-padded key."""
    keys = attention_mask.bool()[:, None, None, :]
    return keys.expand(-1, 1, attention_mask.shape[1], -1)


def additive_key_mask_4d(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B,L] padding mask -> [B,1,L,L] additive float mask (0 = attend, dtype-min = padded key)."""
    blocked = (~attention_mask.bool())[:, None, None, :].to(dtype) * torch.finfo(dtype).min
    return blocked.expand(-1, 1, attention_mask.shape[1], -1)


class DreamBackbone(OnePassBackbone):
    kind = "dream"

    def attention_inputs(self, batch: PromptBatch) -> dict:
        return {"attention_mask": bool_key_mask_4d(batch.attention_mask)}


class LLaDABackbone(OnePassBackbone):
    kind = "llada"

    def attention_inputs(self, batch: PromptBatch) -> dict:
        return {"attention_mask": batch.attention_mask}

    @property
    def logit_scale(self) -> float:
        cfg = self.model.config
        return 1.0 / (cfg.d_model ** 0.5) if getattr(cfg, "scale_logits", False) else 1.0


class BidirectionalDecoderBackbone(OnePassBackbone):
    """A standard transformers decoder (Qwen2, Llama, ...) run with full, non-causal attention."""

    kind = "bidirectional"

    def attention_inputs(self, batch: PromptBatch) -> dict:
        return {"attention_mask": additive_key_mask_4d(batch.attention_mask, self.dtype), "use_cache": False}


class MaskedLMBackbone(OnePassBackbone):
    """BERT-family masked LMs: the tokenizer's [MASK] fills the K slots."""

    kind = "masked"

    def attention_inputs(self, batch: PromptBatch) -> dict:
        return {"attention_mask": batch.attention_mask}
