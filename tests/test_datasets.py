"""Dataset reading: validation errors name file, line and field; streaming; packaged CACM."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffret_pyserini.datasets import (
    Dataset,
    DatasetError,
    Document,
    check_dataset,
    count_corpus,
    iter_corpus,
    load_qrels,
    load_queries,
    pyserini_topic_reader,
    resolve_dataset,
    write_topics_tsv,
)

CACM_ORIGINAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cacm" / "original"


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n" for x in lines))
    return path


def doc(i, text="t", **extra) -> str:
    return json.dumps({"_id": i, "title": "", "text": text, **extra}, ensure_ascii=False)


def expect_error(fn, path: Path, line: int | None, field: str | None, words: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    prefix = f"{path}:{line}: " if line else f"{path}: "
    assert msg.startswith(prefix + (f"{field}: " if field else "")), msg
    assert words in msg, msg
    return info.value


@pytest.mark.parametrize("bad_line, field, words", [
    ('{"_id": "d2", "text": ', None, "malformed JSON"),
    ('["d2", "text"]', None, "expected a JSON object, found list"),
    ('{"title": "x", "text": "y"}', "_id", "missing document id"),
    ('{"_id": 1.5, "text": "y"}', "_id", "string or integer, found float"),
    ('{"_id": true, "text": "y"}', "_id", "found bool"),
    ('{"_id": "d 2", "text": "y"}', "_id", "contains whitespace"),
    ('{"_id": "", "text": "y"}', "_id", "empty id"),
    ('{"_id": "d2", "title": "y"}', "text", "missing text field"),
    ('{"_id": "d2", "text": 3}', "text", "must be a string, found int"),
    ('{"id": "d2", "contents": null}', "contents", "must be a string, found NoneType"),
    ('{"_id": "d2", "title": 5, "text": "y"}', "title", "must be a string"),
    ('{"_id": "d1", "text": "again"}', "id", "duplicate document id 'd1'"),
])
def test_corpus_errors_name_file_line_field(tmp_path, bad_line, field, words):
    # line 3: a blank line 2 still counts
    path = write_lines(tmp_path / "corpus.jsonl", [doc("d1"), "   ", bad_line])
    expect_error(lambda: list(iter_corpus(path)), path, 3, field, words)


def test_invalid_utf8_names_line(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [doc("a"), doc("b"), b'{"_id": "c", "text": "caf\xe9"}'])
    expect_error(lambda: list(iter_corpus(path)), path, 3, None, "invalid UTF-8 byte at column")


def test_corpus_kinds_of_documents(tmp_path):
    long = "word " * 20000
    path = write_lines(tmp_path / "c.jsonl", [
        "\ufeff" + doc("e1", ""),                        # BOM on line 1, empty text
        doc("e2", "   \t "),                             # whitespace-only text
        json.dumps({"id": 17, "contents": "pyserini style"}),
        json.dumps({"docid": "x-3", "contents": "docid key"}),
        doc("cjk", "检索 表示 🚀 emoji\u2028sep", title="タイトル"),
        doc("long", long),
    ])
    docs = list(iter_corpus(path))
    assert [d.docid for d in docs] == ["e1", "e2", "17", "x-3", "cjk", "long"]
    assert docs[0].contents == "" and docs[1].text == "   \t " and docs[1].contents == ""
    assert docs[2] == Document("17", "", "pyserini style")
    assert docs[4].contents == "タイトル 检索 表示 🚀 emoji\u2028sep"
    assert len(docs[5].text) == 100000 and docs[5].text == long
    assert count_corpus(path) == 6
    assert [d.docid for d in iter_corpus(path, start=4)] == ["cjk", "long"]


def test_corpus_directory_sorted_and_duplicates_across_files(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    write_lines(d / "b.jsonl", [doc("b1")])
    write_lines(d / "a.jsonl", [doc("a1"), doc("a2")])
    (d / "notes.txt").write_text("ignored")
    assert [x.docid for x in iter_corpus(d)] == ["a1", "a2", "b1"]
    assert count_corpus(d) == 3
    write_lines(d / "c.jsonl", ["", doc("a2")])
    expect_error(lambda: list(iter_corpus(d)), d / "c.jsonl", 2, "id", "duplicate")


def test_iter_corpus_streams(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(50000):
            f.write(doc(f"d{i}", f"text {i}") + "\n")
        f.write('{"_id": broken\n')
    it = iter_corpus(path)
    first = [next(it) for _ in range(3)]  # comes out before the bad last line is ever read
    assert [d.docid for d in first] == ["d0", "d1", "d2"]
    assert count_corpus(path) == 50001
    expect_error(lambda: list(it), path, 50001, None, "malformed JSON")


def test_error_pickles(tmp_path):
    import pickle

    err = pickle.loads(pickle.dumps(DatasetError(tmp_path / "x.jsonl", "bad\nthing", line=3, field="text")))
    assert str(err) == f"{tmp_path}/x.jsonl:3: text: bad thing" and err.line == 3 and err.field == "text"


def test_missing_corpus(tmp_path):
    expect_error(lambda: list(iter_corpus(tmp_path / "nope.jsonl")), tmp_path / "nope.jsonl", None, None,
                 "no such file")


# -- queries ---------------------------------------------------------------------------------------------
def test_queries_jsonl_tsv_and_errors(tmp_path):
    q = write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": 2, "text": " a \n  b\tc "}),
                                                 json.dumps({"_id": "1", "text": "ß 🚀"})])
    assert load_queries(q) == {"2": "a b c", "1": "ß 🚀"}
    assert list(load_queries(q)) == ["2", "1"]
    t = write_lines(tmp_path / "q.tsv", ["q1\thello  world", "", "q2\tsecond\twith tab"])
    assert load_queries(t) == {"q1": "hello world", "q2": "second with tab"}

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    expect_error(lambda: load_queries(empty), empty, None, None, "no queries")
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"_id": "1", "text": "x"}), '{"_id": '])
    expect_error(lambda: load_queries(bad), bad, 2, None, "malformed JSON")
    no_id = write_lines(tmp_path / "noid.jsonl", [json.dumps({"text": "x"})])
    expect_error(lambda: load_queries(no_id), no_id, 1, "_id", "missing")
    no_text = write_lines(tmp_path / "notext.jsonl", [json.dumps({"_id": "1"})])
    expect_error(lambda: load_queries(no_text), no_text, 1, "text", "missing")
    dup = write_lines(tmp_path / "dup.jsonl", [json.dumps({"_id": "1", "text": "x"}),
                                               json.dumps({"_id": 1, "text": "y"})])
    expect_error(lambda: load_queries(dup), dup, 2, "_id", "duplicate query id '1'")
    blank = write_lines(tmp_path / "blank.tsv", ["1\t  "])
    expect_error(lambda: load_queries(blank), blank, 1, "text", "empty query text")
    notab = write_lines(tmp_path / "notab.tsv", ["1 x"])
    expect_error(lambda: load_queries(notab), notab, 1, None, "qid<TAB>text")


def test_trec_topics_standard(tmp_path):
    path = tmp_path / "topics.robust.txt"
    path.write_text("""<top>
<num> Number: 301
<title> International Organized
Crime

<desc> Description:
Identify organizations.
<narr> Narrative:
Relevant docs.
</top>

<top>
<num> Number: 302 <title> Topic: Poliomyelitis and Post-Polio
<desc> Description: Is the disease under control?
</top>
<top>
<title> no number
</top>
""")
    err = expect_error(lambda: load_queries(path), path, 16, "num", "no <num>")
    assert err.line == 16
    path.write_text(path.read_text().split("<top>\n<title> no number")[0])
    assert load_queries(path) == {"301": "International Organized Crime", "302": "Poliomyelitis and Post-Polio"}


@pytest.mark.skipif(not CACM_ORIGINAL.is_dir(), reason="CACM original files absent")
def test_cacm_original_topics_equal_beir_texts():
    trec = load_queries(CACM_ORIGINAL / "topics.cacm.txt")
    beir = load_queries(resolve_dataset("cacm").queries_path)
    assert len(trec) == 64 and list(trec) == [str(i) for i in range(1, 65)]
    assert trec == beir  # both whitespace-normalised
    qrels = load_qrels(CACM_ORIGINAL / "qrels.cacm.txt")
    assert len(qrels) == 52 and qrels["1"]["CACM-1410"] == 1


# -- qrels -----------------------------------------------------------------------------------------------
def test_qrels_formats_and_errors(tmp_path):
    beir = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2\t2", "q2\td1\t0"])
    assert load_qrels(beir) == {"1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    noheader = write_lines(tmp_path / "nh.tsv", ["1\td1\t1"])
    assert load_qrels(noheader) == {"1": {"d1": 1}}
    trec = write_lines(tmp_path / "qrels.txt", ["1 0 d1 1", "", "1 Q0 d3 -2", "1 0 d1 1"])
    assert load_qrels(trec) == {"1": {"d1": 1, "d3": -2}}

    cols = write_lines(tmp_path / "cols.txt", ["1 0 d1 1", "1 d2 1"])
    expect_error(lambda: load_qrels(cols), cols, 2, None, "expected 4 columns")
    first = write_lines(tmp_path / "first.txt", ["1 0 d1 1 extra"])
    expect_error(lambda: load_qrels(first), first, 1, None, "found 5")
    rel = write_lines(tmp_path / "rel.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\td2\thigh"])
    expect_error(lambda: load_qrels(rel), rel, 3, "relevance", "'high' is not an integer")
    conflict = write_lines(tmp_path / "conf.tsv", ["1\td1\t1", "1\td1\t2"])
    expect_error(lambda: load_qrels(conflict), conflict, 2, "relevance", "conflicting")
    empty = write_lines(tmp_path / "empty.tsv", ["query-id\tcorpus-id\tscore"])
    expect_error(lambda: load_qrels(empty), empty, None, None, "no judgements")


@pytest.mark.parametrize("grade, words", [
    ("1.5", "'1.5' is not an integer"), ("x", "'x' is not an integer"), ("1e3", "'1e3' is not an integer"),
    ("1_0", "'1_0' is not an integer"), ("\u0661", "is not an integer"),  # int() would take both of these
    ("99999999999", "out of range"),
])
def test_qrels_grades_must_be_integers(tmp_path, grade, words):
    path = write_lines(tmp_path / "qrels.tsv", ["q1\td1\t1", f"q1\td2\t{grade}"])
    expect_error(lambda: load_qrels(path), path, 2, "relevance", words)


def test_qrels_bom_crlf_header_rules(tmp_path):
    want = {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": -1}}
    body = ["q1\td1\t1", "q1\td2\t0", "", "q2\td1\t-1"]
    for name, head in (("plain", []), ("header", ["query-id\tcorpus-id\tscore"])):
        for bom in (b"", b"\xef\xbb\xbf"):
            for eol in (b"\n", b"\r\n"):
                path = tmp_path / f"{name}-{len(bom)}-{len(eol)}.tsv"
                path.write_bytes(bom + b"".join(x.encode() + eol for x in head + body))
                assert load_qrels(path) == want, path.name
    # a qid that merely looks like a header word is data when its grade is a number
    assert load_qrels(write_lines(tmp_path / "q.tsv", ["query d1 1"])) == {"query": {"d1": 1}}
    late = write_lines(tmp_path / "late.tsv", ["q1\td1\t1", "query-id\tcorpus-id\tscore"])
    expect_error(lambda: load_qrels(late), late, 2, "relevance", "'score' is not an integer")
    glued = write_lines(tmp_path / "glued.tsv", ["q1\td1\t1", "\ufeffq2\td1\t1"])
    expect_error(lambda: load_qrels(glued), glued, 2, None, "byte-order mark")


def test_check_dataset_raises_what_evaluation_would(tmp_path):
    d = tmp_path / "ds"
    (d / "qrels").mkdir(parents=True)
    write_lines(d / "corpus.jsonl", [doc("d1"), doc("d2")])
    write_lines(d / "queries.jsonl", [json.dumps({"_id": "1", "text": "a"})])
    qrels = write_lines(d / "qrels" / "test.tsv", ["1\td1\t1", "1\td2\t0.5"])
    expect_error(lambda: check_dataset(resolve_dataset(d)), qrels, 2, "relevance", "'0.5' is not an integer")
    write_lines(qrels, ["1\td1\t1", "1 0 d2 1"])
    expect_error(lambda: check_dataset(resolve_dataset(d)), qrels, 2, None, "expected 3 columns")
    # without qrels the corpus is still read in full: a bad last line fails here, not at indexing
    qrels.unlink()
    corpus = write_lines(d / "corpus.jsonl", [doc("d1"), '{"_id": "d2"}'])
    expect_error(lambda: check_dataset(resolve_dataset(d)), corpus, 2, "text", "missing text field")


# -- datasets ----------------------------------------------------------------------------------------------
def test_packaged_cacm():
    ds = resolve_dataset("cacm")
    assert ds.name == "cacm" and ds.corpus_path.is_file()
    docs = list(iter_corpus(ds.corpus_path))
    assert len(docs) == 3204 == count_corpus(ds.corpus_path)
    assert docs[0].docid == "CACM-0001"
    assert docs[0].contents.startswith("Preliminary Report-International Algebraic Language CACM December")
    assert len(load_queries(ds.queries_path)) == 64
    qrels = load_qrels(ds.qrels_path)
    assert len(qrels) == 52 and sum(len(v) for v in qrels.values()) == 796
    warnings = check_dataset(ds)
    # Since 0e883dc the packaged qrels pad the 55 judgements that Anserini's qrels.cacm.txt names without zero
    # padding (CACM-46 for the corpus's CACM-0046): every judged id is a corpus id, so no missing-docid warning.
    corpus_ids = {d.docid for d in docs}
    assert all(docid in corpus_ids for judged in qrels.values() for docid in judged)
    assert not any("judged docids" in w for w in warnings), warnings
    assert len(warnings) == 1
    assert "12 of 64 queries have no qrels" in warnings[0] and "trec_eval ignores them" in warnings[0]


@pytest.mark.skipif(not CACM_ORIGINAL.is_dir(), reason="CACM original files absent")
def test_cacm_original_qrels_flag_the_padding_mismatch():
    packaged = resolve_dataset("cacm")
    ds = Dataset("cacm-anserini-qrels", packaged.corpus_path, packaged.queries_path,
                 CACM_ORIGINAL / "qrels.cacm.txt")
    w = [x for x in check_dataset(ds) if "judged docids" in x]
    assert len(w) == 1 and "\n" not in w[0]
    # Anserini's file: 55 judgements name 46 distinct unpadded ids, all of them padded in the corpus
    assert "46 judged docids are not in the corpus (CACM-115, CACM-117" in w[0]
    assert "46 of them match corpus ids after zero padding/case (CACM-115 -> CACM-0115" in w[0]
    assert w[0].endswith(": likely an id format mismatch")


def test_check_dataset_names_id_format_mismatch(tmp_path):
    d = tmp_path / "planted"
    (d / "qrels").mkdir(parents=True)
    write_lines(d / "corpus.jsonl", [doc(f"DOC-{i:04d}") for i in range(1, 30)] + [doc("Alpha-7")])
    write_lines(d / "queries.jsonl", [json.dumps({"_id": "1", "text": "a"})])
    # 7 missing: 5 match up to padding/case (DOC-12 and DOC-012 both), DOC-46 and ghost-1 match nothing
    judged = ["DOC-3", "DOC-46", "doc-0007", "DOC-12", "DOC-012", "alpha-07", "ghost-1", "DOC-0001", "Alpha-7"]
    write_lines(d / "qrels" / "test.tsv", [f"1\t{x}\t1" for x in judged])
    w = check_dataset(resolve_dataset(d))
    assert len(w) == 1 and "\n" not in w[0]
    assert w[0] == (f"{d / 'qrels' / 'test.tsv'}: 7 judged docids are not in the corpus (DOC-012, DOC-12, DOC-3, "
                    "DOC-46, alpha-07, ...); 5 of them match corpus ids after zero padding/case (DOC-012 -> "
                    "DOC-0012, DOC-12 -> DOC-0012, DOC-3 -> DOC-0003, ...): likely an id format mismatch")
    # a minority of matches is still named, without calling it a format mismatch
    write_lines(d / "qrels" / "test.tsv", ["1\tDOC-3\t1", "1\tx1\t1", "1\tx2\t1", "1\tx3\t1"])
    w = check_dataset(resolve_dataset(d))
    assert w[0].endswith("4 judged docids are not in the corpus (DOC-3, x1, x2, x3); 1 of them match corpus ids "
                         "after zero padding/case (DOC-3 -> DOC-0003); the others can never be retrieved")


def test_resolve_layouts_and_check(tmp_path):
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    write_lines(beir / "corpus.jsonl", [doc("d1"), doc("d2")])
    write_lines(beir / "queries.jsonl", [json.dumps({"_id": "1", "text": "a"}),
                                         json.dumps({"_id": "2", "text": "b"})])
    write_lines(beir / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "1\td1\t1", "1\tghost\t1",
                                              "9\td2\t1"])
    ds = resolve_dataset(beir)
    assert ds == Dataset("mini", beir / "corpus.jsonl", beir / "queries.jsonl", beir / "qrels" / "test.tsv")
    w = check_dataset(ds)
    assert len(w) == 3
    assert "1 judged docids are not in the corpus (ghost)" in w[0]
    assert "1 of 2 queries have no qrels (2)" in w[1]
    assert "1 judged query ids are not in the queries file (9)" in w[2]

    trec = tmp_path / "trecstyle"
    trec.mkdir()
    write_lines(trec / "corpus.jsonl", [doc("d1")])
    write_lines(trec / "topics.x.txt", ["<top>", "<num> Number: 007", "<title> t", "</top>"])
    write_lines(trec / "qrels.x.txt", ["007 0 d1 1"])
    ds = resolve_dataset(trec)
    assert (ds.queries_path.name, ds.qrels_path.name) == ("topics.x.txt", "qrels.x.txt")
    w = check_dataset(ds)
    assert len(w) == 1 and "leading zeros (007)" in w[0]

    expect_error(lambda: resolve_dataset(tmp_path / "missing"), tmp_path / "missing", None, None,
                 "not a directory nor a packaged dataset")
    (trec / "topics.y.txt").write_text("x")
    expect_error(lambda: resolve_dataset(trec), trec, None, None, "several queries files")


def test_write_topics_tsv_names(tmp_path):
    path = tmp_path / "run" / "queries.topics.tsv"
    write_topics_tsv({"1": "a  b\tc", "q-2": "x"}, path)
    assert path.read_text() == "1\ta b c\nq-2\tx\n"
    assert load_queries(path) == {"1": "a b c", "q-2": "x"}
    assert not list(path.parent.glob("*.tmp-*"))
    assert pyserini_topic_reader("/data/beir/nfcorpus/q.tsv") == "beir"  # whole path, not the basename
    assert pyserini_topic_reader("runs/cacm-queries.tsv") == "cacm"
    write_topics_tsv({"1": "a"}, tmp_path / "cacm" / "q.tsv")  # the folder is the caller's business
    for bad in (tmp_path / "beir.tsv", tmp_path / "cacm.tsv", tmp_path / "q.json", tmp_path / "q.txt"):
        with pytest.raises(ValueError, match="neither 'beir' nor 'cacm'"):
            write_topics_tsv({"1": "a"}, bad)
    with pytest.raises(ValueError, match="whitespace"):
        write_topics_tsv({"a b": "a"}, tmp_path / "q.tsv")


def test_packaged_cacm_notitle_is_exactly_what_its_derivation_writes(tmp_path):
    from diffret_pyserini.data.derive import without_titles

    out = without_titles("cacm", tmp_path / "notitle")
    packaged = resolve_dataset("cacm-notitle")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (out / name).read_bytes() == (packaged.corpus_path.parent / name).read_bytes(), name
    docs = list(iter_corpus(packaged.corpus_path))
    assert len(docs) == 3204 and all(d.title == "" and d.docid.isdigit() for d in docs)
    assert docs[45].docid == "46" and docs[45].text == list(iter_corpus(resolve_dataset("cacm").corpus_path))[45].text
    judged = load_qrels(packaged.qrels_path)
    assert sum(len(j) for j in judged.values()) == 796 and set(judged["1"]) >= {"1410", "1572"}
