"""The main job on small real collections: every system, caching by content, resume, malformed datasets."""
import json
import os
import struct
from pathlib import Path

import pytest
from numeric_collection import args_for, key, make_numeric_collection

from diffret_pyserini import pipeline
from diffret_pyserini.datasets import iter_corpus, resolve_dataset
from diffret_pyserini.encode.jobs import EncodeOptions, encode_corpus
from diffret_pyserini.pipeline import PipelineArguments
from diffret_pyserini.search.systems import SYSTEMS

METRICS = {"nDCG@10", "MAP", "R@100", "R@1000"}


def is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24])[0] > 100


def test_main_job_on_a_second_collection_with_numeric_ids_and_no_titles(numeric_run):
    tmp, dataset, metrics = numeric_run
    assert list(metrics) == list(SYSTEMS)
    assert all(set(row) == METRICS for row in metrics.values())
    run_dir = tmp / "runs" / key(dataset) / "splade-tiny-kq4-kp16"
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert is_png(run_dir / "metrics.png")
    for system in SYSTEMS:
        lines = (run_dir / f"{system}.trec").read_text().splitlines()
        assert {line.split()[0] for line in lines} == {"1", "2", "3", "4", "5"}
        assert all(line.split()[2].isdigit() for line in lines)
    # queries are the titles of their relevant documents: BM25 and sparse (exact terms) find them
    assert metrics["bm25"]["nDCG@10"] > 0.8
    assert metrics["sparse"]["R@100"] == 1.0
    index_root = tmp / "indexes" / key(dataset) / "splade-tiny-kq4-kp16"
    for part in ("dense/index", "dense/docid", "multi/vectors.npy", "sparse/embeddings.jsonl", "impact"):
        assert (index_root / part).exists()


def test_bm25_hybrids_fuse_the_bm25_run_with_our_run(numeric_run):
    """hybrid-bm25-X is the equal-weight min-max fusion of the bm25 run and the X run (both at the same depth)."""
    from diffret_pyserini.eval.runs import read_trec_run
    from diffret_pyserini.search.fusion import fuse

    tmp, dataset, metrics = numeric_run
    run_dir = tmp / "runs" / key(dataset) / "splade-tiny-kq4-kp16"
    bm25 = read_trec_run(run_dir / "bm25.trec")
    for ours in ("sparse", "dense", "multi"):
        mine = read_trec_run(run_dir / f"{ours}.trec")
        fused = read_trec_run(run_dir / f"hybrid-bm25-{ours}.trec")
        assert set(fused) == set(mine)
        for qid, hits in fused.items():
            expected = dict(fuse(mine[qid], bm25.get(qid, []), alpha=0.5))
            assert {d for d, _ in hits} == set(expected) == {d for d, _ in mine[qid]} | {d for d, _ in bm25.get(qid, [])}
            for docid, score in hits:
                assert score == pytest.approx(expected[docid], abs=1e-4)
    # the planted titles are found by BM25 and by our sparse side: their fusion keeps every positive on top
    assert metrics["hybrid-bm25-sparse"]["R@100"] == 1.0


def test_an_unknown_system_is_a_clear_error(numeric_run):
    tmp, dataset, _ = numeric_run
    with pytest.raises(ValueError, match=r"unknown system 'nope'; choose from \('bm25'"):
        pipeline.run(args_for(tmp, dataset, systems=["bm25", "nope"]))


def test_rerun_skips_finished_stages_and_content_changes_redo_them(numeric_run, caplog):
    tmp, dataset, metrics = numeric_run
    run_dir = tmp / "runs" / key(dataset) / "splade-tiny-kq4-kp16"
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.trec")}
    caplog.clear()
    assert pipeline.run(args_for(tmp, dataset, alpha="0.5")) == metrics
    out = caplog.text
    assert "bm25 index up to date" in out and "queries searched" not in out
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.glob("*.trec")} == before
    # same file names, different content: a query text changes -> queries re-encoded and runs redone
    queries = dataset / "queries.jsonl"
    original = queries.read_text()
    queries.write_text(original.replace('"_id": "1", "text": "', '"_id": "1", "text": "analysis '))
    try:
        caplog.clear()
        pipeline.run(args_for(tmp, dataset, systems=["sparse"], alpha="0.5"))
        assert "sparse: 5 queries searched" in caplog.text
    finally:
        queries.write_text(original)
        pipeline.run(args_for(tmp, dataset, systems=["sparse"], alpha="0.5"))  # the shared run back as other tests expect


class CrashAfter:
    """Wraps a real encoder; raises after `n` batches (a kill), counts encoded texts."""

    def __init__(self, encoder, n=None):
        self.encoder, self.n, self.batches, self.texts = encoder, n, 0, 0

    def encode(self, texts, *args, **kwargs):
        if self.n is not None and self.batches == self.n:
            raise KeyboardInterrupt
        self.batches += 1
        self.texts += len(texts)
        return self.encoder.encode(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


def test_killed_encoding_resumes_and_reencodes_only_what_is_missing(tmp_path):
    from diffret_pyserini.model.spec import get_encoder

    corpus = resolve_dataset("cacm").corpus_path
    sample = tmp_path / "corpus.jsonl"
    sample.write_text("".join(open(corpus).readlines()[:100]))
    encoder = get_encoder("splade-tiny", device="cpu")
    crashing = CrashAfter(encoder, n=5)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(crashing, sample, tmp_path / "enc", EncodeOptions(batch_size=8, chunk_size=16))
    assert crashing.texts == 40  # 32 of them were committed in two chunks of 16
    resumed = CrashAfter(encoder)
    encode_corpus(resumed, sample, tmp_path / "enc", EncodeOptions(batch_size=8, chunk_size=16))
    assert resumed.texts == 100 - 32
    lines = (tmp_path / "enc" / "sparse" / "embeddings.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [d.docid for d in iter_corpus(sample)]
    fresh = CrashAfter(encoder)
    encode_corpus(fresh, sample, tmp_path / "fresh", EncodeOptions(batch_size=8, chunk_size=16))
    assert (tmp_path / "fresh" / "sparse" / "embeddings.jsonl").read_text().splitlines() == lines
    assert (tmp_path / "fresh" / "dense" / "docid").read_text() == (tmp_path / "enc" / "dense" / "docid").read_text()


def resident_bytes() -> int:
    """This process's resident set now (native memory included: torch, FAISS, numpy, Python)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssProbe:
    """Wraps a real encoder; records the resident set after every batch."""

    def __init__(self, encoder):
        self.encoder, self.rss = encoder, []

    def encode(self, *args, **kwargs):
        out = self.encoder.encode(*args, **kwargs)
        self.rss.append(resident_bytes())
        return out

    def __getattr__(self, name):
        return getattr(self.encoder, name)


def measure_encoding_rss(corpus, out, kp: int, batch: int) -> list[int]:
    """The resident set after every batch of an encode of `corpus` (run in a fresh interpreter by the test)."""
    from diffret_pyserini.model.spec import get_encoder

    probe = RssProbe(get_encoder("splade-tiny", device="cpu", kp=kp))
    encode_corpus(probe, corpus, out, EncodeOptions(batch_size=batch, chunk_size=64))
    return probe.rss


def test_encoding_memory_stays_flat_in_corpus_size(tmp_path):
    """Resident memory (all of it, native included: torch, FAISS, numpy) does not grow while a corpus streams
    through: what the writer would hold if it kept every batch (the multi vectors alone: ~26 MB) is far above
    the bound. Texts of one length, so the allocator's fragmentation from varying batch shapes (which
    encode.jobs.release_free_memory keeps in check; see its docstring) does not blur the measurement. Short
    texts: what the writer would hold is Kp vectors a document whatever its length, and the forward pass over
    ~100-word texts took 8x the time for the same check (a writer keeping every batch grows it by ~30 MB either
    way). Run in a fresh interpreter: a JVM that earlier tests started in this one grows on its own."""
    import subprocess
    import sys

    kp, n_docs, batch = 48, 3200, 16
    text = "time sharing systems and compilers for matrix computations in storage allocation"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"{i} {text}"}) + "\n" for i in range(n_docs)))
    code = ("import json, sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
            "from test_pipeline import measure_encoding_rss; "
            "print(json.dumps(measure_encoding_rss(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(corpus), str(tmp_path / "out"),
                           str(kp), str(batch)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    third = len(rss) // 3  # allocator pools and caches fill during the first third
    growth = max(rss[2 * third:]) - max(rss[third:2 * third])
    held = third * batch * kp * 128 * 4  # the float32 multi vectors of the last third's documents
    assert held > 20 * 2**20
    assert growth < 8 * 2**20, f"resident set grew {growth / 2**20:.1f} MB over the last {third * batch} docs"


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: (d / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n'),
     "corpus.jsonl:2: malformed JSON"),
    (lambda d: (d / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"text": "no id"}\n'),
     "corpus.jsonl:2: _id: missing"),
    (lambda d: (d / "queries.jsonl").write_text(""), "queries.jsonl: no queries"),
])
def test_malformed_dataset_files_are_one_line_errors(tmp_path, capsys, mutate, expected):
    dataset = make_numeric_collection(tmp_path / "bad", n_docs=25)
    mutate(dataset)
    code = pipeline.main(["--dataset", str(dataset), "--indexes", str(tmp_path / "i"), "--runs", str(tmp_path / "r"),
                          "--device", "cpu", "--finetune", "no"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_unknown_qrels_docs_and_unjudged_queries_are_documented_warnings(tmp_path, caplog):
    dataset = make_numeric_collection(tmp_path / "warn", n_docs=25)
    with open(dataset / "qrels" / "test.tsv", "a") as f:
        f.write("1\tNOT-A-DOC\t1\n")
    with open(dataset / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "99", "text": "computer programs nobody judged"}) + "\n")
    metrics = pipeline.run(args_for(tmp_path, dataset, systems=["bm25"]))
    out = caplog.text
    assert "1 judged docids are not in the corpus (NOT-A-DOC)" in out
    assert "1 of 6 queries have no qrels (99)" in out
    assert set(metrics) == {"bm25"}
    # BM25 alone encodes nothing: its run has a folder of its own
    run = (tmp_path / "runs" / key(dataset) / "bm25" / "bm25.trec").read_text()
    assert any(line.startswith("99 ") for line in run.splitlines())  # still searched
    assert not (tmp_path / "indexes" / key(dataset) / "splade-tiny-kp16").exists()


def test_finetune_auto_only_for_the_default_model_on_a_corpus_with_titles(tmp_path, caplog):
    from diffret_pyserini.datasets import resolve_dataset

    untitled = resolve_dataset(str(make_numeric_collection(tmp_path / "untitled")))
    cacm = resolve_dataset("cacm")
    auto = PipelineArguments(finetune="auto")
    assert pipeline.wants_finetune(auto, cacm)
    assert not pipeline.wants_finetune(auto, untitled)
    assert "--finetune auto: skipped" in caplog.text
    assert not pipeline.wants_finetune(PipelineArguments(finetune="auto", model=str(tmp_path)), cacm)
    assert not pipeline.wants_finetune(PipelineArguments(finetune="no"), cacm)
    assert pipeline.wants_finetune(PipelineArguments(finetune="yes"), untitled)
