"""The driver of `python -m diffret_pyserini.pipeline`: parse the arguments and run the stages."""
from __future__ import annotations

from typing import Sequence

from diffret_pyserini.cli import run_dataclass_cli
from diffret_pyserini.pipeline import __doc__ as DESCRIPTION
from diffret_pyserini.pipeline.arguments import PipelineArguments
from diffret_pyserini.pipeline.stages import run


def main(argv: Sequence[str] | None = None) -> int:
    return run_dataclass_cli((PipelineArguments,), run, "python -m diffret_pyserini.pipeline", DESCRIPTION, argv)
