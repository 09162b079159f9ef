"""Adaptive per-query budget selection: pick Kq for each query from signals that need no relevance labels.

    signals.py   label-free signals: slot statistics of the query's own pass, score spread (NQC-style) of its
                 first-stage run, agreement between the runs of several Kq
    select.py    the selectors (slot, nqc, agree, learned) and the fusion baseline (RRF over the Kq runs)
    learned.py   the small learned selector, trained on pseudo-queries made from the corpus (never test topics)

`--kq auto` (encode and search at each candidate Kq, select per query, write the run) is the pipeline's
stage pipeline/adaptive_k.py, which calls these.

Every selector is deterministic and reads only query texts, encodings and runs; qrels are never an input.
"""
METHODS = ("slot", "nqc", "agree", "learned", "fuse")
