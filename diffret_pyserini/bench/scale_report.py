"""Tables and chart of the 'scale' section, registered with bench.report's renderers."""
from __future__ import annotations

import re
from pathlib import Path

from diffret_pyserini.bench import report
from diffret_pyserini.bench.report import mib, ms, save, table


def _gib(n: int | None) -> str:
    return "-" if n is None else (f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB")


def _s(x: float | None) -> str:
    return "in writer" if x is None else f"{x:.1f}"


def scale_tables(doc: dict) -> str:
    out = []
    if doc["model"]:
        out.append("#### Encode with the model (`python -m diffret_pyserini.encode`, packaged masked LM, CPU, "
                   "CACM texts cycled to N: real lengths)\n\n" + table(
                       ["docs", "seconds", "docs/s", "peak RSS MiB", "terms/doc mean / p50 / p90"],
                       [[r["docs"], f"{r['seconds']:.1f}", f"{r['docs_per_s']:.1f}", mib(r["peak_rss"]),
                         "{mean:.1f} / {p50:.0f} / {p90:.0f}".format(**r["terms_per_doc"])] for r in doc["model"]]))
    out.append(f"#### Encode, writer path (synthetic vectors: Kp={doc['kp']} x H={doc['dim']} per doc, sparse "
               f"terms/doc {doc['terms_from']}; dense + multi + sparse, committed chunks + finalize)\n\n" + table(
                   ["docs", "vectors", "writer s", "writer docs/s", "peak RSS MiB", "sparse jsonl", "dense flat",
                    "multi float16"],
                   [[s["docs"], s["vectors"], f"{s['writer']['writer_seconds']:.1f}",
                     f"{s['docs'] / s['writer']['writer_seconds']:.0f}", mib(s["writer"]["peak_rss"]),
                     *(_gib(v) for v in s["writer_disk_bytes"].values())] for s in doc["sizes"]]))
    body = []
    for s in doc["sizes"]:
        for r in s["index"]["rows"]:
            body.append([s["docs"], r["representation"], r["index"], _s(r["build_s"]), _gib(r["disk_bytes"]),
                         _gib(r["memory_bytes"]) if r["memory_bytes"] else "-",
                         ms(r.get("p50_s")), ms(r.get("p95_s")),
                         "-" if r["recall@10"] is None else f"{r['recall@10']:.3f}"])
    out.append("#### Index build, size and search (sequential queries; recall@10 vs exact: flat FAISS for dense, "
               "exact MaxSim over every document for multi; 'memory' = the index's codes, ids and graph in RAM)\n\n"
               + table(["docs", "representation", "index", "build s", "disk", "memory", "p50 ms", "p95 ms",
                        "recall@10"], body))
    out.append("Peak RSS of the size's process after the index builds and searches (writer first): " + ", ".join(
        f"{s['docs']}: {mib(s['index']['peak_rss'])} MiB" for s in doc["sizes"]))
    terms, per_posting = measured_sparse(doc)
    if terms is not None:
        out.append(f"#### Memory model on paper: MS MARCO ({MSMARCO_DOCS:,} passages) x Dream-7B (H={DREAM_DIM}, "
                   f"Kp=16)\n\nSparse from this run: {terms:.1f} terms/doc (measured encode) and "
                   f"{per_posting:.2f} bytes per posting (Lucene impact index at its largest size here).\n\n"
                   + memory_table(memory_model(terms_per_doc=terms, bytes_per_posting=per_posting)))
    return "\n\n".join(out)


def measured_sparse(doc: dict) -> tuple[float | None, float | None]:
    """(terms/doc of the measured encode, Lucene impact bytes per posting at the largest size)."""
    if not doc["model"] or not doc["sizes"]:
        return None, None
    terms = min(doc["model"], key=lambda r: r["docs"])["terms_per_doc"]["mean"]
    with_sparse = [s for s in doc["sizes"] if any(r["representation"] == "sparse" for r in s["index"]["rows"])]
    if not with_sparse:
        return None, None
    last = with_sparse[-1]
    impact = next(r for r in last["index"]["rows"] if r["representation"] == "sparse")
    return terms, impact["disk_bytes"] / (last["docs"] * terms)


def _family(row: dict) -> str:
    """The index kind without its size-dependent numbers (IVF4096,PQ32x8 -> IVF,PQx), one line per kind."""
    return f"{row['representation']}: " + re.sub(r"\d+", "", row["index"]).replace("float", "float16").replace(
        "int", "int8")


def plot_scale(doc: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    sizes = doc["sizes"]
    docs = [s["docs"] for s in sizes]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    axes[0].plot(docs, [s["docs"] / s["writer"]["writer_seconds"] for s in sizes], "o-", label="writer path docs/s")
    if doc["model"]:
        axes[0].plot([r["docs"] for r in doc["model"]], [r["docs_per_s"] for r in doc["model"]], "s--",
                     label="model encode docs/s")
    twin = axes[0].twinx()
    twin.plot(docs, [s["writer"]["peak_rss"] / 2**20 for s in sizes], "^:", color="grey", label="writer peak RSS")
    twin.set_ylabel("peak RSS MiB")
    axes[0].set(xscale="log", yscale="log", xlabel="documents", ylabel="docs/s", title="encode rate, memory")
    axes[0].legend(fontsize=7, loc="lower left")
    names = list(dict.fromkeys(_family(r) for s in sizes for r in s["index"]["rows"] if r.get("p95_s") is not None))
    for name in names:
        pts = [(s["docs"], r["p95_s"] * 1000) for s in sizes for r in s["index"]["rows"]
               if _family(r) == name and r.get("p95_s") is not None]
        axes[1].plot(*zip(*pts), "o-", label=name)
        rec = [(s["docs"], r["recall@10"]) for s in sizes for r in s["index"]["rows"]
               if _family(r) == name and r.get("recall@10") is not None]
        if rec:
            axes[2].plot(*zip(*rec), "o-", label=name)
    axes[1].set(xscale="log", yscale="log", xlabel="documents", ylabel="p95 ms", title="search latency p95")
    axes[2].set(xscale="log", xlabel="documents", ylabel="recall@10 vs exact", title="recall@10", ylim=(0, 1.05))
    axes[1].legend(fontsize=5)
    axes[2].legend(fontsize=5)
    save(fig, path)


report.RENDERERS.setdefault("scale", (scale_tables, plot_scale))
report.TITLES.setdefault("scale", "Scale: encode, index and search at 10k / 100k / 1M documents")


# ------------------------------------------------------------------------------------------------ memory model
MSMARCO_DOCS = 8_841_823     # MS MARCO passage corpus
DREAM_DIM = 3584             # Dream-7B hidden size
BUDGET = 128 * 10**9         # the machine's RAM, bytes
HEADROOM = 0.9               # an index "fits" when it leaves 10% of the RAM for the OS, queries and the rest


def memory_model(n_docs: int = MSMARCO_DOCS, dim: int = DREAM_DIM, kp: int = 16, terms_per_doc: float = 120.0,
                 bytes_per_posting: float = 2.0, dense_nlist: int = 16384, multi_nlist: int = 65536) -> list[dict]:
    """Bytes per document and in total for each representation and index setting (on paper, not measured):
    FAISS code sizes are exact (codes + 8-byte ids for IVF, + 4 x 2M graph links for HNSW level 0), the
    sparse line uses the measured terms/doc and the Lucene impact index's measured bytes per posting."""
    pq_m = next(m for m in range(min(64, dim // 4), 0, -1) if dim % m == 0)
    dense_c, multi_c = dense_nlist * dim * 4, multi_nlist * dim * 4  # float32 coarse centroids
    rows = [
        ("dense", "flat float32 (IndexFlatIP)", dim * 4, 0, "RAM"),
        ("dense", "SQfp16", dim * 2, 0, "RAM"),
        ("dense", "SQ8", dim, 0, "RAM"),
        ("dense", "HNSW32,Flat", dim * 4 + 2 * 32 * 4, 0, "RAM"),
        ("dense", "HNSW32,SQ8", dim + 2 * 32 * 4, 0, "RAM"),
        ("dense", f"IVF{dense_nlist},PQ{pq_m}x8", pq_m + 8, dense_c, "RAM"),
        ("dense", f"IVF{dense_nlist},PQ{dim // 8}x8 (8 dims per code)", dim // 8 + 8, dense_c, "RAM"),
        ("multi", "store float16", kp * dim * 2, 0, "disk, memory-mapped"),
        ("multi", "store int8 + per-vector scale", kp * (dim + 4), 0, "disk, memory-mapped"),
        ("multi", f"PQ{pq_m}x8 codes as the store (not built)", kp * pq_m, 0, "RAM"),
        ("multi", f"candidates IVF{multi_nlist},SQfp16", kp * (dim * 2 + 8), multi_c, "RAM"),
        ("multi", f"candidates IVF{multi_nlist},PQ{pq_m}x8 + owner map", kp * (pq_m + 8 + 4), multi_c, "RAM"),
        ("sparse", f"Lucene impact index ({terms_per_doc:.0f} terms/doc x {bytes_per_posting:.2f} B/posting)",
         terms_per_doc * bytes_per_posting, 0, "disk (OS page cache)"),
    ]
    return [{"representation": rep, "setting": name, "bytes_per_doc": per_doc,
             "total_bytes": per_doc * n_docs + fixed, "where": where,
             "fits_128GB": per_doc * n_docs + fixed < HEADROOM * BUDGET}
            for rep, name, per_doc, fixed, where in rows]


def memory_table(rows: list[dict]) -> str:
    return table(["representation", "setting", "bytes/doc", "total (8.84M docs)", "kept in", "fits 128 GB (10% spare)"],
                 [[r["representation"], r["setting"], f"{r['bytes_per_doc']:,.0f}", f"{r['total_bytes'] / 1e9:,.1f} GB",
                   r["where"], "yes" if r["fits_128GB"] else "**no**"] for r in rows])
