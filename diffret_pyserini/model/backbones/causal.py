"""The autoregressive PromptReps baseline: the K positions come from generation, not from one pass.

Vector 0 is read at the last prompt token (the opening quote of the answer, the position that predicts the
first answer token); vectors 1..K-1 come from K-1 greedy steps with a KV cache, each reading the position of the
token it just generated. A row stops at a special token or at a token holding the closing quote; later
positions are marked invalid. The representation math downstream is the same as for one-pass backbones.
"""
from __future__ import annotations

import torch

from diffret_pyserini.model.backbones.base import Backbone, SlotStates
from diffret_pyserini.model.hf_compat import cache_kwargs, output_cache
from diffret_pyserini.model.prompts import PromptBatch


class CausalBackbone(Backbone):
    kind = "causal"
    one_pass = False

    def __init__(self, *args, stop_early: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_early = stop_early
        self._stop_ids: torch.Tensor | None = None

    def stop_ids(self) -> torch.Tensor:
        """Bool [V]: ids that end the answer (special tokens and any token containing a double quote)."""
        if self._stop_ids is None:
            stop = torch.zeros(self.vocab_size, dtype=torch.bool)
            special = [i for i in self.tokenizer.all_special_ids if i < self.vocab_size]
            stop[special] = True
            # '"' is printable ASCII, so byte-level and sentencepiece vocabularies both spell it literally.
            quoted = [idx for token, idx in self.tokenizer.get_vocab().items() if '"' in token and idx < self.vocab_size]
            stop[quoted] = True
            self._stop_ids = stop.to(self.device)
        return self._stop_ids

    @torch.no_grad()
    def _next_tokens(self, features: torch.Tensor) -> torch.Tensor:
        return self.vocab_logits(features).argmax(-1)

    def read_slots(self, batch: PromptBatch) -> SlotStates:
        batch = batch.to(self.device)
        mask = batch.attention_mask
        positions = batch.position_ids
        features, _, out = self.body_features(input_ids=batch.input_ids, attention_mask=mask,
                                              position_ids=positions, use_cache=True)
        feats = [features[:, -1]]
        alive = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
        valid = [alive.clone()]
        cache = output_cache(out)
        next_pos = positions[:, -1:] + 1
        for _ in range(1, batch.k):
            token = self._next_tokens(feats[-1])
            alive = alive & ~self.stop_ids()[token]
            if self.stop_early and not alive.any():
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            features, _, out = self.body_features(input_ids=token.unsqueeze(1), attention_mask=mask,
                                                  position_ids=next_pos, use_cache=True,
                                                  **cache_kwargs(self.model, cache))
            cache = output_cache(out)
            next_pos = next_pos + 1
            feats.append(features[:, -1])
            valid.append(alive.clone())
        while len(feats) < batch.k:  # stopped early: pad with invalid zero vectors
            feats.append(torch.zeros_like(feats[0]))
            valid.append(torch.zeros_like(alive))
        slot_features = torch.stack(feats, dim=1)
        return SlotStates(hidden=slot_features, features=slot_features, valid=torch.stack(valid, dim=1))
