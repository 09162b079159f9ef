"""End to end through real Pyserini: our encoders, Lucene impact indexes, FAISS, Pyserini's own CLIs.

The model is the embedded default (SPLADE-tiny, a real trained masked LM); nothing is mocked.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_chain import run_chain

from diffret_pyserini.encode.pyserini_encoders import DiffRetDocumentEncoder, DiffRetQueryEncoder

PLANTED_ID = "PLANTED-1"
PLANTED_TEXT = "Xylophone tuning with zebrafish acoustics: a xylophone resonance study"
QUERY = "xylophone zebrafish resonance"


def write_corpus(path: Path, n: int = 40) -> Path:
    from diffret_pyserini.datasets import iter_corpus, resolve_dataset

    docs = []
    for i, doc in enumerate(iter_corpus(resolve_dataset("cacm").corpus_path)):
        if i == n:
            break
        docs.append({"_id": doc.docid, "title": doc.title, "text": doc.text})
    docs.insert(n // 2, {"_id": PLANTED_ID, "title": "", "text": PLANTED_TEXT})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def run(cmd, cwd=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def index_impact(input_dir: Path, index_dir: Path) -> Path:
    run([sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonVectorCollection", "--input",
         str(input_dir), "--index", str(index_dir), "--generator", "DefaultLuceneDocumentGenerator",
         "--impact", "--pretokenized", "--threads", "1"])
    return index_dir


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """Our own CLI: all three representations from one pass over a corpus with a planted document."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = write_corpus(root / "corpus" / "corpus.jsonl")
    run([sys.executable, "-m", "diffret_pyserini.encode", "input", "--corpus", str(corpus), "output",
         "--embeddings", str(root / "enc"), "encoder", "--encoder", "splade-tiny", "--batch-size", "8",
         "--device", "cpu"])
    return root


def test_our_sparse_output_is_a_json_vector_collection_with_every_document(encoded):
    lines = [json.loads(x) for x in (encoded / "enc" / "sparse" / "embeddings.jsonl").read_text().splitlines()]
    assert len(lines) == 41
    planted = next(x for x in lines if x["id"] == PLANTED_ID)
    # word pieces of 'xylophone', 'zebrafish', 'resonance' (WordPiece: x ##yl ##ophone, zebra ##fish)
    assert {"##yl", "##fish", "resonance"} <= set(planted["vector"])
    assert all(isinstance(v, int) and v > 0 for x in lines for v in x["vector"].values())
    assert all(" " not in term for x in lines for term in x["vector"])


def test_impact_index_from_our_sparse_output_ranks_the_planted_document_first(encoded):
    from pyserini.search.lucene import LuceneImpactSearcher

    index = index_impact(encoded / "enc" / "sparse", encoded / "impact")
    searcher = LuceneImpactSearcher(str(index), DiffRetQueryEncoder("splade-tiny", representation="sparse"),
                                    min_idf=-1)
    assert searcher.num_docs == 41
    hits = searcher.search(QUERY, k=5)
    assert hits[0].docid == PLANTED_ID
    assert all(h.score < hits[0].score for h in hits[1:])


def test_faiss_dense_ranks_the_planted_document_first(encoded):
    from pyserini.search.faiss import FaissSearcher

    searcher = FaissSearcher(str(encoded / "enc" / "dense"), DiffRetQueryEncoder("splade-tiny"))
    hits = searcher.search(PLANTED_TEXT, k=5)  # the passage's own text as a query
    assert hits[0].docid == PLANTED_ID
    results = searcher.batch_search([PLANTED_TEXT, QUERY], ["a", "b"], k=3)  # goes through encode_batch
    assert results["a"][0].docid == PLANTED_ID


def test_multi_vector_store_holds_kp_vectors_per_document(encoded):
    from diffret_pyserini.index.multivector import MultiVectorStore

    store = MultiVectorStore.load(encoded / "enc" / "multi")
    assert len(store) == 41 and store.vectors.shape == (41 * 16, 128)
    norms = np.linalg.norm(store.doc_vectors(0).astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-2)


def test_pyserini_encode_cli_with_our_encoder_writes_what_our_encode_cli_writes(encoded, tmp_path):
    """`python -m pyserini.encode` unchanged: our class is found through its class map, and its outputs are our
    CLI's, vector for vector (tests/test_by_hand.py shows that our CLI's outputs give the pipeline's runs)."""
    import faiss
    from pyserini.search.faiss import FaissSearcher
    from pyserini.search.lucene import LuceneImpactSearcher

    corpus = encoded / "corpus"
    common = ["input", "--corpus", str(corpus), "--fields", "title", "text", "--delimiter", " "]
    # both CLIs in one interpreter (tests/cli_chain.py), each as `python -m pyserini.encode ...` runs it
    run_chain([["pyserini.encode", *common, "output", "--embeddings", tmp_path / "sparse", "encoder",
                "--encoder", "diffret-sparse:splade-tiny", "--fields", "title", "text", "--batch-size", "8",
                "--device", "cpu"],
               ["pyserini.encode", *common, "output", "--embeddings", tmp_path / "dense", "--to-faiss",
                "encoder", "--encoder", "diffret-dense:splade-tiny", "--fields", "title", "text",
                "--dimension", "128", "--batch-size", "8", "--device", "cpu"]], cwd=tmp_path)

    def vectors(path):
        return [(x["id"], x["vector"]) for x in map(json.loads, path.read_text().splitlines())]

    ours, theirs = vectors(encoded / "enc" / "sparse" / "embeddings.jsonl"), vectors(tmp_path / "sparse" / "embeddings.jsonl")
    assert len(theirs) == 41 and theirs == ours  # every document, in corpus order, the same impacts
    assert (tmp_path / "dense" / "docid").read_text() == (encoded / "enc" / "dense" / "docid").read_text()
    a, b = (faiss.read_index(str(d / "index")) for d in (tmp_path / "dense", encoded / "enc" / "dense"))
    np.testing.assert_allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-5)
    index = index_impact(tmp_path / "sparse", tmp_path / "impact")
    sparse = LuceneImpactSearcher(str(index), DiffRetQueryEncoder("diffret-sparse:splade-tiny"), min_idf=-1)
    assert sparse.search(QUERY, k=3)[0].docid == PLANTED_ID
    dense = FaissSearcher(str(tmp_path / "dense"), DiffRetQueryEncoder("splade-tiny"))
    assert dense.search(PLANTED_TEXT, k=3)[0].docid == PLANTED_ID


def test_embedded_default_encodes_real_text_into_sensible_terms():
    enc = DiffRetDocumentEncoder("splade-tiny", representation="sparse")
    vec = enc.encode(["The Fortran compiler generates efficient machine code for matrix operations."])[0]
    top = sorted(vec, key=vec.get, reverse=True)
    assert {"compiler", "matrix", "machine", "code", "efficient"} <= set(top)
    assert not {"the", "for", ".", "[MASK]", "[CLS]"} & set(vec)  # stopwords, punctuation, specials filtered
    assert top[0] in {"compiler", "fort", "matrix", "machine", "efficient", "operations", "code"}
    query = DiffRetQueryEncoder("splade-tiny", representation="sparse").encode("fortran matrix compiler")
    assert set(query) <= {"fort", "##ran", "matrix", "compiler"} and "matrix" in query


def test_our_errors_inside_pyserini_encode_are_one_line(tmp_path):
    """Pyserini's CLI has no error boundary: a model that is not there ends in one line naming it, exit != 0."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", n=2)
    proc = subprocess.run([sys.executable, "-m", "pyserini.encode", "input", "--corpus", str(corpus), "output",
                           "--embeddings", str(tmp_path / "out"), "encoder", "--encoder", "diffret:/nonexistent"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and "'/nonexistent'" in ours[0], proc.stderr


def test_a_bug_inside_our_encoder_under_pyserini_keeps_its_traceback(monkeypatch):
    from diffret_pyserini.encode import plugin, pyserini_encoders

    def planted(*args, **kwargs):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(pyserini_encoders, "DiffRetDocumentEncoder", planted)
    with pytest.raises(RuntimeError, match="planted bug"):
        plugin.document_encoder("diffret:splade-tiny")
    with pytest.raises(SystemExit, match=r"^error: unknown model '/nonexistent'"):
        plugin.query_encoder("diffret:/nonexistent")
