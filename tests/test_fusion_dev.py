"""--alpha auto (weights chosen on held-out pseudo-queries, never the topics) and peers in the main table."""
import json

import pytest
from numeric_collection import args_for, key, make_numeric_collection

from diffret_pyserini import pipeline
from diffret_pyserini.train.sources import choose_source, dev_split


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_numeric_collection(tmp_path_factory.mktemp("dev") / "numeric", n_docs=300)


def test_dev_split_holds_out_pseudo_queries_of_the_corpus_not_its_topics(collection):
    from diffret_pyserini.datasets import iter_corpus, load_queries, resolve_dataset

    corpus = resolve_dataset(collection).corpus_path
    from diffret_pyserini.train.sources import lm_available

    source, why = choose_source(corpus)
    assert source == ("lm" if lm_available() else "sentences") and "fewer than 200 documents have a title" in why
    dev = dev_split(corpus, "sentences", queries="own")
    again = dev_split(corpus, "sentences", queries="own")
    assert dev_split(corpus, "lm", queries="none").docids == dev.docids  # one held-out set for both sources
    assert dev.topics == again.topics and 20 <= len(dev.topics) <= 300 // 4  # seeded; a quarter at most
    topics = set(load_queries(resolve_dataset(collection).queries_path).values())
    docs = {d.docid: d.text for d in iter_corpus(corpus)}
    for qid, text in dev.topics.items():
        (docid,) = dev.qrels[qid]
        assert qid == f"dev-{docid}" and docid in dev.docids and text in docs[docid] and text not in topics


def test_dev_queries_are_written_by_the_lm_for_the_same_held_out_documents(collection, tmp_path):
    from diffret_pyserini.datasets import iter_corpus, resolve_dataset
    from diffret_pyserini.train.sources import lm_available

    if not lm_available():
        pytest.skip("SmolLM2 is not built (make models)")
    corpus = resolve_dataset(collection).corpus_path
    own = dev_split(corpus, "sentences", size=6, queries="own")
    lm = dev_split(corpus, "sentences", size=6, queries="lm", cache_dir=tmp_path)
    assert lm.source == "lm" and lm.docids == own.docids and len(own.topics) == 6
    assert 3 <= len(lm.topics) <= 6 and set(lm.topics) <= set(own.topics)  # a dropped generation gives none
    texts = {d.docid: d.text for d in iter_corpus(corpus)}
    for qid, query in lm.topics.items():
        assert query != own.topics[qid] and texts[qid[len("dev-"):]]  # written by the LM, not the sentence
        assert lm.qrels[qid] == own.qrels[qid]
    assert list(tmp_path.glob("*.jsonl"))  # cached by content for the next run


def test_alpha_auto_is_chosen_on_dev_queries_recorded_and_never_overwrites_another_alpha(collection, tmp_path,
                                                                                         monkeypatch, caplog):
    from diffret_pyserini.eval.runs import read_trec_run
    from diffret_pyserini.eval.trec_eval import read_metrics
    from diffret_pyserini.search.fusion import ALPHA_GRID, fuse
    from diffret_pyserini.train import sources

    monkeypatch.setattr(sources, "lm_available", lambda: False)  # the held-out sentences as dev queries: fast
    systems = ["bm25", "sparse", "hybrid-bm25-sparse", "peer-splade-pooling"]
    metrics = pipeline.run(args_for(tmp_path, collection, systems=systems))
    assert list(metrics) == ["bm25", "sparse", "hybrid-bm25-sparse", "peer-splade-pooling"]
    runs = tmp_path / "runs" / key(collection)
    run_dir = runs / "splade-tiny-kq4-kp16"
    record = json.loads((run_dir / "alpha.json").read_text())
    row = record["systems"]["hybrid-bm25-sparse"]
    assert record["dev"]["source"] == "sentences" and record["dev"]["queries"] >= 20
    assert "dev queries: SmolLM2 is not built" in caplog.text
    assert set(row["dev_ndcg@10"]) == {str(a) for a in ALPHA_GRID} | {"1.0"}  # the grid and BM25 alone
    alpha, anchor = row["alpha"], row["anchor"]
    assert anchor == 1.0 and len(row["per_query"]) == record["dev"]["queries"]
    assert sum(row["per_query"].values()) / len(row["per_query"]) == pytest.approx(row["dev_ndcg@10"][str(alpha)],
                                                                                   abs=1e-5)
    # the safe rule: BM25 alone unless an alpha's gain over it is sure; then the surest such alpha
    sure = {a: g for a, g in row["gain"].items() if a != "1.0" and g[1] > 0}
    assert str(alpha) == (max(sure, key=lambda a: sure[a][1]) if sure else "1.0")
    assert row["dev_ndcg@10"][str(alpha)] >= row["dev_ndcg@10"]["1.0"]
    # the run is named by its alpha, <system>.trec links to it, and it is the fusion at that alpha
    chosen = run_dir / f"hybrid-bm25-sparse.alpha-{alpha:g}.trec"
    assert (run_dir / "hybrid-bm25-sparse.trec").resolve() == chosen.resolve()
    assert chosen.read_text().split("\n", 1)[0].split()[-1] == f"hybrid-bm25-sparse-alpha{alpha:g}"
    bm25, sparse, fused = (read_trec_run(run_dir / f"{s}.trec") for s in ("bm25", "sparse", "hybrid-bm25-sparse"))
    for qid, hits in fused.items():
        expected = dict(fuse(sparse.get(qid, []), bm25.get(qid, []), alpha=alpha))
        assert all(score == pytest.approx(expected[d], abs=1e-4) for d, score in hits)
    choices = json.loads((runs / "choices.json").read_text())
    assert choices["pseudo_queries"]["source"] == "sentences" and choices["alpha"] == {"hybrid-bm25-sparse": alpha}
    evidence = json.loads((runs / "choices-evidence.json").read_text())["hybrid-bm25-sparse alpha"]
    assert evidence["chosen"] == alpha and evidence["gain"] == row["gain"]
    # the peer ran through Pyserini's own encoder, its rows stand in the combined table
    assert (runs / "peers" / "peer-splade-pooling.trec").is_file()
    table = (runs / "metrics.md").read_text()
    assert "peer-splade-pooling" in table and "p (t)" in table and '"source": "sentences"' in table
    assert "| hybrid-bm25-sparse alpha | " in table and "bootstrap interval" in table  # how sure each choice was
    recorded = json.loads((runs / "metrics.json").read_text())
    assert recorded["_run"] == choices and read_metrics(runs / "metrics.json") == metrics
    # another alpha: a second run file; the first is kept
    other = 0.9 if alpha != 0.9 else 0.1
    again = pipeline.run(args_for(tmp_path, collection, systems=["bm25", "sparse", "hybrid-bm25-sparse"],
                                  alpha=other))
    assert chosen.is_file() and (run_dir / f"hybrid-bm25-sparse.alpha-{other:g}.trec").is_file()
    assert (run_dir / "hybrid-bm25-sparse.trec").resolve().name == f"hybrid-bm25-sparse.alpha-{other:g}.trec"
    assert again["sparse"] == metrics["sparse"]


def test_the_main_table_of_another_model_does_not_overwrite_the_default_models(tmp_path):
    from diffret_pyserini.pipeline import PipelineArguments
    from diffret_pyserini.pipeline.stages import main_table_dir

    (tmp_path / "my-model").mkdir()
    root = tmp_path / "runs" / "cacm"
    assert main_table_dir(PipelineArguments(), root) == root
    assert main_table_dir(PipelineArguments(model=str(tmp_path / "my-model")), root) == root / "main-my-model"
    assert main_table_dir(PipelineArguments(tag="x"), root) == root / "main-splade-tiny-x"


def test_few_dev_queries_keep_every_bm25_hybrid_on_bm25s_side(tmp_path, monkeypatch):
    """22 dev queries (the held-out documents' own sentences, which BM25 finds at rank 1): no alpha gains
    anything sure over BM25 alone, so every BM25 hybrid keeps alpha 1.0, and the table says so. The alphas from
    0.6 up tie with BM25 alone on dev; the argmax rule (ties to the alpha nearest 0.5) would have moved."""
    from diffret_pyserini.search.fusion import ALPHA_GRID
    from diffret_pyserini.train import sources

    collection = make_numeric_collection(tmp_path / "numeric", n_docs=300)
    split = sources.dev_split
    monkeypatch.setattr(sources, "lm_available", lambda: False)
    monkeypatch.setattr(sources, "dev_split", lambda corpus, source, **kw: split(corpus, source, size=22, **kw))
    hybrids = ["hybrid-bm25-sparse", "hybrid-bm25-dense"]
    pipeline.run(args_for(tmp_path, collection, systems=["bm25", "sparse", "dense", *hybrids]))
    runs = tmp_path / "runs" / key(collection)
    record = json.loads((runs / "splade-tiny-kq4-kp16" / "alpha.json").read_text())
    assert record["dev"]["queries"] == 22
    for system in hybrids:
        row = record["systems"][system]
        dev = {float(a): v for a, v in row["dev_ndcg@10"].items()}
        argmax = max(ALPHA_GRID, key=lambda a: (dev[a], -abs(a - 0.5), -a))
        assert argmax < 1.0 and dev[argmax] >= dev[1.0]  # what the argmax rule would have taken
        assert row["alpha"] == 1.0 and row["why"].startswith("kept 1.0: no option's gain is sure")
        assert all(lo <= 0 for a, (_, lo, _) in row["gain"].items())
    assert json.loads((runs / "choices.json").read_text())["alpha"] == dict.fromkeys(hybrids, 1.0)
    table = (runs / "metrics.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if " alpha | " in line}
    for system in hybrids:  # the best other alpha ties with BM25 alone: shown with its zero gain, nothing better
        assert rows[f"{system} alpha"].startswith(f"| {system} alpha | 1.0 | 1.0 |")
        assert "| +0.0000 [" in rows[f"{system} alpha"] and rows[f"{system} alpha"].endswith("| nothing better |")
