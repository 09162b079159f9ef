"""Arguments of the main job (`python -m diffret_pyserini.pipeline`): the shared model, encoder and encoding
flags (arguments.py) plus the job's own."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from diffret_pyserini.budget import METHODS as BUDGET_METHODS
from diffret_pyserini.cli import ArgumentError, check_at_least, check_choice, check_writable
from diffret_pyserini.model.arguments import EncoderOverrides, EncodingArguments, ModelLoadArguments
from diffret_pyserini.pipeline.peers import DEFAULT_PEER_SYSTEMS, PEER_SYSTEMS
from diffret_pyserini.search.systems import SYSTEMS

# The paper's single-vector baselines, read from a model by recipe (pipeline/baselines.py; off by default).
BASELINE_SYSTEMS = ("diffembed", "repllama")
ALL_SYSTEMS = (*SYSTEMS, *PEER_SYSTEMS, *BASELINE_SYSTEMS)

FINETUNE_CHOICES = ("auto", "yes", "no")


@dataclass
class PipelineArguments(EncodingArguments, EncoderOverrides, ModelLoadArguments):
    dataset: str = field(default="cacm", metadata={
        "help": "BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), TREC-layout folder, or a "
                "packaged name: 'cacm', 'cacm-notitle' (CACM with numeric ids and no titles)"})
    alpha: str = field(default="auto", metadata={
        "help": "hybrid weight of the sparse seat (our sparse side, or BM25 in hybrid-bm25-*), a number in "
                "[0, 1] (0.5 = equal) or 'auto': each hybrid's alpha chosen on held-out pseudo-queries of the "
                "corpus (never the topics), recorded in runs/<dataset>/<tag>/alpha.json and in the run names"})
    hits: int = field(default=1000, metadata={"help": "depth of every run"})
    systems: list[str] = field(default_factory=lambda: [*SYSTEMS, *DEFAULT_PEER_SYSTEMS], metadata={
        "help": f"systems to run: ours and BM25 ({', '.join(SYSTEMS)}) and peers run through Pyserini's own "
                f"encoders ({', '.join(PEER_SYSTEMS)}; peer-promptreps-* on SmolLM2, off by default: CPU time), "
                f"and the paper's single-vector baselines ({', '.join(BASELINE_SYSTEMS)}: DiffEmbed on --model, "
                "RepLLaMA on --repllama_model; off by default)"})
    repllama_model: str = field(default="smollm2", metadata={
        "help": "causal LM that the repllama system reads the RepLLaMA way (folder or packaged name); its row "
                "is repllama-<model>"})
    threads: int = field(default=2, metadata={"help": "indexing and search threads"})
    indexes: str = field(default="indexes", metadata={"help": "root of the index folders"})
    runs: str = field(default="runs", metadata={"help": "root of the run folders"})
    tag: Optional[str] = field(default=None, metadata={
        "help": "prefix for the derived model tags in output paths"})
    finetune: str = field(default="auto", metadata={
        "help": "also fine-tune the model on pseudo-queries from the corpus itself (never the test topics) and "
                "report it beside the zero-shot systems: 'auto' (the embedded default model on a corpus with "
                "titles), 'yes', 'no'. Trained once, cached by content.", "choices": list(FINETUNE_CHOICES)})
    finetune_source: str = field(default="auto", metadata={
        "help": "pseudo-queries to fine-tune on: 'auto' (titles when the corpus has enough, else a model on "
                "each of lm and sentences, read as their ensemble unless one alone is surely better on dev "
                "queries), or one of titles, sentences, lm (one model, no comparison)",
        "choices": ["auto", "titles", "sentences", "lm"]})
    force: bool = field(default=False, metadata={"help": "redo every stage"})
    # Declared again to take 'auto' as well as an integer (EncoderOverrides' own kq is an int).
    kq: Optional[str] = field(default=None, metadata={
        "help": "query slots K (causal: generation cap N); None: the model's own; 'auto': also choose Kq per "
                "query among --kq_candidates with each --kq_method, each shown as its own system "
                "(<system>-kq-<method>), beside the fixed systems at the model's own Kq"})
    kq_method: list[str] = field(default_factory=lambda: ["nqc"], metadata={
        "help": f"with --kq auto: selection methods, any of {', '.join(BUDGET_METHODS)} (slot: slot-logit "
                "saturation; nqc: score spread of the run; agree: agreement between Kq; learned: a selector "
                "trained on the corpus's pseudo-queries; fuse: RRF of every candidate's run)"})
    kq_candidates: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={
        "help": "with --kq auto: the Kq a query may get"})

    @property
    def alpha_auto(self) -> bool:
        return isinstance(self.alpha, str) and self.alpha.strip().lower() == "auto"

    @property
    def kq_auto(self) -> bool:
        return isinstance(self.kq, str) and self.kq.strip().lower() == "auto"

    def settings(self) -> dict:
        """The encoder overrides; --kq as an integer ('auto' leaves the model's own Kq for the fixed systems)."""
        out = EncoderOverrides.settings(self)
        if "kq" in out:
            if self.kq_auto:
                del out["kq"]
            elif isinstance(out["kq"], str):
                text = out["kq"].strip()
                if not text.lstrip("-").isdigit():
                    raise ArgumentError(f"--kq {out['kq']!r}: must be an integer >= 1 or 'auto'")
                out["kq"] = int(text)
        return out

    def validate(self) -> None:
        """Every flag checked before any index or encoding work; one line naming the flag on the first bad one."""
        self.check_model_load()
        self.check_settings()
        self.check_encoding()
        check_at_least("hits", self.hits, 1)
        check_at_least("threads", self.threads, 1)
        if not self.alpha_auto:
            value = self.alpha
            try:
                value = float(value) if isinstance(value, str) else value
            except ValueError:
                pass
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ArgumentError(f"--alpha {self.alpha}: must be a number in [0, 1] (the sparse seat's "
                                    "weight) or 'auto'")
            self.alpha = float(value)
        unknown = [s for s in self.systems if s not in ALL_SYSTEMS]
        if unknown:
            raise ArgumentError(f"--systems: unknown system {unknown[0]!r}; choose from {ALL_SYSTEMS}")
        if not self.systems:
            raise ArgumentError(f"--systems: none given; choose from {ALL_SYSTEMS}")
        check_choice("finetune", self.finetune, FINETUNE_CHOICES)
        check_choice("finetune_source", self.finetune_source, ("auto", "titles", "sentences", "lm"))
        if self.kq_auto:
            for method in self.kq_method:
                check_choice("kq_method", method, BUDGET_METHODS)
            if not self.kq_method:
                raise ArgumentError(f"--kq_method: none given; choose from {BUDGET_METHODS}")
            for k in self.kq_candidates:
                check_at_least("kq_candidates", k, 1)
            if len(set(self.kq_candidates)) < 2:
                raise ArgumentError("--kq_candidates: give at least two different Kq to choose among")
        check_writable("indexes", self.indexes)
        check_writable("runs", self.runs)
