"""Failing fast and safely: bad arguments and bad judgements end in one line before any index or encoding work,
two pipelines on the same folders both succeed with the same outputs, datasets never share output folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from numeric_collection import make_numeric_collection

from diffret_pyserini import pipeline
from diffret_pyserini.datasets import resolve_dataset
from diffret_pyserini.index.lucene import dataset_key

N_BIG = 20_000  # encoding this many documents takes minutes here: a check that came after it could not pass


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big") / "big"
    (root / "qrels").mkdir(parents=True)
    words = "time sharing systems compilers matrix computations storage allocation parsing algebra".split()
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(N_BIG):
            text = " ".join(words[(i + j) % len(words)] for j in range(60))
            f.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text}) + "\n")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": str(q), "text": words[q]}) + "\n"
                                                for q in range(3)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n0\td0\t1\n1\td1\t1\n2\td2\t1\n")
    return root


def main_code(argv: list[str]) -> int:
    """pipeline.main's exit status; argparse's own errors (a bad choice) arrive as SystemExit."""
    try:
        return pipeline.main(argv)
    except SystemExit as exit_:
        return exit_.code


BAD_ARGUMENTS = [
    (["--kq", "0"], "--kq 0: must be an integer >= 1"),
    (["--kp", "-3"], "--kp -3: must be an integer >= 1"),
    (["--top_n", "0"], "--top_n 0: must be an integer >= 1"),
    (["--hits", "0"], "--hits 0: must be an integer >= 1"),
    (["--batch_size", "0"], "--batch_size 0: must be an integer >= 1"),
    (["--threads", "0"], "--threads 0: must be an integer >= 1"),
    (["--alpha", "1.5"], "--alpha 1.5: must be a number in [0, 1]"),
    (["--systems", "bm25", "nope"], "--systems: unknown system 'nope'"),
    (["--device", "gpu"], "--device 'gpu': not a device"),
    (["--passage_max_length", "100000"], "--passage_max_length 100000: the prompt"),
    (["--query_max_length", "600"], "over the model's limit of 512"),
    (["--sparse_activation", "tanh"], "invalid choice: 'tanh'"),
]
if not torch.cuda.is_available():
    BAD_ARGUMENTS.append((["--device", "cuda"], "--device cuda: CUDA is not available on this machine"))


@pytest.mark.parametrize("extra,message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_each_bad_argument_is_one_line_before_any_work(big_dataset, tmp_path, capsys, extra, message):
    start = time.perf_counter()
    code = main_code(["--dataset", str(big_dataset), "--indexes", str(tmp_path / "i"), "--runs", str(tmp_path / "r"),
                      "--device", "cpu", "--finetune", "no", *extra])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert elapsed < 10, f"{elapsed:.1f} s"
    assert not list((tmp_path / "i").glob("*/bm25/index")) and not (tmp_path / "r").exists()  # no work done


def test_an_unwritable_output_folder_fails_before_the_work(big_dataset, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = pipeline.main(["--dataset", str(big_dataset), "--indexes", str(blocker / "indexes"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: --indexes {blocker / 'indexes'}: {blocker} is not a folder"
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not allowed here (needed to make a folder unwritable for root)")
    try:
        code = pipeline.main(["--dataset", str(big_dataset), "--runs", str(locked / "runs"), "--device", "cpu"])
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: --runs {locked / 'runs'}: cannot write in {locked}"), err


@pytest.mark.parametrize("line,message", [
    ("0\td5\t1\textra", "expected 3 columns like the first line, found 4"),
    ("0\td5\t1.5", "relevance '1.5' is not an integer"),
])
def test_bad_judgements_fail_before_indexing(big_dataset, tmp_path, capsys, line, message):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(big_dataset, data)
    with open(data / "qrels" / "test.tsv", "a") as f:
        f.write(line + "\n")
    start = time.perf_counter()
    code = pipeline.main(["--dataset", str(data), "--indexes", str(tmp_path / "i"), "--runs", str(tmp_path / "r"),
                          "--device", "cpu", "--finetune", "no"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "test.tsv:5:" in err and message in err, err
    assert time.perf_counter() - start < 10 and not (tmp_path / "i").exists()


def test_datasets_never_share_an_output_folder(tmp_path, monkeypatch):
    a = make_numeric_collection(tmp_path / "one" / "data", n_docs=25)
    b = make_numeric_collection(tmp_path / "two" / "data", n_docs=25)
    key_a, key_b = dataset_key(resolve_dataset(a)), dataset_key(resolve_dataset(b))
    assert key_a != key_b and key_a.startswith("data-") and key_b.startswith("data-")
    monkeypatch.chdir(a)
    assert dataset_key(resolve_dataset(".")) == key_a  # `--dataset .` is the folder itself, not ''
    assert dataset_key(resolve_dataset("cacm")) == "cacm"  # the packaged dataset keeps its plain name


def test_two_pipelines_on_the_same_folders_both_succeed_with_the_same_outputs(tmp_path):
    """Started together on the same --indexes/--runs: one waits for the other's stages (per-folder locks) and
    reuses them; temp names are per process, so neither dies on the other's half index or truncates its log."""
    data = make_numeric_collection(tmp_path / "data", n_docs=30)
    cmd = [sys.executable, "-m", "diffret_pyserini.pipeline", "--dataset", str(data), "--indexes",
           str(tmp_path / "indexes"), "--runs", str(tmp_path / "runs"), "--device", "cpu", "--finetune", "no",
           "--systems", "bm25", "sparse", "dense", "--hits", "50"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert outs[0][0] == outs[1][0] and "| bm25 |" in outs[0][0]  # the same metrics table
    key = dataset_key(resolve_dataset(data))
    runs = sorted((tmp_path / "runs" / key).rglob("*.trec"))
    assert [p.name for p in runs] == ["bm25.trec", "dense.trec", "sparse.trec"]
    index_root = tmp_path / "indexes" / key
    assert not [p for p in index_root.rglob("*") if ".tmp-" in p.name]  # no temp left behind
    assert (index_root / "bm25" / "index.log").stat().st_size > 0  # the indexer's log, whole


class JavaException(Exception):
    """Stands for jnius.JavaException (Pyserini's JVM errors), matched by name: jnius is not imported for it."""


def _tool_error(message):
    from diffret_pyserini.cli import ToolError

    return ToolError(message)


@pytest.mark.parametrize("error", [JavaException("java.io.IOException: no segments* file found\n\tat org..."),
                                   _tool_error("trec_eval on run.trec failed (exit 1)"),
                                   PermissionError(13, "Permission denied"),
                                   FileNotFoundError(2, "No such file or directory", "corpus.jsonl")])
def test_the_error_boundary_prints_expected_failures_in_one_line(capsys, error):
    from diffret_pyserini.cli import guarded

    def fail():
        raise error

    assert guarded(fail) == (2, None)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    with pytest.raises(type(error)):  # --debug: the traceback, not the line
        guarded(fail, debug=True)


def test_the_error_boundary_keeps_the_traceback_of_a_bug():
    from diffret_pyserini.cli import guarded

    with pytest.raises(TypeError):
        guarded(lambda: len(None))


@pytest.mark.parametrize("error", [RuntimeError("shape '[2, 3]' is invalid for input of size 5"),
                                   ValueError("operands could not be broadcast together"),
                                   OSError("[Errno 22] Invalid argument")])
def test_errors_of_other_libraries_are_bugs_and_keep_their_traceback(capsys, error):
    """torch's RuntimeError, numpy's ValueError and an OSError naming no file are not the user's doing."""
    from diffret_pyserini.cli import guarded

    def fail():
        raise error

    with pytest.raises(type(error)):
        guarded(fail)
    assert capsys.readouterr().err == ""


def test_a_bug_planted_inside_encoding_shows_its_traceback(tmp_path, monkeypatch, capsys):
    """A RuntimeError raised inside the encoder's forward, through the encode CLI: the traceback, not a line."""
    from diffret_pyserini.encode import __main__ as encode_cli
    from diffret_pyserini.model.encoder import DiffRetEncoder

    def planted(*args, **kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(DiffRetEncoder, "encode", planted)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "d1", "contents": "a passage about retrieval"}\n')
    with pytest.raises(RuntimeError, match="planted bug"):
        encode_cli.main(["input", "--corpus", str(corpus), "output", "--embeddings", str(tmp_path / "out"),
                         "encoder", "--encoder", "splade-tiny", "--device", "cpu"])
    assert "error: planted bug" not in capsys.readouterr().err


def test_a_bad_flag_is_one_line_with_exit_2(capsys):
    from diffret_pyserini.encode import __main__ as encode_cli

    with pytest.raises(SystemExit) as stop:
        encode_cli.main(["input", "--corpus", "c.jsonl", "output", "--embeddings", "out", "encoder",
                         "--no-such-flag"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--no-such-flag" in err
