"""--finetune auto without titles: the fine-tuned side (the sources' ensemble or one source) is chosen on the dev
queries, never the topics."""
import json

import pytest
from numeric_collection import args_for, key, make_numeric_collection

from diffret_pyserini import pipeline
from diffret_pyserini.pipeline.source_choice import dev_score, pick_source
from diffret_pyserini.train import sources


def record(**systems):
    """An alpha.json record: {system: (chosen alpha, {alpha: dev nDCG@10})}."""
    return {"systems": {s: {"alpha": a, "dev_ndcg@10": {str(k): v for k, v in grid.items()}}
                        for s, (a, grid) in systems.items()}}


def test_dev_score_is_the_best_bm25_hybrid_at_its_chosen_alpha():
    rec = record(**{"hybrid-dense": (0.5, {0.5: 0.9}),  # higher, but no BM25 in it: not counted
                    "hybrid-bm25-sparse": (0.8, {0.5: 0.7, 0.8: 0.61}),  # 0.7 is not at its chosen alpha
                    "hybrid-bm25-dense": (0.7, {0.5: 0.3, 0.7: 0.62})})
    assert dev_score(rec) == {"system": "hybrid-bm25-dense", "alpha": 0.7, "dev_ndcg@10": 0.62}
    # without a BM25 hybrid, the best hybrid of any kind
    assert dev_score(record(**{"hybrid-dense": (0.6, {0.6: 0.44}), "hybrid-multi": (0.6, {0.6: 0.45})})) == \
        {"system": "hybrid-multi", "alpha": 0.6, "dev_ndcg@10": 0.45}
    assert dev_score({"systems": {}}) is None


def test_pick_source_takes_the_highest_dev_score_and_keeps_the_order_on_a_tie():
    def s(v):
        return {"system": "hybrid-bm25-dense", "alpha": 0.7, "dev_ndcg@10": v}

    assert pick_source({"lm": s(0.6211), "sentences": s(0.6102)}) == "lm"
    assert pick_source({"lm": s(0.50), "sentences": s(0.51)}) == "sentences"
    assert pick_source({"lm": s(0.5), "sentences": s(0.5)}) == "lm"
    assert pick_source({"lm": None, "sentences": s(0.1)}) == "sentences"
    assert pick_source({"lm": s(0.1), "sentences": None}) == "lm"
    with pytest.raises(ValueError, match="no candidate source"):
        pick_source({})


def test_source_candidates(monkeypatch, tmp_path):
    from diffret_pyserini.datasets import resolve_dataset

    assert sources.source_candidates(resolve_dataset("cacm").corpus_path)[0] == ["titles"]
    notitle = resolve_dataset("cacm-notitle").corpus_path
    monkeypatch.setattr(sources, "lm_available", lambda: True)
    assert sources.source_candidates(notitle)[0] == ["lm", "sentences"]
    assert sources.choose_source(notitle)[0] == "lm"
    monkeypatch.setattr(sources, "lm_available", lambda: False)
    found, why = sources.source_candidates(notitle)
    assert found == ["sentences"] and "SmolLM2 is not built" in why


def test_the_pipeline_fine_tunes_on_each_source_and_reads_their_ensemble(tmp_path, monkeypatch, tiny_model_dirs):
    """Two candidates whose "fine-tuned" models are SPLADE-tiny (first) and a random tiny BERT (second). On these
    sentence dev queries the BERT's best hybrid scores 0.71, SPLADE-tiny's 0.24 and their ensemble's 0.84
    (measured): the ensemble, the anchor, is kept, and every ft- row is read from its runs, each seat the
    equal-weight fusion of the two models' runs. (The names only label the candidates: the first one's held-out
    sentences are the dev queries, as SmolLM2 is switched off for speed.)"""
    from diffret_pyserini.eval.runs import read_trec_run
    from diffret_pyserini.model.packaged import resolve_model_path
    from diffret_pyserini.search.fusion import ensemble_run
    from diffret_pyserini.train import default

    collection = make_numeric_collection(tmp_path / "numeric", n_docs=240)
    folders = {"sentences": resolve_model_path("splade-tiny"), "titles": tiny_model_dirs["bert"]}
    trained = []

    def finetuned(dataset, out_root, force=False, base_model=None, source="titles", **kw):
        trained.append(source)
        return folders[source]

    monkeypatch.setattr(sources, "lm_available", lambda: False)  # the held-out sentences as dev queries: fast
    monkeypatch.setattr(sources, "source_candidates", lambda corpus: (["sentences", "titles"], "two candidates"))
    monkeypatch.setattr(default, "finetuned_default", finetuned)
    metrics = pipeline.run(args_for(tmp_path, collection, systems=["bm25", "dense", "hybrid-dense"],
                                    finetune="yes"))
    assert trained == ["sentences", "titles"]
    runs = tmp_path / "runs" / key(collection)
    chosen = json.loads((runs / "choices.json").read_text())["pseudo_queries"]
    dev = {option: row["dev_ndcg@10"] for option, row in chosen["dev"].items()}
    assert list(dev) == ["sentences & titles", "sentences", "titles"]
    assert dev["sentences & titles"] > dev["titles"] > dev["sentences"] + 0.1
    assert chosen["source"] == "sentences & titles" and chosen["candidates"] == ["sentences", "titles"]
    assert "kept sentences & titles" in chosen["why"]
    # each option's dev figure is the one its own alpha.json holds, at the alpha the safe rule took
    ensemble = runs / "ensemble-sentences-titles-model-kq4-kp16"
    for option, folder in (("sentences", runs / "model-kq4-kp16"), ("titles", runs / "bert-kq4-kp16"),
                           ("sentences & titles", ensemble)):
        row = json.loads((folder / "alpha.json").read_text())["systems"]["hybrid-dense"]
        assert dev[option] == row["dev_ndcg@10"][str(row["alpha"])] >= row["dev_ndcg@10"]["0.5"]
    evidence = json.loads((runs / "choices-evidence.json").read_text())["pseudo-query source"]
    assert evidence["chosen"] == evidence["anchor"] == "sentences & titles"
    assert "| pseudo-query source | sentences & titles | sentences & titles |" in (runs / "metrics.md").read_text()
    assert set(metrics) == {"bm25", "dense", "hybrid-dense", "ft-dense", "ft-hybrid-dense"}
    # the ft- dense row is the ensemble of the two models' dense runs, and differs from either model's
    members = [read_trec_run(runs / tag / "dense.trec") for tag in ("model-kq4-kp16", "bert-kq4-kp16")]
    fused = read_trec_run(ensemble / "dense.trec")
    expected = ensemble_run(members, list(fused), depth=1000)
    for qid, hits in fused.items():  # the run keeps the first --hits of the fusion
        assert [d for d, _ in hits] == [d for d, _ in expected[qid][:len(hits)]]
        assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(hits, expected[qid]))
        assert [d for d, _ in hits][:10] != [d for d, _ in members[1][qid]][:10] or \
            [d for d, _ in hits][:10] != [d for d, _ in members[0][qid]][:10]
    assert (ensemble / "hybrid-dense.trec").resolve().name.startswith("hybrid-dense.alpha-")
    assert metrics["ft-hybrid-dense"] != metrics["hybrid-dense"]


def per_query_record(values: dict[str, float], system: str = "hybrid-bm25-dense", alpha: float = 0.7):
    """An alpha.json record whose one hybrid scores `values` per dev query at its chosen alpha."""
    mean = sum(values.values()) / len(values)
    return {"systems": {system: {"alpha": alpha, "dev_ndcg@10": {str(alpha): mean}, "per_query": values}}}


def test_a_source_is_taken_over_the_first_only_on_a_sure_dev_gain():
    from diffret_pyserini.pipeline.source_choice import choose_source_safely

    first = {f"q{i}": 0.5 for i in range(40)}
    # the physics case in small: the second source is ahead on dev by +0.006, within its noise
    noisy = {q: v + (0.106 if i % 10 == 0 else -0.005) for i, (q, v) in enumerate(first.items())}
    source, choice, why = choose_source_safely({"lm": per_query_record(first), "sentences": per_query_record(noisy)})
    assert choice.means["sentences"] > choice.means["lm"] and choice.gains["sentences"][1] < 0
    assert source == "lm" and why.startswith("lm, the first candidate of lm / sentences: kept lm")
    steady = {q: v + 0.05 for q, v in first.items()}
    source, choice, why = choose_source_safely({"lm": per_query_record(first), "sentences": per_query_record(steady)})
    assert source == "sentences" and "sentences has the best dev hybrid of lm / sentences, a sure gain" in why
    # a candidate without dev figures cannot be compared: the one that has them
    source, choice, _ = choose_source_safely({"lm": None, "sentences": per_query_record(first)})
    assert source == "sentences" and choice is None


def test_the_fine_tuned_model_is_kept_only_on_a_sure_dev_gain():
    from diffret_pyserini.pipeline.source_choice import keep_finetuned

    zero = {f"q{i}": 0.4 for i in range(30)}
    keep, choice, why = keep_finetuned(per_query_record(zero), per_query_record({q: 0.5 for q in zero}))
    assert keep and choice.chosen == "fine-tuned" and why.startswith("kept: its best hybrid beats")
    same = {q: 0.4 + (0.01 if i % 2 else -0.01) for i, q in enumerate(zero)}
    keep, choice, why = keep_finetuned(per_query_record(zero), per_query_record(same))
    assert not keep and choice.chosen == "zero-shot" and why.startswith("left out: kept zero-shot")
    assert keep_finetuned(None, per_query_record(zero))[0]  # nothing to compare on: fine-tuning was asked for


def test_the_choices_table_says_what_was_taken_and_how_sure():
    from diffret_pyserini.pipeline.choices import evidence_table
    from diffret_pyserini.search.fusion import choose_safely

    anchor = {f"q{i}": 0.5 for i in range(30)}
    moved = choose_safely({1.0: anchor, 0.7: {q: 0.6 for q in anchor}}, anchor=1.0).to_json()
    kept = choose_safely({1.0: anchor, 0.7: {q: 0.5 + (0.3 if i % 2 else -0.28) for i, q in enumerate(anchor)}},
                         anchor=1.0).to_json()
    worse = choose_safely({"lm & sentences": anchor, "lm": {q: 0.45 for q in anchor},
                           "sentences": {q: 0.4 for q in anchor}}, anchor="lm & sentences").to_json()
    table = evidence_table({"hybrid-bm25-dense alpha": moved, "hybrid-bm25-sparse alpha": kept,
                            "fine-tuned model": None, "pseudo-query source": worse}, 0.9)
    rows = table.splitlines()
    assert "Gain over anchor [90% interval]" in rows[0]
    assert rows[2] == ("| hybrid-bm25-dense alpha | 0.7 | 1.0 | 0.6000 / 0.5000 | +0.1000 [+0.1000, +0.1000] | "
                       "30 | yes: moved |")
    assert rows[3].startswith("| hybrid-bm25-sparse alpha | 1.0 | 1.0 | 0.5000 / 0.5000 | +0.0100 [")
    assert rows[3].endswith("(0.7, not taken) | 30 | no: anchor kept |")
    assert rows[4] == "| fine-tuned model | - | - | - | - | - | no dev figures |"
    # every other option worse: the best of them is shown with its (negative) gain, and nothing was better
    assert rows[5] == ("| pseudo-query source | lm & sentences | lm & sentences | 0.5000 / 0.5000 | "
                       "-0.0500 [-0.0500, -0.0500] (lm, not taken) | 30 | nothing better |")
