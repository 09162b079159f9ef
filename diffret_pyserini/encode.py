"""`python -m diffret_pyserini.encode`: pyserini.encode's sub-command interface, every representation at once.

    python -m diffret_pyserini.encode \\
        input   --corpus corpus.jsonl [--shard-id 0 --shard-num 1] \\
        output  --embeddings out/ [--representations dense multi sparse] [--overwrite] \\
        encoder --encoder splade-tiny [--kp 16 --batch-size 32 --max-length 256 --device auto]

One forward pass per batch gives dense (FAISS dir `out/dense`: index + docid), multi-vector (`out/multi`) and
sparse (`out/sparse/embeddings.jsonl`, JsonVectorCollection) outputs. A killed run resumes where it stopped;
every output file is written atomically. With `input --topics FILE` it encodes queries instead:
`out/dense/embedding.pkl` (for `pyserini.search.faiss --encoded-queries`), `out/sparse.jsonl` (for
`pyserini.search.lucene --impact --encoder`), `out/multi` and a Pyserini-safe `out/topics.tsv`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from diffret_pyserini.cli import USER_ERRORS
from diffret_pyserini.datasets import Document, count_corpus, iter_corpus, load_queries
from diffret_pyserini.encoding import REPRESENTATIONS, DiffRetEncoder
from diffret_pyserini.fingerprint import fingerprint, path_digest


def batched(docs: Iterator[Document], size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shard_range(total: int, shard_id: int, shard_num: int) -> tuple[int, int]:
    """Docs [start, end) of one shard, split as pyserini.encode splits them (the last shard takes the rest)."""
    size = total // shard_num
    start = shard_id * size
    return start, total if shard_id == shard_num - 1 else start + size


def encoder_fingerprint(encoder: DiffRetEncoder) -> dict:
    """What determines the vectors: the model files and the encoder settings."""
    spec = encoder.backbone.spec
    model = {"path": path_digest(spec.path), "kind": spec.kind, "read_offset": encoder.backbone.read_offset,
             "slot": encoder.backbone.slot_id, "dtype": str(encoder.backbone.dtype)}
    if spec.base_path != spec.path:
        model["base"] = path_digest(spec.base_path)
    return {"model": model, "settings": encoder.settings.to_dict()}


def encode_corpus(encoder: DiffRetEncoder, corpus: str | Path, out_dir: str | Path,
                  representations: Sequence[str] = REPRESENTATIONS, batch_size: int = 32,
                  max_length: int | None = None, shard_id: int = 0, shard_num: int = 1,
                  overwrite: bool = False, multi_dtype: str = "float16", chunk_size: int = 1024) -> dict:
    """Stream `corpus` through the encoder into resumable, atomic outputs; returns {representation: path}."""
    from diffret_pyserini.writers import RepresentationShardWriter

    fp = fingerprint(corpus=path_digest(corpus), encoder=encoder_fingerprint(encoder), max_length=max_length,
                     shard=[shard_id, shard_num])
    writer = RepresentationShardWriter(out_dir, representations, chunk_size=chunk_size, fingerprint=fp,
                                       overwrite=overwrite, shard_id=shard_id, shard_num=shard_num,
                                       multi_dtype=multi_dtype)
    if writer.manifest.get("finalized"):
        return writer.finalize()
    start, end = shard_range(count_corpus(corpus), shard_id, shard_num)
    done = writer.completed_docs()
    todo = end - start - done
    docs = (doc for i, doc in enumerate(iter_corpus(corpus, start=start + done)) if i < todo)
    with tqdm(total=end - start, initial=done, desc=f"encode {Path(corpus).name}", unit="doc") as bar:
        for batch in batched(docs, batch_size):
            out = encoder.encode([d.contents for d in batch], "passage", want=representations,
                                 max_length=max_length)
            writer.write_batch([d.docid for d in batch], [d.contents for d in batch], dense=out.dense,
                               multi=out.multi, multi_mask=out.multi_valid, sparse=out.sparse)
            bar.update(len(batch))
    return writer.finalize()


def encode_queries(encoder: DiffRetEncoder, queries: dict[str, str], out_dir: str | Path,
                   representations: Sequence[str] = REPRESENTATIONS, batch_size: int = 32) -> dict:
    """Encode queries into the files Pyserini's search CLIs read (see the module docstring)."""
    import numpy as np

    from diffret_pyserini.datasets import write_topics_tsv
    from diffret_pyserini.writers import write_query_embeddings_pkl, write_query_multi, write_query_sparse_jsonl

    out = Path(out_dir)
    qids, texts = list(queries), [" ".join(t.split()) for t in queries.values()]
    dense, multi, valid, sparse = [], [], [], []
    for i in tqdm(range(0, len(texts), batch_size), desc="encode queries", unit="batch"):
        enc = encoder.encode(texts[i:i + batch_size], "query", want=representations)
        dense += [] if enc.dense is None else list(enc.dense)
        multi += [] if enc.multi is None else list(enc.multi)
        valid += [] if enc.multi_valid is None else list(enc.multi_valid)
        sparse += enc.sparse or []
    paths = {"topics": write_topics_tsv(dict(zip(qids, texts)), out / "topics.tsv")}
    if "dense" in representations:
        paths["dense"] = write_query_embeddings_pkl(out / "dense", texts, np.stack(dense))
    if "sparse" in representations:
        paths["sparse"] = write_query_sparse_jsonl(out / "sparse.jsonl", qids, texts, sparse)
    if "multi" in representations:
        paths["multi"] = write_query_multi(out / "multi", qids, np.stack(multi), np.stack(valid))
    return paths


# ------------------------------------------------------------------------------------------------------ CLI
def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="python -m diffret_pyserini.encode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="sub-commands")
    inp = commands.add_parser("input", help="what to encode")
    inp.add_argument("--corpus", help="jsonl file or folder of jsonl files (BEIR or Pyserini fields)")
    inp.add_argument("--topics", help="queries to encode instead: BEIR queries.jsonl, qid<TAB>text TSV or TREC")
    inp.add_argument("--fields", nargs="+", default=None, help="accepted for pyserini.encode compatibility; "
                     "title and text are always joined as 'title text'")
    inp.add_argument("--shard-id", type=int, default=0, help="0-based shard of the corpus to encode")
    inp.add_argument("--shard-num", type=int, default=1, help="number of shards the corpus is split into")
    out = commands.add_parser("output", help="where to write")
    out.add_argument("--embeddings", required=True, help="output folder (dense/, multi/, sparse/ inside)")
    out.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS), choices=REPRESENTATIONS,
                     help="which outputs to write (all from the same single pass)")
    out.add_argument("--multi-dtype", default="float16", choices=["float16", "float32"],
                     help="storage type of the multi-vector store")
    out.add_argument("--overwrite", action="store_true", help="discard earlier work made with other settings")
    out.add_argument("--chunk-size", type=int, default=1024,
                     help="documents per committed chunk: a killed run loses at most this many (default 1024)")
    enc = commands.add_parser("encoder", help="which model and settings")
    enc.add_argument("--encoder", required=True, help="model folder or packaged name (splade-tiny, smollm2), "
                     "optionally as a spec 'NAME?kp=16&top_n=128'")
    enc.add_argument("--kind", choices=["dream", "llada", "masked", "bidirectional", "causal"],
                     help="backbone kind (default: read off the model's config)")
    enc.add_argument("--kq", type=int, help="slots appended to queries (default 4)")
    enc.add_argument("--kp", type=int, help="slots appended to passages (default 16)")
    enc.add_argument("--batch-size", type=int, default=32)
    enc.add_argument("--max-length", type=int, default=None, help="max TEXT tokens (prompt and slots extra); "
                     "default 256 for passages, 64 for queries")
    enc.add_argument("--top-n", type=int, help="vocabulary entries kept per slot for sparse (default 128)")
    enc.add_argument("--no-content-filter", action="store_true",
                     help="let sparse vectors hold any vocabulary term, not only the text's content tokens")
    enc.add_argument("--prompts", help="JSON file overriding prompt templates")
    enc.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    enc.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (bf16 on GPU, fp32 on CPU)")
    enc.add_argument("--fp16", action="store_true", help="same as --dtype float16")
    return parser, {"input": inp, "output": out, "encoder": enc}


def parse_args(argv: Sequence[str]) -> dict[str, argparse.Namespace]:
    """Split argv at the sub-command names, as pyserini.encode does, and parse each part."""
    parser, subs = build_parser()
    parts: dict[str, list[str]] = {}
    current = None
    for arg in argv:
        if arg in subs:
            current = arg
            parts[current] = []
        elif current is None:
            parser.parse_args([arg])  # --help, or an error naming the stray argument
        else:
            parts[current].append(arg)
    missing = [name for name in ("input", "output", "encoder") if name not in parts]
    if missing:
        parser.error(f"missing sub-command(s): {', '.join(missing)}")
    args = {name: subs[name].parse_args(rest) for name, rest in parts.items()}
    if bool(args["input"].corpus) == bool(args["input"].topics):
        subs["input"].error("give exactly one of --corpus or --topics")
    return args


def make_encoder(args: argparse.Namespace) -> DiffRetEncoder:
    from diffret_pyserini.pyserini_encoders import get_encoder

    overrides = {k: v for k, v in {"kq": args.kq, "kp": args.kp, "top_n": args.top_n,
                                   "prompts": args.prompts}.items() if v is not None}
    if args.no_content_filter:
        overrides["content_filter"] = False
    load = {"kind": args.kind} if args.kind else {}
    dtype = "float16" if args.fp16 else args.dtype
    if dtype != "auto":
        load["dtype"] = dtype
    return get_encoder(args.encoder, device=args.device, **load, **overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    inp, out, enc = args["input"], args["output"], args["encoder"]
    try:
        encoder = make_encoder(enc)
        if inp.topics:
            paths = encode_queries(encoder, load_queries(inp.topics), out.embeddings, out.representations,
                                   enc.batch_size)
        else:
            paths = encode_corpus(encoder, inp.corpus, out.embeddings, out.representations, enc.batch_size,
                                  enc.max_length, inp.shard_id, inp.shard_num, out.overwrite, out.multi_dtype,
                                  out.chunk_size)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
