"""Label-free signals for choosing a query's budget Kq.

Slot signals come from the slot logits of the query's own forward pass (the same computation the sparse side
reads): per slot the top-1 vocabulary entry, the softmax entropy and the top-1 margin. A slot is *spent* when its
top-1 is a special token, a stopword or punctuation, or repeats an earlier slot's top-1; `distinct` counts the
slots that are not. Run signals come from the first-stage run at each Kq: an NQC-style spread (coefficient of
variation of the top-n scores, scale-free so runs at different Kq compare) and top-10 agreement with the other
Kq's runs.
"""
from __future__ import annotations

import weakref
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = ["SLOT_FEATURES", "slot_signals", "nqc", "agreement"]

SLOT_FEATURES = ("distinct_frac", "stop_frac", "repeat_frac", "entropy", "margin")
# per encoder, computed once over its vocabulary; gone with the encoder
_SPENT_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _spent_ids(encoder) -> set[int]:
    """Vocabulary ids whose prediction carries no content: special ids, stopwords, punctuation-only tokens."""
    from diffret_pyserini.model.representations import english_stopwords

    cached = _SPENT_IDS.get(encoder)
    if cached is not None:
        return cached
    stop = english_stopwords()
    spent = set(encoder.excluded_ids)
    for i, term in enumerate(encoder.terms.id_to_term):
        word = (term or "").lower().lstrip("#")
        if term is None or word in stop or not any(ch.isalnum() for ch in word):
            spent.add(i)
    _SPENT_IDS[encoder] = spent
    return spent


@torch.inference_mode()
def slot_signals(encoder, texts: Sequence[str], k: int, batch_size: int = 16) -> list[dict[str, float]]:
    """Per text, the slot statistics of one forward pass with `k` query slots (see the module docstring)."""
    spent = _spent_ids(encoder)
    out: list[dict[str, float]] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        states = encoder.backbone.read_slots(encoder.builder("query", k).build(chunk))
        logits = encoder.backbone.vocab_logits(states.features).float()  # [B,K,V]
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)                                  # [B,K]
        top2 = logp.exp().topk(2, dim=-1)
        margin = top2.values[..., 0] - top2.values[..., 1]                      # [B,K]
        valid = states.valid
        for b in range(len(chunk)):
            slots = [j for j in range(logits.shape[1]) if bool(valid[b, j])]
            seen: set[int] = set()
            stop = repeat = 0
            for j in slots:
                top = int(top2.indices[b, j, 0])
                if top in spent:
                    stop += 1
                elif top in seen:
                    repeat += 1
                seen.add(top)
            n = max(len(slots), 1)
            out.append({"distinct": float(len(slots) - stop - repeat), "distinct_frac": (len(slots) - stop - repeat) / n,
                        "stop_frac": stop / n, "repeat_frac": repeat / n,
                        "entropy": float(entropy[b, slots].mean()) if slots else 0.0,
                        "margin": float(margin[b, slots].mean()) if slots else 0.0})
    return out


def nqc(hits: Sequence[tuple[str, float]], depth: int = 100) -> float:
    """Coefficient of variation of the top-`depth` scores (NQC's spread, divided by the mean score rather than a
    corpus score, so that runs at different Kq, on different scales, compare); 0 for fewer than two hits."""
    scores = np.asarray([s for _, s in hits[:depth]], dtype=np.float64)
    if len(scores) < 2:
        return 0.0
    mean = abs(scores.mean())
    return float(scores.std() / mean) if mean > 0 else 0.0


def agreement(runs: Mapping[int, Mapping[str, Sequence[tuple[str, float]]]], qid: str, depth: int = 10,
              ) -> dict[int, float]:
    """For each Kq, the mean top-`depth` overlap of its run with the other Kq's runs for query `qid`."""
    tops = {k: {d for d, _ in run.get(qid, [])[:depth]} for k, run in runs.items()}
    out = {}
    for k, top in tops.items():
        others = [len(top & o) / depth for k2, o in tops.items() if k2 != k]
        out[k] = float(np.mean(others)) if others else 0.0
    return out
