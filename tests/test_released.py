"""Released DiffRetriever checkpoints load as they ship (backbones/released.py): a folder in the released layout
(retriever_config.json, a LoRA adapter, the tokenizer; no base weights) around the tiny Dream fixture with a
random adapter gives the vectors of the same adapter attached by hand; a malformed adapter is one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffret_pyserini.model.backbones import ModelLoadError, load_backbone
from diffret_pyserini.model.backbones.bidirectional import bool_key_mask_4d
from diffret_pyserini.model.backbones.released import load_released, read_released, tail_ids

TEXTS = ["the cat sat on the mat", "retrieval of passages with diffusion models and many words in it",
         "query words"]
KQ, KP, MAX_LENGTH = 2, 3, 48
SYSTEM = "You are an AI assistant that can understand human language."


def prompt_ids(tokenizer, role: str) -> tuple[list[int], list[int]]:
    """The ids before and after the text, cut from the chat template around a marker (the released layout
    stores them so)."""
    word = "Query" if role == "query" else "Passage"
    marker = "\u2063MARK\u2063"
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM},
         {"role": "user", "content": f'{word}: "{marker}". Use a few words to represent the {role}.'}],
        tokenize=False, add_generation_prompt=True)
    before, after = rendered.split(marker)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return ids(before), ids(after + 'The words are: "')


@pytest.fixture(scope="module")
def released(tiny_model_dirs, tmp_path_factory) -> tuple[Path, Path]:
    """(released folder, base folder): a random LoRA adapter on the tiny Dream, saved as the reference ships it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    base = tiny_model_dirs["dream"]
    out = tmp_path_factory.mktemp("released") / "diffretriever-dream-tiny"
    model = load_backbone(base, device="cpu").model  # Dream as transformers' Qwen2 (its weight names match)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                               "o_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_" in name:  # lora_B starts at zero: an adapter that changes nothing would prove nothing
                param.normal_(0, 0.3)
    peft.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tokenizer.save_pretrained(out)
    config = {"model_type": "dream", "mask_token_id": 255, "hidden_size": 64, "max_length": MAX_LENGTH,
              "n_gen_tokens": KQ, "n_gen_q_tokens": KQ, "n_gen_p_tokens": KP, "num_denoise_steps": 1,
              "normalize": True, "n_tail": 3, "use_eos": False, "lora_rank": 4, "lora_alpha": 8}
    for role in ("query", "passage"):
        config[f"{role}_prefix_ids"], config[f"{role}_suffix_ids"] = prompt_ids(tokenizer, role)
    (out / "retriever_config.json").write_text(json.dumps(config))
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    return out, base


def by_hand(released_dir: Path, base: Path, texts: list[str], role: str) -> torch.Tensor:
    """The adapter attached by hand (peft, unmerged) and the reference layout built by hand: left-padded
    [prefix] text [suffix] [mask x K] ['"', <|im_end|>, EOS], the hidden states at the K mask positions."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    cfg = json.loads((released_dir / "retriever_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(released_dir, local_files_only=True)
    model = PeftModel.from_pretrained(load_backbone(base, device="cpu").model, released_dir).eval()
    prefix, suffix = cfg[f"{role}_prefix_ids"], cfg[f"{role}_suffix_ids"]
    k = cfg["n_gen_q_tokens"] if role == "query" else cfg["n_gen_p_tokens"]
    quote = tok('"', add_special_tokens=False)["input_ids"]
    tail = [quote[0], tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    budget = cfg["max_length"] - len(prefix) - len(suffix)
    rows = [prefix + tok(t, add_special_tokens=False)["input_ids"][:budget] + suffix + [255] * k + tail
            for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=bool_key_mask_4d(mask),
                       position_ids=(mask.cumsum(-1) - 1).clamp(min=0), output_hidden_states=True).hidden_states[-1]
    first = width - k - len(tail)
    assert ids[:, first:first + k].eq(255).all()
    return torch.nn.functional.normalize(states[:, first:first + k].float(), dim=-1)


def test_released_folder_reads_its_settings(released):
    folder, _ = released
    cfg = read_released(folder)
    assert (cfg.kind, cfg.mask_id, cfg.k, cfg.n_tail) == ("dream", 255, {"query": KQ, "passage": KP}, 3)


def test_released_checkpoint_gives_the_vectors_of_the_adapter_attached_by_hand(released):
    from diffret_pyserini.model.spec import get_encoder

    folder, base = released
    encoder = get_encoder(str(folder), device="cpu", base_model=str(base))
    assert (encoder.settings.kq, encoder.settings.kp) == (KQ, KP)  # K from the folder
    bb = encoder.backbone
    assert bb.prompt_layouts["query"][2] == tail_ids(bb.tokenizer, 3)
    for role in ("query", "passage"):
        out = encoder.encode(TEXTS, role, want=["dense", "multi"])
        expected = by_hand(folder, base, TEXTS, role)
        np.testing.assert_allclose(out.multi, expected.numpy(), atol=2e-5)
        np.testing.assert_allclose(out.dense, expected.mean(1).numpy(), atol=2e-5)  # the README's single
    plain = get_encoder(str(base), device="cpu", kq=KQ, kp=KP)
    assert not np.allclose(plain.encode(TEXTS[:1], "query").multi, encoder.encode(TEXTS[:1], "query").multi,
                           atol=1e-3)  # the adapter did change the model


def test_released_checkpoint_needs_its_base_named(released):
    folder, _ = released
    with pytest.raises(ModelLoadError, match="name the base dream model folder with base_model=DIR"):
        load_released(folder, None, device="cpu")


@pytest.mark.parametrize("damage", ["json", "shape"])
def test_a_malformed_adapter_is_one_line(released, tmp_path, capsys, damage):
    from safetensors.torch import load_file, save_file

    from diffret_pyserini.encode.__main__ import main

    folder, base = released
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    if damage == "json":
        (broken / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ')
    else:  # weights of another rank than the config says
        weights = load_file(broken / "adapter_model.safetensors")
        save_file({k: v[:2] if "lora_A" in k else v for k, v in weights.items()}, broken / "adapter_model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        load_released(broken, base, device="cpu")
    assert "\n" not in str(err.value) and str(broken) in str(err.value)
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tcat on a mat\n")
    code = main(["input", "--topics", str(topics), "output", "--embeddings", str(tmp_path / "enc"),
                 "encoder", "--encoder", str(broken), "--base_model", str(base)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(broken) in lines[0]
