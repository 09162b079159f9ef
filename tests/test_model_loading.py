"""Loading refuses to run a model's own code unless trusted, and every bad folder or device is one clear line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffret_pyserini.model.backbones import DeviceError, ModelLoadError, load_backbone
from diffret_pyserini.model.backbones.load import DIFFRET_CONFIG
from diffret_pyserini.model.device import parse_device

TRUST_HINT = "pass --trust-remote-code (trust_remote_code=True) to run it"
NO_WEIGHTS = "no model weights (model.safetensors, pytorch_model.bin or a sharded *.index.json)"
NO_TOKENIZER = "no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a sentencepiece *.model)"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "chat_template.jinja")


def copy_model(tiny_model_dirs, name: str, dest: Path) -> Path:
    shutil.copytree(tiny_model_dirs[name], dest)
    return dest


def plant(py_file: Path, marker: Path) -> None:
    """Append a line that leaves `marker` behind when the module is imported."""
    with py_file.open("a", encoding="utf-8") as f:
        f.write(f"\nimport pathlib as _p; _p.Path({str(marker)!r}).write_text('imported')\n")


def assert_one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- model code runs only when trusted ---------------------------------------------------------------------
# Dream and LLaDA load natively (test_native.py; their own code runs only in the opt-in test_remote_code.py).

def unknown_diffusion_lm(tiny_model_dirs, dest: Path) -> Path:
    """A Dream folder renamed to an architecture with no native class: only its own code can build it."""
    folder = copy_model(tiny_model_dirs, "dream", dest)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_dlm", architectures=["MyDLMModel"])
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_diffusion_lms_load_natively_without_trust_remote_code(tiny_model_dirs, name):
    backbone = load_backbone(tiny_model_dirs[name], device="cpu")
    assert backbone.kind == name and type(backbone.model).__name__.startswith("NonCausal")


def test_a_diffusion_lm_without_a_native_class_needs_trust(tiny_model_dirs, tmp_path):
    folder = unknown_diffusion_lm(tiny_model_dirs, tmp_path / "my-dlm")
    markers = [tmp_path / "modeling.imported", tmp_path / "configuration.imported"]
    plant(folder / "modeling_dream.py", markers[0])
    plant(folder / "configuration_dream.py", markers[1])
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, kind="dream", device="cpu")
    assert assert_one_line(err) == (f"{folder}: loading it would run Python code shipped with the model "
                                    f"(configuration_dream.py, modeling_dream.py); {TRUST_HINT}")
    assert not any(m.exists() for m in markers)


def test_any_config_with_auto_map_to_its_own_code_needs_trust(tiny_model_dirs, tmp_path):
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / "custom-arch")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_custom_arch", auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                                                         "AutoModelForCausalLM": "modeling_custom.CustomLM"})
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_custom.py", "modeling_custom.py"):
        plant(folder / name, tmp_path / f"{name}.imported")
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, kind="causal", device="cpu")
    assert assert_one_line(err) == (f"{folder}: loading it would run Python code shipped with the model "
                                    f"(configuration_custom.py, modeling_custom.py); {TRUST_HINT}")
    assert not list(tmp_path.glob("*.imported"))


def test_auto_map_beside_a_native_architecture_loads_without_running_it(tiny_model_dirs, tmp_path):
    """transformers uses its own Qwen2 code then (as it does untrusted), so no flag is needed and nothing runs."""
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / "qwen2-with-auto-map")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_extra.ExtraLM"}
    (folder / "config.json").write_text(json.dumps(config))
    plant(folder / "modeling_extra.py", tmp_path / "extra.imported")
    assert load_backbone(folder, device="cpu").kind == "bidirectional"
    assert not (tmp_path / "extra.imported").exists()


def test_tokenizer_with_its_own_code_needs_trust(tiny_model_dirs, tmp_path):
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / "custom-tokenizer")
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config.update(tokenizer_class="MyTokenizer", auto_map={"AutoTokenizer": ["tokenization_my.MyTokenizer",
                                                                                   None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    plant(folder / "tokenization_my.py", tmp_path / "tokenizer.imported")
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err) == (f"{folder}: loading it would run Python code shipped with the model "
                                    f"(tokenization_my.py); {TRUST_HINT}")
    assert not (tmp_path / "tokenizer.imported").exists()


def test_our_folder_over_a_base_without_a_native_class_needs_trust(tiny_model_dirs, tmp_path):
    base = unknown_diffusion_lm(tiny_model_dirs, tmp_path / "my-dlm")
    ours = tmp_path / "finetuned"
    ours.mkdir()
    (ours / DIFFRET_CONFIG).write_text(json.dumps({"base_model": str(base), "kind": "dream"}))
    with pytest.raises(ModelLoadError) as err:
        load_backbone(ours, device="cpu")
    assert assert_one_line(err) == (f"{ours}: loading it would run Python code shipped with the model "
                                    f"({base / 'configuration_dream.py'}, {base / 'modeling_dream.py'}); "
                                    f"{TRUST_HINT}")


def test_our_folder_over_a_dream_base_loads_natively(tiny_model_dirs, tmp_path):
    ours = tmp_path / "finetuned"
    ours.mkdir()
    (ours / DIFFRET_CONFIG).write_text(json.dumps({"base_model": str(tiny_model_dirs["dream"]), "kind": "dream"}))
    assert load_backbone(ours, device="cpu").kind == "dream"


def test_refusal_is_a_user_error_so_clis_print_one_line(tiny_model_dirs, tmp_path):
    from diffret_pyserini.cli import is_user_error

    with pytest.raises(Exception) as refused:
        load_backbone(unknown_diffusion_lm(tiny_model_dirs, tmp_path / "my-dlm"), kind="dream", device="cpu")
    assert is_user_error(refused.value)


# --- broken folders ----------------------------------------------------------------------------------------

def test_folder_with_only_config_json(tiny_model_dirs, tmp_path):
    folder = tmp_path / "only-config"
    folder.mkdir()
    shutil.copy(tiny_model_dirs["qwen2"] / "config.json", folder / "config.json")
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err) == f"{folder}: {NO_WEIGHTS}; {NO_TOKENIZER}"


@pytest.mark.parametrize("name", ["qwen2", "bert"])
def test_folder_without_weights(tiny_model_dirs, tmp_path, name):
    folder = copy_model(tiny_model_dirs, name, tmp_path / f"{name}-no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err) == f"{folder}: {NO_WEIGHTS}"


@pytest.mark.parametrize("damage,detail", [
    ("truncate", "incomplete metadata, file not fully covered"),
    ("garbage", "header too large"),
    ("empty", "header too small"),
])
def test_corrupt_or_truncated_safetensors(tiny_model_dirs, tmp_path, damage, detail):
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / f"qwen2-{damage}")
    weights = folder / "model.safetensors"
    if damage == "truncate":
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    else:
        weights.write_bytes(b"" if damage == "empty" else b"this is not a safetensors file\n" * 4)
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    message = assert_one_line(err)
    assert message.startswith(f"{folder}: model.safetensors is corrupt or truncated (")
    assert detail in message


def test_sharded_index_naming_a_missing_shard(tiny_model_dirs, tmp_path):
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / "qwen2-sharded")
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    from safetensors import safe_open

    with safe_open(str(folder / "model-00001-of-00002.safetensors"), framework="pt") as f:
        names = list(f.keys())
    weight_map = {n: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err) == (f"{folder}: model.safetensors.index.json names missing shard(s) "
                                    "model-00002-of-00002.safetensors")


@pytest.mark.parametrize("name", ["qwen2", "bert"])
def test_folder_without_tokenizer_files(tiny_model_dirs, tmp_path, name):
    folder = copy_model(tiny_model_dirs, name, tmp_path / f"{name}-no-tokenizer")
    for file in TOKENIZER_FILES:
        (folder / file).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err) == f"{folder}: {NO_TOKENIZER}"


def test_tokenizer_files_that_do_not_load(tiny_model_dirs, tmp_path):
    folder = copy_model(tiny_model_dirs, "qwen2", tmp_path / "qwen2-bad-tokenizer")
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as err:
        load_backbone(folder, device="cpu")
    assert assert_one_line(err).startswith(f"{folder}: the tokenizer does not load: ")


def test_our_folder_naming_a_missing_adapter(tiny_model_dirs, tmp_path):
    ours = tmp_path / "lora"
    ours.mkdir()
    (ours / DIFFRET_CONFIG).write_text(json.dumps({"base_model": str(tiny_model_dirs["bert"]),
                                                   "adapter": "adapter"}))
    with pytest.raises(ModelLoadError) as err:
        load_backbone(ours, device="cpu")
    assert assert_one_line(err) == f"{ours / 'adapter'}: the adapter folder is missing"
    (ours / "adapter").mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_backbone(ours, device="cpu")
    assert assert_one_line(err) == (f"{ours / 'adapter'}: no adapter_config.json; no adapter weights "
                                    "(adapter_model.safetensors or adapter_model.bin)")


def test_unknown_kind_in_our_config(tiny_model_dirs, tmp_path):
    ours = tmp_path / "odd-kind"
    ours.mkdir()
    (ours / DIFFRET_CONFIG).write_text(json.dumps({"base_model": str(tiny_model_dirs["bert"]), "kind": "sideways"}))
    with pytest.raises(ModelLoadError, match=r"diffret_config.json: kind: 'sideways' is not one of \("):
        load_backbone(ours, device="cpu")


# --- devices -----------------------------------------------------------------------------------------------

NO_CUDA = ("CUDA is not available on this machine (torch.cuda.is_available() is False); "
           "use --device cpu or auto")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_is_an_error_not_the_cpu(no_cuda, asked):
    with pytest.raises(DeviceError) as err:
        parse_device(asked)
    assert assert_one_line(err) == f"--device {asked}: {NO_CUDA}"


@pytest.mark.parametrize("asked", [None, "", "auto", "cpu", " CPU ", torch.device("cpu")])
def test_auto_and_cpu_give_the_cpu_without_cuda(no_cuda, asked):
    assert parse_device(asked) == torch.device("cpu")


@pytest.mark.parametrize("asked", ["gpu", "cuda:x", "cuda:", "cuda:-1", "cpu:0", "tpu"])
def test_malformed_device_lists_the_allowed_forms(asked):
    with pytest.raises(DeviceError) as err:
        parse_device(asked)
    assert assert_one_line(err) == (f"--device {asked!r}: not a device; use one of auto, cpu, cuda, "
                                    "cuda:N (N = 0, 1, ...) or mps")


def test_cuda_index_past_the_devices_here(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError) as err:
        parse_device("cuda:2")
    assert assert_one_line(err) == "--device cuda:2: this machine has 2 CUDA device(s): cuda:0 to cuda:1"


def test_load_backbone_checks_the_device_first(no_cuda, tmp_path):
    """The device error comes before anything is read, even for a folder that is no model."""
    with pytest.raises(DeviceError, match=r"^--device cuda: CUDA is not available"):
        load_backbone(tmp_path, device="cuda")


# --- the position limit ------------------------------------------------------------------------------------

def test_max_positions_of_splade_tiny():
    assert load_backbone("splade-tiny", device="cpu").max_positions == 512


@pytest.mark.parametrize("name,kind,limit", [("dream", None, 128), ("llada", None, 128),
                                             ("qwen2", "bidirectional", 512), ("bert", None, 512)])
def test_max_positions_from_each_config_key(tiny_model_dirs, name, kind, limit):
    """Dream/Qwen2/BERT say max_position_embeddings, LLaDA max_sequence_length (its native Llama config takes
    it as max_position_embeddings; through LLaDA's own code: test_remote_code.py)."""
    backbone = load_backbone(tiny_model_dirs[name], kind=kind, device="cpu")
    assert backbone.max_positions == limit


def test_max_positions_is_none_when_the_config_names_no_limit(tiny_model_dirs):
    import types

    backbone = load_backbone(tiny_model_dirs["qwen2"], device="cpu")
    # a config that names no limit (transformers 5's typed configs refuse None in a model's own field)
    backbone.model = types.SimpleNamespace(config=types.SimpleNamespace(max_position_embeddings=None))
    assert backbone.max_positions is None
    backbone.model.config.n_positions = 1024  # GPT-2's name for it
    assert backbone.max_positions == 1024
