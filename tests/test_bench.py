"""`python -m diffret_pyserini.bench --quick` on tiny real models: files, structure and sane numbers.

Timing targets are NOT asserted here (they depend on the machine); only that every number is there, positive
and consistent (K=1 ratios are 1, PromptReps makes exactly K forward steps, PNGs are valid images).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models

from diffret_pyserini.bench.__main__ import build_parser, main, options_from
from diffret_pyserini.bench.common import Cell, paired_ratio, percentile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("cost-of-k", "overhead", "passes", "search")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    """One quick run of every section with a tiny Llama as the decoder and a tiny BERT as the masked LM."""
    root = tmp_path_factory.mktemp("bench")
    decoder = tiny_models.build_llama(root / "llama")
    masked = tiny_models.build_bert_mlm(root / "bert")
    out = root / "out"
    argv = ["--quick", "--decoder", str(decoder), "--masked", str(masked), "--out", str(out), "--threads", "2"]
    assert main(argv) == 0
    docs = {name: json.loads((out / f"{name}.json").read_text(encoding="utf-8")) for name in SECTIONS}
    return out, docs


def test_every_section_writes_json_and_a_valid_png(quick_run):
    from PIL import Image

    out, docs = quick_run
    for name in SECTIONS:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as image:
            image.verify()
        meta = docs[name]["meta"]
        assert meta["section"] == name and meta["threads"] == 2 and meta["device_name"]
        assert not list(out.glob("*.tmp-*")), "atomic writes leave no temp files"


def test_cost_of_k_ratios_and_promptreps_steps(quick_run):
    _, docs = quick_run
    doc = docs["cost-of-k"]
    rows = doc["rows"]
    assert doc["ks"] == [1, 4]
    systems = {r["system"] for r in rows}
    assert len(systems) == 3  # decoder one-pass, decoder PromptReps, masked LM
    workloads = {r["workload"] for r in rows}
    assert workloads == {"query@1", "passage@1", "passage@2"}
    assert len(rows) == len(systems) * len(workloads) * 2
    for r in rows:
        assert r["seconds_per_item"] > 0 and r["ratio"] > 0 and r["token_ratio"] >= 1.0
        assert r["cpu_seconds_per_item"] > 0 and r["cpu_ratio"] > 0  # CPU device: CPU time is recorded
        if r["k"] == 1:
            assert r["ratio"] == 1.0 and r["cpu_ratio"] == 1.0 and r["token_ratio"] == 1.0
        else:
            assert r["token_ratio"] > 1.0
        if r["method"] == "promptreps-ar":
            assert r["forward_calls_per_batch"] == r["k"], "PromptReps makes exactly K steps"
        else:
            assert r["forward_calls_per_batch"] == 1, "one pass per batch whatever K"
        if r["role"] == "passage":
            assert r["text_tokens"] == [32, 32], "passages are cut to exactly --doc-tokens"
    targets = doc["targets"]
    assert {t["workload"] for t in targets} == workloads
    assert all(t["measured"] > 0 and t["met"] is (t["measured"] <= t["limit"]) for t in targets)
    assert any(t["promptreps_ratio"] for t in targets)


def test_overhead_rows_and_stage_profile(quick_run):
    _, docs = quick_run
    doc = docs["overhead"]
    assert [(r["batch"]) for r in doc["rows"]] == [1, 2, 1, 2]
    for r in doc["rows"]:
        assert set(r["seconds"]) == {"ours", "bare", "body+head@K"}
        assert all(v > 0 for v in r["seconds"].values())
        assert r["ours_over_body_head"] > 0 and r["ours_over_bare"] > 0
        assert r["ours_over_body_head_cpu"] > 0 and r["ours_over_bare_cpu"] > 0
        profile = r["profile_seconds"]
        assert set(doc["stages"]) <= set(profile) and profile["total"] > 0
        assert profile["forward (body + slot gather)"] > 0 and profile["writing (write_batch)"] > 0
        assert r["profiled_calls"] >= 1


def test_passes_compares_one_pass_with_two(quick_run):
    _, docs = quick_run
    for r in docs["passes"]["rows"]:
        assert len(r["seconds"]) == 3 and all(v > 0 for v in r["seconds"].values())
        assert r["one_over_two"] > 0 and r["all_three_over_two"] > 0 and r["one_over_two_cpu"] > 0


def test_search_scaling_rows(quick_run):
    out, docs = quick_run
    doc = docs["search"]
    assert [r["docs"] for r in doc["rows"]] == [100, 300]
    for r in doc["rows"]:
        assert len(r["search"]) == 5
        for s in r["search"].values():
            assert 0 < s["p50_s"] <= s["p95_s"] and s["qps"] > 0 and s["mean_hits"] > 0
        recall = r["multi_recall"]
        assert list(recall["recall_vs_exact"]) == ["10"] and recall["queries"] == 10  # quick run: hits == 10
        assert 0 < recall["recall_vs_exact"]["10"] <= 1
        mem = r["memory_bytes"]
        assert mem["multi store float32 (bytes)"] == 2 * mem["multi store float16 (bytes)"] > 0
        assert all(v > 0 for v in r["disk_bytes"].values())
        assert r["build_seconds"]["impact index (pyserini.index.lucene, incl. JVM start)"] > 0
    assert doc["target"]["measured_p95_s"] is None  # no 100k corpus in the quick run
    assert not (out / "work").exists(), "synthetic indexes are removed unless --keep-work"


def test_options_quick_and_overrides():
    opts = options_from(build_parser().parse_args(["--quick", "--ks", "1", "2", "--decoder", "none"]))
    assert opts.quick and opts.ks == (1, 2) and opts.decoder is None and opts.repeats == 1
    full = options_from(build_parser().parse_args([]))
    assert full.ks == (1, 2, 4, 8, 16, 32) and full.sizes == (1000, 10000, 100000) and full.threads == 2
    assert main(["--quick", "--ks", "0"]) == 2


def test_paired_ratio_and_percentile():
    a, b = Cell(("a",), lambda: None), Cell(("b",), lambda: None)
    a.samples, b.samples = [2.0, 3.0, 4.0], [1.0, 1.0, 2.0]
    assert paired_ratio(a, b) == 2.0 and paired_ratio(a, a) == 1.0
    assert paired_ratio(a, b, cpu=True) is None  # no CPU samples recorded
    a.cpu_samples, b.cpu_samples = [1.0, 6.0, 3.0], [1.0, 2.0, 1.0]
    assert paired_ratio(a, b, cpu=True) == 3.0
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([0, 10], 95) == pytest.approx(9.5)


def test_stage_timer_counts_a_nested_stage_once(monkeypatch):
    import itertools

    import torch

    from diffret_pyserini.bench import overhead

    ticks = itertools.count()
    monkeypatch.setattr(overhead.time, "perf_counter", lambda: float(next(ticks)))
    timer = overhead.StageTimer(torch.device("cpu"))
    inner = timer.wrap("dense pooling", lambda: 1)
    outer = timer.wrap("dense pooling", lambda: inner() + inner())
    assert outer() == 2
    assert timer.seconds["dense pooling"] == 1.0  # one start/stop pair: the nested calls add nothing
    assert not timer.active


def test_shaped_config_takes_the_shape_of_the_like_model():
    from diffret_pyserini.bench.shaped_model import shaped_config

    like = {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 6,
            "num_key_value_heads": 2, "vocab_size": 512, "rope_theta": 1e5, "max_position_embeddings": 8192}
    dream = shaped_config({"model_type": "Dream", "hidden_size": 64, "mask_token_id": 255}, like, 7, 0, 2)
    assert (dream["hidden_size"], dream["intermediate_size"], dream["num_hidden_layers"]) == (96, 256, 3)
    assert (dream["num_attention_heads"], dream["num_key_value_heads"], dream["vocab_size"]) == (6, 2, 512)
    assert (dream["mask_token_id"], dream["pad_token_id"], dream["eos_token_id"]) == (7, 0, 2)
    assert dream["max_position_embeddings"] == 8192
    llada = shaped_config({"model_type": "llada", "d_model": 64, "max_sequence_length": 128}, like, 7, 0, 2)
    assert (llada["d_model"], llada["mlp_hidden_size"], llada["n_layers"], llada["n_heads"]) == (96, 256, 3, 6)
    assert (llada["n_kv_heads"], llada["vocab_size"], llada["embedding_size"]) == (2, 512, 512)
    assert llada["max_sequence_length"] == 8192 and llada["rope_theta"] == 1e5
    # a config saved by transformers 5 keeps the RoPE base inside rope_parameters
    v5 = {k: v for k, v in like.items() if k != "rope_theta"} | {"rope_parameters": {"rope_theta": 5e5}}
    assert shaped_config({"model_type": "Dream"}, v5, 7, 0, 2)["rope_theta"] == 5e5
    with pytest.raises(ValueError, match="rope_theta: missing"):
        shaped_config({"model_type": "Dream"}, {k: v for k, v in like.items() if k != "rope_theta"}, 7, 0, 2)
    with pytest.raises(ValueError, match="neither Dream nor LLaDA"):
        shaped_config({"model_type": "llama"}, like, 7, 0, 2)


@pytest.mark.parametrize("arch, kind", [("dream-tiny", "dream"), ("llada-tiny", "llada")])
def test_shaped_model_loads_natively_as_its_backbone_kind(tiny_model_dirs, tmp_path, arch, kind):
    """The random-weight folder (the checkpoint's config and code, weights under its names) loads natively as a
    diffusion backbone and encodes."""
    from diffret_pyserini.bench.shaped_model import main as shaped_main
    from diffret_pyserini.model.backbones import load_backbone
    from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings

    fixtures = tiny_models.require_fixtures()
    like = tiny_model_dirs["qwen2"]
    out = tmp_path / kind
    assert shaped_main(["--code", str(fixtures / arch), "--like", str(like), "--out", str(out)]) == 0
    assert not out.with_name(out.name + ".tmp").exists()
    assert sorted(p.name for p in out.glob("*.py")) == sorted(p.name for p in (fixtures / arch).glob("*.py"))
    backbone = load_backbone(out, device="cpu")
    assert backbone.kind == kind and backbone.slot_id == tiny_models.MASK_ID
    assert type(backbone.model).__name__.startswith("NonCausal")
    encoded = DiffRetEncoder(backbone, EncoderSettings(kp=3)).encode(["time sharing systems"], "passage")
    assert encoded.dense.shape == (1, 64) and encoded.multi.shape[:2] == (1, 3)


def test_the_gpu_check_dry_runs_on_cpu_with_its_throughput_and_cost_rows(tiny_model_dirs, tmp_path, capsys):
    """The prepared GPU script (`bench.gpu_check`), run here with --quick: random-weight Dream and causal folders
    of one shape, throughput at K=1 and 16 on the Dream folder, cost of K against PromptReps on the decoder."""
    from diffret_pyserini.bench import gpu_check, throughput

    fixtures = tiny_models.require_fixtures()
    out = tmp_path / "out"
    assert gpu_check.main(["--dream-code", str(fixtures / "dream-tiny"), "--like", str(tiny_model_dirs["qwen2"]),
                           "--out", str(out), "--device", "cpu", "--quick"]) == 0
    doc = json.loads((out / "throughput.json").read_text())
    assert doc["kind"] == "dream" and Path(doc["model"]).name == "dream-shaped" and doc["kp"] == [1, 16]
    collections = 2 if throughput.ORIGINAL_CACM.is_file() else 1
    assert [r["kp"] for r in doc["rows"]] == [1, 16] * collections
    for r in doc["rows"]:
        assert r["docs"] == 64 and r["padding"]["after"] < r["padding"]["before"]
        assert min(r["docs_per_s"].values()) > 0 and r["batches"]["after"] >= 1
    assert (out / "throughput.png").read_bytes()[:8] == PNG_MAGIC
    cost = json.loads((out / "cost-of-k.json").read_text())
    assert cost["ks"] == [1, 16]
    methods = {(Path(r["system"].split()[0]).name, r["method"]) for r in cost["rows"]}
    assert {("decoder-shaped", "promptreps-ar"), ("decoder-shaped", "one-pass"), ("dream-shaped", "one-pass")} \
        <= methods
    promptreps = [r for r in cost["rows"] if r["method"] == "promptreps-ar"]
    assert promptreps and all(r["forward_calls_per_batch"] == r["k"] for r in promptreps)
    assert "| K |" in capsys.readouterr().out  # the throughput table, printed


def test_the_body_limit_plans_every_window_as_the_after_arm_does(tmp_path):
    """Over more than one 1,024-document window, the limit's inputs are the after arm's batches, no more."""
    import torch

    from diffret_pyserini.bench.throughput import body_limit
    from diffret_pyserini.datasets import iter_corpus, resolve_dataset
    from diffret_pyserini.encode.jobs import EncodeOptions, EncodeStats, encode_corpus
    from diffret_pyserini.model.spec import get_encoder

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(open(resolve_dataset("cacm").corpus_path).readlines()[:1100]))
    encoder = get_encoder("splade-tiny", device="cpu", kp=2, passage_max_length=16)
    _, shape = body_limit(encoder, corpus, torch.device("cpu"), 48, 1024)
    stats = EncodeStats()
    encode_corpus(encoder, corpus, tmp_path / "after", EncodeOptions(batch_size=48, max_tokens=1024), stats=stats)
    assert stats.docs == len(list(iter_corpus(corpus))) == 1100
    assert shape["batches"] == stats.batches > 1100 // 48


def test_passages_of_tokens_refuses_a_tokenizer_that_reads_nothing():
    """A vocabulary of special tokens only (what transformers 5 builds from a 4.x-style `vocab_file=` keyword)
    decodes every text to ''; doubling it to reach N tokens once grew until the machine ran out of memory."""
    from diffret_pyserini.bench.common import passages_of_tokens

    class NoVocabulary:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * (3 if isinstance(text, str) and "x" in text else 1)}

        def decode(self, ids, skip_special_tokens=True):
            return ""

    with pytest.raises(ValueError, match="however long"):
        passages_of_tokens(NoVocabulary(), 2, 8)
