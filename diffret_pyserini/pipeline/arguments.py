"""Arguments of the main job (`python -m diffret_pyserini.pipeline`): the shared model, encoder and encoding
flags (arguments.py) plus the job's own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from diffret_pyserini.arguments import (ArgumentError, EncoderOverrides, EncodingArguments, ModelLoadArguments,
                                        check_at_least, check_choice, check_writable)
from diffret_pyserini.systems import SYSTEMS

FINETUNE_CHOICES = ("auto", "yes", "no")


@dataclass
class PipelineArguments(EncodingArguments, EncoderOverrides, ModelLoadArguments):
    dataset: str = field(default="cacm", metadata={"help": "BEIR-layout folder (corpus.jsonl, queries.jsonl, "
                                                           "qrels/test.tsv), TREC-layout folder, or 'cacm'"})
    alpha: float = field(default=0.5, metadata={
        "help": "hybrid weight of the sparse seat (0.5 = equal): our sparse side, or BM25 in hybrid-bm25-*"})
    hits: int = field(default=1000, metadata={"help": "depth of every run"})
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS), metadata={"help": "systems to run"})
    threads: int = field(default=2, metadata={"help": "indexing and search threads"})
    indexes: str = field(default="indexes", metadata={"help": "root of the index folders"})
    runs: str = field(default="runs", metadata={"help": "root of the run folders"})
    tag: Optional[str] = field(default=None, metadata={
        "help": "prefix for the derived model tags in output paths"})
    finetune: str = field(default="auto", metadata={
        "help": "also fine-tune the model on pseudo-queries from the corpus itself (never the test topics) and "
                "report it beside the zero-shot systems: 'auto' (the embedded default model on a corpus with "
                "titles), 'yes', 'no'. Trained once, cached by content.", "choices": list(FINETUNE_CHOICES)})
    force: bool = field(default=False, metadata={"help": "redo every stage"})

    def validate(self) -> None:
        """Every flag checked before any index or encoding work; one line naming the flag on the first bad one."""
        self.check_model_load()
        self.check_settings()
        self.check_encoding()
        check_at_least("hits", self.hits, 1)
        check_at_least("threads", self.threads, 1)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ArgumentError(f"--alpha {self.alpha!r}: must be a number in [0, 1] (the sparse seat's weight)")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ArgumentError(f"--systems: unknown system {unknown[0]!r}; choose from {SYSTEMS}")
        if not self.systems:
            raise ArgumentError(f"--systems: none given; choose from {SYSTEMS}")
        check_choice("finetune", self.finetune, FINETUNE_CHOICES)
        check_writable("indexes", self.indexes)
        check_writable("runs", self.runs)
