"""The paper's single-vector baselines (model/recipes.py): DiffEmbed and RepLLaMA read from the same backbones.

Pooling and positions are checked on hand-made tensors and hand-built inputs; each recipe fine-tunes with the
same Trainer and its held-out ranking improves."""
from __future__ import annotations

import json
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from diffret_pyserini.model import representations as R
from diffret_pyserini.model.backbones import load_backbone, read_spec
from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings
from diffret_pyserini.model.recipes import TextSpanBuilder, framing, marked_text_builder, split_kind

TEXTS = ["the cat sat on the mat", "retrieval of passages with many more words in it", "query words"]


def test_mean_pool_averages_raw_valid_states_then_normalises():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]],    # third state is padding
                           [[0.0, 2.0], [0.0, 4.0], [0.0, 6.0]]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(R.mean_pool(hidden, valid), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # a mean of raw states, not of unit vectors: [3,4] and [0,1] average to [1.5,2.5], not to the unit mean
    two = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    expected = torch.tensor([[1.5, 2.5]]) / torch.tensor(1.5 ** 2 + 2.5 ** 2).sqrt()
    torch.testing.assert_close(R.mean_pool(two), expected)
    assert R.mean_pool(hidden[:1], torch.zeros(1, 3, dtype=torch.bool)).abs().sum() == 0  # nothing valid: zero


def test_slot_pooling_of_one_read_is_the_normalised_state():
    """RepLLaMA's vector: the EOS state, L2-normalised (the DiffRetriever mean over one slot)."""
    state = torch.tensor([[[3.0, 4.0]]])
    torch.testing.assert_close(R.dense_single(state), torch.tensor([[0.6, 0.8]]))


def test_kinds_name_the_recipe_and_the_architecture_beneath(tiny_model_dirs):
    assert split_kind("repllama") == ("repllama", "causal")
    assert split_kind("diffembed") == ("diffembed", None)
    assert split_kind("dream") == ("diffretriever", "dream")
    spec = read_spec(tiny_model_dirs["bert"], "diffembed")
    assert (spec.kind, spec.recipe) == ("masked", "diffembed")
    spec = read_spec(tiny_model_dirs["qwen2"], "diffembed")
    assert (spec.kind, spec.recipe) == ("bidirectional", "diffembed")  # a decoder read without its causal mask
    spec = read_spec(tiny_model_dirs["qwen2"], "repllama")
    assert (spec.kind, spec.recipe) == ("causal", "repllama")


def test_diffembed_input_is_the_raw_text_and_reads_only_its_tokens(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["bert"], kind="diffembed", device="cpu")
    tok = bb.tokenizer
    assert framing(tok) == ([tok.cls_token_id], [tok.sep_token_id])
    batch = TextSpanBuilder(tok, 64, tok.pad_token_id, bb.slot_id).build(TEXTS)
    width = batch.input_ids.shape[1]
    for row, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]  # [CLS] text [SEP]: no prompt, no slots
        assert batch.input_ids[row, width - len(ids):].tolist() == ids
        assert batch.attention_mask[row].sum() == len(ids)
        read = batch.slot_positions[row][batch.slot_valid[row]].tolist()
        assert [int(batch.input_ids[row, c]) for c in read] == ids[1:-1]  # every text token, nothing else
    assert tok.mask_token_id not in batch.input_ids


def test_diffembed_vector_is_the_mean_of_a_plain_forward(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["bert"], kind="diffembed", device="cpu")
    enc = DiffRetEncoder(bb, EncoderSettings(kq=4, kp=16))
    assert (enc.settings.kq, enc.settings.kp, enc.representations) == (1, 1, ("dense",))
    got = enc.encode(TEXTS, "passage").dense
    for row, text in enumerate(TEXTS):
        inputs = bb.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            states = bb.model(**inputs, output_hidden_states=True).hidden_states[-1][0, 1:-1]  # text tokens
        expected = torch.nn.functional.normalize(states.mean(0), dim=-1).numpy()
        np.testing.assert_allclose(got[row], expected, atol=1e-5)
    with pytest.raises(ValueError, match="makes dense vectors only, not sparse"):
        enc.encode(TEXTS, "passage", want=["dense", "sparse"])


def test_repllama_places_eos_last_under_left_padding(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["qwen2"], kind="repllama", device="cpu")
    tok = bb.tokenizer
    for role, marker in (("query", "query:"), ("passage", "passage:")):
        batch = marked_text_builder(tok, role, 64, bb.pad_id).build(TEXTS)
        width = batch.input_ids.shape[1]
        assert batch.slot_positions.tolist() == [[width - 1]] * len(TEXTS)  # every row's EOS, one column
        for row, text in enumerate(TEXTS):
            ids = tok(marker, add_special_tokens=False)["input_ids"] + \
                tok(" " + text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            assert batch.input_ids[row, width - len(ids):].tolist() == ids
            assert batch.input_ids[row, :width - len(ids)].eq(bb.pad_id).all()  # padding on the left only


def test_repllama_vector_is_the_causal_state_at_eos(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["qwen2"], kind="repllama", device="cpu")
    enc = DiffRetEncoder(bb)
    batch = enc.encode(TEXTS, "query").dense
    for row, text in enumerate(TEXTS):
        ids = enc.builder("query").build([text]).input_ids  # one row: no padding at all
        with torch.no_grad():
            state = bb.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        np.testing.assert_allclose(batch[row], torch.nn.functional.normalize(state, dim=-1).numpy(), atol=1e-5)
    assert bb.forward_calls > 0 and bb.kind == "causal"


def test_a_saved_recipe_folder_reads_its_architecture_off_the_base(tiny_model_dirs, tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "diffret_config.json").write_text(json.dumps({"base_model": str(tiny_model_dirs["qwen2"]),
                                                            "kind": "diffembed"}))
    assert read_spec(folder).kind == "bidirectional"  # a saved recipe folder: the architecture is read off
    with pytest.raises(ValueError, match="unknown backbone kind"):
        read_spec(tiny_model_dirs["qwen2"], "encoder")


# ------------------------------------------------------------------------------------------ fine-tuning
WORDS = """computer system program algorithm data information search index document text method time paper
problem result model design analysis processing memory network file structure function number set code storage
user machine process performance list table science research theory general large""".split()


# Half the words stand for the other half: a query names a document's words by their partners, which no
# untrained model can match (it starts near chance), and which a trained one must learn as pairs, not as
# documents: held-out documents are new combinations of the same words.
PAIRS = dict(zip(WORDS[0::2], WORDS[1::2]))


def synthetic(n_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Documents of 5 words; each query names 2 of them by their partners."""
    rng = random.Random(seed)
    docs = [rng.sample(sorted(PAIRS), 5) for _ in range(n_docs)]
    return [" ".join(d) for d in docs], [" ".join(PAIRS[w] for w in rng.sample(d, 2)) for d in docs]


def mrr(encoder: DiffRetEncoder, docs: list[str], queries: list[str]) -> float:
    p, q = encoder.encode(docs, "passage").dense, encoder.encode(queries, "query").dense
    scores = q @ p.T
    ranks = (scores > scores[np.arange(len(queries)), np.arange(len(queries))][:, None]).sum(1) + 1
    return float((1.0 / ranks).mean())


def train_recipe(model: Path, kind: str, out: Path, **overrides) -> Path:
    from diffret_pyserini.train.arguments import DataArguments, ModelArguments, TrainingArguments
    from diffret_pyserini.train.data import Example, Passage, write_examples
    from diffret_pyserini.train.trainer import train

    docs, queries = synthetic(96, seed=1)
    rng = random.Random(7)
    examples = [Example(f"q{i}", q, [Passage(f"d{i}", "", d)],
                        [Passage(f"d{j}", "", docs[j]) for j in [rng.choice([j for j in range(96) if j != i])]])
                for i, (d, q) in enumerate(zip(docs, queries))]
    data = write_examples(examples, out.parent / f"{kind}-train.jsonl")
    m = dict(model=str(model), kind=kind, full_finetune=True, device="cpu", dropout=False)
    d = dict(train_data=str(data), train_group_size=2)
    t = dict(output_dir=str(out), per_device_train_batch_size=8, max_steps=120, learning_rate=3e-3,
             warmup_ratio=0.0, logging_steps=20, save_steps=0, seed=1, threads=1, loss_multi=0.0,
             loss_sparse=0.0, temperature=0.02)
    for key, value in overrides.items():
        target = next(x for x, cls in ((m, ModelArguments), (d, DataArguments), (t, TrainingArguments))
                      if key in {f.name for f in fields(cls)})
        target[key] = value
    return train(ModelArguments(**m), DataArguments(**d), TrainingArguments(**t))


# the CPU LoRA recipe of train/default.py (frozen bf16 weights, CPU autocast, gradient checkpointing)
LORA_BF16 = dict(full_finetune=False, bf16=True, gradient_checkpointing=True, lora_dropout=0.0)


@pytest.mark.parametrize("name,kind,how", [("bert", "diffembed", {}), ("qwen2", "repllama", {}),
                                           ("qwen2", "repllama", LORA_BF16)], ids=["bert", "qwen2", "qwen2-lora-bf16"])
def test_recipe_fine_tunes_and_its_held_out_score_rises(tiny_model_dirs, tmp_path, name, kind, how):
    out = train_recipe(tiny_model_dirs[name], kind, tmp_path / "out", **how)
    config = json.loads((out / "diffret_config.json").read_text())
    assert config["kind"] == kind  # the folder loads as the same recipe again
    assert (config["adapter"] == "adapter") == bool(how)  # LoRA saves the adapter alone
    tuned = DiffRetEncoder(load_backbone(out, device="cpu"))
    assert tuned.recipe == kind and tuned.representations == ("dense",)
    base = DiffRetEncoder(load_backbone(tiny_model_dirs[name], kind=kind, device="cpu"))
    docs, queries = synthetic(40, seed=99)  # unseen documents and queries
    before, after = mrr(base, docs, queries), mrr(tuned, docs, queries)
    print(f"{kind} on {name}: held-out MRR {before:.3f} -> {after:.3f}")
    assert after > before + 0.1, (before, after)


def test_a_recipe_refuses_loss_weights_it_cannot_serve(tiny_model_dirs, tmp_path):
    with pytest.raises(ValueError, match="--loss_multi 1 has nothing to train"):
        train_recipe(tiny_model_dirs["bert"], "diffembed", tmp_path / "out", loss_multi=1.0, max_steps=1)
