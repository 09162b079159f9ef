"""DiffRetriever encoders with Pyserini's own encoder contracts.

- `DiffRetDocumentEncoder` is a `pyserini.encode.DocumentEncoder`: `encode(texts, titles=None, max_length=...,
  fp16=..., **kwargs)` returns float32 vectors [B,H] (dense), or a list of {term: int} (sparse), as
  `python -m pyserini.encode` and its writers expect.
- `DiffRetQueryEncoder` is a `pyserini.encode.QueryEncoder`: `encode(query)` returns a float32 vector (dim,)
  for `FaissSearcher`, a {term: int} dict for `LuceneImpactSearcher`, or [Kq,H] vectors for MaxSim; it also has
  `encode_batch(queries)`, which FaissSearcher.batch_search uses when present.

A model is named by a spec string, so that it fits into `pyserini.encode --encoder`:

    [diffret-(dense|sparse|multi):]<model folder or packaged name>[?key=value&key=value]

e.g. `diffret-sparse:splade-tiny?kp=16&top_n=128`; keys are `EncoderSettings` fields plus `kind`, `dtype`,
`slot_token`. A folder saved by `diffret_pyserini.train` carries its own settings; the query string overrides.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Sequence
from urllib.parse import parse_qsl

from pyserini.encode import DocumentEncoder, QueryEncoder

from diffret_pyserini.backbones import load_backbone
from diffret_pyserini.encoding import REPRESENTATIONS, DiffRetEncoder, EncoderSettings

SPEC_PREFIX = "diffret"
LOAD_KEYS = ("kind", "dtype", "slot_token", "read_offset")
# Keyword arguments pyserini.encode's init_encoder adds when the model name merely CONTAINS words such as
# "clip" or "dse"; they mean nothing to us.
PYSERINI_INIT_KWARGS = ("pooling", "l2_norm", "prefix", "multimodal", "explicit_truncate")


@dataclass
class EncoderSpec:
    model: str
    representation: str | None = None
    settings: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)


def _coerce(value: str, example):
    if isinstance(example, bool) or example is None and value.lower() in ("true", "false"):
        return value.lower() in ("1", "true", "yes")
    if isinstance(example, int) or (example is None and value.lstrip("-").isdigit()):
        return int(value)
    if isinstance(example, float):
        return float(value)
    return value


def parse_spec(spec: str) -> EncoderSpec:
    """Parse `[diffret-REP:]MODEL[?k=v&...]` (see the module docstring)."""
    text = spec.strip()
    representation = None
    head, sep, rest = text.partition(":")
    if sep and head.lower().startswith(SPEC_PREFIX) and "/" not in head:
        kind = head.lower()[len(SPEC_PREFIX):].lstrip("-_")
        if kind:
            if kind not in REPRESENTATIONS:
                raise ValueError(f"encoder spec {spec!r}: representation {kind!r} not in {REPRESENTATIONS}")
            representation = kind
        text = rest
    model, _, query = text.partition("?")
    defaults = EncoderSettings()
    known = {f.name: getattr(defaults, f.name) for f in fields(EncoderSettings)}
    settings, load = {}, {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in known:
            settings[key] = None if value.lower() == "none" else _coerce(value, known[key])
        elif key in LOAD_KEYS:
            load[key] = int(value) if key == "read_offset" else value
        else:
            raise ValueError(f"encoder spec {spec!r}: unknown option {key!r}; known: {sorted([*known, *LOAD_KEYS])}")
    if not model:
        raise ValueError(f"encoder spec {spec!r}: no model name or folder")
    return EncoderSpec(model=model, representation=representation, settings=settings, load=load)


_CACHE: dict[tuple, DiffRetEncoder] = {}
_LOCK = threading.Lock()


def get_encoder(spec: str | EncoderSpec, device: str | None = None, **overrides) -> DiffRetEncoder:
    """A (cached) DiffRetEncoder for a spec, so query and document encoders in one process share the model."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    load = {**parsed.load, **{k: overrides.pop(k) for k in list(overrides) if k in LOAD_KEYS}}
    key = (parsed.model, device, tuple(sorted(load.items())))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = DiffRetEncoder(load_backbone(parsed.model, device=device, **load))
        base = _CACHE[key]
    saved = getattr(base.backbone, "spec", None)
    merged = {**(saved.settings if saved else {}), **parsed.settings, **overrides}
    return DiffRetEncoder(base.backbone, EncoderSettings.from_dict(merged))


class DiffRetDocumentEncoder(DocumentEncoder):
    """Passage encoder for `python -m pyserini.encode` and Python code (dense by default)."""

    def __init__(self, model_name: str, device: str = "cpu", representation: str | None = None,
                 tokenizer_name: str | None = None, **settings):
        for name in PYSERINI_INIT_KWARGS:
            settings.pop(name, None)
        spec = parse_spec(model_name)
        self.representation = representation or spec.representation or "dense"
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}")
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


def _register_with_pyserini() -> None:
    from diffret_pyserini.plugin import register

    register()


_register_with_pyserini()
