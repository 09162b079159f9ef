"""What every CLI of ours shares: logging set-up, argument conventions, the dataclass-argument driver, and ONE
error boundary.

Failures the user causes and can fix end as one line `error: ...` on stderr and exit status 2: the project's
own error types (`UserError` and its subclasses: bad input files, flags, model folders, devices, Java or
trec_eval failures) and OS errors that name a file. `--debug` (or DIFFRET_DEBUG=1) re-raises them so the
traceback shows. Anything else, a `ValueError` from numpy or a `RuntimeError` from torch included, is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence


class UserError(Exception):
    """A failure the user caused and can fix; CLIs print its message as one line."""


class InputError(UserError, ValueError):
    """Bad input: a file's content, a flag's value, a setting (the message names which)."""


class ToolError(UserError, RuntimeError):
    """An external tool (Java, Pyserini's CLIs, trec_eval, a child process) failed; the message says where
    its log is."""


# OS errors that are about the user's files or disk, not about our code.
_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR,
                errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EMFILE}
DEBUG_ENV = "DIFFRET_DEBUG"
LOG_FORMAT = "[%(name)s] %(message)s"


def is_user_error(err: BaseException) -> bool:
    """Our own error types, OS errors about a named file or the disk, and Java exceptions from Pyserini's JVM
    (matched by name: jnius must not be imported here, it would need a JVM)."""
    if isinstance(err, (UserError, subprocess.SubprocessError)):
        return True
    if isinstance(err, OSError) and (err.filename is not None or err.errno in _FILE_ERRNOS):
        return True
    return type(err).__name__ == "JavaException"


def one_line(err: BaseException, limit: int | None = None) -> str:
    """The error message on one line (Java and subprocess messages span several), its type when the message is
    empty, cut to `limit` characters when given (a library's own message can run to pages)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def configure_logging(level: int = logging.INFO) -> None:
    """Our loggers ('diffret_pyserini.*', shown by their last part) to stderr, once per process."""
    root = logging.getLogger("diffret_pyserini")
    if not any(getattr(h, "_diffret", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_ShortNameFormatter(LOG_FORMAT))
        handler._diffret = True
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False  # Pyserini configures the root logger too: without this every line shows twice


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (a handler holding the stream it was made
    with breaks once that stream is swapped and closed, as by a test's capture or a daemon's redirect)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ShortNameFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.name = record.name.rsplit(".", 1)[-1]
        return super().format(record)


class OneLineErrors:
    """Mixin for argparse parsers: a bad flag is `error: ...` in one line with exit 2, not a usage screen."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (--help lists the flags)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs and examples as written (argparse would join them into one)."""


class DefaultsHelpFormatter(HelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The same, plus each flag's default (the dataclass CLIs, whose help strings do not repeat it)."""


def either_spelling(args: Sequence[str], known: Sequence[str]) -> list[str]:
    """`args` with each long flag spelled as `known` spells it: `--batch_size` and `--batch-size` are one flag,
    as Pyserini's users type either. Nothing after a bare `--` is touched."""
    known = set(known)
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if name in known:
            continue
        for other in (name.replace("_", "-"), "--" + name[2:].replace("-", "_")):
            if other in known:
                out[i] = other + eq + value
                break
    return out


class OneLineArgumentParser(OneLineErrors, argparse.ArgumentParser):
    """argparse.ArgumentParser with the project's conventions: one-line errors, every long flag accepted in both
    spellings (`--a-b`, `--a_b`), and the description printed with its paragraphs. Sub-parsers inherit them."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(either_spelling(args, self._option_string_actions), namespace)


def dataclass_parser(dataclass_types: Sequence[type], **kwargs):
    """transformers.HfArgumentParser over `dataclass_types`, with one-line errors and the description's paragraphs
    kept (HfArgumentParser itself accepts `--a_b` and `--a-b` for every field)."""
    from transformers import HfArgumentParser

    class Parser(OneLineErrors, HfArgumentParser):
        def parse_args_into_dataclasses(self, *args, **kwargs):
            # HfArgumentParser raises ValueError for flags no dataclass takes, and the dataclasses' own checks
            # raise while parsing (TrainingArguments.__post_init__; ImportError for a flag that needs a package
            # not installed: --deepspeed, --report_to wandb): flag problems, so one line and exit 2.
            try:
                return super().parse_args_into_dataclasses(*args, **kwargs)
            except (ValueError, ImportError) as err:
                self.error(one_line(err))

    kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
    return Parser(list(dataclass_types), **kwargs)


def pop_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug`, and whether tracebacks were asked for (flag or DIFFRET_DEBUG)."""
    rest = [a for a in argv if a != "--debug"]
    return rest, len(rest) != len(argv) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def guarded(call: Callable[[], Any], debug: bool = False) -> tuple[int, Any]:
    """Run `call()`; (0, result), or (2, None) after printing `error: ...` for a user error."""
    try:
        return 0, call()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130, None
    except Exception as err:  # noqa: BLE001 - sorted by is_user_error, re-raised otherwise
        if debug or not is_user_error(err):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2, None


def run_dataclass_cli(dataclass_types: Sequence[type], run: Callable[..., Any], prog: str, description: str | None,
                      argv: Sequence[str] | None = None, print_result: bool = False,
                      validate: Callable[..., None] | None = None) -> int:
    """Parse `argv` into `dataclass_types` with HfArgumentParser, call `validate(*parsed)` then `run(*parsed)`
    inside the error boundary; 0 on success, 2 on a user error. `print_result` prints what `run` returns."""
    args, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    parser = dataclass_parser(dataclass_types, description=description, prog=prog)
    parsed = parser.parse_args_into_dataclasses(args=args)
    configure_logging()

    def call():
        if validate is not None:
            validate(*parsed)
        return run(*parsed)

    code, result = guarded(call, debug)
    if code == 0 and print_result:
        print(result)
    return code


def check_at_least(name: str, value, low: int) -> None:
    """One line naming the flag when `value` is not an integer >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArgumentError(f"--{name} {value!r}: must be an integer >= {low}")


def check_writable(name: str, folder: str | os.PathLike) -> None:
    """One line naming the flag when `folder` cannot be created or written (found before the work, not after)."""
    path = Path(folder).resolve()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ArgumentError(f"--{name} {folder}: {existing} is not a folder")
    try:  # a real probe: os.access says yes to root even where a write fails (read-only or immutable)
        fd, probe = tempfile.mkstemp(prefix=".diffret-write-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ArgumentError(f"--{name} {folder}: cannot write in {existing} ({err.strerror})") from None


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ArgumentError(f"--{name} {value!r}: must be one of {', '.join(map(str, choices))}")


class ArgumentError(InputError):
    """A bad flag value, in one line naming the flag and what is allowed."""
