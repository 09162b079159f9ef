"""`python -m diffret_pyserini.repro`: the matrix lists every condition of the paper with its commands; cells
run through the pipeline and print [OK] against the expected figures; a figure moved past its tolerance prints
[FAIL] and the command exits non-zero."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from diffret_pyserini.repro.__main__ import main
from diffret_pyserini.repro.check import load_expected
from diffret_pyserini.repro.matrix import BACKBONES, BEIR7, conditions, find

WORDS = """computer system program algorithm data information search index document text method time paper
problem result model design analysis processing memory network file structure function number set code storage
user machine process performance list table science research theory general large""".split()


def test_every_condition_of_the_paper_is_in_the_matrix_with_its_commands(capsys):
    assert main(["--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    names = [c.name for c in conditions()]
    cells = re.findall(r"^# (\S+) on (\S+)$", out, flags=re.M)
    assert {name for name, _ in cells} == set(names)
    # the paper's four backbones x every method it compares, zero-shot and fine-tuned
    for name in ("diffretriever-multi.dream.ft", "diffretriever-dense.llada.zs.k1", "diffembed.dream.ft",
                 "promptreps-multi.qwen2.5.ft", "repllama.llama3.ft", "bm25"):
        assert {d for n, d in cells if n == name} >= set(BEIR7), name
    for name, entry in load_expected()["paper"]["beir-7-mean"].items():
        assert find(name) and entry["approx"]  # every paper figure sits on a real condition
    blocks = out.split("# ")[1:]
    assert all("python -m diffret_pyserini.pipeline" in b for b in blocks)
    released = next(b for b in blocks if b.startswith("diffretriever-multi.dream.ft on nq"))
    assert "--model models/diffretriever-dream-7b-multi-q4-p16 --base_model models/Dream-v0-Instruct-7B" in released
    trained = next(b for b in blocks if b.startswith("repllama.llama3.ft on nq"))
    assert "-m diffret_pyserini.train" in trained and "--kind repllama" in trained and "--temperature 0.02" in trained


def test_the_measured_figures_name_real_conditions_and_datasets():
    measured = load_expected()["measured"]
    assert {"cacm", "cacm-notitle"} <= set(measured)
    for dataset, rows in measured.items():
        for name in rows:
            assert dataset in ("cacm", "cacm-notitle") and find(name)
    assert set(BACKBONES) >= {"splade-tiny", "smollm2", "dream", "llada", "llama3", "qwen2.5"}


def tiny_beir(root: Path, n_docs: int = 30) -> Path:
    rng = random.Random(3)
    docs = [rng.sample(WORDS, 10) for _ in range(n_docs)]
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": " ".join(d)}) + "\n" for i, d in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": " ".join(docs[i][:3])}) + "\n"
                                                for i in range(8)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n"
                                                                                      for i in range(8)))
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    tiny_beir(root / "data" / "scifact")  # a BEIR-7 name, a tiny folder: what --data-root holds
    return root


def run(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "scifact", "--data-root", str(root / "data"), "--indexes", str(root / "indexes"),
            "--runs", str(root / "runs"), "--device", "cpu", *extra]


def test_a_cell_runs_and_a_figure_moved_past_its_tolerance_fails(tiny_root, capsys):
    cells = ["--condition", "bm25", "--condition", "diffembed.splade-tiny.zs"]
    assert main(run(tiny_root, *cells)) == 0
    out = capsys.readouterr().out
    figures = {m[0]: float(m[1]) for m in re.findall(r"^\| (\S+) \| ([0-9.]+) \|", out, flags=re.M)}
    assert set(figures) == {"bm25", "diffembed.splade-tiny.zs"}
    assert "[--]" in out and "no expected figure" in out  # nothing expected for these cells yet
    good = tiny_root / "good.yaml"
    good.write_text("tolerance: 0.001\nmeasured:\n  scifact:\n" + "".join(
        f"    {name}: {{nDCG@10: {value}}}\n" for name, value in figures.items()))
    assert main(run(tiny_root, *cells, "--expected", str(good))) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^\[OK\] +scifact +(bm25|diffembed\.splade-tiny\.zs) +nDCG@10", out, flags=re.M)) == 2
    moved = tiny_root / "moved.yaml"
    moved.write_text(good.read_text().replace(f"bm25: {{nDCG@10: {figures['bm25']}}}",
                                              f"bm25: {{nDCG@10: {figures['bm25'] + 0.01:.4f}}}"))
    assert main(run(tiny_root, *cells, "--expected", str(moved))) == 1
    out = capsys.readouterr().out
    assert re.search(r"^\[FAIL\] scifact +bm25 +nDCG@10", out, flags=re.M)
    assert re.search(r"^\[OK\] +scifact +diffembed\.splade-tiny\.zs", out, flags=re.M)


def test_cells_without_their_inputs_are_skipped_and_bad_flags_are_one_line(tiny_root, capsys):
    assert main(run(tiny_root, "--condition", "diffembed.dream.zs")) == 0
    assert "[SKIP] scifact" in capsys.readouterr().out
    assert main(["--condition", "no-such-thing"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --condition no-such-thing")
    broken = tiny_root / "broken.yaml"
    broken.write_text("measured: [1, 2\n")
    assert main(run(tiny_root, "--condition", "bm25", "--expected", str(broken))) == 2
    assert "cannot read expected figures" in capsys.readouterr().err


def test_bm25_on_cacm_prints_ok_against_the_packaged_figures(tmp_path, capsys):
    assert main(["--condition", "bm25", "--dataset", "cacm", "--indexes", str(tmp_path / "indexes"),
                 "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\[OK\] +cacm +bm25 +nDCG@10 +0\.4801 \(expected 0\.4801", out, flags=re.M)
    assert re.search(r"^\[OK\] +cacm +bm25 +R@100 +0\.6801", out, flags=re.M)


@pytest.mark.slow
def test_zero_shot_splade_tiny_cells_on_cacm_print_ok(tmp_path, capsys):
    """Every zero-shot SPLADE-tiny cell of CACM, from scratch, against the packaged figures (a few CPU minutes)."""
    names = [c.name for c in conditions() if c.backbone == "splade-tiny" and c.mode == "zs"]
    argv = [x for name in names for x in ("--condition", name)]
    assert main([*argv, "--dataset", "cacm", "--indexes", str(tmp_path / "i"), "--runs", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^\[OK\] +cacm ", out, flags=re.M)) == 2 * len(names) and "[FAIL]" not in out
