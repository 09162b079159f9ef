"""Flags of `python -m diffret_pyserini.sweep`: the pipeline's, with --kq and --kp as lists (the grid)."""
from __future__ import annotations

from dataclasses import dataclass, field

from diffret_pyserini.budget import METHODS
from diffret_pyserini.cli import ArgumentError, check_at_least, check_choice
from diffret_pyserini.model.arguments import EncoderOverrides
from diffret_pyserini.pipeline.arguments import PipelineArguments

SWEEP_SYSTEMS = ("sparse", "dense", "multi")


@dataclass
class SweepArguments(PipelineArguments):
    kq: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "query budgets of the grid"})
    kp: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "passage budgets"})
    systems: list[str] = field(default_factory=lambda: list(SWEEP_SYSTEMS), metadata={
        "help": f"systems searched per cell, any of {', '.join(SWEEP_SYSTEMS)}"})
    kq_method: list[str] = field(default_factory=lambda: list(METHODS), metadata={
        "help": f"adaptive Kq methods compared at each Kp, any of {', '.join(METHODS)} (none: --kq_method)"})
    finetune: str = field(default="no", metadata={"help": "not used by the sweep (give --model FOLDER)"})
    latency_docs: int = field(default=128, metadata={"help": "documents timed per Kp for the encode latency"})
    name: str = field(default="", metadata={"help": "report folder name (default: the model's name)"})

    def settings(self) -> dict:
        """Encoder overrides without the grid (a cell's args carry an integer kq and kp)."""
        out = EncoderOverrides.settings(self)
        for key in ("kq", "kp"):
            if isinstance(out.get(key), list):
                del out[key]
        return out

    def validate(self) -> None:
        if isinstance(self.kq, list) and isinstance(self.kp, list):
            for name, values in (("kq", self.kq), ("kp", self.kp)):
                if not values:
                    raise ArgumentError(f"--{name}: give at least one budget")
                for k in values:
                    check_at_least(name, k, 1)
            for system in self.systems:
                check_choice("systems", system, SWEEP_SYSTEMS)
            for method in self.kq_method:
                check_choice("kq_method", method, METHODS)
            check_at_least("latency_docs", self.latency_docs, 1)
            systems, self.systems = self.systems, ["sparse"]
            try:
                super().validate()
            finally:
                self.systems = systems
            return
        super().validate()
