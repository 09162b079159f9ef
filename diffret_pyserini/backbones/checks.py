"""Checks run before a model folder is loaded, so that bad input ends in ONE line that names the folder.

- Remote code: a folder whose config maps its classes to Python files it ships (`auto_map`), or a Dream/LLaDA
  kind, runs that Python when loaded. Without `trust_remote_code=True` that is refused here, before
  transformers imports any of it.
"""
from __future__ import annotations

import json
from pathlib import Path

# Kinds whose checkpoints ship their own model code (Dream, LLaDA): always gated, whatever their config says.
REMOTE_CODE_KINDS = ("dream", "llada")
TRUST_HINT = "pass --trust-remote-code (trust_remote_code=True) to run it"
MAX_MESSAGE = 300


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded as asked; the one-line message names the folder and the problem."""


def one_line(err: BaseException) -> str:
    """An exception as one short line: its type when the message is empty, whitespace runs collapsed."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."


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


def remote_code_files(folder: Path) -> list[str]:
    """The Python files loading `folder` would import: those its config or tokenizer config maps classes to,
    unless transformers has its own code for that model type or tokenizer class (it then ignores auto_map)."""
    files: list[str] = []
    config = read_json(folder / "config.json")
    if config.get("auto_map") and not _native_config(config.get("model_type")):
        files += auto_map_files(config["auto_map"])
    tokenizer = read_json(folder / "tokenizer_config.json")
    if tokenizer.get("auto_map") and not _native_tokenizer(tokenizer.get("tokenizer_class")):
        files += auto_map_files(tokenizer["auto_map"])
    return sorted(set(files))


def require_trust(model: Path, kind: str, folders: list[Path], trust_remote_code: bool) -> None:
    """Refuse, before anything is imported, to load a model that runs its own code unless it is trusted.

    `model` is what the user named (for the message); `folders` are where weights and tokenizer come from.
    """
    if trust_remote_code:
        return
    found: list[str] = []
    for folder in dict.fromkeys(folders):  # the same folder twice when weights and tokenizer share it
        for name in remote_code_files(folder):
            path = folder / name
            found.append(name if folder == model else str(path))
    if not found and kind not in REMOTE_CODE_KINDS:
        return
    if not found:  # a Dream/LLaDA kind with no auto_map: name whatever Python the folders hold
        found = [p.name if p.parent == model else str(p)
                 for folder in dict.fromkeys(folders) for p in sorted(folder.glob("*.py"))]
    what = ", ".join(dict.fromkeys(found)) if found else "its model code"
    raise ModelLoadError(f"{model}: loading it would run Python code shipped with the model ({what}); "
                         f"{TRUST_HINT}")

