"""Convert a GGUF checkpoint into a local Hugging Face model folder (set-up step, run by `make models`).

    python -m diffret_pyserini.model.convert_gguf path/to/model.gguf models/smollm2-135m-instruct

The GGUF is loaded through transformers (``gguf_file=``; needs the ``gguf`` package), dequantised, and saved
with its tokenizer and chat template as a float32 folder (or ``--dtype bfloat16``). The folder is written to
``OUT_DIR.tmp-<pid>`` and renamed into place, so an interrupted run never leaves a half-written model behind.
The result reloads offline with plain ``from_pretrained(OUT_DIR)``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from pathlib import Path

from diffret_pyserini.atomic import atomic_dir
from diffret_pyserini.cli import InputError, OneLineArgumentParser

DTYPES = ("float32", "bfloat16", "float16")
# llama.cpp pre-tokenizer types that split every digit on its own before the GPT-2 regex.
SINGLE_DIGIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


def gguf_metadata(gguf_path: str | os.PathLike, keys: list[str]) -> dict:
    """The given GGUF key/value fields (missing keys are left out)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    return {k: reader.fields[k].contents() for k in keys if k in reader.fields}


@contextlib.contextmanager
def gguf_parsed_once():
    """Parse each GGUF file, and build each tensor-name map, once while converting.

    transformers opens the file afresh for the tokenizer, its config, the model config and the weights, and each
    ``GGUFReader`` walks every metadata field in Python (about 4 s for SmolLM2's 49k-token vocabulary); it then
    rebuilds the same tensor-name map for every one of the model's 397 modules. Those were 31 of the conversion's
    32 s. A reader only memory-maps and reads the file, and a name map is only looked up, so both can be shared.
    """
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers = functools.cache(reader)
    gguf.GGUFReader = lambda path, mode="r": readers(str(Path(path).resolve()), mode)
    gguf.get_tensor_name_map = functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def byte_level_tokenizer(tokenizer, gguf_path: str | os.PathLike):
    """Rebuild a GPT-2-style (byte-level BPE) tokenizer as the GGUF describes it.

    transformers' GGUF loader turns a ``gpt2`` tokenizer into a Llama tokenizer that prepends BOS to every text,
    names BOS as EOS, drops the pre-tokenizer's digit splitting and decodes through a SentencePiece-style chain.
    Here the BPE vocabulary and merges are kept and the rest is set from the GGUF fields (``add_bos_token``,
    special token ids, ``pre``, chat template), which gives back the original Hugging Face tokenizer's behaviour.
    """
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    prefix = "tokenizer.ggml."
    meta = gguf_metadata(gguf_path, [prefix + k for k in (
        "model", "pre", "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "add_bos_token",
        "add_eos_token")] + ["tokenizer.chat_template", "general.architecture"])
    if meta.get(prefix + "model") != "gpt2" or meta.get(prefix + "add_bos_token") or meta.get(prefix + "add_eos_token"):
        return tokenizer
    arch = meta.get("general.architecture")
    context = gguf_metadata(gguf_path, [f"{arch}.context_length"]).get(f"{arch}.context_length")

    backend = tokenizer.backend_tokenizer
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if meta.get(prefix + "pre") in SINGLE_DIGIT_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = byte_level
    backend.normalizer = None
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()

    def token(key):
        idx = meta.get(prefix + key)
        return None if idx is None else backend.id_to_token(int(idx))

    kwargs = {k: v for k, v in {"bos_token": token("bos_token_id"), "eos_token": token("eos_token_id"),
                                 "unk_token": token("unknown_token_id"),
                                 "pad_token": token("padding_token_id")}.items() if v is not None}
    if context:
        kwargs["model_max_length"] = int(context)
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, **kwargs)
    fast.chat_template = meta.get("tokenizer.chat_template") or tokenizer.chat_template
    return fast


def convert(gguf_path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "float32",
            overwrite: bool = False) -> Path:
    """Dequantise ``gguf_path`` into the Hugging Face folder ``out_dir`` (atomic); returns ``out_dir``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffret_pyserini.model.hf_compat import dtype_kwargs, gguf_load_kwargs

    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise InputError(f"{gguf_path}: no such GGUF file")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")

    folder, name = str(gguf_path.parent), gguf_path.name
    with gguf_parsed_once():
        tokenizer = byte_level_tokenizer(AutoTokenizer.from_pretrained(folder, gguf_file=name), gguf_path)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **dtype_kwargs(getattr(torch, dtype)),
                                                     **gguf_load_kwargs())
    model.eval()

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        # tokenizer.json only: a slow-tokenizer "vocab file" here would be a copy of the whole GGUF.
        tokenizer.save_pretrained(tmp, legacy_format=False)
        for f in tmp.iterdir():  # make the files durable and readable before the rename publishes the folder
            f.chmod(0o644)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(
        prog="python -m diffret_pyserini.model.convert_gguf",
        description="Convert a GGUF checkpoint to a local Hugging Face model folder (tokenizer and chat "
                    "template included). Nothing is downloaded.")
    parser.add_argument("gguf", help="path to the .gguf file")
    parser.add_argument("out_dir", help="model folder to create (written to OUT_DIR.tmp-<pid>, then renamed)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="dtype of the saved weights (default float32, best on CPU)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = convert(args.gguf, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"convert_gguf: {exc}", file=sys.stderr)
        return 2
    print(f"convert_gguf: wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
