"""diffret_pyserini: DiffRetriever representations for Pyserini.

Kept import-light on purpose: a start-up hook imports `diffret_pyserini.startup` in every interpreter.
"""
__version__ = "0.1.0"
