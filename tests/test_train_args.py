"""The training CLI's arguments are transformers' (plus ours), checkpoints count only when complete, and the
DeepSpeed ZeRO-2 config the README's LoRA-on-Dream command names is in the repository (DeepSpeed itself is not
installed here: it is checked on a GPU only when one is lent)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import transformers

from diffret_pyserini.cli import dataclass_parser
from diffret_pyserini.train.arguments import DataArguments, ModelArguments, TrainingArguments, to_json
from diffret_pyserini.train.trainer import OURS, STAGING, checkpoints, prepare_output, resume_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]):
    return dataclass_parser((ModelArguments, DataArguments, TrainingArguments)).parse_args_into_dataclasses(argv)


def test_hugging_face_flags_mean_what_they_mean_there(tmp_path):
    m, d, t = parse(["--model", "splade-tiny", "--train_data", "x.jsonl", "--output_dir", str(tmp_path),
                     "--gradient_accumulation_steps", "4", "--gradient_checkpointing", "--report_to", "none",
                     "--save_total_limit", "3", "--max_steps", "7", "--learning_rate", "2e-4", "--warmup_ratio",
                     "0.2", "--seed", "3", "--save_steps", "5", "--logging_steps", "2", "--loss_flops", "1e-3",
                     "--lora_r", "8", "--kq", "2"])
    assert isinstance(t, transformers.TrainingArguments)
    assert (t.gradient_accumulation_steps, t.gradient_checkpointing, t.save_total_limit, t.max_steps) == (4, True, 3, 7)
    assert (t.learning_rate, t.warmup_ratio, t.seed, t.save_steps, t.logging_steps) == (2e-4, 0.2, 3, 5, 2)
    assert t.report_to == [] and t.loss_flops == 1e-3 and m.lora_r == 8 and m.settings() == {"kq": 2}
    # Our defaults where they differ from transformers'.
    _, _, t = parse(["--output_dir", str(tmp_path)])
    assert (t.per_device_train_batch_size, t.learning_rate, t.save_steps, t.report_to) == (32, 1e-4, 100, [])
    _, _, t = parse(["--output_dir", str(tmp_path), "--save_steps", "0"])
    assert t.save_strategy == "no"  # 0: never
    saved = to_json(m, d, t)["TrainingArguments"]
    assert saved["learning_rate"] == 1e-4 and "logging_dir" not in saved  # only what changes what is learned


def test_warmup_ratio_and_overwrite_output_dir_mean_the_same_on_transformers_4_and_5(tmp_path):
    """transformers 5 dropped both fields; ours keep them (the ratio becomes 5.x's fractional warmup_steps)."""
    _, _, t = parse(["--output_dir", str(tmp_path), "--warmup_ratio", "0.2", "--overwrite_output_dir", "True"])
    assert t.get_warmup_steps(50) == 10 and t.overwrite_output_dir is True
    _, _, t = parse(["--output_dir", str(tmp_path), "--warmup_steps", "3"])
    assert t.get_warmup_steps(50) == 3 and t.overwrite_output_dir is False


def test_a_half_written_checkpoint_never_counts_and_is_removed(tmp_path):
    out = tmp_path / "out"
    done = out / "checkpoint-2"
    done.mkdir(parents=True)
    (done / OURS).write_text("{}")
    (done / "trainer_state.json").write_text("{}")
    half = out / STAGING / "checkpoint-4"  # where a save lives until every file is written
    half.mkdir(parents=True)
    (half / "trainable.safetensors").write_bytes(b"\0" * 10)
    (out / "checkpoint-6").mkdir()  # not made by us: no record, not a checkpoint
    assert checkpoints(out) == [(2, done)]
    _, _, t = parse(["--output_dir", str(out), "--resume", "True"])
    assert prepare_output(out, t) is False and not (out / STAGING).exists()
    assert resume_checkpoint(out, t) == done
    _, _, t = parse(["--output_dir", str(out)])
    with pytest.raises(ValueError, match="holds checkpoints"):
        prepare_output(out, t)
    _, _, t = parse(["--output_dir", str(out), "--resume_from_checkpoint", str(out / "checkpoint-6")])
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resume_checkpoint(out, t)


def test_deepspeed_zero2_config_is_the_one_the_documented_command_uses():
    config = json.loads((ROOT / "configs" / "deepspeed_zero2.json").read_text())
    assert config["zero_optimization"]["stage"] == 2
    # "auto": transformers fills these from the CLI flags, so the config cannot disagree with them.
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto"
    text = (ROOT / "docs" / "training.md").read_text()
    command = re.search(r"torchrun[^`]*--deepspeed configs/deepspeed_zero2\.json[^`]*", text)
    assert command and "--lora_r" in command.group(0)  # Dream trains natively: no --trust_remote_code needed


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="with a GPU, --bf16 trains there")
def test_bf16_without_a_gpu_means_cpu_autocast_not_an_error(tmp_path):
    """transformers refuses --bf16 on a machine without a GPU unless --use_cpu is given; ours implies it."""
    _, _, t = parse(["--output_dir", str(tmp_path), "--bf16", "True"])
    assert t.bf16 and t.use_cpu
    _, _, t = parse(["--output_dir", str(tmp_path)])
    assert not t.bf16 and not t.use_cpu
