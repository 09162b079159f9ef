"""Dream and LLaDA in transformers' own classes, run non-causally: no code from the model folder is imported.

- Dream is Qwen2.5's architecture (q/k/v biases, no output bias, SwiGLU MLP, RMSNorm, RoPE) trained to attend
  both ways; its weight names are Qwen2's, so it loads into `Qwen2ForCausalLM` unchanged.
- LLaDA is Llama's architecture under OLMo's weight names (`transformer.blocks.N.attn_out`, `ff_proj`, ...): its
  config is translated to a `LlamaConfig` and its weights renamed at load (`LLADA_TO_LLAMA`). A config field that
  Llama has no equal for and that changes the math (fused q/k/v blocks, biases, QK-norm, scaled logits, ...) is
  refused in one line (`ModelLoadError`) rather than approximated.
- Both classes build their own all-visible 4D mask (`full_attention_mask`): every position sees every
  non-padded key, whatever mask the caller passes (none, a 2D padding mask, or a 4D one).

The folders stay loadable through their own code (`trust_remote_code=True`, see `load.py`); the weights read here
are the same files. `random_checkpoint` writes the reverse: random weights under the checkpoint's own names.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from diffret_pyserini.cli import one_line
from diffret_pyserini.model.backbones.checks import MAX_MESSAGE, ModelLoadError

NATIVE_KINDS = ("dream", "llada")  # backbone kinds loaded natively unless their own code is asked for
NATIVE_TYPES = ("dream", "llada", "qwen2", "llama")  # config model_type (lower-cased) -> a native class exists
TRUST_HINT = "pass --trust-remote-code (trust_remote_code=True) to run the checkpoint's own code"

# DreamConfig's defaults (its configuration_dream.py), for keys a config.json leaves out.
DREAM_DEFAULTS = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, hidden_act="silu",
                      max_position_embeddings=32768, initializer_range=0.02, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None, attention_dropout=0.0,
                      pad_token_id=151643, bos_token_id=None, eos_token_id=None, mask_token_id=151666)
# LLaDA's ModelConfig defaults (its configuration_llada.py), for keys a config.json leaves out.
LLADA_DEFAULTS = dict(d_model=768, n_heads=12, n_kv_heads=None, multi_query_attention=None, n_layers=12,
                      mlp_ratio=4, mlp_hidden_size=None, activation_type="swiglu", block_type="sequential",
                      block_group_size=1, alibi=False, rope=False, attention_dropout=0.1, attention_layer_norm=False,
                      residual_dropout=0.1, embedding_dropout=0.1, input_emb_norm=False, layer_norm_type="default",
                      layer_norm_with_affine=True, rms_norm_eps=1e-5, max_sequence_length=1024, rope_theta=10000.0,
                      include_qkv_bias=False, include_bias=False, bias_for_layer_norm=None, scale_logits=False,
                      vocab_size=50257, embedding_size=50304, weight_tying=True, eos_token_id=50256,
                      pad_token_id=50256, mask_token_id=50256, bos_token_id=None, init_std=0.02)
# LLaDA's activations on a 'llama' block, applied to ff_proj before the product with up_proj (Llama's gate).
# nn.GELU() there is the exact GELU, as is transformers' "gelu".
LLADA_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "relu": "relu"}

# LLaDA (OLMo) names inside a block -> Llama's names inside a decoder layer; and outside the blocks.
LLADA_BLOCK_TO_LLAMA = {"attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
                        "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
                        "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
                        "ff_out": "mlp.down_proj"}
LLADA_TOP_TO_LLAMA = {"wte": "model.embed_tokens", "ln_f": "model.norm", "ff_out": "lm_head"}
_LLADA_BLOCK = re.compile(r"^(?:model\.)?transformer\.(?:blocks\.(\d+)|block_groups\.(\d+)\.(\d+))\.(\w+)\.(\w+)$")
_LLADA_TOP = re.compile(r"^(?:model\.)?transformer\.(\w+)\.(\w+)$")
_LLAMA_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(\w+)$")


# ------------------------------------------------------------------------------------------------ the mask
def full_attention_mask(attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device,
                        additive_dtype: torch.dtype | None = None) -> torch.Tensor:
    """A [B,1,L,L] mask under which every position sees every non-padded key (padded query rows see the real
    keys too, so they stay finite). From None (nothing padded), a [B,L] padding mask, or a 4D mask (kept).

    bool (True = may attend) for SDPA; with `additive_dtype`, 0 / dtype-min added to the scores (eager
    attention adds the mask, so a bool one would be read as 0/1 offsets).
    """
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    if attention_mask.dim() == 2:
        visible = attention_mask.bool()[:, None, None, :].expand(-1, 1, length, -1)
    elif attention_mask.dim() == 4:
        if attention_mask.dtype != torch.bool:
            return attention_mask  # already additive: the caller's own 4D mask
        visible = attention_mask
    else:
        raise ValueError(f"attention_mask of {attention_mask.dim()} dimensions; expected 2 or 4")
    if additive_dtype is None:
        return visible
    return torch.zeros(visible.shape, dtype=additive_dtype, device=visible.device).masked_fill(
        ~visible, torch.finfo(additive_dtype).min)


class NonCausalMixin:
    """forward() of a transformers decoder with the causal mask replaced by `full_attention_mask`.

    transformers takes a 4D mask as given (it builds its causal mask only from a 2D one or none), so the mask made
    here is the whole attention pattern. `is_causal` is cleared on every module too, for kernels that read it.
    """

    def _clear_is_causal(self) -> None:
        for module in self.modules():
            if getattr(module, "is_causal", None) is True:
                module.is_causal = False

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs):
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        eager = getattr(self.config, "_attn_implementation", None) == "eager"
        dtype = self.get_input_embeddings().weight.dtype if eager else None
        mask = full_attention_mask(attention_mask, ref.shape[0], ref.shape[1], ref.device, dtype)
        return super().forward(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, **kwargs)


def native_classes() -> dict[str, type]:
    """model_type -> the non-causal class (built on first use: importing transformers' models is slow)."""
    global _CLASSES
    if _CLASSES is None:
        from transformers import LlamaForCausalLM, Qwen2ForCausalLM

        class NonCausalQwen2ForCausalLM(NonCausalMixin, Qwen2ForCausalLM):
            """Qwen2 with full attention: Dream."""

            def __init__(self, config):
                super().__init__(config)
                self._clear_is_causal()

        class NonCausalLlamaForCausalLM(NonCausalMixin, LlamaForCausalLM):
            """Llama with full attention: LLaDA."""

            def __init__(self, config):
                super().__init__(config)
                self._clear_is_causal()

        _CLASSES = {"qwen2": NonCausalQwen2ForCausalLM, "llama": NonCausalLlamaForCausalLM}
    return _CLASSES


_CLASSES: dict[str, type] | None = None


# ------------------------------------------------------------------------------------------------ configs
def has_native_class(config: dict) -> bool:
    return str(config.get("model_type", "")).lower() in NATIVE_TYPES


def _dream_config(config: dict, where: Path):
    from transformers import Qwen2Config

    get = {**DREAM_DEFAULTS, **config}.get
    heads = int(get("num_attention_heads"))
    if int(get("hidden_size")) % heads:
        raise ModelLoadError(f"{where}/config.json: hidden_size {get('hidden_size')} is not a multiple of "
                             f"num_attention_heads {heads}")
    # Dream always runs its SDPA attention, which applies no sliding window whatever the config says
    # (use_sliding_window only earns a warning there): the native model gets none either.
    return Qwen2Config(
        vocab_size=get("vocab_size"), hidden_size=get("hidden_size"), intermediate_size=get("intermediate_size"),
        num_hidden_layers=get("num_hidden_layers"), num_attention_heads=heads,
        num_key_value_heads=get("num_key_value_heads") or heads, hidden_act=get("hidden_act"),
        max_position_embeddings=get("max_position_embeddings"), initializer_range=get("initializer_range"),
        rms_norm_eps=get("rms_norm_eps"), tie_word_embeddings=bool(get("tie_word_embeddings")),
        rope_theta=float(get("rope_theta")), rope_scaling=get("rope_scaling"),
        attention_dropout=get("attention_dropout"), use_sliding_window=False, use_cache=False,
        pad_token_id=get("pad_token_id"), bos_token_id=get("bos_token_id"), eos_token_id=get("eos_token_id"),
        mask_token_id=get("mask_token_id"), attn_implementation="sdpa")


# LLaDA config flags with no Llama equivalent, and what each changes
_LLADA_FLAGS_WITHOUT_LLAMA = (("bias_for_layer_norm", ""), ("attention_layer_norm", " (QK-norm)"),
                              ("input_emb_norm", " (embeddings scaled by sqrt(d_model))"),
                              ("scale_logits", " (logits divided by sqrt(d_model))"))


def llada_problems(config: dict) -> list[str]:
    """The fields of a LLaDA config.json that Llama cannot express exactly ([] when it maps)."""
    get = {**LLADA_DEFAULTS, **config}.get
    problems = []
    if get("block_type") != "llama":
        problems.append(f"block_type {get('block_type')!r} (fused q/k/v and an ungated MLP; only 'llama' "
                        "blocks are Llama's layer)")
    if get("activation_type") not in LLADA_ACTIVATIONS:
        problems.append(f"activation_type {get('activation_type')!r} (halves ff_proj on a 'llama' block)")
    if get("alibi") or not get("rope"):
        problems.append("no RoPE (alibi or learned positions)")
    if get("layer_norm_type") != "rms":
        problems.append(f"layer_norm_type {get('layer_norm_type')!r} (Llama's norm is RMSNorm with a weight)")
    if not get("layer_norm_with_affine"):
        problems.append("layer_norm_with_affine false (norms without weights)")
    if get("include_bias"):
        problems.append("include_bias true (biased linears, logits and norms)")
    elif get("include_qkv_bias"):
        problems.append("include_qkv_bias true (q/k/v biases without an output bias)")
    problems += [f"{key} true{why}" for key, why in _LLADA_FLAGS_WITHOUT_LLAMA if get(key)]
    for key in ("residual_dropout", "embedding_dropout"):
        if get(key):
            problems.append(f"{key} {get(key)} (Llama has no such dropout)")
    if int(get("d_model")) % int(get("n_heads")):
        problems.append(f"d_model {get('d_model')} not a multiple of n_heads {get('n_heads')}")
    if int(get("n_layers")) % int(get("block_group_size")):
        problems.append(f"n_layers {get('n_layers')} not a multiple of block_group_size {get('block_group_size')}")
    n_kv, mqa = get("n_kv_heads"), get("multi_query_attention")
    if n_kv is not None and mqa is not None and n_kv != (1 if mqa else get("n_heads")):
        problems.append("n_kv_heads and multi_query_attention disagree")
    return problems


def _llada_kv_heads(get) -> int:
    n_kv = get("n_kv_heads")
    if n_kv is not None:
        return int(n_kv)
    return 1 if get("multi_query_attention") is True else int(get("n_heads"))


def _llada_config(config: dict, where: Path):
    from transformers import LlamaConfig

    problems = llada_problems(config)
    if problems:
        raise ModelLoadError(f"{where}/config.json: LLaDA settings without an exact Llama equivalent: "
                             f"{'; '.join(problems)}; {TRUST_HINT}")
    get = {**LLADA_DEFAULTS, **config}.get
    # rope_full_precision (RoPE in float32 under bf16) is a rounding choice, not a different function.
    return LlamaConfig(
        vocab_size=get("embedding_size") or get("vocab_size"), hidden_size=get("d_model"),
        intermediate_size=get("mlp_hidden_size") or get("mlp_ratio") * get("d_model"),
        num_hidden_layers=get("n_layers"), num_attention_heads=get("n_heads"),
        num_key_value_heads=_llada_kv_heads(get), hidden_act=LLADA_ACTIVATIONS[get("activation_type")],
        max_position_embeddings=get("max_sequence_length"), initializer_range=get("init_std"),
        rms_norm_eps=get("rms_norm_eps"), tie_word_embeddings=bool(get("weight_tying")),
        rope_theta=float(get("rope_theta")), attention_bias=False, mlp_bias=False,
        attention_dropout=get("attention_dropout"), use_cache=False, pad_token_id=get("pad_token_id"),
        bos_token_id=get("bos_token_id"), eos_token_id=get("eos_token_id"), mask_token_id=get("mask_token_id"),
        attn_implementation="sdpa")


def native_config(config: dict, where: Path):
    """A Dream/LLaDA config.json (or one we saved from a native model: qwen2/llama) -> a transformers config."""
    model_type = str(config.get("model_type", "")).lower()
    if model_type == "dream":
        return _dream_config(config, where)
    if model_type == "llada":
        return _llada_config(config, where)
    if model_type in ("qwen2", "llama"):
        from transformers import AutoConfig

        fields = {**{k: v for k, v in config.items() if k != "model_type"}, "use_cache": False,
                  "attn_implementation": "sdpa"}
        return AutoConfig.for_model(model_type, **fields)
    raise ModelLoadError(f"{where}/config.json: model_type {config.get('model_type')!r} has no native class "
                         f"(native: Dream, LLaDA); {TRUST_HINT}")


# ------------------------------------------------------------------------------------------------ weight names
def llada_to_llama(name: str, group_size: int = 1) -> str | None:
    """A LLaDA checkpoint's parameter name -> Llama's (None when it is no LLaDA weight)."""
    match = _LLADA_BLOCK.match(name)
    if match:
        block, group, inner, module, leaf = match.groups()
        index = int(block) if block is not None else int(group) * group_size + int(inner)
        target = LLADA_BLOCK_TO_LLAMA.get(module)
        return f"model.layers.{index}.{target}.{leaf}" if target else None
    match = _LLADA_TOP.match(name)
    if match and match.group(1) in LLADA_TOP_TO_LLAMA:
        return f"{LLADA_TOP_TO_LLAMA[match.group(1)]}.{match.group(2)}"
    return None


def llama_to_llada(name: str) -> str:
    """Llama's parameter name -> the one LLaDA's own code saves (blocks ungrouped)."""
    match = _LLAMA_LAYER.match(name)
    if match:
        inner = {v: k for k, v in LLADA_BLOCK_TO_LLAMA.items()}[match.group(2)]
        return f"model.transformer.blocks.{match.group(1)}.{inner}.{match.group(3)}"
    module, _, leaf = name.rpartition(".")
    return f"model.transformer.{ {v: k for k, v in LLADA_TOP_TO_LLAMA.items()}[module]}.{leaf}"


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors first (as transformers prefers), shards from the index."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text(encoding="utf-8")).get("weight_map", {})
            return [folder / name for name in dict.fromkeys(weight_map.values())]
    raise ModelLoadError(f"{folder}: no model weights (model.safetensors, pytorch_model.bin or a sharded "
                         "*.index.json)")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)


# ------------------------------------------------------------------------------------------------ loading
def build_empty(config) -> nn.Module:
    """The non-causal model for a transformers config on the meta device (no random init cost, no memory): the
    weights are then assigned from the checkpoint. The buffers, RoPE frequencies computed from the config, are
    made again for real (only torch and transformers are needed: the GPU check's bare environment has no more)."""
    with torch.device("meta"):
        model = native_classes()[config.model_type](config)
    for name, module in list(model.named_modules()):
        if any(buffer.is_meta for buffer in module.buffers(recurse=False)):
            if not type(module).__name__.endswith("RotaryEmbedding"):
                raise ModelLoadError(f"{type(model).__name__}: buffer of {name} ({type(module).__name__}) cannot be "
                                     "rebuilt off the meta device")
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, type(module)(config=config))
    return model


def _check_translation(model: nn.Module, config, where: Path) -> None:
    """The config values that change the math arrived where the model reads them, in this transformers release
    (RoPE and config conventions have moved between releases)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    eps = getattr(inner.norm, "variance_epsilon", config.rms_norm_eps)
    inv_freq = getattr(getattr(inner, "rotary_emb", None), "inv_freq", None)
    # transformers 4 keeps rope_theta / rope_scaling; 5 folds both into rope_parameters
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = (scaling or params).get("rope_type", scaling.get("type", "default"))
    theta = params.get("rope_theta") or getattr(config, "rope_theta", None)
    problems = []
    if abs(eps - config.rms_norm_eps) > 1e-12:
        problems.append(f"norm eps {eps} instead of {config.rms_norm_eps}")
    if inv_freq is not None and rope_type == "default" and theta:
        dim = config.hidden_size // config.num_attention_heads
        expected = 1.0 / (float(theta) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        if inv_freq.shape != expected.shape or not torch.allclose(inv_freq.float().cpu(), expected, rtol=1e-5):
            problems.append(f"RoPE frequencies do not follow rope_theta {theta}")
    if problems:
        import transformers

        raise ModelLoadError(f"{where}: the native model under transformers {transformers.__version__} does not "
                             f"match the checkpoint's config: {'; '.join(problems)}")


def load_native(path: Path, config: dict, dtype: torch.dtype) -> nn.Module:
    """The checkpoint in `path` (its config.json as `config`) in the native non-causal class, in `dtype`.

    Every checkpoint tensor must find its parameter and every parameter its tensor; anything else is one
    ModelLoadError line naming a few of the names.
    """
    native = native_config(config, path)
    llada = str(config.get("model_type", "")).lower() == "llada"
    group_size = int(config.get("block_group_size") or 1)
    model = build_empty(native)
    tied = bool(native.tie_word_embeddings)
    expected = set(model.state_dict())
    head = "lm_head.weight"
    loaded: set[str] = set()
    unknown: list[str] = []
    for file in weight_files(path):
        try:
            raw = read_weights(file)
        except Exception as err:
            raise ModelLoadError(f"{file}: unreadable weights: {one_line(err, MAX_MESSAGE)}") from err
        tensors = {}
        for name, tensor in raw.items():
            target = llada_to_llama(name, group_size) if llada else name
            if tied and target == head:
                continue  # a tied head saved beside the embedding is that embedding again
            if target not in expected:
                unknown.append(name)
                continue
            tensors[target] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        model.load_state_dict(tensors, strict=False, assign=True)
        loaded |= set(tensors)
        del raw, tensors
    if tied:  # the head is the input embedding, as the checkpoint's code ties it
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
        loaded.add(head)
    missing = sorted(set(expected - loaded) | {n for n, t in model.state_dict().items() if t.is_meta})
    if unknown or missing:
        parts = [f"{label} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                 for label, names in (("unknown weights", unknown), ("missing weights", missing)) if names]
        raise ModelLoadError(f"{path}: the checkpoint does not fit the native "
                             f"{type(model).__name__}: {'; '.join(parts)}")
    _check_translation(model, native, path)
    return model.eval()


def adapter_problem(adapter: Path, config: dict) -> str | None:
    """A LoRA adapter trained on LLaDA's own code names OLMo modules the native Llama does not have."""
    if str(config.get("model_type", "")).lower() != "llada":
        return None
    file = adapter / "adapter_model.safetensors"
    if not file.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        names = list(f.keys())
    if any(".transformer.blocks." in n or ".transformer.block_groups." in n for n in names):
        return (f"{adapter}: the adapter was trained on LLaDA's own code (OLMo module names), which the native "
                f"Llama does not have; {TRUST_HINT}")
    return None


# ------------------------------------------------------------------------------------------------ writing
def random_checkpoint(config: dict, out: Path, seed: int = 0) -> Path:
    """Random weights for a Dream/LLaDA `config` (its config.json) written to `out` under the checkpoint's own
    weight names (model.safetensors), with the generation_config.json Dream's own code reads at load (config.json
    is the caller's to write). Built with the native class, so no checkpoint code runs; the checkpoint's code
    loads the folder as it loads its own."""
    from safetensors.torch import save_file

    native = native_config(config, out)
    torch.manual_seed(seed)
    model = native_classes()[native.model_type](native)
    llada = str(config.get("model_type", "")).lower() == "llada"
    state = {}
    for name, tensor in model.state_dict().items():
        if native.tie_word_embeddings and name == "lm_head.weight":
            continue  # tied: the checkpoints store the embedding once
        state[llama_to_llada(name) if llada else name] = tensor.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    ids = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(key) is not None}
    (out / "generation_config.json").write_text(json.dumps({"_from_model_config": True, **ids, "use_cache": False},
                                                           indent=2), encoding="utf-8")
    return out
