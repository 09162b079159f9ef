"""The package as users install it: a wheel, not the editable install the tests run from.

The wheel must hold the start-up hook at the root of site-packages (diffret_pyserini.pth: without it
`python -m pyserini.*` gets neither Java nor our encoders) and every data file of the package; its metadata
states ranges, not the development environment's pins. The slow test installs it into a fresh venv (the
dependencies lent from this environment) and runs the CLIs from there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "diffret_pyserini"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this checkout (hatchling from the test extra: no build isolation, no network)."""
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(out.glob("diffret_pyserini-*.whl"))


def package_files() -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_wheel_holds_the_start_up_hook_and_every_package_file(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        assert whl.read("diffret_pyserini.pth") == (REPO / "diffret_pyserini.pth").read_bytes()
        metadata = Parser().parsestr(whl.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
                                     .decode())
    assert package_files() - names == set()
    assert "diffret_pyserini/resources/java-logging.properties" in names
    assert "diffret_pyserini/data/cacm/corpus.jsonl" in names
    assert metadata["Requires-Python"] == ">=3.11"
    requires = {r.split(";")[0].replace(" ", "") for r in metadata.get_all("Requires-Dist")}
    assert not [r for r in requires if "==" in r], "dependencies are ranges (constraints/ holds the pins)"
    assert {"transformers<6,>=4.46", "pyserini<2,>=1.6", "openai<2.34"} <= requires


@pytest.mark.slow
def test_the_installed_wheel_runs_the_pipeline_help_and_pyserini_encode(wheel, tmp_path):
    """`pip install` of the wheel into a fresh venv; its dependencies come from this environment through a .pth
    line (a path there is not a site directory, so this checkout's editable install stays invisible)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_lent_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAVA_HOME", "DIFFRET_JAVA_HOME")}

    def run(*args):
        proc = subprocess.run([str(python), *args], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = json.loads(run("-c", "import diffret_pyserini, json, os; "
                                 "print(json.dumps([diffret_pyserini.__file__, os.environ.get('JAVA_HOME')]))"))
    assert Path(where[0]).is_relative_to(site) and where[1]  # the wheel's package; the hook set JAVA_HOME
    assert "usage: python -m diffret_pyserini.pipeline" in run("-m", "diffret_pyserini.pipeline", "--help")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "c.jsonl").write_text(
        '{"id": "d1", "contents": "xylophone tuning with zebrafish acoustics"}\n'
        '{"id": "d2", "contents": "operating systems and time sharing"}\n')
    run("-m", "pyserini.encode", "input", "--corpus", "corpus", "output", "--embeddings", "sparse", "encoder",
        "--encoder", "diffret-sparse:splade-tiny", "--batch-size", "2", "--device", "cpu")
    docs = [json.loads(x) for x in (tmp_path / "sparse" / "embeddings.jsonl").read_text().splitlines()]
    assert [d["id"] for d in docs] == ["d1", "d2"] and "tuning" in docs[0]["vector"]
