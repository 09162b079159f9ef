"""Checks run before a model folder is loaded, so that bad input ends in ONE line that names the folder.

- Remote code: a folder whose config maps its classes to Python files it ships (`auto_map`), or a Dream/LLaDA
  kind loaded through its own code, runs that Python when loaded. Without `trust_remote_code=True` that is
  refused here, before transformers imports any of it. Dream and LLaDA load natively by default (`native.py`):
  then only the tokenizer's own code, if any, needs the flag.
- Files: weights that are missing or whose safetensors header is unreadable (truncated, not a safetensors
  file), a sharded index naming absent shards, no tokenizer files, an adapter folder without its files.
- Devices: `--device` strings are parsed strictly; asking for CUDA where there is none is an error, not a
  silent fall-back to the CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

from diffret_pyserini.cli import InputError, one_line

# Kinds whose checkpoints ship their own model code (Dream, LLaDA): gated when that code is to run, whatever
# their config says.
REMOTE_CODE_KINDS = ("dream", "llada")
TRUST_HINT = "pass --trust-remote-code (trust_remote_code=True) to run it"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# Files that carry a vocabulary; tokenizer_config.json alone does not.
TOKENIZER_FILE_PATTERNS = ("tokenizer.json", "vocab.*", "*.model", "*.tiktoken")


MAX_MESSAGE = 300  # a loader's own message can be a page long; one line keeps its start


class ModelLoadError(InputError):
    """A model folder that cannot be loaded as asked; the one-line message names the folder and the problem."""


def read_json(path: Path) -> dict:
    """A JSON object from `path`, {} when absent; a ModelLoadError naming the file when unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: unreadable: {one_line(err)}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------------ remote code
def auto_map_files(auto_map: object) -> list[str]:
    """Python files an `auto_map` points at: 'modeling_x.Cls' -> modeling_x.py ('repo--module.Cls' too)."""
    if not isinstance(auto_map, dict):
        return []
    refs: list[str] = []
    for value in auto_map.values():
        refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    return sorted({ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in refs if "." in ref})


def _native_config(model_type: object) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return isinstance(model_type, str) and model_type in CONFIG_MAPPING


def _native_tokenizer(class_name: object) -> bool:
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    if not isinstance(class_name, str):
        return False
    names = [class_name] if class_name.endswith("Fast") else [class_name, class_name + "Fast"]
    return any(tokenizer_class_from_name(name) is not None for name in names)


def remote_code_files(folder: Path, model_code: bool = True) -> list[str]:
    """The Python files loading `folder` would import: those its config or tokenizer config maps classes to,
    unless transformers has its own code for that model type or tokenizer class (it then ignores auto_map).
    `model_code=False`: the model is built natively, so only the tokenizer's code counts."""
    files: list[str] = []
    config = read_json(folder / "config.json")
    if model_code and config.get("auto_map") and not _native_config(config.get("model_type")):
        files += auto_map_files(config["auto_map"])
    tokenizer = read_json(folder / "tokenizer_config.json")
    if tokenizer.get("auto_map") and not _native_tokenizer(tokenizer.get("tokenizer_class")):
        files += auto_map_files(tokenizer["auto_map"])
    return sorted(set(files))


def require_trust(model: Path, kind: str, folders: list[Path], trust_remote_code: bool,
                  native: bool = False) -> None:
    """Refuse, before anything is imported, to load a model that runs its own code unless it is trusted.

    `model` is what the user named (for the message); `folders` are where weights and tokenizer come from;
    `native`: the model is built from transformers' own classes (Dream, LLaDA), its folder's code never runs.
    """
    if trust_remote_code:
        return
    found: list[str] = []
    for folder in dict.fromkeys(folders):  # the same folder twice when weights and tokenizer share it
        for name in remote_code_files(folder, model_code=not native):
            path = folder / name
            found.append(name if folder == model else str(path))
    if not found and (native or kind not in REMOTE_CODE_KINDS):
        return
    if not found:  # a Dream/LLaDA kind with no auto_map: name whatever Python the folders hold
        found = [p.name if p.parent == model else str(p)
                 for folder in dict.fromkeys(folders) for p in sorted(folder.glob("*.py"))]
    what = ", ".join(dict.fromkeys(found)) if found else "its model code"
    raise ModelLoadError(f"{model}: loading it would run Python code shipped with the model ({what}); "
                         f"{TRUST_HINT}")


# ------------------------------------------------------------------------------------------------ files
def _safetensors_problem(path: Path) -> str | None:
    """None when the header reads; otherwise what is wrong (safe_open checks the header covers the file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return None
    except Exception as err:  # SafetensorError is not exported under a stable name across versions
        return f"{path.name} is corrupt or truncated ({one_line(err)})"


def weights_problems(folder: Path) -> list[str]:
    """What is wrong with the model weights in `folder` ([] when they look loadable)."""
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        return ["no model weights (model.safetensors, pytorch_model.bin or a sharded *.index.json)"]
    problems = []
    for name in present:
        if name.endswith(".index.json"):
            index = read_json(folder / name)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict):
                problems.append(f"{name}: weight_map: missing")
                continue
            shards = sorted(set(map(str, weight_map.values())))
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                problems.append(f"{name} names missing shard(s) {', '.join(missing)}")
            problems += [p for s in shards if s.endswith(".safetensors") and s not in missing
                         for p in [_safetensors_problem(folder / s)] if p]
        elif name.endswith(".safetensors"):
            problem = _safetensors_problem(folder / name)
            if problem:
                problems.append(problem)
    return problems


def tokenizer_problems(folder: Path) -> list[str]:
    """What is wrong with the tokenizer files in `folder` ([] when some vocabulary file is there)."""
    # A tokenizer with its own code may keep its vocabulary anywhere; its loader reports what it misses.
    if read_json(folder / "tokenizer_config.json").get("auto_map"):
        return []
    if any(any(folder.glob(pattern)) for pattern in TOKENIZER_FILE_PATTERNS):
        return []
    return ["no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a sentencepiece *.model)"]


def adapter_problems(folder: Path) -> list[str]:
    """What is wrong with a LoRA adapter folder ([] when its config and weights are there)."""
    if not folder.is_dir():
        return ["the adapter folder is missing"]
    problems = [] if (folder / "adapter_config.json").is_file() else ["no adapter_config.json"]
    weights = [name for name in ADAPTER_WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        problems.append("no adapter weights (adapter_model.safetensors or adapter_model.bin)")
    elif weights[0].endswith(".safetensors"):
        problems += [p for p in [_safetensors_problem(folder / weights[0])] if p]
    return problems


def require_files(weights: Path, tokenizer: Path, adapter: Path | None) -> None:
    """One ModelLoadError listing every problem found, grouped by folder, or nothing."""
    found = {weights: weights_problems(weights)}
    found[tokenizer] = found.get(tokenizer, []) + tokenizer_problems(tokenizer)
    if adapter is not None:
        found[adapter] = found.get(adapter, []) + adapter_problems(adapter)
    parts = [f"{folder}: {'; '.join(problems)}" for folder, problems in found.items() if problems]
    if parts:
        raise ModelLoadError(" | ".join(parts))


# ------------------------------------------------------------------------------------------------ devices
