import sys

from diffret_pyserini.cli import run_dataclass_cli
from diffret_pyserini.sweep import __doc__ as DESCRIPTION
from diffret_pyserini.sweep.arguments import SweepArguments
from diffret_pyserini.sweep.grid import run

sys.exit(run_dataclass_cli((SweepArguments,), run, "python -m diffret_pyserini.sweep", DESCRIPTION))
