"""DiffRetriever encoders with Pyserini's own encoder contracts.

- `DiffRetDocumentEncoder` is a `pyserini.encode.DocumentEncoder`: `encode(texts, titles=None, max_length=...,
  fp16=..., **kwargs)` returns float32 vectors [B,H] (dense), or a list of {term: int} (sparse), as
  `python -m pyserini.encode` and its writers expect.
- `DiffRetQueryEncoder` is a `pyserini.encode.QueryEncoder`: `encode(query)` returns a float32 vector (dim,)
  for `FaissSearcher`, a {term: int} dict for `LuceneImpactSearcher`, or [Kq,H] vectors for MaxSim; it also has
  `encode_batch(queries)`, which FaissSearcher.batch_search uses when present.

A thin adapter: the model is named by a spec string (model/spec.py), e.g. `diffret-sparse:splade-tiny?kp=16`,
and all the work is done by the core `DiffRetEncoder`. How `python -m pyserini.encode` finds these classes is
plugin.py's business, not this module's.
"""
from __future__ import annotations

from typing import Sequence

from pyserini.encode import DocumentEncoder, QueryEncoder

from diffret_pyserini.model.encoder import REPRESENTATIONS, DiffRetEncoder, SettingError
from diffret_pyserini.model.spec import get_encoder, parse_spec

# Keyword arguments pyserini.encode's init_encoder adds when the model name merely CONTAINS words such as
# "clip" or "dse"; they mean nothing to us.
PYSERINI_INIT_KWARGS = ("pooling", "l2_norm", "prefix", "multimodal", "explicit_truncate")


class DiffRetDocumentEncoder(DocumentEncoder):
    """Passage encoder for `python -m pyserini.encode` and Python code (dense by default)."""

    def __init__(self, model_name: str, device: str = "cpu", representation: str | None = None,
                 tokenizer_name: str | None = None, **settings):
        for name in PYSERINI_INIT_KWARGS:
            settings.pop(name, None)
        spec = parse_spec(model_name)
        self.representation = representation or spec.representation or "dense"
        if self.representation not in REPRESENTATIONS:
            raise SettingError(f"representation must be one of {REPRESENTATIONS}")
        self.encoder = get_encoder(spec, device=device, **settings)

    def encode(self, texts: Sequence[str], titles: Sequence[str] | None = None, max_length: int | None = None,
               fp16: bool = False, **kwargs):
        """`fp16` is accepted for CLI compatibility; the dtype is chosen at load time (bf16 on GPU)."""
        if titles is not None:
            texts = [f"{t} {x}".strip() if t else x for t, x in zip(titles, texts)]
        out = self.encoder.encode(list(texts), "passage", want=[self.representation],
                                  max_length=max_length if max_length else None)
        return {"dense": out.dense, "multi": out.multi, "sparse": out.sparse}[self.representation]


class DiffRetQueryEncoder(QueryEncoder):
    """Query encoder for FaissSearcher (dense), LuceneImpactSearcher (sparse) and MaxSim (multi)."""

    def __init__(self, model_name: str | None = None, device: str = "cpu", representation: str | None = None,
                 encoder: DiffRetEncoder | None = None, **settings):
        super().__init__()
        if encoder is None and model_name is None:
            raise ValueError("give model_name or encoder")
        spec = parse_spec(model_name) if model_name else None
        self.representation = representation or (spec.representation if spec else None) or "dense"
        self.encoder = encoder or get_encoder(spec, device=device, **settings)
        self.has_model = True

    def encode(self, query: str, **kwargs):
        return self.encode_batch([query])[0]

    def encode_batch(self, queries: Sequence[str]) -> list:
        out = self.encoder.encode(list(queries), "query", want=[self.representation])
        if self.representation == "dense":
            return list(out.dense)
        if self.representation == "sparse":
            return out.sparse
        return [vectors[valid] for vectors, valid in zip(out.multi, out.multi_valid)]
