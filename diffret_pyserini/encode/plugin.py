"""How Pyserini's CLIs find our encoders without a fork: the one place that registers them.

`python -m pyserini.encode` (document map) and `python -m pyserini.search.faiss` (query map) pick an encoder
class by walking a class map in `pyserini.encode` and taking the first key that is a substring of the
lower-cased `--encoder` value. When `pyserini.encode` has been imported (the start-up hook in
diffret_pyserini.pth watches for it), `register` puts our key `diffret` FIRST in both maps (so
'diffret-sparse:/models/splade' is not taken by the 'splade' key), plus, for this command line, the
`--encoder` value itself when it names a folder saved by us (it holds diffret_config.json), whatever its name.

The map entries are factories that import our encoder classes when Pyserini calls them: registration runs
while `pyserini.encode` is still being imported by whoever imported it, possibly our own adapter module.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

KEY = "diffret"
CONFIG_FILE = "diffret_config.json"  # backbones.load.DIFFRET_CONFIG, not imported: start-up must stay light


def _build(class_name: str, args, kwargs):
    """Our encoder class, built inside Pyserini's process. Pyserini's CLIs have no error boundary, so our own
    error types (a model that is not there, a bad spec) end the process here as one line `error: ...`, as our
    CLIs do; every other exception is a bug and keeps its traceback (as does everything under --debug's
    environment switch DIFFRET_DEBUG=1)."""
    from diffret_pyserini.cli import DEBUG_ENV, UserError, one_line
    from diffret_pyserini.encode import pyserini_encoders

    try:
        return getattr(pyserini_encoders, class_name)(*args, **kwargs)
    except UserError as err:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        raise SystemExit(f"error: {one_line(err)}") from None


def document_encoder(*args, **kwargs):
    """`DiffRetDocumentEncoder(*args, **kwargs)`, imported on first use."""
    return _build("DiffRetDocumentEncoder", args, kwargs)


def query_encoder(*args, **kwargs):
    """`DiffRetQueryEncoder(*args, **kwargs)`, imported on first use."""
    return _build("DiffRetQueryEncoder", args, kwargs)


def saved_folder_keys(argv: Sequence[str]) -> list[str]:
    """The lower-cased `--encoder` values of `argv` that name a folder holding diffret_config.json."""
    keys = []
    for flag, value in zip(argv, argv[1:]):
        if flag == "--encoder" and (Path(value.split("?", 1)[0]) / CONFIG_FILE).is_file():
            keys.append(value.lower())
    return keys


def _put_first(table: dict, keys: Sequence[str], factory) -> None:
    # In place: Pyserini's CLI modules hold a reference to the dict itself.
    rest = {k: v for k, v in table.items() if k not in keys}
    table.clear()
    table.update({k: factory for k in keys})
    table.update(rest)


def register(module=None, argv: Sequence[str] | None = None) -> None:
    """Put our encoders first in pyserini.encode's class maps (idempotent)."""
    if module is None:
        import pyserini.encode as module
    keys = [KEY, *saved_folder_keys(sys.argv if argv is None else argv)]
    _put_first(module.document_encoder_class_map, keys, document_encoder)
    _put_first(module.query_encoder_class_map, keys, query_encoder)
