"""Encoding on Ray Data, on a real local Ray instance (2 CPUs, no mocks): the merged outputs equal a
single-process encode, a SIGKILLed run resumes from its committed blocks, a worker's bad line is the usual
one-line error, and no block can go missing unnoticed."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_batching import assert_same_outputs, read_outputs  # noqa: E402

from diffret_pyserini.datasets import iter_corpus, resolve_dataset  # noqa: E402
from diffret_pyserini.encode import __main__ as encode_cli  # noqa: E402
from diffret_pyserini.encode.jobs import EncodeOptions, EncodeStats, encode_corpus  # noqa: E402
from diffret_pyserini.encode.ray_data import (  # noqa: E402
    BlockEncoder,
    EncoderRecipe,
    RayEncodeError,
    encode_corpus_ray,
    merge_blocks,
    scan_blocks,
)

REPO = Path(__file__).resolve().parents[1]
RECIPE = EncoderRecipe("splade-tiny", "cpu", {}, {"kp": 4})


@pytest.fixture(scope="module")
def local_ray():
    """One Ray instance for every test (`--ray local` reuses an instance that is already up in-process); its
    address, for a driver in another process (the cluster path: `--ray ADDRESS`)."""
    temp = tempfile.mkdtemp(prefix="diffret-ray-test-")
    # A small object store: the blocks here are kilobytes, and Ray's default (30% of the machine's memory) is
    # taken beside the other pytest worker's models and JVMs on a 24 GB machine.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=temp,
             object_store_memory=256 * 1024 ** 2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder():
    from diffret_pyserini.model.spec import get_encoder

    return get_encoder("splade-tiny", device="cpu", kp=4)


def cacm_lines(n):
    return open(resolve_dataset("cacm").corpus_path).readlines()[:n]


def test_two_worker_ray_encode_of_a_shard_folder_equals_the_single_process_encode(tmp_path, local_ray, encoder):
    lines = cacm_lines(50)
    shards = tmp_path / "corpus"
    shards.mkdir()
    (shards / "part-a.jsonl").write_text("".join(lines[:30]))
    (shards / "part-b.jsonl").write_text("\n" + "".join(lines[30:]))  # a blank line: line numbers still count
    blocks = scan_blocks(shards, 16)
    assert [(Path(b.path).name, b.first_line, b.n_docs) for b in blocks] == [
        ("part-a.jsonl", 1, 16), ("part-a.jsonl", 17, 14), ("part-b.jsonl", 2, 16), ("part-b.jsonl", 18, 4)]
    stats = EncodeStats()
    encode_corpus_ray(RECIPE, shards, tmp_path / "ray", EncodeOptions(batch_size=8, chunk_size=16), "local", 2,
                      stats=stats)
    encode_corpus(encoder, shards, tmp_path / "one", EncodeOptions(batch_size=8, chunk_size=16))
    ray_out, one = read_outputs(tmp_path / "ray"), read_outputs(tmp_path / "one")
    assert ray_out["dense_ids"] == [d.docid for d in iter_corpus(shards)]
    assert_same_outputs(ray_out, one, 1e-6)
    assert stats.docs == 50
    assert not (tmp_path / "ray" / "work" / "ray").exists()  # blocks merged, then removed


def test_sigkilled_ray_encode_resumes_from_committed_blocks_and_equals_an_uninterrupted_run(tmp_path, local_ray,
                                                                                            encoder):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(cacm_lines(120)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "diffret_pyserini.encode", "input", "--corpus", str(corpus), "output",
           "--embeddings", str(out), "--chunk-size", "8", "encoder", "--encoder", "splade-tiny", "--kp", "4",
           "--device", "cpu", "--batch-size", "8", "--ray", local_ray, "--ray-workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # the driver joins this test's Ray instance as a cluster; Ray ends a dead driver's actors itself
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifests = out / "work" / "ray"
    try:
        deadline = time.time() + 120
        while len(list(manifests.glob("block-*/work/shard-000/manifest.json"))) < 2:
            assert driver.poll() is None and time.time() < deadline, "the Ray encode ended before it was killed"
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    blocks = scan_blocks(corpus, 8)
    kept = len(list(manifests.glob("block-*/work/shard-000/manifest.json")))
    assert 2 <= kept < len(blocks)
    stats = EncodeStats()
    encode_corpus_ray(RECIPE, corpus, out, EncodeOptions(batch_size=8, chunk_size=8), "local", 1, stats=stats)
    assert stats.docs <= 120 - 8 * 2 and stats.docs % 8 == 0  # only the uncommitted blocks were encoded
    encode_corpus(encoder, corpus, tmp_path / "uninterrupted", EncodeOptions(batch_size=8, chunk_size=8))
    assert_same_outputs(read_outputs(out), read_outputs(tmp_path / "uninterrupted"), 1e-6)


def test_a_bad_line_found_by_a_worker_is_the_one_line_file_line_field_error(tmp_path, local_ray, capsys):
    lines = cacm_lines(20)
    lines[13] = '{"_id": "broken", "title": "no text"}\n'  # line 14, in the second block of 8
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(lines))
    code = encode_cli.main(["input", "--corpus", str(corpus), "output", "--embeddings", str(tmp_path / "out"),
                            "--chunk-size", "8", "encoder", "--encoder", "splade-tiny", "--kp", "4", "--device",
                            "cpu", "--ray", "local", "--ray-workers", "1"])
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert errors[0] == f"error: {corpus}:14: text: missing text field (expected text or contents)"


def test_a_block_that_did_not_commit_all_its_documents_stops_the_merge(tmp_path):
    """count in = count out: the merge refuses a missing block, or one holding fewer documents than the scan
    counted, before it writes anything (the actor class runs here as plain Python: no Ray needed)."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(cacm_lines(12)))
    out = tmp_path / "out"
    blocks = scan_blocks(corpus, 8)
    actor = BlockEncoder(RECIPE, str(out), "fp", EncodeOptions(("dense", "multi", "sparse"), batch_size=8))
    actor.encode_block(blocks[0])
    with pytest.raises(RayEncodeError, match=r"block 1 .* is not committed"):
        merge_blocks(out, blocks, ("dense", "multi", "sparse"), "fp", 8, "float16")
    short = replace(blocks[1], n_docs=3)  # the scan said 4 documents; the block commits 3
    actor.encode_block(short)
    with pytest.raises(RayEncodeError, match=r"block 1 .* is not committed"):
        merge_blocks(out, blocks, ("dense", "multi", "sparse"), "fp", 8, "float16")
    assert not (out / "sparse").exists() and not (out / "dense").exists()
    actor.encode_block(blocks[1])
    merge_blocks(out, blocks, ("dense", "multi", "sparse"), "fp", 8, "float16")
    sparse = (out / "sparse" / "embeddings.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in sparse] == [d.docid for d in iter_corpus(corpus)]
