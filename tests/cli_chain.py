"""Runs `python -m MODULE ARGS...` commands one after another in ONE interpreter, each exactly as `python -m`
would (runpy, `__main__`, its own sys.argv): Pyserini's CLIs import pyserini.encode, transformers and a JVM
before doing anything, about 9 s of CPU per command, so a chain pays it once. What differs from separate
interpreters: imported modules and the JVM are shared, so a command sees what earlier ones left in them (as in
one Python session calling each CLI's main); each command's own `__main__` runs fresh.

    python tests/cli_chain.py CHAIN.json     # [{"argv": ["pyserini.search.faiss", ...], "stdout": "out.txt"}, ...]

A command that raises or exits non-zero stops the chain: its module and arguments go to stderr, then exit 1.
"""
from __future__ import annotations

import contextlib
import json
import runpy
import subprocess
import sys
import traceback
from pathlib import Path


def run_chain(commands: list[list[str]], cwd: Path, stdout: dict[int, str] | None = None) -> None:
    """Run `commands` (each a module and its arguments) in one fresh interpreter in `cwd`; command i's stdout goes
    to the file `stdout[i]` (relative to cwd) when given. Asserts that every command succeeded."""
    stdout = stdout or {}
    chain = [{"argv": [str(a) for a in cmd], "stdout": stdout.get(i)} for i, cmd in enumerate(commands)]
    spec = Path(cwd) / "chain.json"
    spec.write_text(json.dumps(chain))
    proc = subprocess.run([sys.executable, __file__, str(spec)], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _run_one(argv: list[str]) -> None:
    sys.argv = list(argv)
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code not in (None, 0):
            raise


def main(spec: str) -> int:
    for command in json.loads(Path(spec).read_text()):
        out = open(command["stdout"], "w") if command["stdout"] else contextlib.nullcontext(sys.stdout)
        try:
            with out as stream, contextlib.redirect_stdout(stream):
                _run_one(command["argv"])
        except BaseException:  # noqa: BLE001 - name the command, then its traceback
            sys.stderr.write(f"python -m {' '.join(command['argv'])}\n{traceback.format_exc()}")
            return 1
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
