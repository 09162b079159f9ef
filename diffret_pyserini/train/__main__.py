"""`python -m diffret_pyserini.train`: fine-tune any supported backbone into a model folder that loads everywhere.

    python -m diffret_pyserini.train --model splade-tiny --train_data train.jsonl --output_dir out/ \\
        --full_finetune --kq 4 --kp 8 --loss_flops 1e-3 --max_steps 200

    torchrun --nproc_per_node 4 -m diffret_pyserini.train --model DREAM_FOLDER \\
        --train_data BEIR_DIR --output_dir out/ --lora_r 16 --lora_alpha 64 --gradient_checkpointing --bf16 \\
        --train_group_size 16 --deepspeed configs/deepspeed_zero2.json

`--train_data` is a Tevatron jsonl (see `python -m diffret_pyserini.train.mine` to make one with BM25 hard
negatives) or a BEIR folder with qrels/train.tsv. OUTPUT then holds `diffret_config.json` plus the LoRA adapter
(`adapter/`) or full weights, and works as `--model`/`--encoder` for diffret_pyserini.pipeline,
`python -m diffret_pyserini.encode` and `python -m pyserini.encode`. `--resume` continues from the newest complete OUTPUT/checkpoint-N.
Every transformers.TrainingArguments flag works (--gradient_accumulation_steps, --deepspeed, --bf16,
--report_to, --save_total_limit, ...); under torchrun / accelerate launch in-batch negatives span all processes.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from diffret_pyserini.cli import run_dataclass_cli
    from diffret_pyserini.model.packaged import set_offline_env
    from diffret_pyserini.train.arguments import DataArguments, ModelArguments, TrainingArguments
    from diffret_pyserini.train.trainer import train

    def validate(model_args: ModelArguments, *_) -> None:
        model_args.check_model_load()
        model_args.check_settings()

    set_offline_env()
    return run_dataclass_cli((ModelArguments, DataArguments, TrainingArguments), train,
                             "python -m diffret_pyserini.train", __doc__, argv, print_result=True,
                             validate=validate)


if __name__ == "__main__":
    sys.exit(main())
