"""The paper's single-vector baselines as recipes over the same backbones and the same representation code:
what differs from DiffRetriever is only which positions are read, and how they are pooled.

    diffretriever  the retrieval prompt and K slots (prompts.py), read at the slots; dense = the mean of the
                   L2-normalised slot vectors, plus multi-vector and sparse from the same pass
    diffembed      DiffEmbed, the encoder-style baseline (on a diffusion LM, or any one-pass backbone): the raw
                   text, no prompt and no slots, one bidirectional pass, the mean of the last-layer hidden states
                   over the text tokens, L2-normalised
    repllama       RepLLaMA (on a causal LM): 'query: ' / 'passage: ' before the text, EOS after it, left
                   padding, the causal pass, the hidden state at EOS (the last column), L2-normalised

DiffEmbed's mean: the tokenizer's own framing ([CLS] ... [SEP] for BERT, BOS for LLaDA's tokenizer, nothing for
Dream's) is part of the input, as the model expects it, but not of the mean: padding and added special tokens
never count, so the vector is an average over the text alone. The reference averages over every attended
position, framing included; with Dream's tokenizer, which adds nothing, the two are the same.

Both baselines make dense vectors only and read one vector per text (K = 1 by construction). They are
backbone kinds as far as every CLI is concerned (`--kind diffembed`, spec `?kind=repllama`): the architecture
underneath is read off the model's config (diffembed: any one-pass kind) or is `causal` (repllama).
"""
from __future__ import annotations

from typing import Sequence

import torch

from diffret_pyserini.cli import InputError
from diffret_pyserini.model.prompts import PromptBatch, PromptBuilder, PromptLayout

__all__ = ["RECIPES", "DEFAULT_RECIPE", "RECIPE_KINDS", "ONE_PASS_KINDS", "MARKERS", "split_kind",
           "representations_of", "pooling_of", "framing", "TextSpanBuilder", "marked_text_builder",
           "recipe_builder"]

RECIPES = ("diffretriever", "diffembed", "repllama")
DEFAULT_RECIPE = "diffretriever"
RECIPE_KINDS = ("diffembed", "repllama")  # kinds that name a recipe rather than an architecture
ONE_PASS_KINDS = ("dream", "llada", "masked", "bidirectional")
MARKERS = {"query": "query:", "passage": "passage:"}  # RepLLaMA's role markers (a space follows: text_lead)


def split_kind(kind: str | None) -> tuple[str, str | None]:
    """(recipe, architecture kind or None to read it off the config) for a `--kind` value."""
    if kind == "repllama":
        return "repllama", "causal"
    if kind == "diffembed":
        return "diffembed", None
    return DEFAULT_RECIPE, kind


def representations_of(recipe: str) -> tuple[str, ...]:
    """What a recipe makes: every representation for DiffRetriever, dense only for the baselines."""
    from diffret_pyserini.model.representations import REPRESENTATIONS

    return REPRESENTATIONS if recipe == DEFAULT_RECIPE else ("dense",)


def pooling_of(recipe: str) -> str:
    """'mean' (DiffEmbed: a mean of raw states, then one L2 norm) or 'slots' (a mean of L2-normalised reads;
    with one read, as RepLLaMA's EOS, that is the normalised state itself)."""
    return "mean" if recipe == "diffembed" else "slots"


def framing(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a text of its own ([CLS] / [SEP] for BERT)."""
    probe = "a"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


class TextSpanBuilder(PromptBuilder):
    """DiffEmbed's input: [framing] text [framing], left padded, no prompt and no slots; the read positions of
    a row are its text tokens (`slot_valid` marks them; a shorter row has fewer)."""

    def __init__(self, tokenizer, max_text_tokens: int, pad_id: int, slot_id: int):
        lead, trail = framing(tokenizer)
        layout = PromptLayout(tuple(lead), (), tuple(trail), 0, slot_id)
        super().__init__(tokenizer, None, 0, slot_id, max_text_tokens, pad_id, layout=layout)

    def build(self, texts: Sequence[str], text_ids: Sequence[Sequence[int]] | None = None) -> PromptBatch:
        batch = super().build(texts, text_ids)
        lengths = torch.tensor(batch.text_lengths, dtype=torch.long)
        width = max(1, int(lengths.max()) if len(lengths) else 1)
        end = batch.input_ids.shape[1] - len(self.layout.tail)  # left padding aligns every row's text end here
        offsets = torch.arange(width)
        valid = offsets < lengths[:, None]
        positions = torch.where(valid, end - lengths[:, None] + offsets, torch.full_like(valid, end - 1,
                                                                                        dtype=torch.long))
        return PromptBatch(batch.input_ids, batch.attention_mask, positions.clamp(min=0), width,
                           batch.text_lengths, batch.truncated, valid)


def marked_text_builder(tokenizer, role: str, max_text_tokens: int, pad_id: int) -> PromptBuilder:
    """RepLLaMA's input: [framing] 'query:' / 'passage:', ' ' + text, EOS; the one read position is the EOS,
    the last column under left padding."""
    lead, _ = framing(tokenizer)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the RepLLaMA recipe needs a tokenizer with an EOS token")
    marker = list(tokenizer(MARKERS[role], add_special_tokens=False)["input_ids"])
    layout = PromptLayout(tuple(lead + marker), (), (), 1, int(eos))
    return PromptBuilder(tokenizer, None, 1, int(eos), max_text_tokens, pad_id, with_slots=True, layout=layout,
                         text_lead=" ")


def recipe_builder(recipe: str, tokenizer, role: str, max_text_tokens: int, pad_id: int,
                   slot_id: int) -> PromptBuilder:
    """The prompt builder of a baseline recipe for one role."""
    if recipe == "diffembed":
        return TextSpanBuilder(tokenizer, max_text_tokens, pad_id, slot_id)
    if recipe == "repllama":
        return marked_text_builder(tokenizer, role, max_text_tokens, pad_id)
    raise ValueError(f"recipe {recipe!r} has no builder of its own; one of {RECIPE_KINDS}")
