"""Training as a real OS process: torchrun with 2 CPU processes (gloo) equals 1 process with twice the batch, and a
run SIGKILLed after a checkpoint resumes to the weights of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import SETTINGS, run_train, synthetic, write_train

from diffret_pyserini.train.trainer import read_history

# Every loss term, sparse included: the sparse column space is the one thing processes must agree on.
LOSS = dict(loss_dense=1.0, loss_multi=1.0, loss_sparse=1.0, loss_flops=1e-3, learning_rate=3e-3, warmup_ratio=0.0)


def cli_args(model: Path, data: Path, out: Path, **flags) -> list[str]:
    args = ["--model", str(model), "--train_data", str(data), "--output_dir", str(out), "--full_finetune",
            "--device", "cpu", "--dropout", "False", "--train_group_size", "2", "--threads", "1", "--seed", "1"]
    for key, value in {**SETTINGS, **LOSS, **flags}.items():
        args += [f"--{key}", str(value)]
    return args


def child_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~25 s: two fresh interpreters load torch + transformers and rendezvous on 2 busy cores
def test_two_processes_train_like_one_with_twice_the_batch(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(48, seed=5)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    # adam_epsilon 1e-6 (transformers' flag): some weights have a gradient that is zero in exact arithmetic
    # (attention key biases: softmax ignores a shift shared by all keys), i.e. float noise ~1e-10 that differs
    # with the order of any sum; Adam divides it by its own size and moves such weights by ~lr either way.
    # A larger epsilon leaves real gradients alone and keeps noise from being amplified.
    steps = dict(max_steps=4, logging_steps=1, save_steps=0, adam_epsilon=1e-6)
    one = run_train(tiny_model_dirs["bert"], data, tmp_path / "one", per_device_train_batch_size=8, **LOSS, **steps)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "diffret_pyserini.train",
           *cli_args(tiny_model_dirs["bert"], data, two, per_device_train_batch_size=4, ddp_backend="gloo",
                     **steps)]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((two / "diffret_train.json").read_text())
    assert state["processes"] == 2
    a, b = read_history(one), read_history(two)
    assert [h["step"] for h in a] == [h["step"] for h in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):  # the same loss curve, term by term
        for key in ("dense", "multi", "sparse", "flops", "loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["step"], key, x[key], y[key])
    assert a[-1]["loss"] != a[0]["loss"]  # it did train
    wa, wb = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < 1e-5, worst
    base = load_file(Path(tiny_model_dirs["bert"]) / "model.safetensors")
    moved = max((wa[k] - base[k]).abs().max().item() for k in wa if k in base)
    assert moved > 1e-3  # the agreement is not just two untouched copies of the base model


@pytest.mark.slow  # ~35 s: two training subprocesses (each ~8 s of imports) besides the uninterrupted run
def test_sigkill_after_a_checkpoint_then_resume_gives_the_uninterrupted_weights(tiny_model_dirs, tmp_path):
    docs, queries = synthetic(64, seed=6)
    data = write_train(tmp_path / "train.jsonl", docs, queries)
    run = dict(max_steps=40, per_device_train_batch_size=4, logging_steps=5)
    straight = run_train(tiny_model_dirs["bert"], data, tmp_path / "straight", **LOSS, **run)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "diffret_pyserini.train", *cli_args(tiny_model_dirs["bert"], data, out,
                                                                      save_steps=4, save_total_limit=50, **run)]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint-8").is_dir():  # two checkpoints in: the kill lands mid-run
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "diffret_config.json").exists()  # killed before the end
    done = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert done and max(done) < 40
    for step in done:  # every visible checkpoint is whole (a save in progress lives in .staging)
        folder = out / f"checkpoint-{step}"
        for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                     "trainer_state.json", "diffret_train.json"):
            assert (folder / name).is_file(), (step, name)
        json.loads((folder / "trainer_state.json").read_text())
        load_file(folder / "trainable.safetensors")
    resumed = subprocess.run([*cmd, "--resume", "True"], env=child_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (out / ".staging").exists() and not list(out.glob("checkpoint-*"))
    wa, wb = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert read_history(straight) == read_history(out)
