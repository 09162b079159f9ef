"""`python -m diffret_pyserini.encode`: bad input gives a one-line error naming file, line and field, or a
documented behaviour (never a silently lost document); shards split and merge like pyserini.encode's."""
import json

import pytest

from diffret_pyserini.encode import __main__ as encode_cli


def run_cli(tmp_path, corpus, capsys, *extra):
    out = tmp_path / "out"
    code = encode_cli.main(["input", "--corpus", str(corpus), "output", "--embeddings", str(out),
                            "encoder", "--encoder", "splade-tiny", "--batch-size", "4", "--device", "cpu", *extra])
    return code, out, capsys.readouterr().err


def write_lines(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


@pytest.mark.parametrize("line,field,what", [
    ('{"_id": "d2", "title": "t", "text": "x"', None, "malformed JSON"),
    ('{"title": "t", "text": "x"}', "_id", "missing document id"),
    ('{"_id": "d2", "title": "t"}', "text", "missing"),
    ('{"_id": "d1", "text": "again"}', "id", "duplicate"),
    ('{"_id": "d2", "text": 5}', "text", "must be a string"),
    ('["not", "an", "object"]', None, "object"),
    (b'{"_id": "d2", "text": "caf\xe9"}', None, "UTF-8"),
])
def test_malformed_corpus_lines_give_one_line_errors_with_file_line_and_field(tmp_path, capsys, line, field, what):
    corpus = write_lines(tmp_path / "corpus.jsonl", ['{"_id": "d1", "text": "fine"}', "", line])
    code, _, err = run_cli(tmp_path, corpus, capsys)
    assert code == 2
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{corpus}:3:" in lines[0]  # blank line 2 still counts
    if field:
        assert f": {field}:" in lines[0]
    assert what.lower() in lines[0].lower()


def test_accepted_odd_texts_are_all_encoded_none_lost(tmp_path, capsys):
    docs = [{"_id": "empty", "text": ""}, {"_id": "blank", "title": "", "text": "   \t "},
            {"_id": "long", "text": "retrieval " * 10_000 + "x" * 20_000},
            {"_id": "emoji", "text": "search 🔍 for 検索システム and café"},
            {"_id": 42, "text": "a numeric id"}]
    corpus = write_lines(tmp_path / "corpus.jsonl", [json.dumps(d, ensure_ascii=False) for d in docs])
    code, out, err = run_cli(tmp_path, corpus, capsys)
    assert code == 0, err
    ids = [d["_id"] for d in docs]
    sparse = [json.loads(x) for x in (out / "sparse" / "embeddings.jsonl").read_text().splitlines()]
    assert [x["id"] for x in sparse] == [str(i) for i in ids]
    assert (out / "dense" / "docid").read_text().split() == [str(i) for i in ids]
    assert (out / "multi" / "docid").read_text().split() == [str(i) for i in ids]
    by_id = {x["id"]: x for x in sparse}
    assert by_id["empty"]["vector"] == {} and by_id["blank"]["vector"] == {}  # documented: empty vector, kept
    assert "retrieval" in by_id["long"]["vector"]  # truncated to 256 text tokens, still encoded
    assert "search" in by_id["emoji"]["vector"]


def test_a_missing_corpus_file_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(tmp_path, tmp_path / "nope.jsonl", capsys)
    assert code == 2 and err.startswith("error:") and "nope.jsonl" in err and len(err.strip().splitlines()) == 1


def test_queries_with_bad_lines_name_file_and_line(tmp_path, capsys):
    topics = write_lines(tmp_path / "queries.jsonl", ['{"_id": "1", "text": "a"}', '{"_id": "2"}'])
    code = encode_cli.main(["input", "--topics", str(topics), "output", "--embeddings", str(tmp_path / "q"),
                            "encoder", "--encoder", "splade-tiny", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"{topics}:2: text:" in err


def test_shards_split_the_corpus_like_pyserini_encode_and_merge_back(tmp_path, capsys):
    from diffret_pyserini.encode.writers import merge_shards

    docs = [json.dumps({"_id": f"d{i}", "text": f"document number {i} about compilers"}) for i in range(11)]
    corpus = write_lines(tmp_path / "corpus.jsonl", docs)
    code, out, err = run_cli(tmp_path, corpus, capsys, "--kp", "2")
    assert code == 0, err
    full = (tmp_path / "out" / "dense" / "docid").read_text().split()
    sharded = tmp_path / "sharded"
    for shard in ("0", "1"):
        assert encode_cli.main(["input", "--corpus", str(corpus), "--shard-id", shard, "--shard-num", "2",
                                "output", "--embeddings", str(sharded), "encoder", "--encoder", "splade-tiny",
                                "--kp", "2", "--device", "cpu"]) == 0
    first = [json.loads(x)["id"] for x in (sharded / "sparse" / "embeddings-shard000.jsonl").read_text().splitlines()]
    second = [json.loads(x)["id"] for x in (sharded / "sparse" / "embeddings-shard001.jsonl").read_text().splitlines()]
    assert first == [f"d{i}" for i in range(5)] and second == [f"d{i}" for i in range(5, 11)]  # 11 // 2, rest last
    merge_shards(sharded, 2)
    assert (sharded / "dense" / "docid").read_text().split() == full


def test_a_sigkilled_encode_leaves_no_output_and_resumes_only_the_missing_documents(tmp_path, capsys):
    """A real kill (SIGKILL of `python -m diffret_pyserini.encode`): no final file appears, committed chunks
    survive, the re-run encodes only the rest, and the result equals an uninterrupted encode. The re-run is the
    same CLI's main() in this process (what `python -m` calls; a second interpreter start adds nothing here)."""
    import signal
    import subprocess
    import sys
    import time

    import faiss
    import numpy as np

    from diffret_pyserini.datasets import resolve_dataset
    from diffret_pyserini.encode.jobs import EncodeOptions, encode_corpus
    from diffret_pyserini.model.spec import get_encoder

    n_docs = 160  # the kill comes after 64 committed docs; the other 96 take seconds, so it cannot finish first
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(open(resolve_dataset("cacm").corpus_path).readlines()[:n_docs]))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "diffret_pyserini.encode", "input", "--corpus", str(corpus), "output",
           "--embeddings", str(out), "--chunk-size", "32", "encoder", "--encoder", "splade-tiny", "--kp", "4",
           "--batch-size", "16", "--device", "cpu"]
    manifest = out / "work" / "shard-000" / "manifest.json"

    def committed() -> int:
        try:
            return sum(c["n_docs"] for c in json.loads(manifest.read_text())["chunks"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while committed() < 64 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the encode finished before it could be killed"
    done = committed()
    assert 64 <= done < n_docs and done % 32 == 0
    assert not (out / "sparse" / "embeddings.jsonl").exists() and not (out / "dense" / "index").exists()

    capsys.readouterr()
    code = encode_cli.main(cmd[3:])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert f" {done}/{n_docs} " in err  # the progress bar starts at the committed documents

    fresh = tmp_path / "fresh"
    encode_corpus(get_encoder("splade-tiny", device="cpu", kp=4), corpus, fresh,
                  EncodeOptions(batch_size=16, chunk_size=32))
    sparse = (out / "sparse" / "embeddings.jsonl").read_text().splitlines()
    assert len(sparse) == n_docs
    assert sparse == (fresh / "sparse" / "embeddings.jsonl").read_text().splitlines()
    assert (out / "dense" / "docid").read_text() == (fresh / "dense" / "docid").read_text()
    a, b = (faiss.read_index(str(d / "dense" / "index")) for d in (out, fresh))
    np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-6)
    assert np.array_equal(np.load(out / "multi" / "vectors.npy"), np.load(fresh / "multi" / "vectors.npy"))


@pytest.mark.parametrize("extra,message", [
    (["--max-tokens", "0"], "--max_tokens 0: must be an integer >= 1"),
    (["--ray-workers", "2"], "--ray_workers 2: needs --ray (local or a cluster address)"),
    (["--ray", "local", "--ray-workers", "0"], "--ray_workers 0: must be an integer >= 1"),
])
def test_bad_encoding_flags_are_one_line_before_any_work(tmp_path, capsys, extra, message):
    corpus = write_lines(tmp_path / "corpus.jsonl", ['{"_id": "d1", "text": "fine"}'])
    code, out, err = run_cli(tmp_path, corpus, capsys, *extra)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {message}" and not out.exists()


def test_token_budget_and_length_buckets_keep_every_document_in_corpus_order(tmp_path, capsys):
    """A budget smaller than the long documents: those run alone, nothing is lost, the order is the corpus's."""
    docs = [{"_id": f"d{i}", "text": "retrieval " * (3 + 40 * (i % 3))} for i in range(9)]
    corpus = write_lines(tmp_path / "corpus.jsonl", [json.dumps(d) for d in docs])
    code, out, err = run_cli(tmp_path, corpus, capsys, "--max-tokens", "64")
    assert code == 0, err
    assert (out / "dense" / "docid").read_text().split() == [d["_id"] for d in docs]
    sparse = [json.loads(x)["id"] for x in (out / "sparse" / "embeddings.jsonl").read_text().splitlines()]
    assert sparse == [d["_id"] for d in docs]
