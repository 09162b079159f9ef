"""The sweep's report: mean tables and heatmaps per system, encode latency, best fixed cell, per-query oracles
and the adaptive methods against them (sweep.md, sweep.json, heatmap-<system>.png)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from diffret_pyserini.atomic import atomic_write_bytes, atomic_write_text
from diffret_pyserini.eval.per_query import best_fixed, common_queries, mean_of, oracle, paired_test, restrict

TOP_HELPED = 5


def plot_heatmap(grid: dict[tuple[int, int], float], ks: list[int], kps: list[int], path: Path, title: str) -> Path:
    """Mean metric per (Kq, Kp) as an annotated heatmap PNG (Agg canvas, no display needed), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.0 + 0.9 * len(kps), 0.9 + 0.6 * len(ks)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = [[grid[(k, p)] for p in kps] for k in ks]
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7,
                    color="white" if v < (min(map(min, values)) + max(map(max, values))) / 2 else "black")
    ax.set_xticks(range(len(kps)), [str(p) for p in kps])
    ax.set_yticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("Kp (passage slots)", fontsize=8)
    ax.set_ylabel("Kq (query slots)", fontsize=8)
    ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _helped(o, n: int = TOP_HELPED) -> str:
    return ", ".join(f"{q} (+{g:.2f})" for q, g in o.helped[:n]) or "-"


def _oracle_row(label: str, o) -> str:
    return (f"| {label} | {o.reference} | {o.reference_mean:.4f} | {o.mean:.4f} | +{o.gap:.4f} | "
            f"{len(o.helped)} | {_helped(o)} |")


def write_report(out: Path, title: str, per_query: dict, systems: list[str], ks: list[int], kps: list[int],
                 methods: list[str], choices: dict, latency: dict) -> dict:
    """Write sweep.md, sweep.json and a heatmap per system into `out`; returns the summary (sweep.json)."""
    lines = [f"# Budget sweep: {title}", "", "nDCG@10 (trec_eval -q), every figure on the same judged topics.", ""]
    summary: dict = {"systems": {}, "latency": latency, "kq": ks, "kp": kps}
    for system in systems:
        table = {(k, p): per_query[f"{system}|{k}|{p}"] for k in ks for p in kps}
        qids = common_queries(table)
        grid = {cell: mean_of(v, qids) for cell, v in table.items()}
        plot_heatmap(grid, ks, kps, out / f"heatmap-{system}.png", f"{title}: {system} nDCG@10")
        best, best_mean = best_fixed(table)
        lines += [f"## {system}", "", f"Mean nDCG@10 over {len(qids)} topics (rows Kq, columns Kp):", "",
                  "| Kq \\ Kp | " + " | ".join(map(str, kps)) + " |", "|---|" + "---:|" * len(kps)]
        for k in ks:
            lines.append(f"| {k} | " + " | ".join(
                f"**{grid[(k, p)]:.4f}**" if (k, p) == best else f"{grid[(k, p)]:.4f}" for p in kps) + " |")
        grid_oracle = oracle(table)
        lines += ["", f"Best fixed cell: Kq={best[0]}, Kp={best[1]} ({best_mean:.4f}). "
                  f"Per-query oracle over the grid: {grid_oracle.mean:.4f} (+{grid_oracle.gap:.4f}), "
                  f"helps {len(grid_oracle.helped)} topics.", "",
                  "| oracle over | best fixed (Kq, Kp) | its mean | oracle | gap | topics helped | most helped |",
                  "|---|---|---:|---:|---:|---:|---|", _oracle_row("the grid", grid_oracle)]
        per_kp = {p: oracle(restrict(table, lambda c, p=p: c[1] == p)) for p in kps}
        per_kq = {k: oracle(restrict(table, lambda c, k=k: c[0] == k)) for k in ks}
        lines += [_oracle_row(f"Kq at Kp={p}", o) for p, o in per_kp.items()]
        lines += [_oracle_row(f"Kp at Kq={k}", o) for k, o in per_kq.items()]
        entry = {"grid": {f"{k},{p}": v for (k, p), v in grid.items()}, "best": list(best), "best_mean": best_mean,
                 "oracle_grid": grid_oracle.mean, "oracle_kq": {p: o.mean for p, o in per_kp.items()},
                 "oracle_kp": {k: o.mean for k, o in per_kq.items()}, "adaptive": {}}
        if methods:
            lines += ["", "Adaptive Kq per query (label-free) at each Kp, against the best fixed Kq at that Kp and "
                      "the per-query oracle over Kq there; p: paired randomisation (10,000 sign flips) / paired "
                      "t-test; W/L: topics better/worse than the best fixed Kq; closed: share of the oracle gap.", "",
                      "| Kp | method | nDCG@10 | best fixed Kq | Δ | W/L | p (rand / t) | oracle | closed | "
                      "Kq chosen (mean) |", "|---:|---|---:|---:|---:|---|---|---:|---:|---:|"]
            for p in kps:
                o = per_kp[p]
                ref = table[o.reference]
                for method in methods:
                    label = f"{system}-kq-{method}|{p}"
                    values = {q: per_query[label].get(q, 0.0) for q in qids}
                    sig = paired_test(values, ref)
                    closed = sig.delta / o.gap if o.gap > 0 else 0.0
                    chosen = choices.get(label)
                    mean_k = (sum(chosen[q] for q in qids if q in chosen) / len(qids)) if chosen else None
                    lines.append(f"| {p} | {method} | {sig.mean_a:.4f} | {o.reference[0]} ({sig.mean_b:.4f}) | "
                                 f"{sig.delta:+.4f} | {sig.wins}/{sig.losses} | {sig.p_randomization:.3f} / "
                                 f"{sig.p_t:.3f} | {o.mean:.4f} | {closed:+.0%} | "
                                 f"{'all' if mean_k is None else f'{mean_k:.1f}'} |")
                    entry["adaptive"][f"{method}@{p}"] = {"mean": sig.mean_a, "best_fixed_kq": sig.mean_b,
                                                          "p_rand": sig.p_randomization, "p_t": sig.p_t,
                                                          "oracle_kq": o.mean, "closed": closed}
        lines.append("")
        summary["systems"][system] = entry
    q, d = latency["queries"], latency["passages"]
    lines += ["## Encode latency", "", f"Per cell the cost is the query side at Kq plus the passage side at Kp "
              f"(each measured once, side by side in this process, batch size as given): {latency['n_queries']} "
              f"topics, {latency['n_docs']} documents. CPU contention probe: {latency['contention']}.", "",
              "| K | query ms/query (wall) | query CPU ms | passage ms/doc (wall) | passage CPU ms | slot signal ms/query |",
              "|---:|---:|---:|---:|---:|---:|"]
    for k in sorted(set(q) | set(d)):
        cols = [f"{q[k]['wall_ms_per_text']:.2f}" if k in q else "-", f"{q[k]['cpu_ms_per_text']:.2f}" if k in q else "-",
                f"{d[k]['wall_ms_per_text']:.2f}" if k in d else "-", f"{d[k]['cpu_ms_per_text']:.2f}" if k in d else "-",
                f"{latency['slot_signal_ms_per_query'][k]:.2f}" if k in latency["slot_signal_ms_per_query"] else "-"]
        lines.append(f"| {k} | " + " | ".join(cols) + " |")
    all_q = sum(v["wall_ms_per_text"] for v in q.values())
    lines += ["", f"An adaptive method encodes and searches each query at every candidate Kq: {all_q:.2f} ms/query "
              f"of query encoding in all (+ the slot signal for slot/learned), against one Kq's share of it for a "
              f"fixed budget; the corpus side is unchanged.", ""]
    atomic_write_text(out / "sweep.md", "\n".join(lines) + "\n")
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary
