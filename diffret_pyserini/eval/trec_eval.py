"""Evaluation with Pyserini's own trec_eval, plus metrics.json, a markdown table and a bar chart.

``evaluate_run`` runs the trec_eval that ``python -m pyserini.eval.trec_eval`` runs, ``java -cp <Pyserini's
jar> trec_eval -c -m M1 -m M2 ... QRELS RUN`` (pyserini_java.py says why without the Python wrapper), and
parses every metric from its output. Not ``pyserini.eval.trec_eval.trec_eval`` in-process: it returns only the
*last* metric's value when several are asked for (pyserini issue #2329) and prints to stdout.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from diffret_pyserini.atomic import atomic_write_bytes, atomic_write_text
from diffret_pyserini.cli import InputError, ToolError
from diffret_pyserini.datasets import load_qrels
from diffret_pyserini.eval.significance import (
    Comparison,
    column_headers,
    compare_to_baseline,
    is_peer,
    legend,
    row_cells,
    row_kind,
)
from diffret_pyserini.pyserini_java import trec_eval_command

__all__ = [
    "DEFAULT_METRICS", "evaluate_run", "display_name", "convert_qrels", "write_metrics", "read_metrics",
    "format_table", "plot_metrics", "write_report", "evaluate_per_query", "significance_report",
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
            raise InputError(f"{p}: {what} file not found")
    wanted = [name for m in metrics for name in _output_names(m)]
    with open(run_path, encoding="utf-8") as f:
        empty = not any(line.strip() for line in f)
    if empty:
        # Pyserini's wrapper would mistake an empty run for an MS MARCO run and crash in pandas; with -c every
        # judged query scores 0, so that is the answer.
        return {display_name(name): 0.0 for name in wanted}
    with tempfile.TemporaryDirectory(prefix="diffret-eval-") as tmp:
        qrels_trec = convert_qrels(qrels_path, Path(tmp) / "qrels.txt")
        args = ["-c"]
        for m in _merge_cutoffs(metrics):
            args += ["-m", m]
        cmd = trec_eval_command([*args, str(qrels_trec), str(run_path)])
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
        raise ToolError(f"trec_eval on {run_path} failed (exit {proc.returncode}; missing {missing}): "
                        + " | ".join(tail))
    return {display_name(name): values[name] for name in wanted}


RUN_KEY = "_run"  # metrics.json's record of the run's choices (pseudo-query source, alphas); not a system row


def write_metrics(metrics: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                  run: Mapping | None = None) -> Path:
    """Write ``{system: {metric: value}}`` as JSON, atomically, keeping the given order; `run` (the choices
    the run made without the topics: pseudo-query source, alphas) goes under the key ``_run``."""
    data: dict = {str(system): {str(m): float(v) for m, v in row.items()} for system, row in metrics.items()}
    if run is not None:
        data[RUN_KEY] = dict(run)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return Path(path)


def read_metrics(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """The system rows of a metrics.json written by ``write_metrics`` (its ``_run`` record left out)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {system: row for system, row in data.items() if system != RUN_KEY}


def _columns(metrics: Mapping[str, Mapping[str, float]]) -> list[str]:
    cols: list[str] = []
    for row in metrics.values():
        cols.extend(m for m in row if m not in cols)
    return cols


def format_table(metrics: Mapping[str, Mapping[str, float]], comparison: Comparison | None = None,
                 baseline: str = "bm25") -> str:
    """Markdown table: one row per system, one column per metric (first-seen order), 4 decimals, '-' if absent.

    With a `comparison` (``significance.compare_to_baseline``), four columns follow the metrics (delta, p of
    the paired t-test, p of the randomisation test, topics better/worse than the baseline) and a legend line
    follows the table. When any row is a peer (``peer-...``), a Kind column says baseline / peer / ours."""
    cols = _columns(metrics)
    extra = column_headers(comparison) if comparison is not None else []
    kinds = any(is_peer(system) for system in metrics)
    head = ["System"] + (["Kind"] if kinds else []) + cols + extra
    out = ["| " + " | ".join(head) + " |", "|---|" + ("---|" if kinds else "") + "---:|" * (len(cols) + len(extra))]
    for system, row in metrics.items():
        cells = ([row_kind(system, baseline)] if kinds else []) + [f"{row[c]:.4f}" if c in row else "-" for c in cols]
        if comparison is not None:
            cells += row_cells(comparison, system)
        out.append(f"| {system} | " + " | ".join(cells) + " |")
    table = "\n".join(out) + "\n"
    # a blank line first: in GitHub markdown a text line right under a table becomes one more row
    return table + "\n" + legend(comparison) + "\n" if comparison is not None else table


def plot_metrics(metrics: Mapping[str, Mapping[str, float]], png_path: str | os.PathLike,
                 title: str | None = None, baseline: str = "bm25") -> Path:
    """One horizontal bar panel per metric, systems top to bottom in table order, written atomically as PNG.

    A system's colour is its family (the name without a 'ft-' prefix), so a zero-shot system and its fine-tuned
    twin share a colour and the fine-tuned bar is hatched; a peer's bar (``peer-...``) is grey and cross-hatched;
    a dashed line marks `baseline` where it is present, and a legend names the three marks in use.
    Uses matplotlib's Agg canvas directly, so no global backend is switched and no display is needed.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cols = _columns(metrics)
    systems = list(metrics)
    families = list(dict.fromkeys(s.removeprefix("ft-") for s in systems if not is_peer(s)))
    cmap = colormaps["tab10" if len(families) <= 9 else "tab20"]
    # the palette's greys are left out: grey means a peer
    palette = [c for c in (cmap(i) for i in range(cmap.N)) if not c[0] == c[1] == c[2]]
    colour = {f: palette[i % len(palette)] for i, f in enumerate(families)}
    peer_colour, peer_hatch = "0.72", "xx"
    handles = []
    if any(is_peer(s) for s in systems):
        handles.append(Patch(facecolor=peer_colour, hatch=peer_hatch, edgecolor="0.4", label="peer"))
    if any(s.startswith("ft-") and not is_peer(s) for s in systems):
        handles.append(Patch(facecolor="0.5", hatch="///", edgecolor="white", label="fine-tuned (ft-)"))
    if baseline in metrics:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.8, label=baseline))
    legend_h = 0.3 if handles else 0.0
    fig = Figure(figsize=(2.6 * max(1, len(cols)) + 1.6, 0.75 + legend_h + 0.24 * max(1, len(systems))))
    FigureCanvasAgg(fig)
    ys = list(range(len(systems)))[::-1]  # first system at the top
    for j, col in enumerate(cols):
        ax = fig.add_subplot(1, max(1, len(cols)), j + 1)
        values = [metrics[s].get(col, 0.0) for s in systems]
        bars = ax.barh(ys, values, height=0.8,
                       color=[peer_colour if is_peer(s) else colour[s.removeprefix("ft-")] for s in systems])
        for bar, system in zip(bars, systems):
            if is_peer(system):
                bar.set_hatch(peer_hatch)
                bar.set_edgecolor("0.4")
            elif system.startswith("ft-"):
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
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


def significance_report(qrels_path: str | os.PathLike, runs: Mapping[str, str | os.PathLike],
                        baseline: str = "bm25", metric: str = "ndcg_cut.10") -> Comparison:
    """Per-topic `metric` of every run (one trec_eval -q call), each tested against the `baseline` run."""
    per_query = evaluate_per_query(qrels_path, runs, metric=metric)
    return compare_to_baseline(per_query, baseline, display_name(_output_names(metric)[0]))


def write_report(metrics: Mapping[str, Mapping[str, float]], out: str | os.PathLike, title: str,
                 runs: Mapping[str, str | os.PathLike] | None = None, qrels_path: str | os.PathLike | None = None,
                 baseline: str = "bm25", run: Mapping | None = None) -> str:
    """metrics.json, metrics.md (table) and metrics.png (chart) in folder `out`; returns the table. `run`: the
    run's choices, recorded in metrics.json (``_run``) and listed under the table.

    Given the rows' TREC `runs` ({row: path}) and the qrels, and the `baseline` row among them, every other row
    with a run is tested against the baseline per topic (nDCG@10): metrics.md gets the significance columns and
    a legend, and significance.json holds the same figures (metrics.json keeps its {row: {metric: value}} shape).
    Otherwise a significance.json left from an earlier report is removed, so it never disagrees with the table."""
    out = Path(out)
    write_metrics(metrics, out / "metrics.json", run)
    tested = {row: runs[row] for row in metrics if row in runs} if runs is not None and qrels_path else {}
    comparison = None
    if baseline in tested and len(tested) > 1:  # the baseline and at least one row to test against it
        comparison = significance_report(qrels_path, tested, baseline)
        atomic_write_text(out / "significance.json", json.dumps(comparison.to_json(), indent=2) + "\n")
    else:
        (out / "significance.json").unlink(missing_ok=True)
    table = format_table(metrics, comparison, baseline)
    if run:
        table += "\n\n" + "\n".join(f"- {key}: {json.dumps(value)}" for key, value in run.items())
    atomic_write_text(out / "metrics.md", table + "\n")
    plot_metrics(metrics, out / "metrics.png", title=title, baseline=baseline)
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
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    with tempfile.TemporaryDirectory(prefix="diffret-eval-q-") as tmp:
        merged_qrels, merged_run = Path(tmp) / "qrels.txt", Path(tmp) / "run.trec"
        with open(merged_qrels, "w", encoding="utf-8") as f:
            for i in range(len(names)):
                for qid, judged in qrels.items():
                    f.writelines(f"{i}:{qid} 0 {docid} {max(rel, 0)}\n" for docid, rel in judged.items())
        lines = 0
        with open(merged_run, "w", encoding="utf-8") as merged:
            for i, name in enumerate(names):
                with open(runs[name], encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            merged.write(f"{i}:{line}")
                            lines += 1
        # every run empty: nothing for trec_eval (Pyserini's wrapper crashes on an empty run); all zeros below
        if lines:
            cmd = trec_eval_command(["-c", "-q", "-m", metric, str(merged_qrels), str(merged_run)])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            for line in proc.stdout.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == wanted and parts[1] != "all" and ":" in parts[1]:
                    index, qid = parts[1].split(":", 1)
                    out[names[int(index)]][qid] = float(parts[2])
            # an empty run, or one answering no judged query, rightly has no rows; no rows at all is a failure
            if proc.returncode != 0 or (qrels and not any(out.values())):
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
                raise ToolError(f"trec_eval -q failed (exit {proc.returncode}): " + " | ".join(tail))
    for row in out.values():  # -q lists only queries the run answered; -c's zero for the others, per query
        for qid in qrels:
            if any(rel > 0 for rel in qrels[qid].values()):
                row.setdefault(qid, 0.0)
    return out
