"""Searchers: multi-vector MaxSim (``MultiVectorSearcher``) and robust hybrid fusion (``RobustHybridSearcher``).

Attributes load lazily: importing Pyserini's search modules starts the JVM (several seconds), which plain
``import diffret_pyserini.search`` should not pay for.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MultiVectorSearcher", "RobustHybridSearcher"]

_WHERE = {"MultiVectorSearcher": "maxsim", "RobustHybridSearcher": "hybrid"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
