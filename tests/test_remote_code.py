"""Opt-in: the checkpoints' own code (`trust_remote_code=True`) beside the native classes it is replaced by.

The only tests (with the remote-code facts in test_tiny_models.py) that run Dream's / LLaDA's shipped code. They
skip without ../shared/fixtures, and under transformers >= 5, where that code does not run
(`tiny_models.require_remote_code`). Run just these with `pytest -m remote_code`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from diffret_pyserini.model.backbones import load_backbone
from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings

pytestmark = pytest.mark.remote_code

ATOL = 1e-5
FIXTURE = {"dream": "dream-tiny", "llada": "llada-tiny"}
# Different lengths, so the batch is left-padded; the empty text pads most.
TEXTS = ["the cat sat on the mat", "retrieval of passages with diffusion models and many words in it", "",
         "query words"]


def build_with_remote_code(name: str, out: Path) -> Path:
    """A folder whose random weights the checkpoint's own code made and saved (names as the real checkpoints)."""
    from transformers import AutoConfig, AutoModel

    src = tiny_models.require_remote_code() / FIXTURE[name]
    config = AutoConfig.from_pretrained(src, trust_remote_code=True, local_files_only=True)
    torch.manual_seed(tiny_models.SEED + 1)
    AutoModel.from_config(config, trust_remote_code=True).save_pretrained(out)
    for py in src.glob("*.py"):
        shutil.copy(py, out / py.name)
    tiny_models.build_tokenizer(out, pad_token=tiny_models.PAD if name == "dream" else tiny_models.EOS)
    return out


@pytest.fixture(scope="module")
def remote_built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("remote_built")
    return {name: build_with_remote_code(name, root / name) for name in FIXTURE}


def both(folder: Path):
    """(native, remote-code) backbones of one folder."""
    return load_backbone(folder, device="cpu"), load_backbone(folder, device="cpu", trust_remote_code=True)


def model_inputs(bb, batch) -> dict:
    inputs = {"input_ids": batch.input_ids, **bb.attention_inputs(batch)}
    if bb.takes_position_ids:
        inputs["position_ids"] = batch.position_ids
    return inputs


def max_differences(native, remote, texts=TEXTS) -> dict[str, float]:
    """Largest |native - remote| over a left-padded batch: every layer's hidden states at the real positions,
    the last hidden states and logits at the K slots, and the encoder's dense / multi / sparse vectors."""
    settings = EncoderSettings(kq=4, kp=4, content_filter=False, top_n=32)
    batch = DiffRetEncoder(native, settings).builder("passage").build(texts)
    assert (batch.attention_mask == 0).any()  # left padding is in play
    real = batch.attention_mask.bool()
    out = {}
    with torch.no_grad():
        n_out = native.model(**model_inputs(native, batch), output_hidden_states=True)
        r_out = remote.model(**model_inputs(remote, batch), output_hidden_states=True)
        assert len(n_out.hidden_states) == len(r_out.hidden_states) == 3
        out["hidden_states_all_layers"] = max((a - b)[real].abs().max().item()
                                              for a, b in zip(n_out.hidden_states, r_out.hidden_states))
        out["logits_all_positions"] = (n_out.logits - r_out.logits)[real].abs().max().item()
        n_slots, r_slots = native.read_slots(batch), remote.read_slots(batch)
        out["hidden_at_slots"] = (n_slots.hidden - r_slots.hidden).abs().max().item()
        out["logits_at_slots"] = (native.vocab_logits(n_slots.features)
                                  - remote.vocab_logits(r_slots.features)).abs().max().item()
    a = DiffRetEncoder(native, settings).encode(texts, "passage")
    b = DiffRetEncoder(remote, settings).encode(texts, "passage")
    out["dense"] = float(np.abs(a.dense - b.dense).max())
    out["multi"] = float(np.abs(a.multi - b.multi).max())
    assert [d.keys() for d in a.sparse] == [d.keys() for d in b.sparse]
    out["sparse"] = float(max(abs(x[t] - y[t]) for x, y in zip(a.sparse, b.sparse) for t in x))
    return out


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_native_equals_the_checkpoint_code(remote_built, name):
    """Weights made and saved by the checkpoint's own code, read natively: the same numbers in float32."""
    native, remote = both(remote_built[name])
    assert type(native.model).__name__.startswith("NonCausal")
    assert type(remote.model).__module__.startswith("transformers_modules")
    diffs = max_differences(native, remote)
    print(name, json.dumps(diffs))
    for key in ("hidden_states_all_layers", "logits_all_positions", "hidden_at_slots", "logits_at_slots",
                "dense", "multi"):
        assert diffs[key] <= ATOL, (key, diffs[key])
    assert diffs["sparse"] == 0  # integer weights (x100, rounded)


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_folders_built_natively_load_in_the_checkpoint_code(tiny_model_dirs, name):
    """tiny_models writes its Dream/LLaDA weights under the checkpoints' names: their code finds every one."""
    from safetensors.torch import load_file

    tiny_models.require_remote_code()
    folder = tiny_model_dirs[name]
    native, remote = both(folder)
    saved, state = load_file(folder / "model.safetensors"), remote.model.state_dict()
    assert set(saved) == set(state)  # no weight left to the code's random init, none ignored
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    diffs = max_differences(native, remote)
    assert max(v for k, v in diffs.items() if k != "sparse") <= ATOL and diffs["sparse"] == 0, diffs


LOAD_TWICE = """
import json, sys
from pathlib import Path
from diffret_pyserini.model.backbones import load_backbone
folder, markers = sys.argv[1], [Path(m) for m in sys.argv[2:]]
result = {}
backbone = load_backbone(folder, device="cpu")
result["default"] = [backbone.kind, type(backbone.model).__name__]
result["imported_default"] = [m.exists() for m in markers]
backbone = load_backbone(folder, device="cpu", trust_remote_code=True)
result["trusted"] = [backbone.kind, type(backbone.model).__name__]
result["imported_trusted"] = [m.exists() for m in markers]
print(json.dumps(result))
"""


def test_planted_dream_code_runs_only_with_trust_remote_code(tiny_model_dirs, tmp_path):
    """A fresh process with an empty module cache: the default (native) load imports none of the folder's code;
    asking for it runs it."""
    tiny_models.require_remote_code()
    folder = tmp_path / "dream-planted"
    shutil.copytree(tiny_model_dirs["dream"], folder)
    markers = [tmp_path / "modeling-imported", tmp_path / "configuration-imported"]
    tiny_models.plant_import_markers([folder / "modeling_dream.py", folder / "configuration_dream.py"], markers)
    result = tiny_models.run_fresh(LOAD_TWICE, [folder, *markers], tmp_path)
    assert result["default"] == ["dream", "NonCausalQwen2ForCausalLM"]
    assert result["imported_default"] == [False, False]
    assert result["trusted"] == ["dream", "DreamModel"]
    assert result["imported_trusted"] == [True, True]
    assert (tmp_path / "modules" / "transformers_modules").is_dir()  # the cache we pointed at was the one used


def test_our_folder_over_a_dream_base_runs_its_code_when_asked(tiny_model_dirs, tmp_path):
    tiny_models.require_remote_code()
    ours = tmp_path / "finetuned"
    ours.mkdir()
    (ours / "diffret_config.json").write_text(json.dumps({"base_model": str(tiny_model_dirs["dream"]),
                                                          "kind": "dream"}))
    assert type(load_backbone(ours, device="cpu").model).__name__ == "NonCausalQwen2ForCausalLM"
    assert type(load_backbone(ours, device="cpu", trust_remote_code=True).model).__name__ == "DreamModel"


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_max_positions_through_the_checkpoint_code(tiny_model_dirs, name):
    """Dream's config says max_position_embeddings, LLaDA's max_sequence_length; native configs say the first."""
    tiny_models.require_remote_code()
    assert load_backbone(tiny_model_dirs[name], device="cpu", trust_remote_code=True).max_positions == 128
