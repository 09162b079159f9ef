"""`python -m diffret_pyserini.index`: compressed indexes over what the encoder wrote.

    # dense: a FAISS dir (index + docid) -> another FAISS dir with an HNSW / IVF-PQ / SQ8 / SQfp16 index;
    # Pyserini's FaissSearcher (and `python -m pyserini.search.faiss --index OUT`) reads it unchanged
    python -m diffret_pyserini.index faiss --input OUT/dense --output OUT/dense-hnsw --type hnsw
    python -m diffret_pyserini.index faiss --input OUT/dense --output OUT/dense-ivfpq --type ivfpq --nprobe 64
    # multi-vector: store dtype (float16 -> int8 codes + per-vector scales), and a prebuilt candidate index
    python -m diffret_pyserini.index multi --input OUT/multi --output OUT/multi-int8 --dtype int8
    python -m diffret_pyserini.index candidates --input OUT/multi --output OUT/multi/candidates.faiss --type ivfpq
    #   then MultiVectorSearcher(OUT/multi, index_cache=OUT/multi/candidates.faiss)

Search-time knobs (--nprobe, --ef-search) are saved inside the index file, where FaissSearcher finds them.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from diffret_pyserini.cli import OneLineArgumentParser, configure_logging, guarded, pop_debug
from diffret_pyserini.index.faiss_dirs import INDEX_TYPES, IndexSettings

LOG = logging.getLogger(__name__)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 1")
    return number


def _index_flags(p: argparse.ArgumentParser, default_type: str) -> None:
    p.add_argument("--type", default=default_type, choices=INDEX_TYPES, help=f"index type (default {default_type})")
    p.add_argument("--factory", help="any FAISS index_factory string instead of --type (inner-product metric)")
    p.add_argument("--nlist", type=_positive, help="IVF lists (default ~4 sqrt(n), a power of two)")
    p.add_argument("--nprobe", type=_positive, default=32, help="IVF lists visited per query (default 32)")
    p.add_argument("--pq-m", type=_positive, help="PQ sub-quantisers; must divide the dimension "
                   "(default: largest divisor <= min(64, dim/4))")
    p.add_argument("--pq-nbits", type=_positive, help="bits per PQ code (default 8; fewer on tiny inputs)")
    p.add_argument("--hnsw-m", type=_positive, default=32, help="HNSW neighbours per node (default 32)")
    p.add_argument("--ef-construction", type=_positive, default=200, help="HNSW build beam (default 200)")
    p.add_argument("--ef-search", type=_positive, default=128, help="HNSW search beam (default 128)")
    p.add_argument("--train-size", type=_positive, help="training vectors (default 40 per IVF list)")
    p.add_argument("--threads", type=_positive, help="FAISS threads (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.index", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dense = sub.add_parser("faiss", help="FAISS dir -> FAISS dir with another index type (FaissSearcher reads it)")
    dense.add_argument("--input", required=True, help="FAISS dir (index + docid), e.g. OUT/dense")
    dense.add_argument("--output", required=True, help="new FAISS dir (index + docid + index.json)")
    _index_flags(dense, "hnsw")
    multi = sub.add_parser("multi", help="copy a multi-vector store into another dtype")
    multi.add_argument("--input", required=True, help="multi-vector store folder")
    multi.add_argument("--output", required=True, help="new store folder")
    multi.add_argument("--dtype", required=True, choices=("float16", "float32", "int8"), help="store dtype")
    cand = sub.add_parser("candidates", help="build MultiVectorSearcher's candidate index into a file")
    cand.add_argument("--input", required=True, help="multi-vector store folder")
    cand.add_argument("--output", required=True, help="index file (pass it as index_cache=)")
    _index_flags(cand, "ivfpq")
    return parser


def settings_from(args: argparse.Namespace) -> IndexSettings:
    return IndexSettings(type=args.type, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m,
                         pq_nbits=args.pq_nbits, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                         ef_search=args.ef_search, train_size=args.train_size, factory=args.factory)


def run(args: argparse.Namespace) -> dict:
    """Do one sub-command; returns what it built (printed as JSON)."""
    if args.command == "faiss":
        from diffret_pyserini.index.faiss_dirs import build_dense_dir

        return build_dense_dir(args.input, args.output, settings_from(args), args.threads)
    if args.command == "multi":
        from diffret_pyserini.index.multivector import convert_store

        start = time.perf_counter()
        store = convert_store(args.input, args.output, args.dtype)
        return {"output": args.output, **store.meta, "seconds": time.perf_counter() - start}
    import faiss

    from diffret_pyserini.atomic import atomic_path
    from diffret_pyserini.index.faiss_dirs import index_code_bytes, set_search_params
    from diffret_pyserini.index.multivector import MultiVectorStore, build_candidate_index, candidate_index_spec

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    settings = settings_from(args)
    store = MultiVectorStore.load(args.input)
    spec = candidate_index_spec(store, args.factory or args.type, settings)
    index = set_search_params(build_candidate_index(store, spec, settings), nprobe=args.nprobe)
    with atomic_path(Path(args.output)) as tmp:
        faiss.write_index(index, str(tmp))
    return {"output": args.output, "factory": spec, "ntotal": int(index.ntotal),
            "code_bytes": index_code_bytes(index), "seconds": time.perf_counter() - start}


def main(argv: Sequence[str] | None = None) -> int:
    args_list, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    configure_logging()
    code, result = guarded(lambda: run(args), debug)
    if code == 0:
        print(json.dumps(result, indent=1, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
