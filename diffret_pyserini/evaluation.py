"""Evaluation with Pyserini's own trec_eval, plus metrics.json, a markdown table and a bar chart.

``evaluate_run`` runs ``python -m pyserini.eval.trec_eval -c -m M1 -m M2 ... QRELS RUN`` in a subprocess with
this interpreter. Why a subprocess rather than calling ``pyserini.eval.trec_eval.trec_eval`` in-process: that
function returns only the *last* metric's value when several are asked for (pyserini issue #2329), prints to
stdout, and importing it starts a JVM; the CLI prints every metric, one per line, which we parse.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from diffret_pyserini.atomic import atomic_write_bytes, atomic_write_text
from diffret_pyserini.datasets import load_qrels

__all__ = [
    "DEFAULT_METRICS", "evaluate_run", "display_name", "convert_qrels", "write_metrics", "read_metrics",
    "format_table", "plot_metrics", "write_report", "evaluate_per_query",
]

DEFAULT_METRICS: tuple[str, ...] = ("ndcg_cut.10", "map", "recall.100", "recall.1000")

# trec_eval output name prefix -> display prefix ("ndcg_cut_10" -> "nDCG@10").
_CUTOFF_NAMES = {"ndcg_cut": "nDCG", "recall": "R", "P": "P", "map_cut": "MAP", "success": "Success"}
_PLAIN_NAMES = {"map": "MAP", "recip_rank": "MRR", "ndcg": "nDCG", "Rprec": "R-Prec", "bpref": "bpref"}


def display_name(trec_name: str) -> str:
    """metrics.json name for a trec_eval output name: ndcg_cut_10 -> nDCG@10, map -> MAP, recall_100 -> R@100."""
    if trec_name in _PLAIN_NAMES:
        return _PLAIN_NAMES[trec_name]
    m = re.fullmatch(r"(.+)_(\d+)", trec_name)
    if m and m.group(1) in _CUTOFF_NAMES:
        return f"{_CUTOFF_NAMES[m.group(1)]}@{m.group(2)}"
    return trec_name


def _output_names(metric: str) -> list[str]:
    """trec_eval output names for one -m argument: 'ndcg_cut.10,100' -> ['ndcg_cut_10', 'ndcg_cut_100']."""
    if "." not in metric:
        return [metric]
    base, cutoffs = metric.split(".", 1)
    return [f"{base}_{c}" for c in cutoffs.split(",")]


def _merge_cutoffs(metrics: Sequence[str]) -> list[str]:
    """One -m per measure: trec_eval keeps only the first cut-off list of a repeated measure, so
    ['recall.100', 'recall.1000'] must be passed as 'recall.100,1000' (else R@1000 is silently missing)."""
    merged: dict[str, list[str]] = {}
    for m in metrics:
        base, _, cutoffs = m.partition(".")
        cuts = merged.setdefault(base, [])
        cuts.extend(c for c in cutoffs.split(",") if c and c not in cuts)
    return [f"{base}.{','.join(cuts)}" if cuts else base for base, cuts in merged.items()]


def convert_qrels(qrels_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write ``qrels_path`` as TREC qrels (``qid 0 docid rel``) to ``out_path``, atomically.

    Reads with :func:`diffret_pyserini.datasets.load_qrels`, the reader ``check_dataset`` validates with, so
    BOM, blank lines, CRLF, header and grade rules are the same everywhere; problems raise its one-line
    ``DatasetError``. Judgements come out in file order (qids by first appearance, then their docids).
    A negative grade is written as 0: to trec_eval a negative value means "pooled but unjudged" (bpref,
    infAP), while our qrels rule is that it is judged non-relevant, like 0.
    """
    qrels = load_qrels(qrels_path)
    lines = [f"{qid} 0 {docid} {max(rel, 0)}\n" for qid, judged in qrels.items() for docid, rel in judged.items()]
    atomic_write_text(out_path, "".join(lines))
    return Path(out_path)


def evaluate_run(qrels_path: str | os.PathLike, run_path: str | os.PathLike,
                 metrics: Sequence[str] = DEFAULT_METRICS, timeout: float = 900) -> dict[str, float]:
    """Evaluate a TREC run with Pyserini's trec_eval (``-c``: queries without hits count as 0).

    ``metrics`` are trec_eval ``-m`` names (cut-offs as in trec_eval: 'ndcg_cut.10', 'recall.100,1000').
    Returns ``{display name: value}`` in request order, e.g. {"nDCG@10": .., "MAP": .., "R@100": .., "R@1000": ..}.
    """
    for p, what in ((qrels_path, "qrels"), (run_path, "run")):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{p}: {what} file not found")
    wanted = [name for m in metrics for name in _output_names(m)]
    with open(run_path, encoding="utf-8") as f:
        empty = not any(line.strip() for line in f)
    if empty:
        # Pyserini's wrapper would mistake an empty run for an MS MARCO run and crash in pandas; with -c every
        # judged query scores 0, so that is the answer.
        return {display_name(name): 0.0 for name in wanted}
    with tempfile.TemporaryDirectory(prefix="diffret-eval-") as tmp:
        qrels_trec = convert_qrels(qrels_path, Path(tmp) / "qrels.txt")
        cmd = [sys.executable, "-m", "pyserini.eval.trec_eval", "-c"]
        for m in _merge_cutoffs(metrics):
            cmd += ["-m", m]
        cmd += [str(qrels_trec), str(run_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    values: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "all":
            try:
                values[parts[0]] = float(parts[2])
            except ValueError:
                continue
    missing = [name for name in wanted if name not in values]
    if proc.returncode != 0 or missing:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"trec_eval on {run_path} failed (exit {proc.returncode}; missing {missing}): "
                           + " | ".join(tail))
    return {display_name(name): values[name] for name in wanted}


def write_metrics(metrics: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> Path:
    """Write ``{system: {metric: value}}`` as JSON, atomically, keeping the given order."""
    data = {str(system): {str(m): float(v) for m, v in row.items()} for system, row in metrics.items()}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return Path(path)


def read_metrics(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a metrics.json written by ``write_metrics``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _columns(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    cols: list[str] = []
    for row in metrics.values():
        cols.extend(m for m in row if m not in cols)
    return cols


def format_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table: one row per system, one column per metric (first-seen order), 4 decimals, '-' if absent."""
    cols = _columns(metrics)
    out = ["| System | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for system, row in metrics.items():
        cells = [f"{row[c]:.4f}" if c in row else "-" for c in cols]
        out.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot_metrics(metrics: Mapping[str, Mapping[str, float]], png_path: str | os.PathLike,
                 title: str | None = None, baseline: str = "bm25") -> Path:
    """One horizontal bar panel per metric, systems top to bottom in table order, written atomically as PNG.

    A system's colour is its family (the name without a 'ft-' prefix), so a zero-shot system and its fine-tuned
    twin share a colour and the fine-tuned bar is hatched; a dashed line marks `baseline` where it is present.
    Uses matplotlib's Agg canvas directly, so no global backend is switched and no display is needed.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = _columns(metrics)
    systems = list(metrics)
    families = list(dict.fromkeys(s.removeprefix("ft-") for s in systems))
    palette = colormaps["tab10" if len(families) <= 10 else "tab20"]
    colour = {f: palette(i % palette.N) for i, f in enumerate(families)}
    fig = Figure(figsize=(2.6 * max(1, len(cols)) + 1.6, 0.75 + 0.24 * max(1, len(systems))))
    FigureCanvasAgg(fig)
    ys = list(range(len(systems)))[::-1]  # first system at the top
    for j, col in enumerate(cols):
        ax = fig.add_subplot(1, max(1, len(cols)), j + 1)
        values = [metrics[s].get(col, 0.0) for s in systems]
        bars = ax.barh(ys, values, height=0.8, color=[colour[s.removeprefix("ft-")] for s in systems])
        for bar, system in zip(bars, systems):
            if system.startswith("ft-"):
                bar.set_hatch("///")
                bar.set_edgecolor("white")
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=6, padding=2)
        if baseline in metrics and col in metrics[baseline]:
            ax.axvline(metrics[baseline][col], color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(0, max(values + [0.05]) * 1.3)  # room for the value labels
        ax.set_title(col, fontsize=9)
        ax.set_yticks(ys)
        ax.set_yticklabels(systems if j == 0 else [], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


def write_report(metrics: Mapping[str, Mapping[str, float]], out: str | os.PathLike, title: str) -> str:
    """metrics.json, metrics.md (table) and metrics.png (chart) in folder `out`; returns the table."""
    out = Path(out)
    write_metrics(metrics, out / "metrics.json")
    table = format_table(metrics)
    atomic_write_text(out / "metrics.md", table + "\n")
    plot_metrics(metrics, out / "metrics.png", title=title)
    return table


def evaluate_per_query(qrels_path: str | os.PathLike, runs: Mapping[str, str | os.PathLike],
                       metric: str = "ndcg_cut.10", timeout: float = 900) -> dict[str, dict[str, float]]:
    """Per-query values of one metric for several runs: ``{run name: {qid: value}}``, via ``trec_eval -q``.

    One trec_eval call for all the runs (its JVM start, not the evaluation, is the cost): each run's qids are
    prefixed with its index in a merged run and merged qrels, and split back afterwards. Only judged queries
    appear; a judged query a run did not answer gets 0 (``-c``)."""
    if "," in metric:
        raise ValueError(f"one metric with one cut-off, got {metric!r}")
    qrels = load_qrels(qrels_path)
    names = list(runs)
    wanted = _output_names(metric)[0]
    with tempfile.TemporaryDirectory(prefix="diffret-eval-q-") as tmp:
        merged_qrels, merged_run = Path(tmp) / "qrels.txt", Path(tmp) / "run.trec"
        with open(merged_qrels, "w", encoding="utf-8") as f:
            for i in range(len(names)):
                for qid, judged in qrels.items():
                    f.writelines(f"{i}:{qid} 0 {docid} {max(rel, 0)}\n" for docid, rel in judged.items())
        with open(merged_run, "w", encoding="utf-8") as out:
            for i, name in enumerate(names):
                with open(runs[name], encoding="utf-8") as f:
                    out.writelines(f"{i}:{line}" for line in f if line.strip())
        cmd = [sys.executable, "-m", "pyserini.eval.trec_eval", "-c", "-q", "-m", metric, str(merged_qrels),
               str(merged_run)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == wanted and parts[1] != "all" and ":" in parts[1]:
            index, qid = parts[1].split(":", 1)
            out[names[int(index)]][qid] = float(parts[2])
    if proc.returncode != 0 or (qrels and any(not row for row in out.values())):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"trec_eval -q failed (exit {proc.returncode}): " + " | ".join(tail))
    for row in out.values():  # -q lists only queries the run answered; -c's zero for the others, per query
        for qid in qrels:
            if any(rel > 0 for rel in qrels[qid].values()):
                row.setdefault(qid, 0.0)
    return out
