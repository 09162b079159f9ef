"""The DiffRetriever encoder: texts -> dense single, dense multi and sparse vectors from ONE backbone call.

Wires prompts -> backbone -> representations; the Pyserini-facing classes (encode/pyserini_encoders.py), the encoding
jobs (encode/jobs.py) and training sit on top of it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Sequence

import numpy as np
import torch

from diffret_pyserini.cli import InputError
from diffret_pyserini.model import recipes
from diffret_pyserini.model import representations as R
from diffret_pyserini.model.backbones.base import Backbone
from diffret_pyserini.model.prompts import PromptBuilder, PromptLayout, load_templates
from diffret_pyserini.model.representations import REPRESENTATIONS

__all__ = ["REPRESENTATIONS", "EncoderSettings", "EncodedBatch", "DiffRetEncoder", "SettingError"]


class SettingError(InputError):
    """A bad encoder setting, in one line naming the flag (`--kq 0: must be an integer >= 1`)."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(name: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise SettingError(f"--{name} {value!r}: {allowed}")


def _setting(default, help: str, **metadata):
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class EncoderSettings:
    """How texts become vectors. Kq and Kp are independent; max lengths bound the TEXT tokens only.

    The one declaration of the encoder settings: every CLI's flags (arguments.EncoderOverrides), the
    Pyserini spec keys (`NAME?kp=16`) and a trained folder's diffret_config.json are derived from these fields.
    """

    kq: int = _setting(4, "query slots K (causal: generation cap N)")
    kp: int = _setting(16, "passage slots K (causal: generation cap N)")
    query_max_length: int = _setting(64, "query TEXT tokens (prompt and slots extra)")
    passage_max_length: int = _setting(256, "passage TEXT tokens (prompt and slots extra)")
    top_n: int | None = _setting(128, "sparse: vocabulary entries kept per slot before max-pooling over K")
    scale: float = _setting(100.0, "sparse: weights become ints as round(w * scale)")
    content_filter: bool = _setting(True, "sparse: keep only content tokens of the input text (reference)")
    sparse_activation: str = _setting("relu", "sparse: log(1 + act(logits)), act relu (reference) or softplus",
                                      choices=list(R.SPARSE_ACTIVATIONS))
    prompts: str | None = _setting(None, "JSON file overriding the prompt templates")
    chat_template: bool | None = _setting(None, "use the tokenizer's chat template (default: when it has one)")
    style: str = _setting("auto", "prompt wording: single, multi, or auto (single when K == 1)",
                          choices=["auto", "single", "multi"])

    def __post_init__(self) -> None:
        """Every setting checked where it is declared, so a bad value fails on construction, before any work,
        whether it came from a flag, a spec string or a saved diffret_config.json."""
        for name in ("kq", "kp", "query_max_length", "passage_max_length"):
            _require(name, getattr(self, name), _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                     "must be an integer >= 1")
        _require("top_n", self.top_n, self.top_n is None or (_is_int(self.top_n) and self.top_n >= 1),
                 "must be an integer >= 1 (or None: keep every vocabulary entry)")
        _require("scale", self.scale, isinstance(self.scale, (int, float)) and self.scale > 0, "must be > 0")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                _require(f.name, getattr(self, f.name), False, f"must be one of {', '.join(choices)}")

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SettingError(f"unknown encoder settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncodedBatch:
    """One batch of texts in every representation (numpy, ready for writers)."""

    dense: np.ndarray | None        # [B,H] float32
    multi: np.ndarray | None        # [B,K,H] float32, L2-normalised rows, zero where invalid
    multi_valid: np.ndarray | None  # [B,K] bool
    sparse: list[dict[str, int]] | None
    content: np.ndarray | None = None  # [B] bool: False for a text with no content token (zero dense, no multi)


class DiffRetEncoder:
    """Encodes queries and passages with one backbone; every representation comes from the same single pass."""

    def __init__(self, backbone: Backbone, settings: EncoderSettings | None = None):
        self.backbone = backbone
        self.settings = settings or EncoderSettings()
        # The baselines (model/recipes.py) read one vector per text whatever Kq/Kp say: K is 1 in their
        # settings, so their tags, fingerprints and saved folders say what was run.
        self.recipe = getattr(backbone, "recipe", recipes.DEFAULT_RECIPE)
        if self.recipe != recipes.DEFAULT_RECIPE:
            self.settings = replace(self.settings, kq=1, kp=1)
        self.representations = recipes.representations_of(self.recipe)
        self.templates = load_templates(self.settings.prompts)
        tok = backbone.tokenizer
        self.excluded_ids = sorted({backbone.slot_id, *tok.all_special_ids})
        self._terms: R.TermVocabulary | None = None
        self._builders: dict[tuple[str, int, int], PromptBuilder] = {}
        # word -> its candidate ids (_is_term_id), for the content filter, where a word's ids do not depend on
        # its context
        self._word_ids: dict[str, tuple[int, ...]] | None = {} if R.tokenizes_words_independently(tok) else None

    # ------------------------------------------------------------------ prompts
    def k_for(self, role: str) -> int:
        return self.settings.kq if role == "query" else self.settings.kp

    def max_length_for(self, role: str) -> int:
        return self.settings.query_max_length if role == "query" else self.settings.passage_max_length

    def builder(self, role: str, k: int | None = None, max_length: int | None = None) -> PromptBuilder:
        if role not in ("query", "passage"):
            raise ValueError(f"role must be 'query' or 'passage', got {role!r}")
        k = k or self.k_for(role)
        max_length = max_length or self.max_length_for(role)
        key = (role, k, max_length)
        if key not in self._builders:
            self._builders[key] = self._new_builder(role, k, max_length)
        return self._builders[key]

    def _new_builder(self, role: str, k: int, max_length: int) -> PromptBuilder:
        bb = self.backbone
        if self.recipe != recipes.DEFAULT_RECIPE:
            return recipes.recipe_builder(self.recipe, bb.tokenizer, role, max_length, bb.pad_id, bb.slot_id)
        shipped = bb.prompt_layouts  # a released checkpoint's own prompt ids (model/backbones/released.py)
        if shipped:
            prefix, suffix, tail = shipped[role]
            return PromptBuilder(bb.tokenizer, None, k, bb.slot_id, max_length, bb.pad_id, with_slots=bb.one_pass,
                                 layout=PromptLayout(tuple(prefix), tuple(suffix), tuple(tail), k, bb.slot_id))
        style = self.settings.style if self.settings.style != "auto" else ("single" if k == 1 else "multi")
        return PromptBuilder(bb.tokenizer, self.templates[role][style], k, bb.slot_id, max_length, bb.pad_id,
                             self.settings.chat_template, with_slots=bb.one_pass)

    def check_want(self, want: Sequence[str]) -> None:
        """SettingError for a representation this encoder does not make (the baselines make dense only)."""
        unknown = set(want) - set(REPRESENTATIONS)
        if unknown:
            raise SettingError(f"unknown representations {sorted(unknown)}; expected {REPRESENTATIONS}")
        missing = [r for r in want if r not in self.representations]
        if missing:
            raise SettingError(f"the {self.recipe} recipe makes {', '.join(self.representations)} vectors only, "
                             f"not {', '.join(missing)}")

    def check_lengths(self) -> None:
        """Raise SettingError when a role's longest prompt (template + max text + K slots, or + K generated
        tokens on a causal backbone) exceeds the model's position limit: found before encoding, not as a
        tensor-size error in the middle of a corpus."""
        limit = self.backbone.max_positions
        if limit is None:
            return
        for role, flag in (("query", "query_max_length"), ("passage", "passage_max_length")):
            k, text = self.k_for(role), self.max_length_for(role)
            prompt = int(self.builder(role).build([""]).input_ids.shape[1])  # template (+ slots), empty text
            generated = not self.backbone.one_pass and self.recipe == recipes.DEFAULT_RECIPE
            total = prompt + text + (k if generated else 0)
            if total > limit:
                _require(flag, text, False, f"the prompt ({prompt} tokens with {k} slots) plus {text} text tokens "
                         f"is {total} positions, over the model's limit of {limit}")

    @property
    def terms(self) -> R.TermVocabulary:
        if self._terms is None:
            self._terms = R.TermVocabulary(self.backbone.tokenizer, self.excluded_ids)
        return self._terms

    # ------------------------------------------------------------------ encoding
    def represent(self, texts: Sequence[str], role: str, want: Sequence[str] | None = None,
                  k: int | None = None, max_length: int | None = None, columns: torch.Tensor | None = None,
                  allowed: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """THE forward of the encoder, shared by inference (`encode`) and training (train.TrainableEncoder):
        prompts -> Backbone.read_slots -> 'dense' [B,H], 'multi' [B,K,H] + 'valid' [B,K] and 'sparse' [B,C]
        (float weights before quantisation), as tensors that keep their graph when grads are on.

        Sparse weights are computed for vocabulary `columns` with per-text `allowed` masks (training passes
        one column space for a whole batch, `content_columns`); without them, each text's own candidates
        (`row_columns`, what `encode` uses). Columns only select which logits are computed: a text's weight for
        a term is the same in any column space that allows that term for that text."""
        want = self.representations if want is None else want
        self.check_want(want)
        states = self.read(texts, role, k, max_length)
        out = self.dense_tensors(states, want, recipes.pooling_of(self.recipe))
        if "sparse" in want:
            if allowed is None:
                columns, allowed = self.row_columns(texts, states.features.device)
            out["sparse"] = self.sparse_weights(states.features, states.valid, columns, allowed)
        return out

    def read(self, texts: Sequence[str], role: str, k: int | None = None, max_length: int | None = None,
             text_ids: Sequence[Sequence[int]] | None = None):
        """Prompts built and the backbone run once: the slot states every representation is read from
        (`text_ids`: the texts already tokenised, see PromptBuilder.build)."""
        return self.backbone.read_slots(self.builder(role, k, max_length).build(list(texts), text_ids))

    @staticmethod
    def dense_tensors(states, want: Sequence[str], pooling: str = "slots") -> dict[str, torch.Tensor]:
        """'valid', and 'dense' / 'multi' where wanted, from slot states; `pooling` 'mean' is DiffEmbed's."""
        out: dict[str, torch.Tensor] = {"valid": states.valid}
        if "dense" in want:
            pool = R.mean_pool if pooling == "mean" else R.dense_single
            out["dense"] = pool(states.hidden, states.valid)
        if "multi" in want:
            out["multi"] = R.dense_multi(states.hidden, states.valid)
        return out

    def sparse_weights(self, features: torch.Tensor, valid: torch.Tensor, columns: torch.Tensor | None,
                       allowed: torch.Tensor) -> torch.Tensor:
        """[B,C] float sparse weights over `columns`: log(1 + act(logits)) per slot, top-N, max over valid slots."""
        if columns is not None and columns.shape[-1] == 0:
            return features.new_zeros((features.shape[0], 0))
        logits = self.backbone.vocab_logits(features, columns)
        weights = R.sparse_slot_weights(logits, self.settings.sparse_activation)
        return R.pool_sparse(weights, allowed, valid, self.settings.top_n)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], role: str = "passage", want: Sequence[str] | None = None,
               k: int | None = None, max_length: int | None = None,
               text_ids: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        """Encode `texts` once and return the representations named in `want` (default: every one this
        encoder makes): `represent`'s tensors as numpy, sparse weights quantised into {term: int}. `text_ids`:
        the texts already tokenised (PromptBuilder)."""
        want = self.representations if want is None else want
        self.check_want(want)
        texts = [t if isinstance(t, str) else "" for t in texts]
        builder = self.builder(role, k, max_length)
        text_ids = builder.text_ids(texts) if text_ids is None else text_ids
        content = np.array(R.has_content(text_ids, self.excluded_ids, builder.max_text_tokens), dtype=bool)
        states = self.read(texts, role, k, max_length, text_ids)
        reps = self.dense_tensors(states, want, recipes.pooling_of(self.recipe))
        dense = multi = multi_valid = sparse = None
        if "dense" in want:
            dense = reps["dense"].cpu().numpy().astype(np.float32)
            dense[~content] = 0.0
        if "multi" in want:
            multi = reps["multi"].cpu().numpy().astype(np.float32)
            multi_valid = reps["valid"].cpu().numpy() & content[:, None]
            multi[~multi_valid] = 0.0
        if "sparse" in want:
            sparse = self.sparse_vectors(texts, states.features, states.valid)
        return EncodedBatch(dense, multi, multi_valid, sparse, content)

    def _candidate_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's content-token ids that render to a term (the sparse side's candidates), sorted."""
        return [sorted(ids) for ids in R.content_token_ids(self.backbone.tokenizer, texts, self.excluded_ids,
                                                            self._word_ids, self._is_term_id)]

    def _is_term_id(self, i: int) -> bool:
        return i < self.backbone.vocab_size and self.terms.id_to_term[i] is not None

    def _all_columns(self, n: int, device) -> tuple[None, torch.Tensor]:
        allowed = torch.ones((n, self.backbone.vocab_size), dtype=torch.bool, device=device)
        allowed[:, [i for i in self.excluded_ids if i < self.backbone.vocab_size]] = False
        return None, allowed

    def content_columns(self, texts: Sequence[str], device: torch.device | str | None = None,
                        ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(columns, allowed): the union of the texts' candidate vocabulary ids (1-D) and a bool [B,C] mask of
        each text's own. Without the content filter: None (all ids) with the excluded ids off. Training calls
        this on queries and passages together to score them in one space."""
        device = device or self.backbone.device
        if not self.settings.content_filter:
            return self._all_columns(len(texts), device)
        per_text = self._candidate_ids(texts)
        union = sorted(set().union(*per_text))
        columns = torch.tensor(union, dtype=torch.long, device=device)
        position = {vid: j for j, vid in enumerate(union)}
        allowed = torch.zeros((len(texts), len(union)), dtype=torch.bool, device=device)
        for row, ids in enumerate(per_text):
            allowed[row, [position[i] for i in ids]] = True
        return columns, allowed

    def row_columns(self, texts: Sequence[str], device: torch.device | str | None = None,
                    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(columns [B,C], allowed [B,C]): each text's own candidate ids, right-padded (padding not allowed).

        Encoding uses this rather than the batch union: the slot logits, top-N and max over K then cost
        K x (one text's candidates) per text instead of K x (the whole batch's), which kept the sparse side
        from growing with batch size x K."""
        device = device or self.backbone.device
        if not self.settings.content_filter:
            return self._all_columns(len(texts), device)
        per_text = self._candidate_ids(texts)
        lengths = torch.tensor([len(ids) for ids in per_text], dtype=torch.long)
        width = int(lengths.max()) if len(per_text) else 0
        allowed = torch.arange(width) < lengths[:, None]
        columns = torch.zeros((len(texts), width), dtype=torch.long)
        columns[allowed] = torch.tensor([i for ids in per_text for i in ids], dtype=torch.long)  # row-major fill
        return columns.to(device), allowed.to(device)

    def sparse_vectors(self, texts: Sequence[str], features: torch.Tensor, valid: torch.Tensor) -> list[dict]:
        """Sparse {term: int} per text; logits only for each text's own candidate vocabulary columns."""
        columns, allowed = self.row_columns(texts, features.device)
        if columns is not None and columns.shape[-1] == 0:
            return [{} for _ in texts]
        pooled = self.sparse_weights(features, valid, columns, allowed)
        return R.to_term_dicts(R.quantize(pooled, self.settings.scale).cpu(), self.terms.id_to_term,
                               None if columns is None else columns.cpu())
