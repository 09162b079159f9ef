"""Model specs and the encoder cache, the core's one way from a model name to a `DiffRetEncoder`.

A model is named by a spec string, so that it fits into `pyserini.encode --encoder` as well as our own CLIs:

    [diffret-(dense|sparse|multi):]<model folder or packaged name>[?key=value&key=value]

e.g. `diffret-sparse:splade-tiny?kp=16&top_n=128`; keys are `EncoderSettings` fields plus the load keys `kind`,
`dtype`, `slot_token`, `read_offset`, `trust_remote_code` and `base_model` (the base model folder of a released
DiffRetriever checkpoint, backbones/released.py). `kind` may name a baseline recipe (diffembed, repllama;
recipes.py). A folder saved by `diffret_pyserini.train` carries its own settings; the query string overrides
them, and keyword overrides override both.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from urllib.parse import parse_qsl

from diffret_pyserini.model.backbones.released import load_any
from diffret_pyserini.model.encoder import REPRESENTATIONS, DiffRetEncoder, EncoderSettings, SettingError

__all__ = ["EncoderSpec", "parse_spec", "get_encoder", "SPEC_PREFIX", "LOAD_KEYS"]

SPEC_PREFIX = "diffret"
LOAD_KEYS = ("kind", "dtype", "slot_token", "read_offset", "trust_remote_code", "base_model")


@dataclass
class EncoderSpec:
    """A parsed spec: the model, the representation it names (if any), settings and load options."""

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
                raise SettingError(f"encoder spec {spec!r}: representation {kind!r} not in {REPRESENTATIONS}")
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
            load[key] = _coerce(value, {"read_offset": 0, "trust_remote_code": False}.get(key, ""))
        else:
            raise SettingError(f"encoder spec {spec!r}: unknown option {key!r}; known: {sorted([*known, *LOAD_KEYS])}")
    if not model:
        raise SettingError(f"encoder spec {spec!r}: no model name or folder")
    return EncoderSpec(model=model, representation=representation, settings=settings, load=load)


# Loaded models, newest last, so that the query and document encoders of one process share one model; the
# oldest is dropped past CACHE_MODELS (a pipeline loads several models one after another).
CACHE_MODELS = 2
_CACHE: OrderedDict[tuple, DiffRetEncoder] = OrderedDict()
_LOCK = threading.Lock()


def clear_encoder_cache() -> None:
    """Forget every cached model (its memory is freed once no encoder uses it)."""
    with _LOCK:
        _CACHE.clear()


def get_encoder(spec: str | EncoderSpec, device: str | None = None, **overrides) -> DiffRetEncoder:
    """A (cached) DiffRetEncoder for a spec, so query and document encoders in one process share the model."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    load = {**parsed.load, **{k: overrides.pop(k) for k in list(overrides) if k in LOAD_KEYS}}
    if not load.get("trust_remote_code"):
        load.pop("trust_remote_code", None)  # False is the default: one cache entry for both spellings
    key = (parsed.model, device, tuple(sorted(load.items())))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = DiffRetEncoder(load_any(parsed.model, device=device, **load))
            while len(_CACHE) > CACHE_MODELS:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        base = _CACHE[key]
    saved = base.backbone.spec
    merged = {**(saved.settings if saved else {}), **parsed.settings, **overrides}
    return DiffRetEncoder(base.backbone, EncoderSettings.from_dict(merged))
