"""README.md is the front door, and what it shows works: every `python -m ... --help` it shows exits 0 and prints
its usage, every flag its commands use is one their CLI takes, every `make` target it or the docs name exists.
README.md stays under 15 KB; every relative link of README.md, docs/**/*.md and the indexes/ and runs/ READMEs
points at a file that exists (and at a heading that exists, for an anchor); no page names a build machine's
absolute path or narrates sessions.

The --help commands run in ONE interpreter, each exactly as `python -m` runs it (runpy, `__main__`, its own
sys.argv), as tests/cli_chain.py does: Pyserini's CLIs import pyserini, transformers and a JVM first (several
seconds each), which a single interpreter pays once.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md")), REPO / "indexes" / "README.md", REPO / "runs" / "README.md"]
MAX_README_BYTES = 15_000
# Pyserini CLIs whose --help is not Python's (Anserini's indexer prints "use -options"; trec_eval takes it for a
# run file): their README commands are checked for the module only, not for flags.
NO_PYTHON_HELP = {"pyserini.index.lucene", "pyserini.eval.trec_eval"}
FLAG = re.compile(r"^--[A-Za-z0-9][\w-]*")

# Runs each module's `--help`, then `MODULE SUB --help` for each asked-for word that the usage line offers as a
# sub-command ({a,b,c}); prints {module: {"": [exit code, output], SUB: [...]}} as JSON on the last line.
RUNNER = r"""
import contextlib, io, json, re, runpy, sys, warnings
warnings.simplefilter("ignore")
def run(argv):
    out, code = io.StringIO(), 0
    sys.argv = list(argv)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException as err:  # noqa: BLE001 - reported, not raised: the test names the command
        code, out = 1, io.StringIO(out.getvalue() + f"\n{type(err).__name__}: {err}")
    return [code, out.getvalue()]
result = {}
for module, words in json.loads(sys.argv[1]).items():
    top = run([module, "--help"])
    result[module] = {"": top}
    usage = top[1].split("\n\n")[0]
    subs = {s for group in re.findall(r"\{([\w,-]+)\}", usage) for s in group.split(",")}
    for word in words:
        if word in subs:
            result[module][word] = run([module, word, "--help"])
sys.__stdout__.write("\n" + json.dumps(result) + "\n")
"""


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def logical_lines(block: str) -> list[str]:
    """Shell lines with `\\` continuations joined and here-document bodies left out."""
    lines, current, heredoc = [], "", None
    for raw in block.splitlines():
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        marker = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", raw)
        if marker:
            heredoc = marker.group(1)
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    return [line for line in lines if line.strip()]


def shell_commands(text: str) -> list[list[str]]:
    """The words of every command in the page's bash blocks (comments dropped)."""
    out = []
    for lang, body in fenced_blocks(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in logical_lines(body):
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def python_module_commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, its arguments) of every `python -m MODULE ...` (or `torchrun ... -m MODULE ...`) command."""
    found = []
    for words in shell_commands(text):
        runner = Path(words[0]).name
        if (runner.startswith("python") or runner == "torchrun") and "-m" in words:
            i = words.index("-m")
            found.append((words[i + 1], words[i + 2:]))
    return found


def readme_commands() -> list[tuple[str, list[str]]]:
    return python_module_commands(README.read_text(encoding="utf-8"))


def help_commands() -> list[str]:
    return [module for module, args in readme_commands() if args == ["--help"]]


@lru_cache(maxsize=1)
def helps() -> dict[str, dict[str, list]]:
    """{module: {"": [code, output of --help], SUB: [...]}} for every module the README's commands run."""
    wanted: dict[str, set[str]] = {}
    for module, args in readme_commands():
        if module not in NO_PYTHON_HELP:
            wanted.setdefault(module, set()).update(a for a in args if re.fullmatch(r"[a-z][\w-]*", a))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    spec = json.dumps({m: sorted(w) for m, w in wanted.items()})
    proc = subprocess.run([sys.executable, "-c", RUNNER, spec], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_readme_is_under_15_kb():
    assert README.stat().st_size <= MAX_README_BYTES, f"README.md is {README.stat().st_size} bytes"


def test_the_readme_shows_the_two_commands_and_every_cli_help():
    words = shell_commands(README.read_text(encoding="utf-8"))
    assert ["make", "demo"] in words and ["make", "test"] in words
    shown = set(help_commands())
    for cli in ("diffret_pyserini.pipeline", "diffret_pyserini.encode", "diffret_pyserini.index",
                "diffret_pyserini.index.dense_postprocess", "diffret_pyserini.pipeline.peers", "diffret_pyserini.train",
                "diffret_pyserini.train.mine", "diffret_pyserini.train.default", "diffret_pyserini.sweep",
                "diffret_pyserini.bench", "diffret_pyserini.bench.shaped_model", "diffret_pyserini.model.convert_gguf",
                "diffret_pyserini.data.derive"):
        assert cli in shown, f"README.md does not show `python -m {cli} --help`"


@pytest.mark.parametrize("module", help_commands())
def test_every_readme_help_command_exits_0_and_prints_usage(module):
    code, output = helps()[module][""]
    assert code == 0, f"python -m {module} --help exited {code}:\n{output[-2000:]}"
    assert "usage:" in output.lower(), f"python -m {module} --help printed no usage:\n{output[-2000:]}"


def test_every_flag_of_a_readme_command_is_in_its_help():
    """A renamed or removed flag breaks the README's command: its CLI's help (and its sub-commands') no longer
    lists it."""
    missing = []
    for module, args in readme_commands():
        if module in NO_PYTHON_HELP or args == ["--help"]:
            continue
        texts = helps()[module]
        assert all(code == 0 for code, _ in texts.values()), f"python -m {module}: a --help failed: {texts}"
        known = "\n".join(output for _, output in texts.values())
        for arg in args:
            flag = FLAG.match(arg)
            if flag and not re.search(rf"(?<![\w-]){re.escape(flag.group())}(?![\w-])", known):
                missing.append(f"python -m {module} ... {flag.group()}")
    assert missing == []


def module_file(module: str) -> bool:
    """Whether `python -m module` has a file to run, found without importing anything."""
    import importlib.util

    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return False
    base = Path(spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin)
    path = base.joinpath(*rest)
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def test_every_python_module_the_readme_and_docs_run_exists():
    missing = [(page.relative_to(REPO).as_posix(), module) for page in PAGES
               for module, _ in python_module_commands(page.read_text(encoding="utf-8"))
               if module.split(".")[0] in ("diffret_pyserini", "pyserini") and not module_file(module)]
    assert missing == []


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


def test_every_make_target_the_readme_and_docs_name_exists():
    targets = make_targets()
    assert {"demo", "test", "venv", "models"} <= targets
    named = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for words in shell_commands(text):
            if words[0] == "make":
                named.update((page.name, w) for w in words[1:] if not w.startswith("-") and "=" not in w)
        for inline in re.findall(r"`make ([a-z][\w -]*)`", text):
            named.update((page.name, w) for w in inline.split())
    assert {(page, t) for page, t in named if t not in targets} == set()


def strip_code(text: str) -> str:
    """The page without its fenced blocks and inline code (links and headings in code are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.sub(r"^```.*?^```", "", page.read_text(
            encoding="utf-8"), flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_every_relative_link_points_at_an_existing_file():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", strip_code(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == []


ABSOLUTE_BUILD_PATH = re.compile(r"(?<![\w.~/$-])/(?:work|tmp|root)/")
NARRATION = re.compile(r"\bsessions?\b", re.I)


def test_the_checks_find_planted_narration():
    assert ABSOLUTE_BUILD_PATH.search("see /work/main/models") and ABSOLUTE_BUILD_PATH.search("(`/tmp/x`)")
    assert not ABSOLUTE_BUILD_PATH.search("out/work/shard-000 and $OUT/tmp/ and ~/tmp/")
    assert NARRATION.search("as measured in this Session") and not NARRATION.search("sessionless")


def test_no_page_names_a_build_machine_path_or_narrates_sessions():
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if ABSOLUTE_BUILD_PATH.search(line) or NARRATION.search(line):
                found.append(f"{page.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert found == []


def test_no_published_record_names_a_build_machine_path():
    """The JSON records beside the docs (bench and results) hold paths relative to where they were made."""
    found = [f"{path.relative_to(REPO)}:{number}"
             for path in sorted((REPO / "docs").rglob("*.json"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if ABSOLUTE_BUILD_PATH.search(line)]
    assert found == []


def test_bench_records_are_written_with_portable_paths(tmp_path):
    from diffret_pyserini.bench.report import portable_paths

    record = {"out": str(tmp_path / "bench"), "rows": [{"corpus": "/elsewhere/data/c.jsonl", "k": 4}],
              "note": "a /plain string", "relative": "docs/x.json"}
    assert portable_paths(record, tmp_path) == {"out": "bench", "rows": [{"corpus": "c.jsonl", "k": 4}],
                                                "note": "a /plain string", "relative": "docs/x.json"}
