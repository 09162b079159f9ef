"""Model folder (or packaged model name) -> Backbone, always from local files, never from a hub.

A folder may be a plain Hugging Face checkpoint or one of ours: `diffret_config.json` beside an optional LoRA
adapter or full weights (written by `diffret_pyserini.train`), naming the base model, the backbone kind and the
encoder settings it was trained with.

Dream and LLaDA load natively by default: into transformers' own Qwen2 / Llama classes run non-causally
(`native.py`), no code from the folder. Python code shipped with a model (Dream's and LLaDA's own modeling files,
any config with `auto_map`) runs only with `trust_remote_code=True`, which also makes Dream/LLaDA folders load
through their own code (for diffusion LMs without a native class, and to compare with it). Every folder problem
found before or during loading is one `ModelLoadError` line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from diffret_pyserini.cli import one_line
from diffret_pyserini.model.backbones.base import Backbone
from diffret_pyserini.model.backbones.bidirectional import (
    BidirectionalDecoderBackbone,
    DreamBackbone,
    LLaDABackbone,
    MaskedLMBackbone,
)
from diffret_pyserini.model.backbones.causal import CausalBackbone
from diffret_pyserini.model.backbones.checks import MAX_MESSAGE, ModelLoadError, read_json, require_files, require_trust
from diffret_pyserini.model.backbones.native import NATIVE_KINDS, adapter_problem, has_native_class, load_native
from diffret_pyserini.model.device import default_dtype, parse_device
from diffret_pyserini.model.recipes import DEFAULT_RECIPE, ONE_PASS_KINDS, RECIPE_KINDS, split_kind

DIFFRET_CONFIG = "diffret_config.json"
# Architectures, then the baselines' recipes read from them (model/recipes.py: diffembed, repllama).
KINDS = ("dream", "llada", "masked", "bidirectional", "causal", *RECIPE_KINDS)
# Reserved tokens that can serve as slots for decoders that have no mask token of their own.
SLOT_TOKEN_CANDIDATES = ("<|mask|>", "<empty_output>", "<|fim_pad|>", "<|reserved_special_token_0|>")
BACKBONE_CLASSES = {"dream": DreamBackbone, "llada": LLaDABackbone, "masked": MaskedLMBackbone,
                    "bidirectional": BidirectionalDecoderBackbone, "causal": CausalBackbone}


@dataclass
class ModelSpec:
    """Where the weights are and how to run them (read from a folder, overridable by the caller)."""

    path: Path
    kind: str
    base_path: Path
    adapter_path: Path | None = None
    slot_token: str | None = None
    read_offset: int = 0
    settings: dict = field(default_factory=dict)  # encoder settings saved with a fine-tuned model
    recipe: str = DEFAULT_RECIPE  # or a baseline read from the same architecture (model/recipes.py)


def resolve_path(name_or_path: str | os.PathLike) -> Path:
    from diffret_pyserini.model.packaged import resolve_model_path

    return Path(resolve_model_path(str(name_or_path)))


def read_hf_config(path: Path) -> dict:
    """The folder's config.json as a dict; a ModelLoadError when it is missing or not a JSON object."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path}: not a model folder (no config.json)")
    return read_json(config_file)


def detect_kind(config: dict, prefer_causal: bool = False) -> str:
    """Backbone kind from a Hugging Face config: Dream, LLaDA, masked LM, or a decoder (bidirectional/causal)."""
    model_type = str(config.get("model_type", "")).lower()
    archs = [str(a) for a in config.get("architectures") or []]
    if model_type == "dream" or any(a.startswith("Dream") for a in archs):
        return "dream"
    if model_type == "llada" or any(a.startswith("LLaDA") for a in archs):
        return "llada"
    if any(a.endswith("ForMaskedLM") for a in archs):
        return "masked"
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal" if prefer_causal else "bidirectional"
    raise ModelLoadError(f"cannot tell the backbone kind of model_type={model_type!r} architectures={archs}; "
                         f"pass kind= one of {KINDS}")


def read_spec(name_or_path: str | os.PathLike, kind: str | None = None) -> ModelSpec:
    """Resolve a name/folder and read our config if present; `kind` overrides what the folder says. A recipe
    kind (diffembed, repllama) keeps its name in `recipe`, and `kind` becomes the architecture it runs on."""
    return with_recipe(_read_folder_spec(name_or_path, kind))


def with_recipe(spec: ModelSpec) -> ModelSpec:
    """A spec whose kind names a recipe, split into (architecture kind, recipe); others unchanged."""
    recipe, arch = split_kind(spec.kind)
    if recipe == DEFAULT_RECIPE:
        return spec
    if arch is None:
        arch = detect_kind(read_hf_config(spec.base_path))
        if arch not in ONE_PASS_KINDS:
            raise ModelLoadError(f"{spec.path}: kind {recipe} needs a one-pass backbone ({', '.join(ONE_PASS_KINDS)})"
                                 f", not {arch}")
    return replace(spec, kind=arch, recipe=recipe)


def _read_folder_spec(name_or_path: str | os.PathLike, kind: str | None = None) -> ModelSpec:
    if kind is not None and kind not in KINDS:
        raise ModelLoadError(f"unknown backbone kind {kind!r}; expected one of {KINDS}")
    path = resolve_path(name_or_path)
    ours = path / DIFFRET_CONFIG
    if ours.is_file():
        meta = read_json(ours)
        base = meta.get("base_model")
        if not base:
            raise ModelLoadError(f"{ours}: base_model: missing")
        if base == ".":
            base_path = path
        elif (path / base).is_dir():
            base_path = path / base
        else:  # an absolute folder or a packaged model name
            base_path = resolve_path(base)
        adapter = meta.get("adapter")
        if meta.get("kind") is not None and meta["kind"] not in KINDS:
            raise ModelLoadError(f"{ours}: kind: {meta['kind']!r} is not one of {KINDS}")
        return ModelSpec(path=path, kind=kind or meta.get("kind") or detect_kind(read_hf_config(base_path)),
                         base_path=base_path, adapter_path=(path / adapter) if adapter else None,
                         slot_token=meta.get("slot_token"), read_offset=int(meta.get("read_offset", 0)),
                         settings=dict(meta.get("settings") or {}))
    from diffret_pyserini.model.packaged import packaged_settings

    config = read_hf_config(path)
    return ModelSpec(path=path, kind=kind or detect_kind(config), base_path=path,
                     settings=packaged_settings(name_or_path))


def slot_token_id(kind: str, config: dict, tokenizer, slot_token: str | None, where: Path) -> int:
    """The id placed in the K slots: the checkpoint's mask id for diffusion LMs, [MASK] for masked LMs.

    The mask id is read from the checkpoint's config.json itself, not from the config class, whose default
    (Dream's is 151666) would hide a checkpoint that has none.
    """
    if slot_token is not None:
        ids = tokenizer.convert_tokens_to_ids([slot_token])
        if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ModelLoadError(f"{where}: slot_token {slot_token!r} is not in the vocabulary")
        return int(ids[0])
    if kind in ("dream", "llada"):
        mask_id = config.get("mask_token_id")
        if mask_id is None:
            raise ModelLoadError(f"{where}/config.json: mask_token_id: missing; a diffusion LM needs its mask "
                                 "id (Dream 151666, LLaDA 126336)")
        return int(mask_id)
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    if kind == "causal":
        return int(tokenizer.eos_token_id or 0)  # unused: generation produces the positions
    vocab = tokenizer.get_vocab()
    for candidate in SLOT_TOKEN_CANDIDATES:
        if candidate in vocab:
            return int(vocab[candidate])
    raise ModelLoadError(f"{where}: the tokenizer has no mask token; name a reserved token with slot_token=")


def loads_natively(kind: str, config: dict, trust_remote_code: bool = False) -> bool:
    """Whether a `kind` folder with this config.json is built from transformers' own classes (`native.py`):
    Dream and LLaDA unless their own code is asked for and there (auto_map); a folder we saved from a native
    model (qwen2 / llama) always."""
    if kind not in NATIVE_KINDS or not has_native_class(config):
        return False
    ships_code = bool(config.get("auto_map")) and str(config.get("model_type", "")).lower() not in ("qwen2", "llama")
    return not (trust_remote_code and ships_code)


def load_model(kind: str, path: Path, dtype: torch.dtype, trust_remote_code: bool = False):
    """The transformers model of `kind` from `path`, offline. `trust_remote_code` as in transformers: without it,
    transformers refuses a folder that needs its own code (`load_backbone` refuses earlier, in one line)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    from diffret_pyserini.model.hf_compat import dtype_kwargs

    common = dict(local_files_only=True, trust_remote_code=trust_remote_code, **dtype_kwargs(dtype))
    if kind in NATIVE_KINDS:
        config = read_hf_config(path)
        if loads_natively(kind, config, trust_remote_code):
            return load_native(path, config, dtype)
        return AutoModel.from_pretrained(path, **common)
    # transformers' own architectures (the native decoder path, masked LMs, the causal baseline): PyTorch SDPA
    # attention, asked for by name rather than left to a default that has changed between releases. SDPA takes
    # the 4D additive mask of the bidirectional path as given; an architecture without SDPA falls back.
    cls = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    try:
        return cls.from_pretrained(path, **common, attn_implementation="sdpa")
    except ValueError:  # an architecture without SDPA support: its default attention
        return cls.from_pretrained(path, **common)


# The classes that read tokenizer.json as it is (transformers 4 and 5 names). Given one of them in
# tokenizer_config.json, AutoTokenizer in transformers 5 still prefers the class of config.json's model_type
# (Qwen2Tokenizer for a saved Dream), which rebuilds the pipeline from vocab and merges: another tokenizer.
_AS_SAVED = ("PreTrainedTokenizerFast", "TokenizersBackend")


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer of a folder, offline: the class its tokenizer_config.json names when that class reads
    tokenizer.json as it is, else what AutoTokenizer picks."""
    import transformers

    name = read_json(path / "tokenizer_config.json").get("tokenizer_class")
    if name in _AS_SAVED and (path / "tokenizer.json").is_file() and hasattr(transformers, name):
        return getattr(transformers, name).from_pretrained(path, local_files_only=True)
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)


def load_backbone(name_or_path: str | os.PathLike, kind: str | None = None, device: str | None = None,
                  dtype: str | torch.dtype | None = None, slot_token: str | None = None,
                  read_offset: int | None = None, stop_early: bool = True,
                  trust_remote_code: bool = False) -> Backbone:
    """Load any supported model as a Backbone, offline. A LoRA adapter in our folder is merged for inference.

    Dream and LLaDA folders load natively (transformers' Qwen2 / Llama, non-causal; no code from the folder).
    `trust_remote_code` (as in transformers) lets a folder's own Python run: Dream/LLaDA then load through their
    own code; any other config with `auto_map` (or a tokenizer with its own code) needs it, and without it raises
    ModelLoadError before any of that code is imported. Every folder problem (missing or corrupt weights, no
    tokenizer, ...) is a one-line ModelLoadError naming the folder; a bad `device` is a DeviceError.
    """
    from transformers.utils import logging as hf_logging

    from diffret_pyserini.model.packaged import set_offline_env

    set_offline_env()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers 5 draws a "Loading weights" bar on stderr at every load
    dev = parse_device(device)
    spec = read_spec(name_or_path, kind)
    torch_dtype = default_dtype(dev, dtype)
    tokenizer_path = spec.path if (spec.path / "tokenizer_config.json").is_file() else spec.base_path
    weights = spec.path if (spec.path / "config.json").is_file() and spec.adapter_path is None else spec.base_path
    native = spec.kind in NATIVE_KINDS and loads_natively(spec.kind, read_hf_config(weights), trust_remote_code)
    require_trust(spec.path, spec.kind, [weights, tokenizer_path], trust_remote_code, native=native)
    require_files(weights, tokenizer_path, spec.adapter_path)
    # Past the checks above, what a broken folder raises depends on the library that hits it (tokenizers raises
    # a bare Exception, safetensors its SafetensorError): any failure here is the folder's, said in one line with
    # the original chained for a traceback.
    try:
        tokenizer = load_tokenizer(tokenizer_path, trust_remote_code)
    except Exception as err:
        raise ModelLoadError(f"{tokenizer_path}: the tokenizer does not load: {one_line(err, MAX_MESSAGE)}") from err
    try:
        model = load_model(spec.kind, weights, torch_dtype, trust_remote_code)
    except ModelLoadError:
        raise  # the native loader's own line, naming the folder already
    except Exception as err:
        raise ModelLoadError(f"{weights}: the {spec.kind} model does not load: {one_line(err, MAX_MESSAGE)}") from err
    if spec.adapter_path is not None:
        from peft import PeftModel

        if native and (problem := adapter_problem(spec.adapter_path, read_hf_config(weights))):
            raise ModelLoadError(problem)
        try:
            model = PeftModel.from_pretrained(model, spec.adapter_path).merge_and_unload()
        except Exception as err:
            raise ModelLoadError(f"{spec.adapter_path}: the LoRA adapter does not load: {one_line(err, MAX_MESSAGE)}") from err
    model.to(dev).eval()
    try:
        slot_id = slot_token_id(spec.kind, read_hf_config(weights), tokenizer, slot_token or spec.slot_token,
                                weights)
    except ModelLoadError:
        if spec.recipe == DEFAULT_RECIPE:
            raise
        slot_id = tokenizer.pad_token_id or tokenizer.eos_token_id or 0  # the baselines place no slot token
    cls = BACKBONE_CLASSES[spec.kind]
    extra = {"stop_early": stop_early} if spec.kind == "causal" else {}
    return cls(model, tokenizer, slot_id, dev, torch_dtype,
               read_offset=spec.read_offset if read_offset is None else read_offset, name=str(spec.path), spec=spec,
               **extra)
