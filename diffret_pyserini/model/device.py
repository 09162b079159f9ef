"""Devices and dtypes: one parser of `--device` for every CLI, and the dtype a device runs in by default."""
from __future__ import annotations

import re

import torch

from diffret_pyserini.cli import InputError

__all__ = ["DEVICE_FORMS", "DeviceError", "parse_device", "default_dtype"]

DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


class DeviceError(InputError):
    """A `--device` value that is malformed or names hardware this machine lacks (one-line message)."""


def parse_device(device: str | torch.device | None = None) -> torch.device:
    """'auto' (or None/''): CUDA when present, else CPU. Anything asked for by name must exist here."""
    text = str(device).strip().lower() if device is not None else "auto"
    if text in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False); use --device cpu or auto")
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s): "
                              f"cuda:0 to cuda:{count - 1}")
        return torch.device(text)
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"--device {device}: MPS is not available on this machine; use --device cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"--device {device!r}: not a device; use one of {DEVICE_FORMS}")


def default_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU, unless asked otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
            "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
