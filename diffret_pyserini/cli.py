"""The shared driver of our dataclass-argument CLIs (pipeline, train, train.mine): parse, run, and turn the
errors a user can cause into one line on stderr and exit status 2 instead of a traceback."""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from diffret_pyserini.datasets import DatasetError

USER_ERRORS = (DatasetError, ValueError, FileNotFoundError, RuntimeError)


def run_dataclass_cli(dataclass_types: Sequence[type], run: Callable[..., Any], prog: str, description: str | None,
                      argv: Sequence[str] | None = None, print_result: bool = False) -> int:
    """Parse `argv` into `dataclass_types` with HfArgumentParser, call `run(*parsed)`; 0 on success, 2 on a
    user error (printed as `error: ...`). `print_result` prints what `run` returns (a path, for scripts)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(dataclass_types), description=description)
    parser.prog = prog
    parsed = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    try:
        result = run(*parsed)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if print_result:
        print(result)
    return 0
