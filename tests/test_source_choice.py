"""--finetune auto without titles: the pseudo-query source is chosen on the dev queries, never the topics."""
import json

import pytest

from diffret_pyserini import pipeline
from diffret_pyserini.pipeline.source_choice import dev_score, pick_source
from diffret_pyserini.train import sources
from numeric_collection import args_for, key, make_numeric_collection


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


def test_the_pipeline_fine_tunes_on_each_source_and_keeps_the_best_on_dev(tmp_path, monkeypatch, tiny_model_dirs):
    """Two candidates whose "fine-tuned" models are SPLADE-tiny (first) and a random tiny BERT (second): on these
    sentence dev queries the BERT scores higher (dev nDCG@10 0.73 vs 0.24, measured), so its source, the second,
    must be chosen and the ft- rows must be its model's. (The names only label the candidates: the first one's
    held-out sentences are the dev queries, as SmolLM2 is switched off for speed.)"""
    from diffret_pyserini.model.packaged import resolve_model_path
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
    metrics = pipeline.run(args_for(tmp_path, collection, systems=["bm25", "hybrid-dense"], finetune="yes"))
    assert trained == ["sentences", "titles"]
    runs = tmp_path / "runs" / key(collection)
    chosen = json.loads((runs / "choices.json").read_text())["pseudo_queries"]
    dev = {source: row["dev_ndcg@10"] for source, row in chosen["dev"].items()}
    assert dev["titles"] > dev["sentences"] + 0.1  # a clear gap: the choice is not a tie kept by order
    assert chosen["source"] == "titles" and chosen["candidates"] == ["sentences", "titles"]
    assert "titles has the best dev hybrid" in chosen["why"]
    # each candidate's dev figure is the one its own alpha.json holds
    for source, tag in (("sentences", "model-kq4-kp16"), ("titles", "bert-kq4-kp16")):
        row = json.loads((runs / tag / "alpha.json").read_text())["systems"]["hybrid-dense"]
        assert dev[source] == row["dev_ndcg@10"][str(row["alpha"])] == max(row["dev_ndcg@10"].values())
    assert set(metrics) == {"bm25", "hybrid-dense", "ft-hybrid-dense"}
    # the ft- row is the chosen (BERT) model's run, not SPLADE-tiny's
    assert (runs / "bert-kq4-kp16" / "hybrid-dense.trec").is_file()
    assert metrics["ft-hybrid-dense"] != metrics["hybrid-dense"]
