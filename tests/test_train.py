"""Fine-tuning on tiny real models: the loss falls, held-out ranking improves, saved folders load everywhere."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from diffret_pyserini.model.backbones import load_backbone
from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings
from diffret_pyserini.train.arguments import DataArguments, ModelArguments, TrainingArguments
from diffret_pyserini.train.data import Example, GroupBatches, Passage, read_examples, write_examples
from diffret_pyserini.train.trainer import read_history, train

# Content words the tiny BERT vocabulary spells as single tokens (stopwords left out).
WORDS = """computer system program algorithm data information search index document text method time paper
problem result model design analysis processing memory network file structure function number set code storage
user machine process performance list table science research theory general large""".split()
SETTINGS = dict(kq=2, kp=4, query_max_length=16, passage_max_length=32)


def synthetic(n_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Documents of 6 distinct words; each query is 3 of its document's words, shuffled."""
    rng = random.Random(seed)
    docs = [" ".join(rng.sample(WORDS, 6)) for _ in range(n_docs)]
    queries = [" ".join(rng.sample(d.split(), 3)) for d in docs]
    return docs, queries


def write_train(path: Path, docs: list[str], queries: list[str], negatives: int = 1) -> Path:
    rng = random.Random(7)
    examples = []
    for i, (d, q) in enumerate(zip(docs, queries)):
        negs = [j for j in rng.sample(range(len(docs)), negatives + 1) if j != i][:negatives]
        examples.append(Example(f"q{i}", q, [Passage(f"d{i}", "", d)], [Passage(f"d{j}", "", docs[j]) for j in negs]))
    return write_examples(examples, path)


def run_train(model: Path, data: Path, out: Path, **overrides) -> Path:
    m = dict(model=str(model), full_finetune=True, device="cpu", dropout=False, **SETTINGS)
    d = dict(train_data=str(data), train_group_size=2)
    # One thread: tiny matrices gain nothing from two, and OpenMP threads spin badly on a busy 2-core machine.
    t = dict(output_dir=str(out), per_device_train_batch_size=8, max_steps=200, learning_rate=3e-3,
             warmup_ratio=0.0, logging_steps=20, save_steps=0, seed=1, threads=1)
    for key, value in overrides.items():
        target = next(x for x, cls in ((m, ModelArguments), (d, DataArguments), (t, TrainingArguments))
                      if key in {f.name for f in fields(cls)})
        target[key] = value
    # Built after the overrides: transformers.TrainingArguments derives fields in __post_init__.
    return train(ModelArguments(**m), DataArguments(**d), TrainingArguments(**t))


def mrr(encoder: DiffRetEncoder, docs: list[str], queries: list[str], representation: str) -> float:
    """Mean reciprocal rank of each query's own document among all documents."""
    p = encoder.encode(docs, "passage", want=[representation])
    q = encoder.encode(queries, "query", want=[representation])
    if representation == "dense":
        scores = q.dense @ p.dense.T
    else:  # multi: MaxSim, summed over query vectors
        scores = np.einsum("qih,pjh->qpij", q.multi, p.multi).max(-1).clip(min=0).sum(-1)
    ranks = (scores > scores[np.arange(len(queries)), np.arange(len(queries))][:, None]).sum(1) + 1
    return float((1.0 / ranks).mean())


def saved_encoder(folder: Path) -> DiffRetEncoder:
    """A saved folder as the CLIs load it: the backbone plus the settings saved in diffret_config.json."""
    backbone = load_backbone(folder, device="cpu")
    return DiffRetEncoder(backbone, EncoderSettings.from_dict(backbone.spec.settings))


@pytest.fixture(scope="module")
def bert_run(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_bert")
    docs, queries = synthetic(96, seed=1)
    data = write_train(root / "train.jsonl", docs, queries)
    out = run_train(tiny_model_dirs["bert"], data, root / "out")
    return tiny_model_dirs["bert"], out


def test_loss_decreases_and_held_out_positives_rank_higher(bert_run):
    base_dir, out = bert_run
    history = read_history(out)
    assert history[-1]["mean_loss"] < 0.8 * history[0]["mean_loss"]
    docs, queries = synthetic(40, seed=99)  # unseen documents and queries
    base = DiffRetEncoder(load_backbone(base_dir, device="cpu"), EncoderSettings(**SETTINGS))
    tuned = saved_encoder(out)
    assert tuned.settings.kq == 2 and tuned.settings.kp == 4  # settings travel with the folder
    for representation in ("dense", "multi"):
        before, after = mrr(base, docs, queries, representation), mrr(tuned, docs, queries, representation)
        # A random tiny BERT starts at chance (all slot states nearly alike); training must clearly beat it.
        assert after > 1.4 * before, (representation, before, after)


def test_full_weights_folder_layout(bert_run):
    _, out = bert_run
    config = json.loads((out / "diffret_config.json").read_text())
    assert config["base_model"] == "." and config["adapter"] is None and config["kind"] == "masked"
    assert (out / "tokenizer_config.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob("checkpoint-*"))  # removed after the final save


class PlantedCode:
    """Unpickling this creates a marker file: stands for code planted in a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_resume_reaches_the_same_weights(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(32, seed=2)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    kwargs = dict(max_steps=6, loss_sparse=1.0, loss_flops=1e-3, per_device_train_batch_size=4)
    straight = run_train(tiny_model_dirs["bert"], data, tmp_path / "a", **kwargs)
    # Run b keeps its step-3 checkpoint; delete its final model to stand in for a run killed after step 3.
    resumed = run_train(tiny_model_dirs["bert"], data, tmp_path / "b", save_steps=3, keep_checkpoints=True, **kwargs)
    assert (resumed / "checkpoint-3" / "trainable.safetensors").is_file()
    assert (resumed / "checkpoint-3" / "trainer_state.json").is_file()  # transformers.Trainer's checkpoint
    assert not (resumed / "checkpoint-6").exists()  # the final step is the model folder, not a checkpoint
    for name in ("diffret_config.json", "model.safetensors", "diffret_train.json"):
        (resumed / name).unlink()
    with pytest.raises(ValueError, match="checkpoints"):
        run_train(tiny_model_dirs["bert"], data, tmp_path / "b", **kwargs)
    with pytest.raises(ValueError, match="other arguments"):
        run_train(tiny_model_dirs["bert"], data, tmp_path / "b", resume=True, **{**kwargs, "learning_rate": 1.0})
    state_pt = resumed / "checkpoint-3" / "optimizer.pt"
    genuine = state_pt.read_bytes()
    marker = tmp_path / "planted-code-ran"
    torch.save({**torch.load(state_pt, weights_only=True), "planted": PlantedCode(marker)}, state_pt)
    from diffret_pyserini.cli import InputError

    with pytest.raises(InputError, match="not a checkpoint this trainer wrote"):
        run_train(tiny_model_dirs["bert"], data, tmp_path / "b", resume=True, **kwargs)
    assert not marker.exists()  # refused before anything in the pickle ran
    state_pt.write_bytes(genuine)
    run_train(tiny_model_dirs["bert"], data, tmp_path / "b", resume=True, **kwargs)
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_history(straight) == read_history(resumed)


def test_lora_adapter_folder_loads_merged_and_matches_training_model(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(32, seed=3)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    out = run_train(tiny_model_dirs["qwen2"], data, tmp_path / "lora", full_finetune=False, kind="bidirectional",
                    max_steps=4, lora_r=4, lora_alpha=16, lora_target_modules="q_proj,v_proj")
    config = json.loads((out / "diffret_config.json").read_text())
    assert config["adapter"] == "adapter" and (out / "adapter" / "adapter_config.json").is_file()
    assert config["kind"] == "bidirectional" and config["base_model"] == str(Path(tiny_model_dirs["qwen2"]).resolve())
    tuned = saved_encoder(out)
    base = DiffRetEncoder(load_backbone(tiny_model_dirs["qwen2"], kind="bidirectional", device="cpu"),
                          tuned.settings)
    a = tuned.encode(docs[:4], "passage", want=["dense", "sparse"])
    b = base.encode(docs[:4], "passage", want=["dense", "sparse"])
    assert not np.allclose(a.dense, b.dense)  # the adapter changed the model
    # The merged folder gives what the training model (adapter not merged) gives.
    from diffret_pyserini.train.trainable_encoder import build_encoder

    m = build_encoder(ModelArguments(model=str(tiny_model_dirs["qwen2"]), kind="bidirectional", device="cpu",
                                     lora_r=4, lora_alpha=16, lora_target_modules="q_proj,v_proj"), SETTINGS)
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(m.peft_model, load_file(out / "adapter" / "adapter_model.safetensors"))
    m.eval()
    with torch.no_grad():
        live = m.encode(docs[:4], "passage", ["dense"])["dense"].numpy()
    assert np.allclose(live, a.dense, atol=1e-4)


def test_gradient_checkpointing_is_switched_on_through_the_trainer(tiny_model_dirs, tmp_path, monkeypatch):
    """--gradient_checkpointing reaches the model under either transformers' name for it (4.x gradient_, 5.x
    activation_checkpointing_enable, which passes extra options)."""
    from diffret_pyserini.train import trainable_encoder

    seen = []
    enable = trainable_encoder.TrainableEncoder.gradient_checkpointing_enable

    def spy(self, *args, **kwargs):
        enable(self, *args, **kwargs)
        seen.append(any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules()))

    monkeypatch.setattr(trainable_encoder.TrainableEncoder, "gradient_checkpointing_enable", spy)
    docs, queries = synthetic(16, seed=5)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    run_train(tiny_model_dirs["qwen2"], data, tmp_path / "gc", kind="bidirectional", full_finetune=False,
              max_steps=2, gradient_checkpointing=True)
    assert seen == [True]


def test_causal_backbone_trains_single_token(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(16, seed=4)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    out = run_train(tiny_model_dirs["qwen2"], data, tmp_path / "ar", kind="causal", kq=1, kp=1, max_steps=3,
                    loss_multi=0.0)
    config = json.loads((out / "diffret_config.json").read_text())
    assert config["kind"] == "causal" and config["settings"]["kp"] == 1
    assert load_backbone(out, device="cpu").kind == "causal"


def test_group_batches_are_deterministic_and_fill_short_negative_lists():
    ex = [Example(f"q{i}", f"query {i}", [Passage(f"d{i}", "", f"text {i}")],
                  [Passage(f"n{i}", "", f"neg {i}")]) for i in range(10)]
    batches = GroupBatches(ex, batch_size=4, group_size=3, seed=5)
    first = list(batches.epoch(0))
    assert len(first) == len(batches) == 2
    assert [b.queries for b in first] == [b.queries for b in batches.epoch(0)]
    assert list(batches.epoch(0, start=1))[0].queries == first[1].queries  # resume mid-epoch
    assert [b.queries for b in batches.epoch(1)] != [b.queries for b in first]
    b = first[0]
    assert len(b.passages) == 12
    for i, q in enumerate(b.queries):
        assert b.passages[3 * i] == "text " + q.split()[1]  # the positive leads its group
        assert b.passages[3 * i + 1] == b.passages[3 * i + 2] == "neg " + q.split()[1]  # 1 negative, cycled


def test_read_examples_reports_file_line_and_field(tmp_path):
    from diffret_pyserini.datasets import DatasetError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "positive_passages": [{"docid": "1", "text": "x"}]}\n'
                   '{"query": "b", "positive_passages": []}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: positive_passages: no positive"):
        read_examples(bad)
    bad.write_text('{"query": "a", "positive_passages": [{"docid": "1", "text": 5}]}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: positive_passages\[0\]"):
        read_examples(bad)


# ----------------------------------------------------------------------------------------- slow: real CLIs

def tiny_beir(root: Path, docs: list[str], queries: list[str]) -> Path:
    """A BEIR folder: titled documents (for title pseudo-queries), test queries and qrels."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, d in enumerate(docs):
            words = d.split()
            f.write(json.dumps({"_id": f"d{i}", "title": " ".join(words[:2]), "text": " ".join(words[2:])}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i, q in enumerate(queries):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"q{i}\td{i}\t1\n" for i in range(len(queries))))
    return root


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_mine_train_and_saved_folder_round_trips_through_pipeline_and_pyserini_encode(tiny_model_dirs, tmp_path):
    rng = random.Random(11)
    docs = [" ".join(rng.sample(WORDS, 8)) for _ in range(40)]
    data = tiny_beir(tmp_path / "tiny", docs, [" ".join(d.split()[2:5]) for d in docs[:10]])
    mined = tmp_path / "titles.jsonl"
    run_cli(["diffret_pyserini.train.mine", "--dataset", str(data), "--output", str(mined), "--source", "titles",
             "--min_words", "3", "--negatives", "2", "--indexes", str(tmp_path / "idx")], tmp_path)
    examples = read_examples(mined)
    assert len(examples) == 40 and all(len(e.negatives) == 2 for e in examples)
    assert all(e.positives[0].docid not in {n.docid for n in e.negatives} for e in examples)
    out = tmp_path / "model"
    run_cli(["diffret_pyserini.train", "--model", str(tiny_model_dirs["bert"]), "--train_data", str(mined),
             "--output_dir", str(out), "--full_finetune", "--kq", "2", "--kp", "4", "--max_steps", "3",
             "--per_device_train_batch_size", "8", "--device", "cpu"], tmp_path)
    run_cli(["diffret_pyserini.pipeline", "--dataset", str(data), "--model", str(out), "--indexes",
             str(tmp_path / "idx"), "--runs", str(tmp_path / "runs"), "--hits", "10", "--systems", "sparse",
             "dense", "multi"], tmp_path)
    metrics = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert {"sparse", "dense", "multi"} <= set(json.dumps(metrics).replace('"', " ").split())
    emb = tmp_path / "emb"
    run_cli(["pyserini.encode", "input", "--corpus", str(data / "corpus.jsonl"), "--fields", "title", "text",
             "output", "--embeddings", str(emb), "--to-faiss", "encoder", "--encoder", str(out), "--fields",
             "title", "text", "--batch-size", "8", "--dimension", "64", "--device", "cpu"], tmp_path)
    assert (emb / "index").is_file() and len((emb / "docid").read_text().split()) == 40


@pytest.mark.slow
def test_finetuned_default_trains_once_and_then_returns_the_cached_folder(tiny_model_dirs, tmp_path, monkeypatch):
    from diffret_pyserini.train import default

    monkeypatch.setitem(default.TRAIN, "max_steps", 2)
    monkeypatch.setitem(default.TRAIN, "per_device_train_batch_size", 8)
    rng = random.Random(12)
    docs = [" ".join(rng.sample(WORDS, 8)) for _ in range(30)]
    data = tiny_beir(tmp_path / "tiny", docs, docs[:3])
    monkeypatch.setitem(default.MINE, "titles", dict(negatives=2, min_words=3))
    root = tmp_path / "indexes" / "tiny" / "finetuned"
    folder = default.finetuned_default(data, root, base_model=str(tiny_model_dirs["bert"]))
    assert folder == root / "bert-ft" and (folder / "diffret_config.json").is_file()
    from diffret_pyserini.datasets import resolve_dataset
    from diffret_pyserini.index.lucene import dataset_key

    bm25 = tmp_path / "indexes" / dataset_key(resolve_dataset(data)) / "bm25" / "index"
    assert bm25.is_dir()  # the pipeline's BM25 index, reused
    stamp = json.loads((root / "bert-ft.finetune.json").read_text())
    assert stamp["done"] and "--full_finetune" in stamp["command"]
    weights = (folder / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    assert default.finetuned_default(data, root, base_model=str(tiny_model_dirs["bert"])) == folder
    assert (folder / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == weights  # not retrained
    monkeypatch.setitem(default.TRAIN, "max_steps", 3)  # another recipe: trained again
    default.finetuned_default(data, root, base_model=str(tiny_model_dirs["bert"]))
    assert json.loads((root / "bert-ft.finetune.json").read_text())["fingerprint"] != stamp["fingerprint"]


@pytest.mark.slow
def test_finetuned_default_trains_on_two_sources_joined(tiny_model_dirs, tmp_path, monkeypatch):
    from diffret_pyserini.train import default

    monkeypatch.setitem(default.TRAIN, "max_steps", 2)
    monkeypatch.setitem(default.TRAIN, "per_device_train_batch_size", 8)
    monkeypatch.setitem(default.MINE, "titles", dict(negatives=2, min_words=3))
    monkeypatch.setitem(default.MINE, "sentences", dict(negatives=2, min_words=3))
    rng = random.Random(12)
    data = tiny_beir(tmp_path / "tiny", [" ".join(rng.sample(WORDS, 8)) for _ in range(30)], ["a b"])
    root = tmp_path / "indexes" / "tiny" / "finetuned"
    folder = default.finetuned_default(data, root, base_model=str(tiny_model_dirs["bert"]), source="titles+sentences",
                                       exclude=[])
    assert folder == root / "bert-ft-titles-sentences" and (folder / "diffret_config.json").is_file()
    (train_dir,) = root.glob("train-*")
    assert sorted(p.name for p in train_dir.iterdir()) == ["sentences.jsonl", "titles.jsonl"]  # both, one file each
    stamp = json.loads((root / "bert-ft-titles-sentences.finetune.json").read_text())
    assert stamp["source"] == "titles+sentences" and len(stamp["mine"]) == 2


def test_a_training_source_is_one_source_or_several_joined():
    from diffret_pyserini.train import default

    assert default.source_parts("lm+sentences") == ["lm", "sentences"] and default.source_parts("lm") == ["lm"]
    for bad in ("lm+lm", "poems", "lm+"):
        with pytest.raises(ValueError, match="pseudo-query source"):
            default.source_parts(bad)


def test_training_forward_is_the_inference_forward(tiny_model_dirs):
    """TrainableEncoder and DiffRetEncoder.encode run one `represent`; the batch's shared sparse column space
    gives each text the very term weights its own columns give at inference."""
    from diffret_pyserini.model import representations as R
    from diffret_pyserini.train.trainable_encoder import build_encoder

    docs, queries = synthetic(6, seed=8)
    m = build_encoder(ModelArguments(model=str(tiny_model_dirs["bert"]), device="cpu", full_finetune=True,
                                     dropout=False), SETTINGS)
    m.eval()
    with torch.no_grad():
        q, p = m(queries, docs, ["dense", "multi", "sparse"])
        columns, _ = m.encoder.content_columns(queries + docs)
    enc = m.encoder.encode(docs, "passage")
    assert np.array_equal(p["dense"].numpy(), enc.dense) and np.array_equal(p["multi"].numpy(), enc.multi)
    terms = R.to_term_dicts(R.quantize(p["sparse"], m.settings.scale), m.encoder.terms.id_to_term,
                            columns.expand(len(docs), -1))
    assert terms == enc.sparse and any(enc.sparse)


def test_gradient_accumulation_counts_optimizer_steps(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(32, seed=9)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    out = run_train(tiny_model_dirs["bert"], data, tmp_path / "acc", max_steps=3, per_device_train_batch_size=4,
                    gradient_accumulation_steps=2, logging_steps=1)
    history = read_history(out)
    assert [h["step"] for h in history] == [1, 2, 3]  # optimiser steps, each the mean of 2 micro-batches
    assert json.loads((out / "diffret_train.json").read_text())["steps"] == 3


def test_the_cpu_recipe_trains_splade_tiny_fully_and_any_other_model_with_bf16_lora():
    from diffret_pyserini.train import default

    assert default.recipe("splade-tiny") == default.TRAIN  # unchanged: its cached folders stay valid
    lora = default.recipe("smollm2")
    assert (lora["full_finetune"], lora["bf16"], lora["gradient_checkpointing"], lora["lora_dropout"]) == \
        (False, True, True, 0.0)
    assert (lora["learning_rate"], lora["kq"], lora["kp"]) == (1e-4, default.TRAIN["kq"], default.TRAIN["kp"])
    baseline = default.recipe("smollm2", kind="repllama", k={"kq": 1, "kp": 1})
    assert "kq" not in baseline and baseline["kind"] == "repllama" and baseline["loss_sparse"] == 0.0


def test_a_model_read_at_another_k_trains_at_that_k_into_its_own_folder(tmp_path):
    from diffret_pyserini.train import default

    args = default.recipe("smollm2", k={"kq": 1, "kp": 1})
    assert (args["kq"], args["kp"]) == (1, 1)
    assert default.k_suffix({"kq": 1, "kp": 1}) == "-k1-1" and default.k_suffix({"kq": 2}) == "-k2-8"
    assert default.k_suffix({"kq": 4, "kp": 8}) == "" and default.k_suffix(None) == ""
    assert default.k_suffix({"kq": 1}, kind="repllama") == ""  # a baseline reads one vector whatever K says
    cmd = default.train_command("smollm2", tmp_path / "train", tmp_path / "out", False, 2, k={"kq": 1, "kp": 1})
    assert cmd[cmd.index("--kq") + 1] == "1" and cmd[cmd.index("--kp") + 1] == "1"


def test_the_pipeline_fine_tunes_at_the_k_it_reads_the_model_at():
    from diffret_pyserini.pipeline.arguments import PipelineArguments
    from diffret_pyserini.pipeline.source_choice import trained_k

    assert trained_k(PipelineArguments(kq="1", kp=1)) == {"kq": 1, "kp": 1}
    assert trained_k(PipelineArguments(kq="auto")) is None and trained_k(PipelineArguments()) is None
