"""The main job: a dataset folder and a model -> indexes, TREC runs, metrics.json, a table and a chart.

    python -m diffret_pyserini.pipeline                      # CACM (shipped) + SPLADE-tiny (packaged)
    python -m diffret_pyserini.pipeline --dataset DIR --model FOLDER --kq 4 --kp 16

Stages (each skipped when its recorded content fingerprint - inputs, model, settings - still matches;
`--force` redoes them):
 1. BM25 index of title + text          indexes/<dataset>/bm25/index
 2. encode the corpus once (one pass)   indexes/<dataset>/<model>-kp<Kp>/{dense,multi,sparse}   (resumable)
 3. encode the queries                  indexes/<dataset>/<model>-kq<Kq>/queries/
 4. Lucene impact index                 indexes/<dataset>/<model>-kp<Kp>/impact   (pyserini.index.lucene)
    indexes/<dataset>/<tag>/ (tag = <model>-kq<Kq>-kp<Kp>) links to both, so a sweep over K encodes the
    corpus once per Kp and the queries once per Kq
 5. search every system                 runs/<dataset>/<tag>/<system>.trec
 6. trec_eval                           runs/<dataset>/<tag>/metrics.{json,md,png}

<dataset> is the packaged name (cacm), or a folder's name plus a short hash of its resolved path, so two
datasets never share a folder. Modules: arguments.py (flags), cells.py (one (Kq, Kp) cell), stages.py
(the job), driver.py (parse and call).
"""
from __future__ import annotations

from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.pipeline.stages import run, wants_finetune


def main(argv=None) -> int:
    """`python -m diffret_pyserini.pipeline` (see pipeline/driver.py)."""
    from diffret_pyserini.pipeline.driver import main as _main

    return _main(argv)


__all__ = ["PipelineArguments", "run", "wants_finetune", "main"]
