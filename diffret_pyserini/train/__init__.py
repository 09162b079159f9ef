"""Fine-tuning DiffRetriever encoders (`python -m diffret_pyserini.train`).

- arguments.py  ModelArguments / DataArguments / TrainingArguments (HfArgumentParser dataclasses)
- data.py       Tevatron-style jsonl examples, deterministic groups of 1 positive + N-1 negatives
- mine.py       BM25 hard negatives (qrels, title or sentence pseudo-queries) -> Tevatron jsonl
- loss.py       InfoNCE on single / multi (MaxSim) / sparse scores, FLOPS regulariser (pure functions)
- trainable_encoder.py the trainable encoder (the inference code path with gradients), LoRA, saving
- trainer.py    a transformers.Trainer subclass: our batches and loss, atomic checkpoints, resume, progress
- distributed.py in-batch negatives across processes (gather with the local slice differentiable)
- default.py    the cached fine-tune of the embedded default model on a collection's own pseudo-queries
"""
