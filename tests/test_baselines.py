"""The baselines as systems of the main job and as Pyserini encoders: DiffEmbed (`diffembed`, on the job's model)
and RepLLaMA (`repllama-<model>`), zero-shot and fine-tuned on the job's own pseudo-queries, through the
pipeline's cached stages, FAISS and `python -m pyserini.encode`."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from cli_chain import run_chain

WORDS = """computer system program algorithm data information search index document text method time paper
problem result model design analysis processing memory network file structure function number set code storage
user machine process performance list table science research theory general large""".split()


def tiny_beir(root: Path, n_docs: int = 24, n_queries: int = 6) -> Path:
    """Titled documents of synthetic words (titles make the pseudo-queries), queries and qrels."""
    rng = random.Random(5)
    docs = [rng.sample(WORDS, 28) for _ in range(n_docs)]  # 25 text words: enough to make a title query
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": " ".join(d[:3]), "text": " ".join(d[3:])}) + "\n"
        for i, d in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": " ".join(docs[i][3:6])}) + "\n"
                                                for i in range(n_queries)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"q{i}\td{i}\t1\n" for i in range(n_queries)))
    return root


@pytest.fixture(scope="module")
def baseline_run(tiny_model_dirs, tmp_path_factory):
    from diffret_pyserini.pipeline import PipelineArguments, run
    from diffret_pyserini.train import default, sources

    root = tmp_path_factory.mktemp("baselines")
    data = tiny_beir(root / "tiny")
    patch = pytest.MonkeyPatch()
    patch.setitem(default.TRAIN, "max_steps", 2)  # two steps: what is checked is the wiring, not the learning
    patch.setitem(default.TRAIN, "per_device_train_batch_size", 8)
    patch.setitem(default.MINE, "titles", dict(negatives=2, min_words=3))
    patch.setattr(sources, "MIN_PSEUDO_QUERIES", 10)  # 24 titled documents are enough to fine-tune on here
    args = PipelineArguments(dataset=str(data), model=str(tiny_model_dirs["bert"]),
                             repllama_model=str(tiny_model_dirs["qwen2"]), systems=["bm25", "diffembed", "repllama"],
                             finetune="yes", alpha="0.5", hits=10, device="cpu", batch_size=8,
                             indexes=str(root / "indexes"), runs=str(root / "runs"))
    try:
        metrics = run(args)
    finally:
        patch.undo()
    return metrics, root, data


def test_baselines_are_rows_of_the_main_table_zero_shot_and_fine_tuned(baseline_run):
    metrics, root, _ = baseline_run
    assert set(metrics) == {"bm25", "diffembed", "ft-diffembed", "repllama-qwen2", "ft-repllama-qwen2"}
    table = next((root / "runs").rglob("main-bert/metrics.md")).read_text()
    for row in ("diffembed", "ft-diffembed", "repllama-qwen2", "ft-repllama-qwen2"):
        assert f"| {row} | peer |" in table  # a method compared against, not ours
    finetuned = next((root / "indexes").rglob("finetuned"))
    for folder, kind in (("bert-diffembed-ft", "diffembed"), ("qwen2-repllama-ft", "repllama")):
        saved = json.loads((finetuned / folder / "diffret_config.json").read_text())
        assert saved["kind"] == kind and saved["settings"]["kp"] == 1
        stamp = json.loads((finetuned / f"{folder}.finetune.json").read_text())
        command = stamp["command"]
        assert command[command.index("--temperature") + 1] == "0.02"
        assert command[command.index("--loss_multi") + 1] == "0.0"
    # one set of mined pseudo-queries, shared by every model trained on this collection
    assert len(list(finetuned.glob("train-*"))) == 1


def test_a_baseline_never_shares_folders_with_diffretriever(baseline_run):
    _, root, _ = baseline_run
    tags = {p.name for p in (root / "indexes").iterdir() for p in p.iterdir() if p.is_dir()}
    assert any(t.startswith("diffembed-bert-") for t in tags) and any(t.startswith("repllama-qwen2-") for t in tags)
    cell = next(p for p in (root / "indexes").rglob("diffembed-bert-kq1-kp1") if p.is_dir())
    assert (cell / "dense" / "index").is_file() and not (cell / "sparse").exists()  # dense only


def test_pyserini_encode_with_a_diffembed_spec_writes_the_pipelines_faiss_index(baseline_run, tiny_model_dirs,
                                                                                   tmp_path):
    import faiss
    from pyserini.search.faiss import FaissSearcher

    from diffret_pyserini.encode.pyserini_encoders import DiffRetQueryEncoder

    _, root, data = baseline_run
    spec = f"diffret-dense:{tiny_model_dirs['bert']}?kind=diffembed"
    run_chain([["pyserini.encode", "input", "--corpus", data / "corpus.jsonl", "--fields", "title", "text",
                "--delimiter", " ", "output", "--embeddings", tmp_path / "dense", "--to-faiss", "encoder",
                "--encoder", spec, "--fields", "title", "text", "--dimension", "64", "--batch-size", "8",
                "--device", "cpu"]], cwd=tmp_path)
    pipeline = next(p for p in (root / "indexes").rglob("diffembed-bert-kq1-kp1") if p.is_dir()) / "dense"
    assert (tmp_path / "dense" / "docid").read_text() == (pipeline / "docid").read_text()
    a, b = (faiss.read_index(str(d / "index")) for d in (tmp_path / "dense", pipeline))
    np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-5)
    query = json.loads((data / "queries.jsonl").read_text().splitlines()[0])["text"]
    hits = FaissSearcher(str(tmp_path / "dense"), DiffRetQueryEncoder(spec)).search(query, k=3)
    run = next((root / "runs").rglob("diffembed-bert-kq1-kp1/dense.trec")).read_text().split("\n")[0].split()
    assert hits[0].docid == run[2]  # the pipeline's first hit for q0
