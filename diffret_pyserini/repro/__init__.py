"""Reproduction matrix of the paper's comparison (`python -m diffret_pyserini.repro`; see __main__.py).

    matrix.py      conditions (system x backbone x zero-shot / fine-tuned x K), datasets, each cell's commands
    check.py       expected figures (expected.yaml), [OK] / [FAIL] checks, the reproduction table
    expected.yaml  figures measured with this package (CACM, CACM without titles) and the paper's (BEIR-7)
"""
