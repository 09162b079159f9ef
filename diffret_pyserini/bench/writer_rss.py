"""Peak RSS of the writer path alone at N synthetic documents (run one interpreter per N, so each peak is its own):

    python -m diffret_pyserini.bench.writer_rss 1000000 [WORKDIR]

The scale section's default shapes (Kp=16 x H=128 multi vectors, their mean as the dense vector, 120 Zipfian
terms per sparse document); the outputs are written under WORKDIR and removed. Prints one JSON line.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from diffret_pyserini.bench.common import BenchOptions
from diffret_pyserini.bench.scale import writer_job, writer_spec


def main(argv: list[str]) -> int:
    n = int(argv[0])
    out = tempfile.mkdtemp(dir=argv[1] if len(argv) > 1 else None)
    try:
        r = writer_job(writer_spec(n, BenchOptions(), Path(out)))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"docs": n, "writer_seconds": r["writer_seconds"], "generate_seconds": r["generate_seconds"],
                      "peak_rss_mib": r["peak_rss"] / 2**20}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
