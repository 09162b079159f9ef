"""The sweep CLI end to end on a tiny collection (2 x 2 grid), its resume, and `--kq auto` in the pipeline."""
import json
import struct
from dataclasses import replace

import pytest
from numeric_collection import key, make_numeric_collection

from diffret_pyserini.cli import run_dataclass_cli
from diffret_pyserini.sweep.arguments import SweepArguments
from diffret_pyserini.sweep.grid import run


def sweep(tmp, dataset, *extra):
    argv = ["--dataset", str(dataset), "--kq", "1", "2", "--kp", "1", "2", "--indexes", str(tmp / "indexes"),
            "--runs", str(tmp / "runs"), "--device", "cpu", "--hits", "20", "--batch_size", "16",
            "--kq_method", "slot", "nqc", "agree", "fuse", "--latency_docs", "8", *extra]
    return run_dataclass_cli((SweepArguments,), run, "sweep", None, argv)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    dataset = make_numeric_collection(tmp / "data", n_docs=24)
    code = sweep(tmp, dataset)
    assert code == 0
    return tmp, dataset, tmp / "runs" / key(dataset) / "sweep" / "splade-tiny"


def test_sweep_writes_per_query_metrics_tables_heatmaps_and_oracles(swept):
    from diffret_pyserini.eval.trec_eval import evaluate_run

    tmp, dataset, out = swept
    per_query = json.loads((out / "per_query.json").read_text())
    cells = [f"{s}|{k}|{p}" for s in ("sparse", "dense", "multi") for k in (1, 2) for p in (1, 2)]
    assert set(cells) <= set(per_query) and all(set(per_query[c]) == {"1", "2", "3", "4", "5"} for c in cells)
    # trec_eval -q per query averages to trec_eval's own mean for the cell
    run_file = tmp / "runs" / key(dataset) / "splade-tiny-kq2-kp1" / "sparse.trec"
    mean = sum(per_query["sparse|2|1"].values()) / 5
    assert mean == pytest.approx(evaluate_run(dataset / "qrels" / "test.tsv", run_file)["nDCG@10"], abs=1e-4)
    summary = json.loads((out / "sweep.json").read_text())
    for system, entry in summary["systems"].items():
        assert entry["oracle_grid"] >= entry["best_mean"] >= max(entry["grid"].values()) - 1e-12
        assert set(entry["adaptive"]) == {f"{m}@{p}" for m in ("slot", "nqc", "agree", "fuse") for p in (1, 2)}
        png = (out / f"heatmap-{system}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 100
    md = (out / "sweep.md").read_text()
    assert "| Kq \\ Kp | 1 | 2 |" in md and "Best fixed cell" in md and "## Encode latency" in md
    assert set(summary["latency"]["queries"]) == {"1", "2"} and set(summary["latency"]["passages"]) == {"1", "2"}
    # the corpus was encoded once per Kp, the queries once per Kq
    base = tmp / "indexes" / key(dataset)
    assert sorted(p.name for p in base.glob("splade-tiny-kp*")) == ["splade-tiny-kp1", "splade-tiny-kp2"]
    assert sorted(p.name for p in base.glob("splade-tiny-kq?")) == ["splade-tiny-kq1", "splade-tiny-kq2"]
    assert (base / "splade-tiny-kq2-kp1" / "dense" / "index").exists()


def test_sweep_resumes_without_searching_again(swept, caplog):
    tmp, dataset, out = swept
    caplog.clear()
    assert sweep(tmp, dataset) == 0
    assert "queries searched" not in caplog.text and "encode" not in caplog.text.lower().replace("encode latency", "")


def test_kq_auto_is_its_own_system_in_the_pipeline(swept):
    from numeric_collection import args_for

    from diffret_pyserini import pipeline

    tmp, dataset, _ = swept
    args = replace(args_for(tmp, dataset, kp=2, kq="auto", kq_candidates=[1, 2], kq_method=["nqc", "fuse"],
                            systems=["sparse", "dense"]), hits=20)
    metrics = pipeline.run(args)
    assert list(metrics) == ["sparse", "dense", "sparse-kq-nqc", "sparse-kq-fuse", "dense-kq-nqc", "dense-kq-fuse"]
    run_dir = tmp / "runs" / key(dataset) / "splade-tiny-kq4-kp2"
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    choice = json.loads((run_dir / "sparse-kq-nqc.choice.json").read_text())
    assert set(choice) == {"1", "2", "3", "4", "5"} and set(choice.values()) <= {1, 2}


def test_bad_grid_flags_are_one_line_errors(tmp_path, capsys):
    dataset = make_numeric_collection(tmp_path / "d", n_docs=21)
    code = sweep(tmp_path, dataset, "--kq", "0")
    assert code == 2 and "--kq 0: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags,expected", [
    (["--kq", "abc"], "--kq 'abc': must be an integer >= 1 or 'auto'"),
    (["--kq", "auto", "--kq_method", "oracle"], "--kq_method 'oracle': must be one of slot, nqc, agree, learned, fuse"),
    (["--kq", "auto", "--kq_candidates", "4"], "--kq_candidates: give at least two different Kq"),
])
def test_bad_kq_auto_flags_are_one_line_errors(tmp_path, capsys, flags, expected):
    from diffret_pyserini import pipeline

    code = pipeline.main(["--indexes", str(tmp_path / "i"), "--runs", str(tmp_path / "r"), "--device", "cpu", *flags])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err
