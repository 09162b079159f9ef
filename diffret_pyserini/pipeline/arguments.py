"""Arguments of the main job (`python -m diffret_pyserini.pipeline`): the shared model, encoder and encoding
flags (arguments.py) plus the job's own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from diffret_pyserini.arguments import EncoderOverrides, EncodingArguments, ModelLoadArguments
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
