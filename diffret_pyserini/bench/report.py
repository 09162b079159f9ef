"""Markdown tables, PNG plots (matplotlib Agg) and atomic JSON files for the benchmark sections."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from diffret_pyserini.atomic import atomic_path, atomic_write_json


# ------------------------------------------------------------------------------------------------ formatting
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; floats are printed as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    value = seconds * 1000
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def x(ratio: float | None, digits: int = 3) -> str:
    return "-" if ratio is None else f"{ratio:.{digits}f}"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def yes(flag: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[flag]


def header(meta: dict) -> str:
    load = meta.get("load_average")
    load_text = f"; load average at start {load[0]:.1f}" if load else ""
    probe = meta.get("contention") or {}
    probe_text = ""
    if probe:
        pressure = probe.get("cpu_pressure_some_avg10")
        probe_text = (f"; contention probe: a 64x64 linear takes {probe['tiny_linear_ms']:.3g} ms at "
                      f"{meta['threads']} threads vs {probe['tiny_linear_ms_1_thread']:.3g} ms at 1"
                      + (f", CPU pressure {pressure:.0f}%" if pressure is not None else ""))
    return (f"_device: {meta['device_name']} ({meta['device']}), torch threads: {meta['threads']} of "
            f"{meta['cpu_count']} cores, torch {meta['torch']}{load_text}{probe_text}; {meta['time']}_")


# ------------------------------------------------------------------------------------------------ cost of K
def cost_of_k_tables(doc: dict) -> str:
    rows = doc["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        heads = ["K"]
        for w in workloads:
            unit = "ms/doc" if w.startswith("passage@") and not w.endswith("@1") else "ms"
            heads += [f"{w} {unit}", "ratio", "CPU ratio", "tok ratio"]
        heads.append("forward calls/batch")
        body = []
        for k in doc["ks"]:
            line: list[Any] = [k]
            calls = None
            for w in workloads:
                r = next((r for r in mine if r["workload"] == w and r["k"] == k), None)
                line += ([ms(r["seconds_per_item"]), x(r["ratio"]), x(r.get("cpu_ratio")), x(r["token_ratio"])]
                         if r else ["-"] * 4)
                calls = r["forward_calls_per_batch"] if r else calls
            body.append(line + [f"{calls:g}" if calls is not None else "-"])
        out.append(f"#### {system}\n\n" + table(heads, body))
    out.append("#### Targets (one-pass, K=16 vs K=1; PromptReps on the same weights beside it)\n\n"
               "'ratio' is wall time; 'CPU' is process CPU time, which waiting for a busy CPU does not inflate.\n\n"
               + table(["system", "workload", "target", "ratio", "met", "CPU ratio", "met (CPU)",
                        "PromptReps ratio", "PromptReps CPU ratio"],
                       [[t["system"], t["workload"], t["target"], x(t["measured"]), yes(t["met"]),
                         x(t.get("measured_cpu")), yes(t.get("met_cpu")), x(t["promptreps_ratio"]),
                         x(t.get("promptreps_cpu_ratio"))] for t in doc["targets"]]))
    return "\n\n".join(out)


def plot_cost_of_k(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, w in zip(axes[0], workloads):
        for i, system in enumerate(dict.fromkeys(r["system"] for r in rows)):
            mine = sorted((r for r in rows if r["system"] == system and r["workload"] == w), key=lambda r: r["k"])
            ks = [r["k"] for r in mine]
            c = colors[i % len(colors)]
            ax.plot(ks, [r["ratio"] for r in mine], "o-", color=c, label=f"{system} (wall)")
            if all(r.get("cpu_ratio") is not None for r in mine):
                ax.plot(ks, [r["cpu_ratio"] for r in mine], "s:", color=c, alpha=0.8, label=f"{system} (CPU)")
            ax.plot(ks, [r["token_ratio"] for r in mine], "--", color=c, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (slots / PromptReps steps)")
        ax.set_ylabel("latency(K) / latency(K=1)")
        ax.set_title(f"{w} (dashed: token-count ratio)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save(fig, path)


# ------------------------------------------------------------------------------------------------ overhead
def overhead_tables(doc: dict) -> str:
    rows = doc["rows"]
    main = table(["system", "batch", "K", "ours ms", "bare model(**batch) ms", "body+head@K ms",
                  "ours / body+head@K", "ours / bare", "met", "CPU: ours / body+head@K", "CPU: ours / bare",
                  "met (CPU)", "writing incl. chunk commits, amortized ms"],
                 [[r["system"], r["batch"], r["k"], ms(r["seconds"]["ours"]), ms(r["seconds"]["bare"]),
                   ms(r["seconds"]["body+head@K"]), x(r["ours_over_body_head"]), x(r["ours_over_bare"]),
                   yes(r["target_met"]), x(r.get("ours_over_body_head_cpu")), x(r.get("ours_over_bare_cpu")),
                   yes(r.get("target_met_cpu")), ms(r["write_seconds_per_doc_amortized"] * r["batch"])]
                  for r in rows])
    heads = ["stage"] + [f"{r['system'].split(' ')[0]} b{r['batch']} ms (%)" for r in rows]
    body = []
    for stage in [*doc["stages"], "total"]:
        line = [stage]
        for r in rows:
            p = r["profile_seconds"]
            share = 100 * p[stage] / p["total"] if p["total"] else 0.0
            line.append(f"{ms(p[stage])} ({share:.1f}%)")
        body.append(line)
    return (f"Target: {doc['target']}.\n\n{main}\n\n#### Where our encode's time goes (mean per call; "
            f"'sparse: ...' rows are parts of 'sparse extraction')\n\n{table(heads, body)}")


def plot_overhead(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    labels = [f"{r['system'].split(' ')[0]}\nbatch {r['batch']}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.25
    for j, name in enumerate(("ours", "bare", "body+head@K")):
        values = [r["seconds"][name] / r["seconds"]["body+head@K"] for r in rows]
        left.bar([i + (j - 1) * width for i in range(len(rows))], values, width, label=name)
    left.set_xticks(range(len(rows)), labels, fontsize=7)
    left.set_ylabel("time / (body + LM head at K slots)")
    left.axhline(1.05, color="grey", linestyle=":", label="target 1.05")
    left.legend(fontsize=7)
    left.set_title("encode vs bare model")
    bottom = [0.0] * len(rows)
    stages = [*doc["top_level_stages"], "other (glue, numpy copies)"]
    for stage in stages:
        shares = [100 * r["profile_seconds"][stage] / max(r["profile_seconds"]["total"], 1e-12) for r in rows]
        right.bar(range(len(rows)), shares, bottom=bottom, label=stage)
        bottom = [b + s for b, s in zip(bottom, shares)]
    right.set_xticks(range(len(rows)), labels, fontsize=7)
    right.set_ylabel("% of our encode + write")
    right.legend(fontsize=6)
    right.set_title("stage profile")
    save(fig, path)


# ------------------------------------------------------------------------------------------------ passes
def passes_tables(doc: dict) -> str:
    rows = doc["rows"]
    return f"Target: {doc['target']}.\n\n" + table(
        ["system", "batch", "K", "one pass dense+sparse ms", "one pass all three ms", "two passes ms",
         "one / two", "all three / two", "met", "CPU: one / two", "met (CPU)"],
        [[r["system"], r["batch"], r["k"], ms(r["seconds"]["one pass: dense+sparse"]),
          ms(r["seconds"]["one pass: dense+multi+sparse"]),
          ms(r["seconds"]["two pyserini.encode passes: dense, then sparse"]), x(r["one_over_two"]),
          x(r["all_three_over_two"]), yes(r["target_met"]), x(r.get("one_over_two_cpu")),
          yes(r.get("target_met_cpu"))] for r in rows])


def plot_passes(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(rows[0]["seconds"]) if rows else []
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        values = [r["seconds"][name] / r["seconds"][names[-1]] for r in rows]
        ax.bar([i + (j - 1) * width for i in range(len(rows))], values, width, label=name)
    ax.axhline(0.55, color="grey", linestyle=":", label="target 0.55")
    ax.set_xticks(range(len(rows)), [r["system"] for r in rows], fontsize=7)
    ax.set_ylabel("time / two pyserini.encode passes")
    ax.legend(fontsize=7)
    save(fig, path)


# ------------------------------------------------------------------------------------------------ search
def search_tables(doc: dict) -> str:
    rows = doc["rows"]
    lat = []
    for r in rows:
        for system, s in r["search"].items():
            lat.append([r["docs"], system, ms(s["p50_s"]), ms(s["p95_s"]), f"{s['qps']:.1f}", s["queries"]])
    build_keys = list(rows[0]["build_seconds"]) + list(rows[0]["startup_seconds"]) if rows else []
    build = [[r["docs"]] + [f"{v:.2f}" for v in (*r["build_seconds"].values(), *r["startup_seconds"].values())]
             for r in rows]
    disk_keys = list(rows[0]["disk_bytes"]) if rows else []
    mem_keys = list(rows[0]["memory_bytes"]) if rows else []
    sizes = [[r["docs"], r["vectors"], r["multi_candidate_index"],
              " / ".join(f"{v:.3f}" for v in r["multi_recall"]["recall_vs_exact"].values())]
             + [mib(v) for v in (*r["disk_bytes"].values(), *r["memory_bytes"].values())] for r in rows]
    recall_head = "MaxSim recall vs exact @" + "/".join(rows[0]["multi_recall"]["recall_vs_exact"]) if rows else ""
    target = doc["target"]
    measured = target["measured_p95_s"]
    return "\n\n".join([
        f"Target: {target['what']}: measured p95 {ms(measured)} ms -> met: {yes(target['met'])}.",
        "#### Search latency (sequential queries, systems interleaved per query)\n\n"
        + table(["docs", "system", "p50 ms", "p95 ms", "QPS", "queries"], lat),
        "#### Build and start-up seconds\n\n" + table(["docs", *build_keys], build),
        "#### Sizes (MiB): on disk, then in memory\n\n"
        + table(["docs", "vectors", "candidate index", recall_head,
                 *[f"disk: {k}" for k in disk_keys],
                 *[f"mem: {k.replace(' (bytes)', '')}" for k in mem_keys]], sizes)])


def plot_search(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    docs = [r["docs"] for r in rows]
    for system in (rows[0]["search"] if rows else {}):
        left.plot(docs, [1000 * r["search"][system]["p95_s"] for r in rows], "o-", label=f"{system} p95")
    left.axhline(50, color="grey", linestyle=":", label="50 ms")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("documents")
    left.set_ylabel("ms per query")
    left.legend(fontsize=6)
    left.set_title("search latency p95")
    for key in (rows[0]["build_seconds"] if rows else {}):
        if "not an index" not in key:
            right.plot(docs, [r["build_seconds"][key] for r in rows], "o-", label=key)
    for key in (rows[0]["startup_seconds"] if rows else {}):
        right.plot(docs, [r["startup_seconds"][key] for r in rows], "s--", label=key)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("documents")
    right.set_ylabel("seconds")
    right.legend(fontsize=6)
    right.set_title("index build / searcher start-up")
    save(fig, path)


# ------------------------------------------------------------------------------------------------ output
def save(fig: Any, path: Path) -> None:
    """Write a PNG atomically (temp name, rename), then close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


RENDERERS = {"cost-of-k": (cost_of_k_tables, plot_cost_of_k), "overhead": (overhead_tables, plot_overhead),
             "passes": (passes_tables, plot_passes), "search": (search_tables, plot_search)}
TITLES = {"cost-of-k": "Cost of K", "overhead": "Encoder overhead", "passes": "One pass vs two",
          "search": "Index build and search vs corpus size"}


def portable_paths(obj, base: Path):
    """`obj` with every absolute path string written relative to `base` where it lies under it, else as its
    last component: a published record names no folder of the machine that made it."""
    if isinstance(obj, dict):
        return {k: portable_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable_paths(v, base) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj:
        path = Path(obj)
        return str(path.relative_to(base)) if path.is_relative_to(base) else path.name
    return obj


def write_section(name: str, doc: dict, out_dir: Path) -> tuple[str, list[Path]]:
    """Write `<out>/<name>.json` and `<out>/<name>.png`; return the markdown and the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    atomic_write_json(json_path, portable_paths(doc, Path.cwd()))
    tables, plot = RENDERERS[name]
    plot(doc, png_path)
    markdown = f"### {TITLES[name]}\n\n{header(doc['meta'])}\n\n{tables(doc)}\n"
    return markdown, [json_path, png_path]
