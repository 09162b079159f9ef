"""How `python -m pyserini.encode` finds our encoder without a fork.

Pyserini's CLI picks the encoder class by walking `pyserini.encode.document_encoder_class_map` and taking the
first key that is a substring of the lower-cased `--encoder` value. When `pyserini.encode` is imported (the
start-up hook in diffret_pyserini.pth watches for it), `register` rebuilds that map with our key `diffret`
FIRST (so 'diffret-sparse:/models/splade' is not taken by the 'splade' key), and makes a folder saved by us
(it holds diffret_config.json) match whatever its name is.
"""
from __future__ import annotations

import sys
from pathlib import Path

KEY = "diffret"


def _diffret_folder_in_argv() -> str | None:
    """The `--encoder` value of this command line when it names a folder holding diffret_config.json."""
    argv = sys.argv
    for i, arg in enumerate(argv[:-1]):
        if arg == "--encoder":
            value = argv[i + 1]
            folder = Path(value.split("?", 1)[0])
            if (folder / "diffret_config.json").is_file():
                return value.lower()
    return None


class DiffRetClassMap(dict):
    """Pyserini's class map with our encoder first, plus a dynamic entry for our saved model folders."""

    def __init__(self, original: dict, encoder_class):
        super().__init__({KEY: encoder_class, **{k: v for k, v in original.items() if k != KEY}})
        self.encoder_class = encoder_class

    def __iter__(self):
        folder = _diffret_folder_in_argv()
        if folder is not None and not dict.__contains__(self, folder):
            yield folder
        yield from dict.__iter__(self)

    def __missing__(self, key):
        if key == _diffret_folder_in_argv():
            return self.encoder_class
        raise KeyError(key)


def register(module=None) -> None:
    """Put our encoders into pyserini.encode's class maps (idempotent)."""
    ours = sys.modules.get("diffret_pyserini.pyserini_encoders")
    if ours is not None and not hasattr(ours, "DiffRetQueryEncoder"):
        return  # our module is importing pyserini.encode right now; it calls register() when it is done
    if module is None:
        import pyserini.encode as module
    from diffret_pyserini.pyserini_encoders import DiffRetDocumentEncoder, DiffRetQueryEncoder

    if not isinstance(module.document_encoder_class_map, DiffRetClassMap):
        module.document_encoder_class_map = DiffRetClassMap(module.document_encoder_class_map,
                                                            DiffRetDocumentEncoder)
    if KEY not in module.query_encoder_class_map:
        module.query_encoder_class_map = {KEY: DiffRetQueryEncoder, **module.query_encoder_class_map}
    module.DiffRetDocumentEncoder = DiffRetDocumentEncoder
    module.DiffRetQueryEncoder = DiffRetQueryEncoder
