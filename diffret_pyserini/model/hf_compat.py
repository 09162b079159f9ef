"""What differs between the transformers releases we support (4.46 to 5.x), in one place.

- The dtype argument of `from_pretrained`: `torch_dtype` until 4.55; `dtype` from 4.56 (5.x warns on the old name).
- A model read from a GGUF file: 4.x dequantises it into a plain model; 5.x keeps it marked as quantized (and
  refuses to save it) unless asked to dequantise.
- The KV cache of a decoder's forward: `past_key_values` in 4.x; `cache` in 5.x, where the old name warns and is
  to go. Asked of the model's own signature, so a release that renames it either way is followed.
"""
from __future__ import annotations

import inspect
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def transformers_version() -> tuple[int, int]:
    from importlib.metadata import version

    major, minor = version("transformers").split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def dtype_kwargs(dtype: torch.dtype | str | None) -> dict:
    """`from_pretrained` keyword for the weights' dtype, under the name this transformers takes."""
    return {"dtype" if transformers_version() >= (4, 56) else "torch_dtype": dtype}


def gguf_load_kwargs() -> dict:
    """`from_pretrained(..., gguf_file=...)` keywords that give a plain float model, saveable as safetensors."""
    try:
        from transformers import GgufConfig  # 5.x
    except ImportError:  # 4.x always dequantises
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


@lru_cache(maxsize=32)
def _cache_argument(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(model, cache) -> dict:
    """The forward keyword that hands `model` its KV cache."""
    return {_cache_argument(type(model).forward): cache}


def output_cache(out):
    """The KV cache a forward returned (`cache` in 5.x outputs, `past_key_values` before)."""
    cache = out.get("cache") if hasattr(out, "get") else getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
