"""`python -m diffret_pyserini.bench.shaped_model`: a random-weight diffusion-LM folder shaped like a real model,
for measuring the cost of the Dream / LLaDA code paths where their 7-8B checkpoints are out of reach.

    python -m diffret_pyserini.bench.shaped_model --code ../shared/fixtures/dream-tiny --like smollm2 \\
        --out models/dream-shaped-smollm2
    python -m diffret_pyserini.bench --sections cost-of-k --models models/dream-shaped-smollm2

`--code` is any folder holding the checkpoint's own model code and a config.json (a real Dream or LLaDA
checkpoint, or the tiny fixtures): its `*.py` files and config are copied into OUT, the config reshaped to the
hidden size, layers, heads, feed-forward width and vocabulary of `--like` (a Hugging Face decoder folder or a
packaged name), whose tokenizer OUT takes. The mask id is the slot token our bidirectional backbone would pick
in that tokenizer. The weights are random: the folder measures cost (the same matrix products as trained
weights of that shape), never effectiveness. OUT is written to a temp folder and renamed when complete
(`atomic.atomic_dir`).

The weights are made by the native classes (`model.backbones.native`) and saved under the checkpoint's own names,
so none of the folder's Python runs here, and OUT loads natively like a real checkpoint: `load_backbone(OUT)`.
OUT ships that code too, so it also loads through it when asked (`--trust-remote-code`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from diffret_pyserini.atomic import atomic_dir
from diffret_pyserini.cli import InputError, OneLineArgumentParser

# config key of each architecture -> the Llama-style config key of the --like model it is taken from
_SHAPES = {
    "dream": {"hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
              "num_hidden_layers": "num_hidden_layers", "num_attention_heads": "num_attention_heads",
              "num_key_value_heads": "num_key_value_heads", "vocab_size": "vocab_size",
              "rope_theta": "rope_theta"},
    "llada": {"d_model": "hidden_size", "mlp_hidden_size": "intermediate_size", "n_layers": "num_hidden_layers",
              "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "vocab_size": "vocab_size",
              "embedding_size": "vocab_size", "rope_theta": "rope_theta"},
}
_LENGTH_KEY = {"dream": "max_position_embeddings", "llada": "max_sequence_length"}


def shaped_config(code_config: dict, like_config: dict, mask_id: int, pad_id: int, eos_id: int) -> dict:
    """`code_config` (a Dream or LLaDA config.json) with the shape of `like_config` (a Llama/Qwen2 config.json)."""
    arch = str(code_config.get("model_type", "")).lower()
    if arch not in _SHAPES:
        raise InputError(f"config.json: model_type: {code_config.get('model_type')!r} is neither Dream nor LLaDA")
    out = dict(code_config)
    # transformers 5 writes rope_theta inside rope_parameters; 4 writes it at the top level
    like = {**(like_config.get("rope_parameters") or {}), **like_config}
    for key, like_key in _SHAPES[arch].items():
        if like_key not in like:
            raise InputError(f"--like config.json: {like_key}: missing")
        out[key] = like[like_key]
    out[_LENGTH_KEY[arch]] = max(int(like_config.get("max_position_embeddings", 2048)), 2048)
    out.update(mask_token_id=mask_id, pad_token_id=pad_id, eos_token_id=eos_id, torch_dtype="float32")
    return out


def build(code: Path, like: str, out: Path, seed: int = 0) -> Path:
    """Write the random-weight folder OUT (see the module docstring); returns OUT."""
    from diffret_pyserini.model.backbones.load import load_tokenizer, slot_token_id
    from diffret_pyserini.model.backbones.native import random_checkpoint
    from diffret_pyserini.model.packaged import resolve_model_path

    like_dir = Path(resolve_model_path(like))
    code_config = json.loads((code / "config.json").read_text())
    like_config = json.loads((like_dir / "config.json").read_text())
    tokenizer = load_tokenizer(like_dir)
    mask_id = slot_token_id("bidirectional", {}, tokenizer, None, like_dir)
    eos_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else mask_id)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id)
    config = shaped_config(code_config, like_config, mask_id, pad_id, eos_id)

    with atomic_dir(out) as tmp:
        for source in code.glob("*.py"):
            shutil.copy2(source, tmp / source.name)
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        random_checkpoint(config, tmp, seed)
        tokenizer.save_pretrained(tmp)
    return out


def random_decoder(like: str, out: Path, seed: int = 0) -> Path:
    """A causal decoder of `like`'s shape and tokenizer with random weights, written to OUT (atomically): the
    PromptReps side of a cost comparison where the real weights are out of reach (with `stop_early=False` the
    baseline makes its K steps whatever the weights say)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from diffret_pyserini.model.backbones.load import load_tokenizer
    from diffret_pyserini.model.packaged import resolve_model_path

    like_dir = Path(resolve_model_path(like))
    with atomic_dir(out) as tmp:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(like_dir, local_files_only=True))
        model.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(like_dir).save_pretrained(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.bench.shaped_model", description=__doc__)
    parser.add_argument("--code", required=True, help="folder with the Dream/LLaDA model code and a config.json")
    parser.add_argument("--like", required=True, help="decoder folder or packaged name whose shape and "
                        "tokenizer to take (e.g. smollm2)")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    from diffret_pyserini.model.packaged import set_offline_env

    set_offline_env()
    try:
        print(build(Path(args.code), args.like, Path(args.out), args.seed))
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
