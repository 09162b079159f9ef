"""Released DiffRetriever checkpoints (the paper's fine-tuned Dream / LLaDA models), loaded as they ship and
without running any code they carry.

A released folder holds the LoRA adapter and nothing of the base model:

    retriever_config.json      the reference's settings: model_type (dream, llada1, llada15), mask_token_id,
                               n_gen_q_tokens / n_gen_p_tokens (Kq, Kp; n_gen_tokens when they are absent),
                               query_/passage_ prefix_ids and suffix_ids (the prompt around the text, as token
                               ids), n_tail (tokens after the slots: '"', end of turn, EOS), max_length
    adapter_config.json        PEFT's adapter config
    adapter_model.safetensors  the LoRA weights (or adapter_model.bin)
    tokenizer files            the base model's tokenizer, saved with the adapter

The base model comes from a local folder the user names (`base_model=DIR` in a spec, `--base_model DIR` on a
CLI); nothing is downloaded. The adapter is attached with peft and merged; K and the prompt come from the
folder, and the text is laid out as the reference lays it out: [prefix] text [suffix] [mask x K] [tail], left
padded, the text cut to max_length minus the prompt. Every problem is one ModelLoadError line.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from diffret_pyserini.cli import one_line
from diffret_pyserini.model.backbones.base import Backbone
from diffret_pyserini.model.backbones.checks import ModelLoadError, adapter_problems, read_json, require_trust
from diffret_pyserini.model.backbones.load import (
    BACKBONE_CLASSES,
    ModelSpec,
    load_backbone,
    load_model,
    load_tokenizer,
    loads_natively,
    read_hf_config,
    resolve_path,
)
from diffret_pyserini.model.device import default_dtype, parse_device

__all__ = ["RETRIEVER_CONFIG", "MODEL_TYPES", "ReleasedConfig", "is_released", "read_released", "tail_ids",
           "load_released", "load_any"]

log = logging.getLogger("diffret_pyserini.released")

RETRIEVER_CONFIG = "retriever_config.json"
# The reference's model_type -> our backbone kind (LLaDA 2 is a mixture-of-experts model we do not load).
MODEL_TYPES = {"dream": "dream", "llada": "llada", "llada1": "llada", "llada15": "llada"}
END_OF_TURN = ("<|im_end|>", "<|eot_id|>")  # Dream/Qwen, LLaDA/LLaMA-3
ROLES = ("query", "passage")


@dataclass(frozen=True)
class ReleasedConfig:
    """What retriever_config.json says, checked."""

    kind: str
    mask_id: int
    k: dict[str, int]                 # role -> K
    prefix: dict[str, list[int]]      # role -> ids before the text
    suffix: dict[str, list[int]]      # role -> ids between the text and the slots
    n_tail: int
    max_length: int
    denoise_steps: int


def is_released(path: str | os.PathLike) -> bool:
    """Whether a folder is a released DiffRetriever checkpoint (it holds retriever_config.json)."""
    return (Path(path) / RETRIEVER_CONFIG).is_file()


def _int(cfg: dict, key: str, where: Path, default=None, low: int = 0) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ModelLoadError(f"{where}: {key}: expected an integer >= {low}, got {value!r}")
    return value


def _ids(cfg: dict, key: str, where: Path) -> list[int]:
    value = cfg.get(key)
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                              for i in value):
        raise ModelLoadError(f"{where}: {key}: expected a list of token ids, got {type(value).__name__}")
    return value


def read_released(path: str | os.PathLike) -> ReleasedConfig:
    """retriever_config.json of a released folder, checked field by field (one line on the first problem)."""
    where = Path(path) / RETRIEVER_CONFIG
    cfg = read_json(where)
    model_type = cfg.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ModelLoadError(f"{where}: model_type: {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    k_all = _int(cfg, "n_gen_tokens", where, default=1, low=1)
    k = {"query": _int(cfg, "n_gen_q_tokens", where, default=None, low=1) if cfg.get("n_gen_q_tokens") is not None
         else k_all,
         "passage": _int(cfg, "n_gen_p_tokens", where, default=None, low=1) if cfg.get("n_gen_p_tokens") is not None
         else k_all}
    # Checkpoints older than the structural tail kept only an EOS after the slots (use_eos) or nothing.
    n_tail = _int(cfg, "n_tail", where, default=1 if cfg.get("use_eos") else 0)
    return ReleasedConfig(kind=MODEL_TYPES[model_type], mask_id=_int(cfg, "mask_token_id", where),
                          k=k, prefix={r: _ids(cfg, f"{r}_prefix_ids", where) for r in ROLES},
                          suffix={r: _ids(cfg, f"{r}_suffix_ids", where) for r in ROLES}, n_tail=n_tail,
                          max_length=_int(cfg, "max_length", where, default=512, low=1),
                          denoise_steps=_int(cfg, "num_denoise_steps", where, default=1, low=1))


def tail_ids(tokenizer, n_tail: int) -> list[int]:
    """The reference's tail after the slots: the closing quote (EOS when '"' is not one token), the chat
    template's end-of-turn token when the vocabulary has one, then EOS up to `n_tail` tokens."""
    if n_tail <= 0:
        return []
    eos = tokenizer.eos_token_id
    quote = tokenizer('"', add_special_tokens=False)["input_ids"]
    tail = [quote[0] if len(quote) == 1 else eos]
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN:
        if token in vocab and vocab[token] != eos:
            tail.append(vocab[token])
            break
    while len(tail) < n_tail:
        tail.append(eos)
    return tail[:n_tail]


def _tokenizer(path: Path, base: Path, trust_remote_code: bool):
    """The tokenizer saved with the adapter when it loads without code of its own, else the base's."""
    if (path / "tokenizer_config.json").is_file():
        try:
            return load_tokenizer(path)
        except Exception:  # noqa: BLE001 - a tokenizer that needs code: the base folder's, which the user trusts
            pass
    try:
        return load_tokenizer(base, trust_remote_code)
    except Exception as err:
        raise ModelLoadError(f"{base}: the tokenizer does not load: {one_line(err)}") from err


def load_released(path: str | os.PathLike, base_model: str | os.PathLike | None, device: str | None = None,
                  dtype=None, trust_remote_code: bool = False, **ignored) -> Backbone:
    """A released checkpoint on its base model (a local folder), as a Backbone that reads it as it was trained."""
    from diffret_pyserini.model.packaged import set_offline_env

    set_offline_env()
    path = Path(path)
    released = read_released(path)
    if base_model is None:
        raise ModelLoadError(f"{path}: a released DiffRetriever checkpoint holds the LoRA adapter only; name the "
                             f"base {released.kind} model folder with base_model=DIR (--base_model DIR)")
    problems = adapter_problems(path)
    if problems:
        raise ModelLoadError(f"{path}: {'; '.join(problems)}")
    read_json(path / "adapter_config.json")  # malformed JSON: one line naming the file
    base = resolve_path(base_model)
    read_hf_config(base)
    if released.denoise_steps > 1:
        log.info(f"{path}: num_denoise_steps {released.denoise_steps} in its config; read in one pass here")
    dev = parse_device(device)
    torch_dtype = default_dtype(dev, dtype)
    # the base's own code runs only where asked for and no native class serves it; the released folder's never runs
    native = loads_natively(released.kind, read_hf_config(base), trust_remote_code)
    require_trust(base, released.kind, [base], trust_remote_code, native=native)
    tokenizer = _tokenizer(path, base, trust_remote_code)
    try:
        model = load_model(released.kind, base, torch_dtype, trust_remote_code)
    except Exception as err:
        raise ModelLoadError(f"{base}: the {released.kind} model does not load: {one_line(err)}") from err
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except Exception as err:
        raise ModelLoadError(f"{path}: the LoRA adapter does not load: {one_line(err)}") from err
    model.to(dev).eval()
    tail = tail_ids(tokenizer, released.n_tail)
    # The reference cuts the text to max_length minus the prompt around it (slots and tail are extra).
    settings = {"kq": released.k["query"], "kp": released.k["passage"],
                **{f"{r}_max_length": max(1, released.max_length - len(released.prefix[r]) - len(released.suffix[r]))
                   for r in ROLES}}
    spec = ModelSpec(path=path, kind=released.kind, base_path=base, adapter_path=path, settings=settings)
    layouts = {r: (released.prefix[r], released.suffix[r], tail) for r in ROLES}
    backbone = BACKBONE_CLASSES[released.kind](model, tokenizer, released.mask_id, dev, torch_dtype, name=str(path),
                                               spec=spec, prompt_layouts=layouts)
    if released.mask_id >= backbone.vocab_size:
        raise ModelLoadError(f"{path}/{RETRIEVER_CONFIG}: mask_token_id {released.mask_id} is outside the base "
                             f"model's vocabulary ({backbone.vocab_size})")
    return backbone


def load_any(name_or_path: str | os.PathLike, base_model: str | os.PathLike | None = None, **options) -> Backbone:
    """`load_backbone`, or `load_released` for a released checkpoint (the only kind of folder that needs
    `base_model`)."""
    if is_released(resolve_path(name_or_path)):
        return load_released(resolve_path(name_or_path), base_model, **options)
    if base_model is not None:
        raise ModelLoadError(f"{name_or_path}: base_model= is for released DiffRetriever checkpoints (a folder "
                             f"with {RETRIEVER_CONFIG}); this folder names its own weights")
    return load_backbone(name_or_path, **options)
