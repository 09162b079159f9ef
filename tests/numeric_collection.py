"""A second small real collection for the pipeline tests, and the one pipeline run several test modules read."""
import json

from diffret_pyserini.datasets import iter_corpus, resolve_dataset
from diffret_pyserini.index.lucene import dataset_key
from diffret_pyserini.pipeline import PipelineArguments


def make_numeric_collection(root, n_docs=40):
    """A second BEIR-layout collection: numeric ids, no titles, queries that are spans of their documents."""
    cacm = list(iter_corpus(resolve_dataset("cacm").corpus_path))[200:200 + n_docs]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i, doc in enumerate(cacm):
            f.write(json.dumps({"_id": str(1000 + i), "text": f"{doc.title} {doc.text}"}) + "\n")
    queries = {str(q): cacm[j].title for q, j in zip(range(1, 6), (0, 5, 10, 15, 20))}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels").mkdir(exist_ok=True)
    qrels = "".join(f"{q}\t{1000 + j}\t1\n" for q, j in zip(queries, (0, 5, 10, 15, 20)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def args_for(tmp_path, dataset, **kw):
    """Pipeline arguments for a test run: our systems and BM25 (no peers unless asked for in `systems`)."""
    from diffret_pyserini.search.systems import SYSTEMS

    kw.setdefault("systems", list(SYSTEMS))
    kw.setdefault("finetune", "no")
    return PipelineArguments(dataset=str(dataset), model="splade-tiny",
                             indexes=str(tmp_path / "indexes"), runs=str(tmp_path / "runs"), hits=100,
                             device="cpu", batch_size=16, **kw)


def key(dataset):
    """The dataset's folder name under indexes/ and runs/ (its name plus a hash of its path)."""
    return dataset_key(resolve_dataset(dataset))
