"""Dataset reading with strict, one-line validation errors; the corpus is streamed, never loaded whole.

Formats: corpora as jsonl (BEIR ``{"_id", "title", "text"}`` or Pyserini ``{"id"|"docid", "contents"}``),
queries as BEIR jsonl, ``qid<TAB>text`` TSV or TREC topics (``<top>`` or CACM's ``<DOC>`` form), qrels as
BEIR TSV or TREC. Every problem raises :class:`DatasetError` ``"{path}:{line}: {field}: {what}"``.
"""
from __future__ import annotations

import gzip
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from diffret_pyserini.cli import InputError

__all__ = ["DatasetError", "Document", "Dataset", "iter_corpus", "count_corpus", "load_queries", "load_qrels",
           "resolve_dataset", "check_dataset", "write_topics_tsv", "pyserini_topic_reader", "PACKAGED_DATASETS",
           "PACKAGED_DATA_DIR", "normalize_text", "corpus_files", "document_lines", "json_lines", "json_object",
           "read_documents"]

PACKAGED_DATASETS = ("cacm", "cacm-notitle")
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "data"  # the collections shipped in the package
_ID_KEYS = ("_id", "id", "docid")
_WS = re.compile(r"\s+")
_HAS_WS = re.compile(r"\s")


class DatasetError(InputError):
    """A problem in an input file, as one line: ``{path}:{line}: {field}: {what}`` (line 1-based)."""

    def __init__(self, path: str | os.PathLike, what: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.what = str(path), line, field, what
        where = self.path if line is None else f"{self.path}:{line}"
        # Keep it one line whatever the caller passed: CLIs print "error: <msg>" and nothing else.
        super().__init__(" ".join(f"{where}: {field + ': ' if field else ''}{what}".split()))

    def __reduce__(self):  # so it survives pickling (multiprocessing workers, DataLoader)
        return type(self), (self.path, self.what, self.line, self.field)


@dataclass(frozen=True)
class Document:
    """One corpus entry; ``contents`` is what gets encoded/indexed."""

    docid: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        return f"{self.title} {self.text}".strip()


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def corpus_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DatasetError(p, "directory holds no *.jsonl files")
        return files
    if not p.is_file():
        raise DatasetError(p, "no such file or directory")
    return [p]


def document_lines(path: Path) -> Iterator[tuple[int, int]]:
    """(byte offset, 1-based line number) of each non-blank line of one corpus file, from the bytes alone (no
    decoding, no JSON): the documents, as every reader counts them."""
    with _open_binary(path) as f:
        offset = 0
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                yield offset, lineno
            offset += len(raw)


def json_lines(path: Path, offset: int = 0, first_line: int = 1) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, decoded line) for non-blank lines from byte `offset` (line `first_line`),
    decoding each line on its own so a bad byte is reported at its line. Binary iteration splits on b"\\n"
    only: U+2028 inside JSON strings is safe."""
    with _open_binary(path) as f:
        f.seek(offset)
        for lineno, raw in enumerate(f, first_line):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark would make json.loads fail on an otherwise fine file
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(path, f"invalid UTF-8 byte at column {e.start + 1}", line=lineno) from None
            if line.strip():
                yield lineno, line


def json_object(path: Path, lineno: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"malformed JSON ({e.msg} at column {e.colno})", line=lineno) from None
    if not isinstance(obj, dict):
        raise DatasetError(path, f"expected a JSON object, found {type(obj).__name__}", line=lineno)
    return obj


def _check_id(path: Path, lineno: int, key: str, value: object) -> str:
    # bool is an int subclass; "true" as an id is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(path, f"id must be a string or integer, found {type(value).__name__}",
                           line=lineno, field=key)
    ident = str(value)
    if not ident:
        raise DatasetError(path, "empty id", line=lineno, field=key)
    if _HAS_WS.search(ident):
        # TREC run/qrels files are whitespace-separated: such an id would shift columns.
        raise DatasetError(path, f"id {ident!r} contains whitespace, which breaks TREC run files",
                           line=lineno, field=key)
    return ident


def _parse_document(path: Path, lineno: int, obj: dict) -> Document:
    key = next((k for k in _ID_KEYS if k in obj), None)
    if key is None:
        raise DatasetError(path, "missing document id (expected one of _id, id, docid)", line=lineno, field="_id")
    docid = _check_id(path, lineno, key, obj[key])
    field = "text" if "text" in obj else "contents" if "contents" in obj else None
    if field is None:
        raise DatasetError(path, "missing text field (expected text or contents)", line=lineno, field="text")
    text = obj[field]
    if not isinstance(text, str):
        raise DatasetError(path, f"must be a string, found {type(text).__name__}", line=lineno, field=field)
    title = obj.get("title") if field == "text" else None
    if title is None:
        title = ""
    elif not isinstance(title, str):
        raise DatasetError(path, f"must be a string, found {type(title).__name__}", line=lineno, field="title")
    return Document(docid, title, text)


def read_documents(path: Path, offset: int = 0, first_line: int = 1, limit: int | None = None,
                   seen: set[str] | None = None) -> Iterator[tuple[int, Document]]:
    """(line number, Document) of one corpus file from byte `offset` (line `first_line`), at most `limit`
    documents, each checked with one-line errors; an id already in `seen` (shared across calls) is a duplicate."""
    seen = set() if seen is None else seen
    for lineno, line in itertools.islice(json_lines(path, offset, first_line), limit):
        doc = _parse_document(path, lineno, json_object(path, lineno, line))
        if doc.docid in seen:
            raise DatasetError(path, f"duplicate document id {doc.docid!r}", line=lineno, field="id")
        seen.add(doc.docid)
        yield lineno, doc


def iter_corpus(path: str | os.PathLike, *, start: int = 0) -> Iterator[Document]:
    """Stream documents from a jsonl file (optionally .gz) or a directory of them (sorted by name).

    Memory stays flat in corpus size (only the set of seen ids is kept, to reject duplicates). Blank lines are
    skipped but counted for line numbers. Empty or whitespace-only text is KEPT (a document with empty
    contents, never dropped: dropping would desynchronise ids from positions). Long texts are kept whole;
    truncation happens at tokenisation. ``start`` skips the first ``start`` documents (resume), which are
    still validated so that errors and duplicate detection do not depend on where a run resumed.
    """
    seen: set[str] = set()
    n = 0
    for f in corpus_files(path):
        for _, doc in read_documents(f, seen=seen):
            if n >= start:
                yield doc
            n += 1


def count_corpus(path: str | os.PathLike) -> int:
    """Number of non-blank lines (documents), without parsing JSON; for progress bars."""
    return sum(1 for f in corpus_files(path) for _ in document_lines(f))


def normalize_text(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped: the one normalisation of query texts (Pyserini
    looks pre-encoded queries up by their text, so every writer and reader must agree on it)."""
    return _WS.sub(" ", text).strip()


def _read_text(path: Path) -> str:
    with _open_binary(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(path, "invalid UTF-8 byte", line=data.count(b"\n", 0, e.start) + 1) from None


def _add_query(queries: dict[str, str], path: Path, lineno: int, qid: str, text: str) -> None:
    if qid in queries:
        raise DatasetError(path, f"duplicate query id {qid!r}", line=lineno, field="_id")
    text = normalize_text(text)
    if not text:
        # An empty query cannot be searched, and Pyserini's TSV topic reader would misread the line.
        raise DatasetError(path, "empty query text", line=lineno, field="text")
    queries[qid] = text


def _queries_jsonl(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, line in json_lines(path):
        obj = json_object(path, lineno, line)
        for key in ("_id", "text"):
            if key not in obj:
                raise DatasetError(path, "missing", line=lineno, field=key)
        if not isinstance(obj["text"], str):
            raise DatasetError(path, f"must be a string, found {type(obj['text']).__name__}",
                               line=lineno, field="text")
        _add_query(queries, path, lineno, _check_id(path, lineno, "_id", obj["_id"]), obj["text"])
    return queries


def _queries_tsv(path: Path, text: str) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DatasetError(path, "expected 'qid<TAB>text'", line=lineno)
        qid, query = line.split("\t", 1)
        _add_query(queries, path, lineno, _check_id(path, lineno, "qid", qid.strip()), query)
    return queries


_TOP = re.compile(r"<top>(.*?)</top>", re.S | re.I)
_NUM = re.compile(r"<num>\s*(?:Number\s*:)?\s*([^\s<]+)", re.I)
_TITLE = re.compile(r"<title>\s*(?:Topic\s*:)?(.*?)(?=</?\w+>|$)", re.S | re.I)
_CACM = re.compile(r"<DOC>\s*<DOCNO>\s*([^\s<]+)\s*</DOCNO>(.*?)</DOC>", re.S | re.I)


def _queries_trec(path: Path, text: str) -> dict[str, str]:
    """TREC ``<top>`` topics (the title is the query) or CACM's ``<DOC><DOCNO> n </DOCNO> text </DOC>``."""
    queries: dict[str, str] = {}

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    if _TOP.search(text):
        for m in _TOP.finditer(text):
            block, line = m.group(1), line_of(m.start())
            num, title = _NUM.search(block), _TITLE.search(block)
            if num is None:
                raise DatasetError(path, "topic has no <num>", line=line, field="num")
            if title is None:
                raise DatasetError(path, "topic has no <title>", line=line, field="title")
            _add_query(queries, path, line, _check_id(path, line, "num", num.group(1)), title.group(1))
    else:
        for m in _CACM.finditer(text):
            line = line_of(m.start())
            _add_query(queries, path, line, _check_id(path, line, "DOCNO", m.group(1)), m.group(2))
    return queries


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    """Queries in file order, ``{qid: text}``, whitespace collapsed to single spaces.

    The format is sniffed: JSON lines (BEIR ``_id``/``text``), TREC/CACM topics (``<top>``/``<DOC>``), else
    ``qid<TAB>text``. Empty query text is an error (it cannot be searched), as is a file with no queries.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "no such file")
    text = _read_text(p)
    head = text.lstrip()[:1]
    if p.name.endswith((".jsonl", ".jsonl.gz", ".json")) or head == "{":
        queries = _queries_jsonl(p)
    elif head == "<":
        queries = _queries_trec(p, text)
    else:
        queries = _queries_tsv(p, text)
    if not queries:
        raise DatasetError(p, "no queries")
    return queries


_QRELS_HEADERS = {"query-id", "query_id", "qid", "query"}
_GRADE = re.compile(r"[+-]?[0-9]+")  # ASCII only: int() would also take "1_0" or Arabic-Indic digits
_MAX_GRADE = 2**31 - 1


def _grade(path: Path, lineno: int, rel: str) -> int:
    if not _GRADE.fullmatch(rel):
        raise DatasetError(path, f"relevance {rel!r} is not an integer", line=lineno, field="relevance")
    value = int(rel)
    if abs(value) > _MAX_GRADE:  # trec_eval parses grades with C's atol: beyond that the value is undefined
        raise DatasetError(path, f"relevance {rel} is out of range", line=lineno, field="relevance")
    return value


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """``{qid: {docid: relevance}}`` from BEIR TSV (``query-id corpus-id score``, header optional) or TREC
    qrels (``qid iter docid rel``), in file order (qids by first appearance, docids in line order).

    This is the only qrels reader: :func:`check_dataset` and ``eval.trec_eval.convert_qrels`` (what trec_eval
    reads) both use it, so a file is either rejected up front or evaluated exactly as validated. A UTF-8 BOM,
    blank lines, CRLF and a gzip suffix are accepted. The header, if any, must be the first non-blank line.
    The column count is fixed by the first data line. Grades must be integers; a negative grade means judged
    non-relevant, exactly like 0 (``convert_qrels`` writes it as 0). Repeated identical judgements are kept
    once; conflicting ones are an error.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(p, "no such file")
    qrels: dict[str, dict[str, int]] = {}
    ncols = None
    first = True
    for lineno, line in enumerate(_read_text(p).split("\n"), 1):
        cols = line.split()
        if not cols:
            continue
        if "\ufeff" in line:
            # A BOM past the start (concatenated files) would glue itself to an id: a phantom query or document.
            raise DatasetError(p, "byte-order mark (U+FEFF) inside the file; were files concatenated?",
                               line=lineno)
        header = first and cols[0].lower() in _QRELS_HEADERS and not _GRADE.fullmatch(cols[-1])
        first = False
        if header:
            continue
        if ncols is None:
            if len(cols) not in (3, 4):
                raise DatasetError(p, f"expected 3 (BEIR) or 4 (TREC) columns, found {len(cols)}", line=lineno)
            ncols = len(cols)
        elif len(cols) != ncols:
            raise DatasetError(p, f"expected {ncols} columns like the first line, found {len(cols)}", line=lineno)
        qid, docid, value = cols[0], cols[-2], _grade(p, lineno, cols[-1])
        judged = qrels.setdefault(qid, {})
        if judged.get(docid, value) != value:
            raise DatasetError(p, f"conflicting judgements for ({qid}, {docid})", line=lineno, field="relevance")
        judged[docid] = value
    if not qrels:
        raise DatasetError(p, "no judgements")
    return qrels


@dataclass
class Dataset:
    """Paths of one test collection; ``qrels_path`` is None when there are no judgements."""

    name: str
    corpus_path: Path
    queries_path: Path
    qrels_path: Path | None = None


def _one_of(d: Path, patterns: tuple[str, ...], what: str) -> Path | None:
    for pattern in patterns:
        found = sorted(p for p in d.glob(pattern) if p.is_file())
        if len(found) > 1:
            raise DatasetError(d, f"several {what} files match {pattern}: {', '.join(f.name for f in found)}")
        if found:
            return found[0]
    return None


def resolve_dataset(dir_or_name: str | os.PathLike) -> Dataset:
    """A directory in BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv) or TREC layout
    (corpus.jsonl, topics*.txt, qrels*.txt), or the name of a dataset shipped in the package (``cacm``)."""
    d = Path(dir_or_name)
    if not d.is_dir():
        if str(dir_or_name) in PACKAGED_DATASETS:
            d = PACKAGED_DATA_DIR / str(dir_or_name)
        else:
            raise DatasetError(d, f"not a directory nor a packaged dataset ({', '.join(PACKAGED_DATASETS)})")
    corpus = _one_of(d, ("corpus.jsonl", "corpus.jsonl.gz"), "corpus")
    if corpus is None and (d / "corpus").is_dir():
        corpus = d / "corpus"
    if corpus is None:
        raise DatasetError(d, "no corpus.jsonl (or corpus/ directory of *.jsonl)")
    queries = _one_of(d, ("queries.jsonl", "queries.tsv", "topics*.txt", "topics*.tsv"), "queries")
    if queries is None:
        raise DatasetError(d, "no queries.jsonl, queries.tsv or topics*.txt")
    qrels = _one_of(d, ("qrels/test.tsv", "qrels*.txt", "qrels*.tsv"), "qrels")
    return Dataset(d.name, corpus, queries, qrels)


def _examples(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


_NUMBER = re.compile(r"[0-9]+")


def _id_key(ident: str) -> str:
    """An id as compared when looking for format mismatches: case folded, numbers without leading zeros."""
    return _NUMBER.sub(lambda m: m.group().lstrip("0") or "0", ident.casefold())


def _format_matches(missing: list[str], docids: set[str]) -> dict[str, str]:
    """``{missing id: corpus id}`` for missing ids that equal a corpus id up to zero padding and case (the
    smallest such corpus id, so the message is stable)."""
    wanted: dict[str, list[str]] = {}
    for m in missing:
        wanted.setdefault(_id_key(m), []).append(m)
    found: dict[str, str] = {}
    for d in docids:  # normalising the corpus ids costs a pass over them, only paid when ids are missing
        key = _id_key(d)
        if key in wanted and (key not in found or d < found[key]):
            found[key] = d
    return {m: found[_id_key(m)] for m in missing if _id_key(m) in found}


def _missing_docids_warning(qrels_path: Path, missing: list[str], docids: set[str]) -> str:
    msg = f"{qrels_path}: {len(missing)} judged docids are not in the corpus ({_examples(missing)})"
    matches = _format_matches(missing, docids)
    if not matches:
        return msg + "; they can never be retrieved"
    pairs = _examples([f"{m} -> {d}" for m, d in matches.items()], 3)
    msg += f"; {len(matches)} of them match corpus ids after zero padding/case ({pairs})"
    if 2 * len(matches) > len(missing):
        return msg + ": likely an id format mismatch"
    return msg + "; the others can never be retrieved"


def check_dataset(dataset: Dataset) -> list[str]:
    """Consistency warnings (not errors); raises DatasetError on any unreadable or malformed file.

    Run it before any indexing: it reads the queries, the qrels and the whole corpus with the very readers
    that indexing, search and evaluation use, so a bad file fails here, not after hours of encoding (the
    corpus is streamed, only its ids are kept). Warns about qrels docids absent from the corpus (saying when
    they match corpus ids up to zero padding or case: an id format mismatch), queries without qrels
    (searched, but trec_eval leaves them out of averages), qrels for unknown queries, and all-digit query
    ids with leading zeros (Pyserini's ``--topics`` reader turns "007" into 7).
    """
    warnings: list[str] = []
    queries = load_queries(dataset.queries_path)
    padded = [q for q in queries if q.isdigit() and q != str(int(q))]
    if padded:
        warnings.append(f"{dataset.queries_path}: {len(padded)} query ids are digits with leading zeros "
                        f"({_examples(padded)}); Pyserini's --topics reader turns them into integers, so run "
                        "files would not match the qrels; search through the Python API instead")
    qrels = None if dataset.qrels_path is None else load_qrels(dataset.qrels_path)  # before the long read
    docids = {doc.docid for doc in iter_corpus(dataset.corpus_path)}
    if qrels is None:
        warnings.append(f"{dataset.name}: no qrels file; runs can be made but not evaluated")
        return warnings
    missing_docs = sorted({d for judged in qrels.values() for d in judged if d not in docids})
    if missing_docs:
        warnings.append(_missing_docids_warning(dataset.qrels_path, missing_docs, docids))
    unjudged = [q for q in queries if q not in qrels]
    if unjudged:
        warnings.append(f"{dataset.queries_path}: {len(unjudged)} of {len(queries)} queries have no qrels "
                        f"({_examples(unjudged)}); they are still searched but trec_eval ignores them")
    unknown = [q for q in qrels if q not in queries]
    if unknown:
        warnings.append(f"{dataset.qrels_path}: {len(unknown)} judged query ids are not in the queries file "
                        f"({_examples(unknown)}); trec_eval ignores them unless run with -c")
    return warnings


def pyserini_topic_reader(topics: str) -> str:
    """The reader Pyserini 1.6's ``--topics`` picks for this exact string (query_iterator.DefaultQueryIterator):
    substring tests on the WHOLE path string as passed (not the basename, not resolved), in this order:
    ends with .json -> json; contains "beir" -> BEIR TSV; contains "cacm" -> CACM; .tsv/.txt(.gz) -> TSV."""
    if topics.endswith(".json"):
        return "json"
    if "beir" in topics:
        return "beir"
    if "cacm" in topics:
        return "cacm"
    if topics.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return "tsv"
    return "other"


def write_topics_tsv(queries: Mapping[str, str], path: str | os.PathLike) -> Path:
    """Write ``qid<TAB>text`` lines atomically for Pyserini's ``--topics``.

    Pyserini chooses its topic reader from substrings of the path string given to ``--topics``: a path
    containing "beir" or "cacm" anywhere (directories included) gets a special reader. This function refuses
    file NAMES that would misfire; the folder is the caller's business: pass ``--topics`` a string without
    those words (e.g. a path relative to the folder, or a symlink), or use the Python API.
    Texts are whitespace-normalised (tabs/newlines would break lines); pass the same texts to the query-vector writers, which key pre-encoded queries on the text.
    Note: Pyserini turns all-digit qids into ints ("007" -> 7); see :func:`check_dataset`.
    """
    name = Path(path).name
    reader = pyserini_topic_reader(name)
    if reader != "tsv" or not name.endswith(".tsv"):
        raise InputError(f"{path}: topic file name must end in .tsv and contain neither 'beir' nor 'cacm' "
                         f"(Pyserini would use its {reader!r} reader)")
    lines = []
    for qid, text in queries.items():
        if not qid or _HAS_WS.search(qid):
            raise InputError(f"{path}: query id {qid!r} is empty or contains whitespace")
        text = normalize_text(text)
        if not text:
            raise InputError(f"{path}: query {qid!r} has empty text")
        lines.append(f"{qid}\t{text}\n")
    from diffret_pyserini.atomic import atomic_write_text

    atomic_write_text(path, "".join(lines))
    return Path(path)
