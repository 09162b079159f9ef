"""Expected figures, the [OK]/[FAIL] checks against them, and the reproduction table.

The expected figures live in a YAML file (expected.yaml beside this module, or --expected FILE):

    tolerance: 0.002                 # default absolute tolerance of a measured figure
    measured:                        # figures measured with this package: held against a run, [OK] / [FAIL]
      cacm:
        bm25: {nDCG@10: 0.4801, R@100: 0.6801}
    paper:                           # the paper's figures: shown beside ours, never asserted
      source: ...
      beir-7-mean:
        diffretriever-multi.dream.ft: {nDCG@10: 0.671, approx: true}
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from diffret_pyserini.cli import InputError
from diffret_pyserini.repro.matrix import BEIR7, Condition

METRICS = ("nDCG@10", "R@100")
PAPER_KEY = "beir-7-mean"


def default_expected() -> Path:
    return Path(str(resources.files("diffret_pyserini.repro").joinpath("expected.yaml")))


def load_expected(path: str | os.PathLike | None = None) -> dict:
    """The expected figures (a ValueError naming the file and the problem when they are malformed)."""
    import yaml

    path = Path(path) if path is not None else default_expected()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot read expected figures: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with 'measured' and 'paper'")
    tolerance = data.get("tolerance", 0.002)
    if not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise InputError(f"{path}: tolerance: expected a number >= 0, got {tolerance!r}")
    for section in ("measured", "paper"):
        if not isinstance(data.get(section, {}), dict):
            raise InputError(f"{path}: {section}: expected a mapping")
    return {"tolerance": float(tolerance), "measured": data.get("measured") or {}, "paper": data.get("paper") or {}}


@dataclass
class Check:
    """One measured figure against its expected value."""

    dataset: str
    condition: str
    metric: str
    got: float
    expected: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return abs(self.got - self.expected) <= self.tolerance + 1e-12

    def line(self) -> str:
        mark = "[OK]  " if self.ok else "[FAIL]"
        return (f"{mark} {self.dataset:<12} {self.condition:<40} {self.metric:<8} {self.got:.4f} "
                f"(expected {self.expected:.4f} ± {self.tolerance:g})")


def expected_figure(expected: dict, dataset: str, condition: str, metric: str) -> tuple[float, float] | None:
    """(value, tolerance) expected for a figure, or None when the file holds none."""
    entry = (expected["measured"].get(dataset) or {}).get(condition)
    if not isinstance(entry, dict) or metric not in entry:
        return None
    return float(entry[metric]), float(entry.get("tolerance", expected["tolerance"]))


def checks(results: dict[tuple[str, str], dict[str, float]], expected: dict) -> list[Check]:
    """A check for every measured figure of `results` ({(condition, dataset): metrics}) that has an expected
    value."""
    out = []
    for (condition, dataset), metrics in results.items():
        for metric in METRICS:
            want = expected_figure(expected, dataset, condition, metric)
            if want is not None and metric in metrics:
                out.append(Check(dataset, condition, metric, metrics[metric], *want))
    return out


def paper_figure(expected: dict, condition: str) -> str:
    """The paper's BEIR-7 mean nDCG@10 for a condition, as shown: '0.671~ (paper)', or ''."""
    entry = (expected["paper"].get(PAPER_KEY) or {}).get(condition)
    if entry is None:
        return ""
    value = entry["nDCG@10"] if isinstance(entry, dict) else entry
    approx = isinstance(entry, dict) and entry.get("approx")
    return f"{float(value):.3f}{'~' if approx else ''} (paper)"


def table(conditions: list[Condition], results: dict[tuple[str, str], dict[str, float]], expected: dict) -> str:
    """Markdown: a row per condition with a figure of ours or of the paper; nDCG@10 and R@100 per dataset run,
    the mean nDCG@10 over BEIR-7 where every one of the seven ran, and the paper's BEIR-7 figure beside it."""
    datasets = list(dict.fromkeys(d for _, d in results))
    head = ["Condition", *(f"{d} {m}" for d in datasets for m in METRICS), "BEIR-7 nDCG@10", "paper BEIR-7 nDCG@10"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for c in conditions:
        ours = [results.get((c.name, d)) for d in datasets]
        paper = paper_figure(expected, c.name)
        if not any(ours) and not paper:
            continue
        cells = [f"{row[m]:.4f}" if row and m in row else "" for row in ours for m in METRICS]
        beir = [results.get((c.name, d), {}).get("nDCG@10") for d in BEIR7]
        mean = f"{sum(beir) / len(beir):.4f}" if all(v is not None for v in beir) else ""
        lines.append("| " + " | ".join([c.name, *cells, mean, paper]) + " |")
    notes = expected["paper"].get("source")
    return "\n".join(lines) + (f"\n\n~ approximate. Paper figures: {' '.join(str(notes).split())}\n" if notes else "\n")
