"""Evaluation: trec_eval through Pyserini's jar, reports, significance and per-query analysis, run files.

    trec_eval.py     evaluate_run (every metric in one trec_eval call), metrics.json, tables and charts
    significance.py  per-topic significance of every row against the BM25 row, and which rows are peers
    per_query.py     per-query analysis over a grid of runs: best fixed cell, per-query oracle, paired tests
    runs.py          TREC run files: read and write atomically
"""
