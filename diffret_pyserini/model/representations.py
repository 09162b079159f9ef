"""Pure representation math on slot states: dense pooling, sparse weighting, quantisation, Lucene-safe terms.

Everything here takes tensors (or token strings) and returns tensors/dicts; nothing knows about models or files.
Shapes: B texts, K slots, H hidden size, V vocabulary.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Callable, Iterable, Sequence

import torch

# The three outputs of one pass, in the order every writer and CLI lists them.
REPRESENTATIONS = ("dense", "multi", "sparse")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows along the last axis (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def has_content(text_ids: Sequence[Sequence[int]], excluded: Iterable[int], max_tokens: int | None = None) -> list[bool]:
    """Whether each text holds a token that is not special (empty text, or only [UNK] / padding, holds none).
    A text without one has no dense or multi vector: its slots would read the prompt alone, and a prompt-only
    vector sits close to every query. `max_tokens` counts only the tokens the prompt keeps."""
    excluded = set(excluded)
    return [any(i not in excluded for i in ids[:max_tokens]) for ids in text_ids]


def dense_multi(hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B,K,H] -> [B,K,H] L2-normalised slot vectors; invalid slots are zeroed (they never win a MaxSim)."""
    out = l2_normalize(hidden.float())
    if valid is not None:
        out = out * valid.unsqueeze(-1).to(out.dtype)
    return out


def dense_single(hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B,K,H] -> [B,H]: the mean of the L2-normalised valid slot vectors (the reference's `single`)."""
    vectors = dense_multi(hidden, valid)
    count = vectors.new_full(vectors.shape[:1], vectors.shape[1]) if valid is None else valid.sum(-1).to(vectors.dtype)
    return vectors.sum(1) / count.clamp(min=1).unsqueeze(-1)


def mean_pool(hidden: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B,T,H] -> [B,H]: the mean of the raw valid states, then L2-normalised (DiffEmbed's pooling; a row
    without a valid state is a zero vector)."""
    states = hidden.float()
    if valid is None:
        return l2_normalize(states.mean(1))
    weights = valid.to(states.dtype).unsqueeze(-1)
    return l2_normalize((states * weights).sum(1) / weights.sum(1).clamp(min=1))


SPARSE_ACTIVATIONS = ("relu", "softplus")


def sparse_slot_weights(logits: torch.Tensor, activation: str = "relu") -> torch.Tensor:
    """log(1 + act(logits)) per slot; act = relu (the reference) or softplus.

    softplus keeps a graded, positive weight for tokens whose logit at the slot is below zero: small masked LMs
    rank the text's content words sensibly at [MASK] slots but with negative logits, which relu zeroes.
    """
    if activation == "relu":
        return torch.log1p(torch.relu(logits.float()))
    if activation == "softplus":
        return torch.log1p(torch.nn.functional.softplus(logits.float()))
    raise ValueError(f"sparse activation must be one of {SPARSE_ACTIVATIONS}, got {activation!r}")


def pool_sparse(weights: torch.Tensor, allowed: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                top_n: int | None = 128) -> torch.Tensor:
    """[B,K,V] slot weights -> [B,V]: keep allowed columns, top-N per slot, then max over valid slots.

    `allowed` is a bool [B,V] (content tokens of each text, special/mask ids already off); `valid` a bool [B,K].
    """
    w = weights
    if allowed is not None:
        w = w.masked_fill(~allowed.unsqueeze(1), 0.0)
    if valid is not None:
        w = w.masked_fill(~valid.unsqueeze(-1), 0.0)
    if top_n is not None and top_n < w.shape[-1]:
        values, index = w.topk(top_n, dim=-1)
        w = torch.zeros_like(w).scatter_(-1, index, values)
    return w.amax(dim=1)


def quantize(weights: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Float impact weights -> non-negative ints (round(w * scale)); Lucene impact scoring takes integers."""
    return torch.round(weights.float().clamp(min=0) * scale).to(torch.int64)


def to_term_dicts(quantized: torch.Tensor, id_to_term: Sequence[str | None],
                  columns: torch.Tensor | None = None) -> list[dict[str, int]]:
    """[B,V'] ints -> one {term: weight} per row; ids that render to the same term merge by max.

    `columns` maps the V' columns back to vocabulary ids when the logits were computed on a subset: 1-D [V']
    when every row shares them, 2-D [B,V'] when each row has its own.
    """
    out = []
    rows, cols = quantized.nonzero(as_tuple=True)
    values = quantized[rows, cols].tolist()
    if columns is None:
        vocab_ids = cols.tolist()
    elif columns.dim() == 2:
        vocab_ids = columns[rows, cols].tolist()
    else:
        vocab_ids = columns[cols].tolist()
    per_row: list[dict[str, int]] = [{} for _ in range(quantized.shape[0])]
    for row, vid, value in zip(rows.tolist(), vocab_ids, values):
        term = id_to_term[vid]
        if term is None:
            continue
        terms = per_row[row]
        if value > terms.get(term, 0):
            terms[term] = value
    out.extend(per_row)
    return out


# --------------------------------------------------------------------------------------------- content filter

@lru_cache(maxsize=1)
def english_stopwords() -> frozenset[str]:
    text = resources.files("diffret_pyserini").joinpath("resources/stopwords_en.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def content_words(text: str) -> list[str]:
    """Lower-cased words of `text` minus English stopwords and punctuation, first occurrence order."""
    stop = english_stopwords()
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in stop:
            seen.setdefault(word, None)
    return list(seen)


WORD_CACHE_LIMIT = 1_000_000  # words kept by a word cache before it starts over (bounds its memory)


def tokenizes_words_independently(tokenizer) -> bool:
    """Whether a word's ids never depend on its neighbours or on a leading space: WordPiece behind BERT's
    pre-tokenizer, which splits at whitespace and punctuation and normalises character by character."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return type(backend.model).__name__ == "WordPiece" and type(backend.pre_tokenizer).__name__ == "BertPreTokenizer"


def content_token_ids(tokenizer, texts: Sequence[str], excluded: Iterable[int] = (),
                      word_cache: dict[str, tuple[int, ...]] | None = None,
                      keep: Callable[[int], bool] | None = None) -> list[set[int]]:
    """Per text, the token ids of its content words, re-tokenised with and without a leading space.

    Both spellings matter for byte-level BPE vocabularies, where 'Ġword' and 'word' are different ids.
    `keep`, when given, drops the ids it says no to (the encoder's: ids that render to no term).
    `word_cache` (only for tokenizers where `tokenizes_words_independently`) maps a word to its kept ids across
    calls, so the tokenizer sees only words it has not seen before and `keep` runs once per word: a corpus repeats
    most of its words, and at batch 1 the tokenizer call, not the lookup, was the cost. A cache serves one
    `keep`. The result is the same with or without it.
    """
    excluded = set(excluded)
    words = [content_words(t) for t in texts]
    if word_cache is not None:
        distinct = list(dict.fromkeys(w for ws in words for w in ws))
        new = [w for w in distinct if w not in word_cache]
        if new and len(word_cache) + len(new) > WORD_CACHE_LIMIT:
            word_cache.clear()  # start over, with every word of this call to tokenise
            new = distinct
        if new:
            encoded = tokenizer(new, add_special_tokens=False)["input_ids"]
            word_cache.update(zip(new, (tuple(i for i in ids if keep is None or keep(i)) for ids in encoded)))
        return [set().union(*map(word_cache.__getitem__, ws)) - excluded for ws in words]
    joined = [" ".join(ws) for ws in words]
    both = tokenizer(joined + [" " + j if j else "" for j in joined], add_special_tokens=False)["input_ids"]
    plain, spaced = both[:len(texts)], both[len(texts):]
    return [{i for i in set(a) | set(b) if keep is None or keep(i)} - excluded for a, b in zip(plain, spaced)]


# ------------------------------------------------------------------------------------------------ term strings

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-character table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


_UNICODE_TO_BYTE = {ch: byte for byte, ch in _bytes_to_unicode().items()}
_WHITESPACE = re.compile(r"\s+")


def tokenizer_style(tokenizer) -> str:
    """'bytelevel', 'metaspace' (sentencepiece '▁') or 'wordpiece'/'plain', read off the fast tokenizer's decoder."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.dumps(json.loads(backend.to_str()).get("decoder"))
        if "ByteLevel" in spec:
            return "bytelevel"
        if "Metaspace" in spec or "\u2581" in spec:
            return "metaspace"
        if "WordPiece" in spec:
            return "wordpiece"
    return "plain"


def render_term(token: str, style: str) -> str | None:
    """A vocabulary token as a Lucene-safe term (no whitespace), or None when nothing printable is left.

    Byte-level tokens are decoded back to UTF-8 (a token holding part of a multi-byte character keeps a
    `<0xNN>` byte notation); sentencepiece '▁' and byte-level 'Ġ' word markers are dropped, so 'Ġcat' and 'cat'
    render alike and later merge by max. Word-piece '##' continuations are kept: '##ing' is not 'ing'.
    """
    if style == "bytelevel":
        raw = bytes(_UNICODE_TO_BYTE[ch] for ch in token) if all(ch in _UNICODE_TO_BYTE for ch in token) else None
        if raw is not None:
            try:
                token = raw.decode("utf-8")
            except UnicodeDecodeError:
                token = "".join(chr(b) if b < 0x80 else f"<0x{b:02X}>" for b in raw)
    elif style == "metaspace":
        token = token.replace("\u2581", " ")
    term = _WHITESPACE.sub("_", token.strip())
    return term or None


class TermVocabulary:
    """Vocabulary id -> Lucene term, computed once per tokenizer; special ids map to None."""

    def __init__(self, tokenizer, excluded_ids: Iterable[int] = ()):
        self.style = tokenizer_style(tokenizer)
        excluded = set(excluded_ids) | set(tokenizer.all_special_ids)
        size = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
        tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
        self.id_to_term: list[str | None] = [
            None if (i in excluded or tok is None) else render_term(tok, self.style) for i, tok in enumerate(tokens)]

    def __len__(self) -> int:
        return len(self.id_to_term)

    def term_to_ids(self) -> dict[str, list[int]]:
        """The inverse map (several ids can share a term)."""
        inverse: dict[str, list[int]] = {}
        for i, term in enumerate(self.id_to_term):
            if term is not None:
                inverse.setdefault(term, []).append(i)
        return inverse
