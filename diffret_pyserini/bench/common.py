"""What every benchmark section shares: options, device facts, interleaved timing, texts and model loading.

Timing rules (these machines are noisy, and other work may share the CPU):
- the systems being compared are timed side by side in ONE process, interleaved: each round times every cell
  once, in an order rotated by one per round, so slow drifts of the machine hit all cells alike;
- a sample repeats a cheap call until it lasts `min_sample_s` and reports the mean per call;
- ratios are medians of per-round ratios (paired), absolute times are medians over rounds;
- every sample also records the process CPU time (all threads): on a CPU shared with other work, wall time
  includes waiting for a core, CPU time mostly does not, so CPU-time ratios are the steadier estimate of the
  work each system does (multi-threaded ops still burn some CPU spinning while a partner thread waits);
- on CUDA, `torch.cuda.synchronize()` brackets every timed call.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

SECTIONS = ("cost-of-k", "overhead", "passes", "search", "throughput", "scale")
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "scale")  # scale runs ~30 min here: only when named


@dataclass
class BenchOptions:
    """Every knob of `python -m diffret_pyserini.bench` (see `__main__` for the help text of each)."""

    sections: tuple[str, ...] = DEFAULT_SECTIONS
    decoder: str | None = "smollm2"       # run bidirectionally (one pass) AND causally (PromptReps, K steps)
    masked: str | None = "splade-tiny"    # the masked-LM default
    models: tuple[str, ...] = ()          # extra one-pass model folders (Dream, LLaDA, ...), kind read off config
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    overhead_k: int = 16
    doc_tokens: int = 256
    doc_batch: int = 32
    query_tokens: int = 64
    n_queries: int = 8                    # real CACM queries per query@1 sample (each encoded at batch 1)
    repeats: int = 3                      # timed rounds per group (fewer when a group would exceed budget_s)
    budget_s: float = 600.0               # seconds one group of interleaved cells may take before rounds stop
    min_sample_s: float = 0.5             # a sample repeats a call until it lasts this long
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False      # let --models folders run their own code (Dream/LLaDA: native without)
    threads: int = 2
    out: str = "runs/bench"
    sizes: tuple[int, ...] = (1000, 10000, 100000)
    search_queries: tuple[int, ...] = ()  # timed queries per size; () = 200 * (1000/N)^0.3, within [30, 200]
    search_dim: int = 128                 # SPLADE-tiny's hidden size (SmolLM2's is 576)
    search_kq: int = 4
    search_kp: int = 16
    hits: int = 100
    throughput_kp: tuple[int, ...] = (16,)  # passage slots K of the throughput section's rows
    throughput_rows: int = 64             # rows cap of a bucketed batch there (the token budget binds first)
    throughput_max_tokens: int = 8192     # padded positions per bucketed batch there
    scale_sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # the scale section's corpus sizes
    scale_model_sizes: tuple[int, ...] = (1000, 10_000)        # sizes encoded with the real model there
    vocab_size: int = 30522               # synthetic sparse vocabulary (SPLADE-tiny's size), Zipfian
    doc_terms: int = 120                  # distinct terms per synthetic sparse document
    query_terms: int = 10
    workdir: str | None = None            # synthetic indexes; default <out>/work (removed afterwards)
    keep_work: bool = False
    quick: bool = False
    seed: int = 0

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchOptions":
        """Seconds, not minutes: tiny texts, K in {1,4}, one round, two tiny corpora."""
        base = dict(ks=(1, 4), overhead_k=4, doc_tokens=32, doc_batch=2, query_tokens=16, n_queries=2, repeats=1,
                    budget_s=30.0, min_sample_s=0.0, sizes=(100, 300), search_queries=(10, 10), search_dim=32,
                    search_kp=4, hits=10, vocab_size=2000, doc_terms=20, query_terms=4, quick=True,
                    scale_sizes=(200, 400), scale_model_sizes=())
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ environment
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_info(device: torch.device, threads: int) -> dict:
    """What the absolute times were measured on, and how contended the CPU was when the section started."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {"device": str(device), "device_name": name, "threads": threads, "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "contention": contention_probe(threads), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in percent."""
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as f:
            for line in f:
                if line.startswith("some"):
                    return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        pass
    return None


def contention_probe(threads: int, calls: int = 20) -> dict:
    """Mean ms of a tiny (64x64) linear at `threads` threads and at 1.

    On a shared, oversubscribed CPU every multi-threaded op waits until all its threads are scheduled: the tiny
    op then costs a scheduler slice (ms) instead of microseconds, and that stall, not compute, dominates small
    models. The probe lets a reader tell such a run from a quiet one.
    """
    x, w = torch.randn(64, 64), torch.randn(64, 64)
    # the mean, not the median: the stalls come and go, and their share is what they cost

    def mean_ms(n_threads: int) -> float:
        torch.set_num_threads(n_threads)
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(calls):
            torch.nn.functional.linear(x, w)
        return 1000 * (time.perf_counter() - start) / calls

    try:
        return {"tiny_linear_ms": mean_ms(threads), "tiny_linear_ms_1_thread": mean_ms(1),
                "cpu_pressure_some_avg10": cpu_pressure()}
    finally:
        torch.set_num_threads(threads)


def set_threads(threads: int) -> None:
    """One thread count for torch, FAISS and OpenMP-backed libraries, so every system runs alike."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ timing
@dataclass
class Cell:
    """One timed configuration. `run` does the work once; `warm` (default `run`) is called once before timing.

    `samples` are wall-clock seconds per call; `cpu_samples` the process CPU seconds per call (all threads), a
    measure of the work done that waiting for a busy CPU does not inflate (None on CUDA, where it means little).
    """

    key: tuple
    run: Callable[[], Any]
    warm: Callable[[], Any] | None = None
    counter: Callable[[], int] | None = None   # e.g. a backbone's forward-call count, to report steps per run
    samples: list[float] = field(default_factory=list)
    cpu_samples: list[float] = field(default_factory=list)
    calls_per_run: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_samples) if self.cpu_samples else None


def time_sample(cell: Cell, min_sample_s: float, device: torch.device) -> tuple[float, float]:
    """Mean (wall, process-CPU) seconds per `cell.run()` over as many calls as make up `min_sample_s`."""
    calls, total = 0, 0.0
    before = cell.counter() if cell.counter else 0
    cpu_start = time.process_time()
    while calls == 0 or total < min_sample_s:
        sync(device)
        start = time.perf_counter()
        cell.run()
        sync(device)
        total += time.perf_counter() - start
        calls += 1
    cpu = time.process_time() - cpu_start
    if cell.counter:
        cell.calls_per_run = (cell.counter() - before) / calls
    return total / calls, cpu / calls


def run_interleaved(cells: Sequence[Cell], repeats: int, budget_s: float, min_sample_s: float,
                    device: torch.device, label: str = "") -> int:
    """Warm every cell, then time them in rounds (rotated order); returns the number of rounds done.

    Rounds stop early when another one would take the group past `budget_s` (at least one round is done).
    """
    for cell in cells:
        (cell.warm or cell.run)()
    start = time.perf_counter()
    rounds = 0
    for r in range(max(1, repeats)):
        order = list(cells[r % len(cells):]) + list(cells[:r % len(cells)])
        for cell in order:
            wall, cpu = time_sample(cell, min_sample_s, device)
            cell.samples.append(wall)
            if device.type != "cuda":
                cell.cpu_samples.append(cpu)
        rounds += 1
        elapsed = time.perf_counter() - start
        log(f"{label} round {rounds}/{repeats}: {elapsed:.1f}s")
        if elapsed / rounds * (rounds + 1) > budget_s:
            break
    return rounds


def paired_ratio(num: Cell, den: Cell, cpu: bool = False) -> float | None:
    """Median over rounds of num/den (both timed in the same rounds); exactly 1.0 for a cell against itself.

    `cpu=True` uses the CPU-time samples (None when there are none).
    """
    a, b = (num.cpu_samples, den.cpu_samples) if cpu else (num.samples, den.samples)
    if cpu and not (a and b):
        return None
    if num is den:
        return 1.0
    return statistics.median(x / y for x, y in zip(a, b))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# ------------------------------------------------------------------------------------------------ texts
def cacm_documents() -> list[str]:
    """Contents (title + text) of the packaged CACM corpus, in file order."""
    from diffret_pyserini.datasets import iter_corpus, resolve_dataset

    return [doc.contents for doc in iter_corpus(resolve_dataset("cacm").corpus_path)]


def cacm_queries(n: int) -> list[str]:
    """The first `n` real CACM queries (cycled if more are asked for)."""
    from diffret_pyserini.datasets import load_queries, resolve_dataset

    queries = list(load_queries(resolve_dataset("cacm").queries_path).values())
    return [queries[i % len(queries)] for i in range(n)]


def passages_of_tokens(tokenizer, n: int, tokens: int) -> list[str]:
    """`n` different passages cut from the concatenated CACM text, each at least `tokens` tokens long.

    Each is decoded from `tokens + 16` consecutive token ids, so that re-tokenising the text (which can merge
    across the cut) still gives at least `tokens`; the encoder's max length then cuts every one to exactly
    `tokens` (checked by the callers through the prompt batch's text lengths).
    """
    need = n * (tokens + 16)
    ids: list[int] = []
    for doc in cacm_documents():
        ids.extend(tokenizer(doc + " ", add_special_tokens=False)["input_ids"])
        if len(ids) >= need:
            break
    if len(ids) < need:  # a tiny vocabulary can still run short: cycle the text
        ids = (ids * (need // max(len(ids), 1) + 1))[:need]
    texts = []
    for i in range(n):
        chunk = ids[i * (tokens + 16):(i + 1) * (tokens + 16)]
        text = tokenizer.decode(chunk, skip_special_tokens=True).strip()
        count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        while count < tokens:
            longer = f"{text} {text}"
            grown = len(tokenizer(longer, add_special_tokens=False)["input_ids"])
            if grown <= count:  # doubling a text that gives no tokens would go on until memory runs out
                raise ValueError(f"the tokenizer gives {count} tokens for CACM text however long it is (a vocabulary "
                                 "of special tokens only?)")
            text, count = longer, grown
        texts.append(text)
    return texts


# ------------------------------------------------------------------------------------------------ models
_BACKBONES: dict[tuple, Any] = {}


def load_cached(model: str, kind: str | None, device: str, dtype: str, stop_early: bool = True,
                trust_remote_code: bool = False):
    """A backbone per (model, kind, device, dtype, stop_early, trust_remote_code), loaded once per process.

    `trust_remote_code` lets a folder's own code run (Dream/LLaDA load natively without it; see `load_backbone`)."""
    from diffret_pyserini.model.backbones import load_backbone

    key = (model, kind, device, dtype, stop_early, trust_remote_code)
    if key not in _BACKBONES:
        log(f"loading {model} ({kind or 'kind from config'}) on {device}")
        _BACKBONES[key] = load_backbone(model, kind=kind, device=device, dtype=dtype, stop_early=stop_early,
                                        trust_remote_code=trust_remote_code)
    return _BACKBONES[key]


def short_name(model: str) -> str:
    return os.path.basename(os.path.normpath(model)) or model


@dataclass(frozen=True)
class SystemSpec:
    """One encoder system: a model run one way. `method` is 'one-pass' or 'promptreps-ar'."""

    model: str
    kind: str | None
    method: str = "one-pass"

    @property
    def label(self) -> str:
        if self.method == "promptreps-ar":
            return f"{short_name(self.model)} PromptReps AR (causal, K steps)"
        return f"{short_name(self.model)} one-pass ({self.kind or 'auto'})"

    def backbone(self, opts: BenchOptions):
        if self.method == "promptreps-ar":
            # stop_early=False: the baseline really makes K steps instead of stopping at the closing quote.
            return load_cached(self.model, "causal", opts.device, opts.dtype, stop_early=False,
                               trust_remote_code=opts.trust_remote_code)
        return load_cached(self.model, self.kind, opts.device, opts.dtype, trust_remote_code=opts.trust_remote_code)


def one_pass_systems(opts: BenchOptions) -> list[SystemSpec]:
    systems = []
    if opts.decoder:
        systems.append(SystemSpec(opts.decoder, "bidirectional"))
    if opts.masked:
        systems.append(SystemSpec(opts.masked, "masked"))
    if opts.models:
        from diffret_pyserini.model.backbones.load import read_spec

        systems += [SystemSpec(m, read_spec(m, None).kind) for m in opts.models]  # kind from its config
    return systems


def encoder_for(backbone, opts: BenchOptions, k: int):
    """DiffRetEncoder with K slots for both roles and the benchmark's text lengths (model defaults kept)."""
    from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings

    saved = dict(getattr(getattr(backbone, "spec", None), "settings", {}) or {})
    saved.update(kq=k, kp=k, passage_max_length=opts.doc_tokens, query_max_length=opts.query_tokens)
    return DiffRetEncoder(backbone, EncoderSettings.from_dict(saved))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
