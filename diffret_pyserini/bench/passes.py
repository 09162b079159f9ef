"""Section 3, one pass against two: dense + sparse from our single forward pass, against the two passes that
`python -m pyserini.encode` needs (it writes one representation per run), on the same documents.

The two-pass arm calls Pyserini's own encoder contract the way its CLI does: `DiffRetDocumentEncoder(spec,
representation='dense').encode(texts, max_length=...)`, then the same with `representation='sparse'`. Both arms
share one loaded backbone (the encoders come from the same `get_encoder` cache), so only the work differs.
"""
from __future__ import annotations

from typing import Any

from diffret_pyserini.bench.common import (
    BenchOptions,
    Cell,
    SystemSpec,
    log,
    one_pass_systems,
    paired_ratio,
    passages_of_tokens,
    run_interleaved,
)
from diffret_pyserini.model.device import parse_device

TARGET_RATIO = 0.55  # one pass (dense + sparse) <= 0.55 x two pyserini.encode passes


def encoder_spec(spec: SystemSpec, opts: BenchOptions) -> str:
    """The `--encoder` value pyserini.encode would be given for this system."""
    query = f"kp={opts.overhead_k}&passage_max_length={opts.doc_tokens}"
    if spec.kind:
        query += f"&kind={spec.kind}"
    if opts.dtype != "auto":
        query += f"&dtype={opts.dtype}"
    if opts.trust_remote_code:
        query += "&trust_remote_code=true"
    return f"{spec.model}?{query}"


def measure(spec: SystemSpec, opts: BenchOptions) -> dict:
    from diffret_pyserini.encode.pyserini_encoders import DiffRetDocumentEncoder  # imports pyserini.encode (JVM)

    device = parse_device(opts.device)
    name = encoder_spec(spec, opts)
    dense = DiffRetDocumentEncoder(name, device=opts.device, representation="dense")
    sparse = DiffRetDocumentEncoder(name, device=opts.device, representation="sparse")
    ours = dense.encoder  # the same DiffRetEncoder settings and backbone the two passes use
    texts = passages_of_tokens(ours.backbone.tokenizer, opts.doc_batch, opts.doc_tokens)

    def one_pass() -> None:
        ours.encode(texts, "passage", want=("dense", "sparse"))

    def one_pass_all() -> None:
        ours.encode(texts, "passage", want=("dense", "multi", "sparse"))

    def two_passes() -> None:
        dense.encode(texts, max_length=opts.doc_tokens)
        sparse.encode(texts, max_length=opts.doc_tokens)

    cells = {"one pass: dense+sparse": Cell(("one",), one_pass),
             "one pass: dense+multi+sparse": Cell(("all",), one_pass_all),
             "two pyserini.encode passes: dense, then sparse": Cell(("two",), two_passes)}
    rounds = run_interleaved(list(cells.values()), opts.repeats, opts.budget_s, opts.min_sample_s, device,
                             f"passes {spec.label}")
    two = cells["two pyserini.encode passes: dense, then sparse"]
    ratio = paired_ratio(cells["one pass: dense+sparse"], two)
    ratio_cpu = paired_ratio(cells["one pass: dense+sparse"], two, cpu=True)
    return {"system": spec.label, "model": spec.model, "encoder_spec": name, "batch": opts.doc_batch,
            "k": opts.overhead_k, "doc_tokens": opts.doc_tokens, "rounds": rounds,
            "seconds": {label: cell.median for label, cell in cells.items()},
            "samples": {label: cell.samples for label, cell in cells.items()},
            "cpu_seconds": {label: cell.cpu_median for label, cell in cells.items()},
            "one_over_two": ratio, "all_three_over_two": paired_ratio(cells["one pass: dense+multi+sparse"], two),
            "one_over_two_cpu": ratio_cpu, "target_met": ratio <= TARGET_RATIO,
            "target_met_cpu": None if ratio_cpu is None else ratio_cpu <= TARGET_RATIO}


def run(opts: BenchOptions) -> dict[str, Any]:
    rows = []
    for spec in one_pass_systems(opts):
        log(f"passes: {spec.label}")
        rows.append(measure(spec, opts))
    return {"rows": rows, "target": f"one pass (dense+sparse) <= {TARGET_RATIO:.2f} x two pyserini.encode passes"}
