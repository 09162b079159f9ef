"""`python -m diffret_pyserini.encode`: pyserini.encode's sub-command interface, every representation at once.

    python -m diffret_pyserini.encode \\
        input   --corpus corpus.jsonl [--shard-id 0 --shard-num 1] \\
        output  --embeddings out/ [--representations dense multi sparse] [--overwrite] \\
        encoder --encoder splade-tiny [--kp 16 --batch-size 32 --max-length 256 --device auto] [--trust-remote-code]
                [--max-tokens 8192] [--length-buckets false] [--ray local|ADDRESS --ray-workers N]

One forward pass per batch gives dense (FAISS dir `out/dense`: index + docid), multi-vector (`out/multi`) and
sparse (`out/sparse/embeddings.jsonl`, JsonVectorCollection) outputs. A killed run resumes where it stopped;
every output file is written atomically. With `input --topics FILE` it encodes queries instead:
`out/dense/embedding.pkl` (for `pyserini.search.faiss --encoded-queries`), `out/sparse.jsonl` (for
`pyserini.search.lucene --impact --encoder`), `out/multi` and a Pyserini-safe `out/topics.tsv`.
Each committed chunk is batched by token length (--max-tokens caps a batch's padded tokens) and written back
in corpus order. With `--ray local` (a Ray instance on this machine) or `--ray ADDRESS` (a cluster) the corpus
is encoded in blocks by Ray Data actors and merged into the same outputs (encode/ray_data.py).
The encoder sub-command takes every model and encoder flag of the other CLIs (arguments.py); the jobs
themselves are encode/jobs.py.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from diffret_pyserini.cli import (
    ArgumentError,
    OneLineArgumentParser,
    check_at_least,
    check_writable,
    configure_logging,
    dataclass_parser,
    guarded,
    pop_debug,
)
from diffret_pyserini.model.arguments import EncoderOverrides, EncodingArguments, ModelLoadArguments
from diffret_pyserini.model.encoder import REPRESENTATIONS


@dataclass
class EncoderCommand(EncodingArguments, EncoderOverrides, ModelLoadArguments):
    """The `encoder` sub-command: the shared model and encoder flags, plus pyserini.encode's own."""

    max_length: Optional[int] = field(default=None, metadata={
        "help": "max TEXT tokens (prompt and slots extra); default: passage_max_length or query_max_length"})
    fp16: bool = field(default=False, metadata={"help": "same as --dtype float16 (pyserini.encode's flag)"})


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one parser per sub-command (input, output, encoder)."""
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.encode", description=__doc__)
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
    out.add_argument("--representations", nargs="+", default=None, choices=REPRESENTATIONS,
                     help="which outputs to write (all from the same single pass); default: every one the "
                          "encoder makes (dense only for --kind diffembed / repllama)")
    out.add_argument("--multi-dtype", default="float16", choices=["float16", "float32", "int8"],
                     help="storage type of the multi-vector store")
    out.add_argument("--overwrite", action="store_true", help="discard earlier work made with other settings")
    out.add_argument("--chunk-size", type=int, default=1024,
                     help="documents per committed chunk: a killed run loses at most this many (default 1024)")
    enc = dataclass_parser([EncoderCommand], prog="python -m diffret_pyserini.encode encoder")
    enc.add_argument("--no-content-filter", dest="content_filter", action="store_false", default=None,
                     help="same as --content_filter false")
    commands.add_parser("encoder", help="which model and settings (the flags every CLI of ours shares); "
                        "`encoder --help` lists them")
    return parser, {"input": inp, "output": out, "encoder": enc}


def parse_args(argv: Sequence[str]) -> dict[str, argparse.Namespace | EncoderCommand]:
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
    for name, rest in parts.items():
        if "-h" in rest or "--help" in rest:
            subs[name].parse_args(rest)  # prints that sub-command's help and exits
    missing = [name for name in ("input", "output", "encoder") if name not in parts]
    if missing:
        parser.error(f"missing sub-command(s): {', '.join(missing)}")
    args: dict = {name: subs[name].parse_args(parts[name]) for name in ("input", "output")}
    (args["encoder"],) = subs["encoder"].parse_args_into_dataclasses(parts["encoder"])
    if bool(args["input"].corpus) == bool(args["input"].topics):
        subs["input"].error("give exactly one of --corpus or --topics")
    return args


def make_encoder(args: EncoderCommand):
    """The cached encoder for the sub-command's model, load options and setting overrides."""
    from diffret_pyserini.model.spec import get_encoder

    load = args.load_options()
    if args.fp16:
        load["dtype"] = "float16"
    return get_encoder(args.model, device=args.device, **load, **args.settings())


def validate(args: dict) -> None:
    """Every flag checked before the model loads or a document is read."""
    inp, out, enc = args["input"], args["output"], args["encoder"]
    enc.check_model_load()
    enc.check_settings()
    enc.check_encoding()
    if enc.max_length is not None:
        check_at_least("max_length", enc.max_length, 1)
    check_at_least("chunk-size", out.chunk_size, 1)
    check_writable("embeddings", out.embeddings)
    if out.multi_dtype == "int8" and inp.shard_num > 1:
        raise ArgumentError("--multi-dtype int8 with --shard-num > 1: merge float16 shards first, then "
                            "`python -m diffret_pyserini.index multi --dtype int8`")
    check_at_least("shard-num", inp.shard_num, 1)
    if not 0 <= inp.shard_id < inp.shard_num:
        raise ArgumentError(f"--shard-id {inp.shard_id}: must be in [0, {inp.shard_num - 1}] (--shard-num "
                            f"{inp.shard_num})")


def run(args: dict) -> dict:
    """Encode what `args` (from `parse_args`) names; returns {output name: path}."""
    from dataclasses import replace

    from diffret_pyserini.datasets import load_queries
    from diffret_pyserini.encode.jobs import encode_corpus, encode_queries
    from diffret_pyserini.model.encoder import DiffRetEncoder

    validate(args)
    inp, out, enc = args["input"], args["output"], args["encoder"]
    if enc.ray is not None and inp.corpus:
        return run_ray(args)
    encoder = make_encoder(enc)
    role_length = "query_max_length" if inp.topics else "passage_max_length"
    checked = replace(encoder.settings, **{role_length: enc.max_length}) if enc.max_length else encoder.settings
    DiffRetEncoder(encoder.backbone, checked).check_lengths()
    representations = out.representations or encoder.representations
    if inp.topics:
        return encode_queries(encoder, load_queries(inp.topics), out.embeddings, representations,
                              enc.batch_size)
    return encode_corpus(encoder, inp.corpus, out.embeddings, corpus_options(out, enc, representations),
                         shard_id=inp.shard_id, shard_num=inp.shard_num)


def corpus_options(out, enc, representations: Sequence[str]):
    """The EncodeOptions of the output and encoder flag groups (`representations` already resolved)."""
    from diffret_pyserini.encode.jobs import EncodeOptions

    return EncodeOptions(tuple(representations), max_length=enc.max_length, chunk_size=out.chunk_size,
                         multi_dtype=out.multi_dtype, overwrite=out.overwrite, **enc.encoding_options())


def run_ray(args: dict) -> dict:
    """The corpus encoded on Ray Data (encode/ray_data.py): each actor loads the model, the driver does not."""
    from diffret_pyserini.encode.ray_data import EncoderRecipe, encode_corpus_ray

    inp, out, enc = args["input"], args["output"], args["encoder"]
    if inp.shard_num > 1:
        raise ArgumentError(f"--shard-num {inp.shard_num}: with --ray the blocks are the shards; give one or "
                            "the other")
    load = enc.load_options()
    if enc.fp16:
        load["dtype"] = "float16"
    settings = enc.settings()
    if enc.max_length:
        settings["passage_max_length"] = enc.max_length
    recipe = EncoderRecipe(enc.model, enc.device, load, settings)
    from diffret_pyserini.model.recipes import RECIPE_KINDS

    representations = out.representations or (("dense",) if enc.kind in RECIPE_KINDS else REPRESENTATIONS)
    return encode_corpus_ray(recipe, inp.corpus, out.embeddings, corpus_options(out, enc, representations),
                             enc.ray, enc.ray_workers)


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    configure_logging()
    code, paths = guarded(lambda: run(args), debug)
    for name, path in (paths or {}).items():
        print(f"{name}\t{path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
