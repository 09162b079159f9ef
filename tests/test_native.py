"""Dream and LLaDA in transformers' own classes (Qwen2 / Llama, non-causal), no code from the model folder.

Everything here runs without the checkpoints' own code, so under transformers 5 as well; the comparison with that
code is in test_remote_code.py (opt-in). The tiny folders are built as the checkpoints ship (tiny_models).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import tiny_models
import torch

from diffret_pyserini.model.backbones import ModelLoadError, load_backbone, native
from diffret_pyserini.train.arguments import ModelArguments

SETTINGS = dict(kq=2, kp=3, query_max_length=16, passage_max_length=24)


def copy_model(tiny_model_dirs, name: str, dest: Path) -> Path:
    shutil.copytree(tiny_model_dirs[name], dest)
    return dest


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# --- classes, names, configs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,base", [("dream", "Qwen2ForCausalLM"), ("llada", "LlamaForCausalLM")])
def test_dream_is_qwen2_and_llada_is_llama_by_default(tiny_model_dirs, name, base):
    import transformers

    bb = load_backbone(tiny_model_dirs[name], device="cpu")
    assert bb.kind == name and isinstance(bb.model, getattr(transformers, base))
    assert type(bb.model).__module__ == native.__name__  # the non-causal subclass, not the folder's code
    assert bb.head_path == "lm_head" and bb.slot_id == tiny_models.MASK_ID
    assert not any(getattr(m, "is_causal", False) for m in bb.model.modules())
    config = json.loads((tiny_model_dirs[name] / "config.json").read_text())
    assert bb.model.config.num_hidden_layers == 2 and bb.hidden_size == 64 and bb.vocab_size == 256
    dim = 64 // config["num_attention_heads" if name == "dream" else "n_heads"]
    inv_freq = 1.0 / config["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    torch.testing.assert_close(bb.model.model.rotary_emb.inv_freq, inv_freq)  # LLaDA's 500000, not Llama's default
    assert bb.model.model.norm.variance_epsilon == config["rms_norm_eps"]
    ids = torch.tensor([[7, 8, 9, tiny_models.MASK_ID]])
    with torch.no_grad():
        out = bb.model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + 2 layers, the last after the final norm
    torch.testing.assert_close(bb.model.lm_head(out.hidden_states[-1]), out.logits, atol=1e-5, rtol=0)


PLANTED = """
import json, sys
from pathlib import Path
from diffret_pyserini.model.backbones import load_backbone
folder, markers = sys.argv[1], [Path(m) for m in sys.argv[2:]]
backbone = load_backbone(folder, device="cpu")
print(json.dumps({"kind": backbone.kind, "class": type(backbone.model).__name__,
                  "imported": [m.exists() for m in markers],
                  "remote_modules": [m for m in sys.modules if m.startswith("transformers_modules")]}))
"""


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_native_load_imports_none_of_the_folder_code(tiny_model_dirs, tmp_path, name):
    """A fresh process: the folder's model code, planted to leave a marker when imported, never runs."""
    folder = copy_model(tiny_model_dirs, name, tmp_path / name)
    files = sorted(folder.glob("*.py"))
    markers = [tmp_path / f"{py.stem}.imported" for py in files]
    tiny_models.plant_import_markers(files, markers)
    result = tiny_models.run_fresh(PLANTED, [folder, *markers], tmp_path)
    assert result["kind"] == name and result["class"].startswith("NonCausal")
    assert result["imported"] == [False] * len(markers) and result["remote_modules"] == []


def test_llada_weight_names_map_both_ways():
    """Every Llama parameter has its LLaDA (OLMo) name and back; grouped blocks number on; others are refused."""
    pairs = {"model.transformer.wte.weight": "model.embed_tokens.weight",
             "model.transformer.ln_f.weight": "model.norm.weight",
             "model.transformer.ff_out.weight": "lm_head.weight",
             "model.transformer.blocks.3.attn_norm.weight": "model.layers.3.input_layernorm.weight",
             "model.transformer.blocks.3.ff_norm.weight": "model.layers.3.post_attention_layernorm.weight",
             "model.transformer.blocks.3.q_proj.weight": "model.layers.3.self_attn.q_proj.weight",
             "model.transformer.blocks.3.k_proj.weight": "model.layers.3.self_attn.k_proj.weight",
             "model.transformer.blocks.3.v_proj.weight": "model.layers.3.self_attn.v_proj.weight",
             "model.transformer.blocks.3.attn_out.weight": "model.layers.3.self_attn.o_proj.weight",
             "model.transformer.blocks.3.ff_proj.weight": "model.layers.3.mlp.gate_proj.weight",
             "model.transformer.blocks.3.up_proj.weight": "model.layers.3.mlp.up_proj.weight",
             "model.transformer.blocks.3.ff_out.weight": "model.layers.3.mlp.down_proj.weight"}
    for llada, llama in pairs.items():
        assert native.llada_to_llama(llada) == llama and native.llama_to_llada(llama) == llada
    assert native.llada_to_llama("transformer.blocks.0.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    assert native.llada_to_llama("model.transformer.block_groups.2.1.attn_out.weight", group_size=4) == \
        "model.layers.9.self_attn.o_proj.weight"
    for odd in ("model.transformer.wpe.weight", "model.transformer.blocks.0.att_proj.weight", "lm_head.weight",
                "model.transformer.blocks.0.q_norm.weight"):
        assert native.llada_to_llama(odd) is None


@pytest.mark.parametrize("change,said", [
    ({"block_type": "sequential"}, "block_type 'sequential'"),
    ({"activation_type": "swiglu"}, "activation_type 'swiglu'"),
    ({"include_bias": True}, "include_bias true"),
    ({"include_qkv_bias": True}, "include_qkv_bias true"),
    ({"attention_layer_norm": True}, "attention_layer_norm true (QK-norm)"),
    ({"scale_logits": True}, "scale_logits true"),
    ({"input_emb_norm": True}, "input_emb_norm true"),
    ({"layer_norm_type": "default"}, "layer_norm_type 'default'"),
    ({"layer_norm_type": "gemma_rms"}, "layer_norm_type 'gemma_rms'"),
    ({"rope": False}, "no RoPE"),
    ({"alibi": True, "rope": False}, "no RoPE"),
    ({"residual_dropout": 0.1}, "residual_dropout 0.1"),
])
def test_llada_settings_without_a_llama_equal_are_refused_in_one_line(tiny_model_dirs, tmp_path, change, said):
    folder = edit_config(copy_model(tiny_model_dirs, "llada", tmp_path / "llada"), **change)
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"{folder}/config.json: LLaDA settings without an exact Llama equivalent: ")
    assert said in message and message.endswith("pass --trust-remote-code (trust_remote_code=True) to run the "
                                                "checkpoint's own code")


def test_llada_defaults_are_its_own_not_llamas():
    """Keys a LLaDA config.json leaves out take LLaDA's defaults (sequential blocks, swiglu, ...): refused."""
    problems = native.llada_problems({"model_type": "llada"})
    assert any(p.startswith("block_type 'sequential'") for p in problems)
    assert any(p.startswith("residual_dropout 0.1") for p in problems)
    assert native.llada_problems(json.loads((tiny_models.require_fixtures() / "llada-tiny" / "config.json")
                                            .read_text())) == []


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_a_checkpoint_that_does_not_fit_is_refused(tiny_model_dirs, tmp_path, name):
    from safetensors.torch import load_file, save_file

    folder = copy_model(tiny_model_dirs, name, tmp_path / name)
    weights = load_file(folder / "model.safetensors")
    first = sorted(weights)[0]
    save_file({**weights, "model.extra.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"the checkpoint does not fit the native NonCausal\w+: unknown "
                                             r"weights model\.extra\.weight$"):
        load_backbone(folder, device="cpu")
    save_file({k: v for k, v in weights.items() if k != first}, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r": missing weights "):
        load_backbone(folder, device="cpu")


def test_tied_llada_reads_its_embedding_as_the_head(tiny_model_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = edit_config(copy_model(tiny_model_dirs, "llada", tmp_path / "tied"), weight_tying=True)
    weights = load_file(folder / "model.safetensors")
    del weights["model.transformer.ff_out.weight"]
    save_file(weights, folder / "model.safetensors")
    bb = load_backbone(folder, device="cpu")
    assert bb.model.lm_head.weight is bb.model.model.embed_tokens.weight
    torch.testing.assert_close(bb.model.lm_head.weight, weights["model.transformer.wte.weight"])


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_fully_fine_tuned_native_weights_save_and_load_natively(tiny_model_dirs, tmp_path, name):
    """A full fine-tune saves transformers' own config and names (qwen2 / llama); the folder loads natively as
    its kind and gives what the model gave."""
    from diffret_pyserini.model.encoder import DiffRetEncoder
    from diffret_pyserini.train.trainable_encoder import build_encoder

    encoder = build_encoder(ModelArguments(model=str(tiny_model_dirs[name]), device="cpu", full_finetune=True,
                                           dropout=False), SETTINGS)
    out = encoder.save(tmp_path / "full", base_model=str(tiny_model_dirs[name]))
    assert json.loads((out / "config.json").read_text())["model_type"] == ("qwen2" if name == "dream" else "llama")
    loaded = load_backbone(out, device="cpu")
    assert loaded.kind == name and type(loaded.model).__name__ == type(encoder.backbone.model).__name__
    assert loaded.slot_id == tiny_models.MASK_ID  # mask_token_id travels in the saved config
    saved, trained = loaded.model.state_dict(), encoder.backbone.model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    texts = ["retrieval of passages", ""]  # through the saved tokenizer too
    a = DiffRetEncoder(loaded, encoder.settings).encode(texts, "passage")
    b = DiffRetEncoder(encoder.backbone, encoder.settings).encode(texts, "passage")
    assert abs(a.dense - b.dense).max() < 1e-5 and a.sparse == b.sparse


def test_bfloat16_load(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["llada"], device="cpu", dtype="bfloat16")
    assert bb.model.lm_head.weight.dtype == torch.bfloat16
    assert bb.model.model.rotary_emb.inv_freq.dtype == torch.float32  # RoPE frequencies stay float32


def test_an_adapter_trained_on_llada_own_code_is_refused_natively(tiny_model_dirs, tmp_path):
    """Its module names are OLMo's (transformer.blocks.N.q_proj): the native Llama would silently miss them."""
    from safetensors.torch import save_file

    ours = tmp_path / "lora"
    (ours / "adapter").mkdir(parents=True)
    (ours / "diffret_config.json").write_text(json.dumps({"base_model": str(tiny_model_dirs["llada"]),
                                                          "kind": "llada", "adapter": "adapter"}))
    (ours / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2,
                                                                      "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.transformer.blocks.0.q_proj.lora_A.weight": torch.zeros(2, 64)},
              ours / "adapter" / "adapter_model.safetensors")
    with pytest.raises(ModelLoadError, match=r"adapter: the adapter was trained on LLaDA's own code"):
        load_backbone(ours, device="cpu")


# --- training: LoRA and gradient checkpointing on the native classes --------------------------------------------

def lora_encoder(folder: Path, checkpointing: bool):
    from diffret_pyserini.train.trainable_encoder import build_encoder

    torch.manual_seed(0)
    args = ModelArguments(model=str(folder), device="cpu", lora_r=4, lora_alpha=16, lora_dropout=0.0,
                          lora_target_modules="all-linear", dropout=False)
    encoder = build_encoder(args, SETTINGS, gradient_checkpointing=checkpointing)
    encoder.train()
    return encoder


def lora_step(encoder) -> tuple[float, dict[str, torch.Tensor]]:
    from diffret_pyserini.train.loss import LossWeights, combined_loss

    queries = ["retrieval of passages", "memory systems", "search index"]
    passages = ["passage retrieval with models", "the memory of computer systems", "an index for search"]
    q, p = encoder(queries, passages, ["dense", "multi", "sparse"])
    loss, _ = combined_loss(q, p, LossWeights())
    loss.backward()
    grads = {n: t.grad.clone() for n, t in encoder.model.named_parameters() if t.requires_grad}
    return loss.item(), grads


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_lora_with_gradient_checkpointing_trains_the_native_model(tiny_model_dirs, name):
    """The trainable-encoder path: LoRA on every linear but the head, checkpointing on; the step's loss and
    gradients equal the step without checkpointing, and an optimiser step moves only the LoRA weights."""
    plain = lora_encoder(tiny_model_dirs[name], checkpointing=False)
    loss_plain, grads_plain = lora_step(plain)
    encoder = lora_encoder(tiny_model_dirs[name], checkpointing=True)
    assert encoder.model.is_gradient_checkpointing
    lora = {n for n, _ in encoder.model.named_parameters() if "lora_" in n}
    targets = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    before = {n: t.detach().clone() for n, t in encoder.model.named_parameters()}
    loss, grads = lora_step(encoder)
    assert math.isfinite(loss) and abs(loss - loss_plain) < 1e-4
    assert set(grads) == lora and set(grads_plain) == lora
    for n in lora:
        torch.testing.assert_close(grads[n], grads_plain[n], atol=1e-5, rtol=1e-4)
    assert any(grads[n].abs().max() > 0 for n in lora if "lora_B" in n)
    torch.optim.SGD([t for t in encoder.model.parameters() if t.requires_grad], lr=0.1).step()
    after = dict(encoder.model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in lora)


def test_lora_training_through_the_trainer_with_gradient_checkpointing(tiny_model_dirs, tmp_path):
    """The project's trainer on native Dream: --gradient_checkpointing, LoRA; finite losses, the adapter moved,
    and the saved folder loads natively."""
    from safetensors.torch import load_file
    from test_train import run_train, synthetic, write_train

    from diffret_pyserini.train.trainer import read_history

    docs, queries = synthetic(16, seed=5)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    out = run_train(tiny_model_dirs["dream"], data, tmp_path / "out", full_finetune=False, max_steps=2,
                    per_device_train_batch_size=4, lora_r=4, lora_alpha=16, logging_steps=1,
                    gradient_checkpointing=True, **SETTINGS)
    losses = [row["loss"] for row in read_history(out) if "loss" in row]
    assert losses and all(math.isfinite(x) for x in losses)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert any(t.abs().max() > 0 for n, t in adapter.items() if "lora_B" in n)  # B starts at zero
    assert any(".model.layers.0.self_attn.q_proj." in n for n in adapter)  # Qwen2's names
    assert load_backbone(out, device="cpu").kind == "dream"


def test_no_model_folder_code_runs_outside_the_opt_in_tests(tiny_model_dirs):
    """conftest: outside `remote_code` tests the hook transformers imports a folder's code through refuses."""
    from transformers.models.auto import auto_factory, configuration_auto

    for module in (configuration_auto, auto_factory):
        with pytest.raises(RuntimeError, match=r"ran outside a remote_code test"):
            module.get_class_from_dynamic_module("modeling_dream.DreamModel", tiny_model_dirs["dream"])
