"""Prompt templates and the token layout with K slots.

Layout of one encoded text (before left padding), as in the DiffRetriever reference:

    [prefix: chat header + 'Passage: "'] [text, truncated] [suffix: '". Use a few words ... The words are: "']
    [slot x K] [tail: '"' + end of turn (+ EOS)]

Only the text is ever truncated: the prompt, the K slots and the tail always survive. For the autoregressive
PromptReps baseline the sequence stops after the suffix (`with_slots=False`): generation produces the K
positions instead.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from diffret_pyserini.cli import InputError

TEXT_MARK = "\u2063TEXT\u2063"
SLOT_MARK = "\u2063SLOTS\u2063"
SYSTEM_PROMPT = "You are an AI assistant that can understand human language."


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: `user` holds `{text}`; the answer starts with `assistant_prefix`, then the slots, then `closing`."""

    user: str
    assistant_prefix: str
    system: str = SYSTEM_PROMPT
    closing: str = '"'


def _template(role_word: str, lower: str, many: bool) -> PromptTemplate:
    if many:
        ask = f"Use a few words to represent the {lower} in a retrieval task. Make sure your words are in lowercase."
        prefix = 'The words are: "'
    else:
        ask = f"Use one word to represent the {lower} in a retrieval task. Make sure your word is in lowercase."
        prefix = 'The word is: "'
    return PromptTemplate(user=f'{role_word}: "{{text}}". {ask}', assistant_prefix=prefix)


DEFAULT_TEMPLATES: dict[str, dict[str, PromptTemplate]] = {
    "query": {"single": _template("Query", "query", False), "multi": _template("Query", "query", True)},
    "passage": {"single": _template("Passage", "passage", False), "multi": _template("Passage", "passage", True)},
}
ROLES = ("query", "passage")


def load_templates(path: str | Path | None) -> dict[str, dict[str, PromptTemplate]]:
    """Default templates, with any of them overridden from a JSON file.

    The file holds `{"query": {"multi": {"user": "... {text} ...", "assistant_prefix": "..."}}, ...}`; missing
    entries keep their defaults and missing keys inside an entry keep the default's value.
    """
    templates = {role: dict(styles) for role, styles in DEFAULT_TEMPLATES.items()}
    if path is None:
        return templates
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read prompt templates: {err}") from None
    for role, styles in data.items():
        if role not in templates or not isinstance(styles, dict):
            raise InputError(f"{path}: {role}: expected one of {ROLES} mapping to {{'single'|'multi': {{...}}}}")
        for style, fields in styles.items():
            if style not in ("single", "multi") or not isinstance(fields, dict):
                raise InputError(f"{path}: {role}.{style}: expected 'single' or 'multi' with an object value")
            merged = {**asdict(templates[role][style]), **fields}
            unknown = set(merged) - set(asdict(templates[role][style]))
            if unknown:
                raise InputError(f"{path}: {role}.{style}: unknown fields {sorted(unknown)}")
            if "{text}" not in merged["user"]:
                raise InputError(f"{path}: {role}.{style}.user: must contain {{text}}")
            templates[role][style] = PromptTemplate(**merged)
    return templates


def templates_to_json(templates: dict[str, dict[str, PromptTemplate]]) -> dict:
    return {role: {style: asdict(t) for style, t in styles.items()} for role, styles in templates.items()}


@dataclass(frozen=True)
class PromptLayout:
    """Token ids around the text for one (role, K) prompt."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    tail: tuple[int, ...]
    k: int
    slot_id: int

    @property
    def overhead(self) -> int:
        return len(self.prefix) + len(self.suffix) + self.k + len(self.tail)


@dataclass
class PromptBatch:
    """Left-padded ids. `slot_positions[b]` are the K columns of the slots (or the last column for generation).

    `slot_valid` [B,K] marks which read positions hold something (None: all of them); the DiffEmbed recipe reads
    every text position, and a row shorter than the longest has fewer (model/recipes.py)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    slot_positions: torch.Tensor
    k: int = 1
    text_lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    slot_valid: torch.Tensor | None = None

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions that ignore left padding, so a padded row sees the same positions as it would alone."""
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    @property
    def padded_tokens(self) -> int:
        """Positions computed, padding included (rows x longest row)."""
        return int(self.input_ids.numel())

    @property
    def real_tokens(self) -> int:
        """Positions that hold a token of some row (padding excluded)."""
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> "PromptBatch":
        """The batch on `device`. To a GPU the host tensors are pinned and copied without blocking, so the copy
        overlaps whatever the host does next (the forward pass waits on the stream, not the host)."""
        device = torch.device(device)
        moving = (self.input_ids, self.attention_mask, self.slot_positions,
                  *(() if self.slot_valid is None else (self.slot_valid,)))
        if device.type == "cpu":
            tensors = tuple(t.to(device) for t in moving)
        else:
            pin = torch.cuda.is_available()
            tensors = tuple((t.pin_memory() if pin and t.device.type == "cpu" else t).to(device, non_blocking=True)
                            for t in moving)
        valid = tensors[3] if len(tensors) > 3 else None
        return PromptBatch(*tensors[:3], self.k, self.text_lengths, self.truncated, valid)


def _encode_piece(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def build_layout(tokenizer, template: PromptTemplate, k: int, slot_id: int, use_chat_template: bool | None = None,
                 ) -> PromptLayout:
    """Split the rendered prompt around the text and the slots into token-id pieces.

    With a chat template (used when the tokenizer has one, unless `use_chat_template=False`) the pieces come from
    rendering system/user/assistant messages; without one (BERT-style masked LMs) from
    `[CLS] user assistant_prefix [MASK]*K closing [SEP]`.
    """
    if k < 1:
        raise InputError(f"K must be >= 1, got {k}")
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if use_chat_template is None:
        use_chat_template = has_template
    if use_chat_template and not has_template:
        raise InputError("use_chat_template=True but the tokenizer has no chat template")
    user = template.user.replace("{text}", TEXT_MARK)
    if use_chat_template:
        messages = [{"role": "user", "content": user},
                    {"role": "assistant", "content": template.assistant_prefix + SLOT_MARK + template.closing}]
        if template.system:
            messages.insert(0, {"role": "system", "content": template.system})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        before_text, after_text = rendered.split(TEXT_MARK)
        middle, tail_text = after_text.split(SLOT_MARK)
        prefix = _encode_piece(tokenizer, before_text)
        suffix = _encode_piece(tokenizer, middle)
        tail = _encode_piece(tokenizer, tail_text.rstrip())
        eos = tokenizer.eos_token_id
        if eos is not None and (not tail or tail[-1] != eos):
            tail.append(eos)
    else:
        before_text, after_text = (user + " " + template.assistant_prefix).split(TEXT_MARK)
        prefix = ([tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []) + \
            _encode_piece(tokenizer, before_text)
        suffix = _encode_piece(tokenizer, after_text)
        tail = _encode_piece(tokenizer, template.closing)
        if tokenizer.sep_token_id is not None:
            tail.append(tokenizer.sep_token_id)
    return PromptLayout(tuple(prefix), tuple(suffix), tuple(tail), k, slot_id)


class PromptBuilder:
    """Turns texts into left-padded prompt batches for one role (query or passage) and one K.

    `max_text_tokens` bounds the TEXT only: whatever the setting, the prompt, slots and tail are never cut.
    `layout`, when given, is used as is instead of one rendered from `template` (a released checkpoint ships
    its prompt as token ids; the baselines' recipes build theirs in model/recipes.py); `text_lead` is put
    before every text when it is tokenised (RepLLaMA's 'query: ' marker is followed by a space).
    """

    def __init__(self, tokenizer, template: PromptTemplate | None, k: int, slot_id: int, max_text_tokens: int,
                 pad_id: int, use_chat_template: bool | None = None, with_slots: bool = True,
                 layout: PromptLayout | None = None, text_lead: str = ""):
        if max_text_tokens < 1:
            raise InputError(f"max_text_tokens must be >= 1, got {max_text_tokens}")
        self.tokenizer = tokenizer
        self.layout = layout if layout is not None else build_layout(tokenizer, template, k, slot_id,
                                                                     use_chat_template)
        self.text_lead = text_lead
        self.max_text_tokens = max_text_tokens
        self.pad_id = pad_id
        self.with_slots = with_slots

    @property
    def k(self) -> int:
        return self.layout.k

    def text_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # Cut characters first: tokenising a 100k-character text only to keep 256 tokens wastes seconds.
        # 32 characters a token is generous for any subword vocabulary.
        char_cap = max(4096, self.max_text_tokens * 32)
        encoded = self.tokenizer([self.text_lead + t[:char_cap] for t in texts],
                                 add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def sequence_lengths(self, text_ids: Sequence[Sequence[int]]) -> list[int]:
        """Full prompt length (template, truncated text, slots, tail) of each text's ids."""
        lay = self.layout
        extra = len(lay.prefix) + len(lay.suffix) + (lay.k + len(lay.tail) if self.with_slots else 0)
        return [extra + min(len(ids), self.max_text_tokens) for ids in text_ids]

    def sequence(self, text_ids: Sequence[int]) -> list[int]:
        lay = self.layout
        body = list(lay.prefix) + list(text_ids[: self.max_text_tokens]) + list(lay.suffix)
        if self.with_slots:
            body += [lay.slot_id] * lay.k + list(lay.tail)
        return body

    def build(self, texts: Sequence[str], text_ids: Sequence[Sequence[int]] | None = None) -> PromptBatch:
        """Left-pad the prompts of `texts`; slots sit at the same columns in every row. `text_ids`, when given,
        are the texts' own token ids from `text_ids` (length-bucketed encoding tokenises a window once, to sort
        it by length, and its batches reuse those ids)."""
        all_ids = self.text_ids(texts) if text_ids is None else text_ids
        seqs = [self.sequence(ids) for ids in all_ids]
        length = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), length), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, length - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention[row, length - len(seq):] = 1
        if self.with_slots:
            first = length - len(self.layout.tail) - self.layout.k
            cols = torch.arange(first, first + self.layout.k)
        else:
            cols = torch.tensor([length - 1])
        slot_positions = cols.unsqueeze(0).expand(len(seqs), -1).clone()
        return PromptBatch(input_ids, attention, slot_positions, k=self.layout.k,
                           text_lengths=[min(len(i), self.max_text_tokens) for i in all_ids],
                           truncated=[len(i) > self.max_text_tokens for i in all_ids])
