"""The packaged collections (cacm, cacm-notitle: BEIR layout) and `derive.py`, which made cacm-notitle."""
