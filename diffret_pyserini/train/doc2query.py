"""LM-generated pseudo-queries (doc2query / InPars style): a small instruct model writes a short title per document.

The packaged SmolLM2-135M-Instruct reads the first words of a document's text and is asked for a title; its
assistant turn is prefilled with ``Title: "`` so greedy decoding (KV-cached `generate`) starts the title at once,
and the answer ends at the first quote or newline. Outputs that copy the bibliographic trailer, talk about "this
text", or carry fewer than two content words are dropped, and counted.

Generated queries are cached by content: one append-only jsonl per fingerprint of (corpus digest, model folder
digest, prompt, generation settings, CODE_VERSION), committed a chunk at a time (flush + fsync), so a killed run
resumes where it stopped and a repeated call generates nothing. Batch size is not part of the key: it changes
padding, not what is asked.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from diffret_pyserini.atomic import atomic_write, atomic_write_json
from diffret_pyserini.cli import InputError
from diffret_pyserini.datasets import iter_corpus, normalize_text
from diffret_pyserini.fingerprint import fingerprint, folder_lock, path_digest

log = logging.getLogger(__name__)

CODE_VERSION = 1  # bump when the prompt handling or the junk filter changes what a cached entry would hold
PROMPT = "{text}\n\nWhat is the topic of this text? Answer with a short title of at most eight words."
PREFILL = 'Title: "'
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_DATE = re.compile(r"\b(?:%s)\b[\s,.]*\d" % "|".join(MONTHS), re.IGNORECASE)
_YEAR = re.compile(r"\b(?:1[89]|20)\d\d\b")
_MONTH = re.compile(r"\b(?:%s)\b" % "|".join(MONTHS), re.IGNORECASE)
# A bibliographic trailer: a venue acronym and a date ("CACM June, 1958 Perlis, A. J. CA581203 JB ...").
_TRAILER = re.compile(r"\b[A-Z]{2,}\s+(?:%s)\s*,?\s*\d{4}\b" % "|".join(m.title() for m in MONTHS))
_SELF_REFERENCE = ("topic of this text", "this text", "this document", "this query", "this article")
_WORD = re.compile(r"[^\W_]+")


@dataclass
class Doc2QueryArguments:
    """How pseudo-queries are generated; the cache key holds all but batch_size, commit_batches and threads."""

    model: str = field(default="smollm2", metadata={"help": "causal instruct LM: packaged name or HF folder"})
    cache_dir: str = field(default="pseudo-queries", metadata={"help": "folder of the content-keyed query caches"})
    batch_size: int = field(default=16, metadata={"help": "documents per generate() call"})
    max_new_tokens: int = field(default=12, metadata={"help": "tokens generated per query (greedy)"})
    max_doc_words: int = field(default=120, metadata={"help": "words of the document's text shown to the model"})
    cut_trailer: bool = field(default=True, metadata={
        "help": "show the model only the text before a 'CACM June, 1958 ...' trailer when 5+ words precede it "
                "(with it, 17 of 80 CACM documents copied the trailer or echoed the question instead of 8)"})
    strip_the: bool = field(default=True, metadata={
        "help": "drop a leading 'The ' (the model opens most titles with it; it carries no topic)"})
    commit_batches: int = field(default=4, metadata={
        "help": "batches per committed cache chunk (also the window sorted by length to keep padding small)"})
    threads: int | None = field(default=None, metadata={
        "help": "torch threads while generating, restored after (None: the caller's setting). On a busy CPU one "
                "thread was 6-7x faster than two here: greedy decoding is many tiny matmuls, and threads that "
                "wait on a shared core spin"})


@dataclass
class Doc2QueryStats:
    """What one call did: documents asked for, generated now, found in the cache, dropped (by reason)."""

    documents: int = 0
    generated: int = 0
    cached: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    cache: str = ""

    @property
    def docs_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds else 0.0


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def before_trailer(text: str, min_words: int = 5) -> str:
    """The text before its first bibliographic trailer (venue acronym + month + year), when at least `min_words`
    words precede it; else the whole text (a document that is only a trailer and keywords keeps its keywords)."""
    match = _TRAILER.search(text)
    if match and len(text[:match.start()].split()) >= min_words:
        return text[:match.start()].strip()
    return text


def clean_query(raw: str, text: str, strip_the: bool = True) -> tuple[str | None, str]:
    """The usable query in a raw generation, or (None, why it is junk). Cut at the first quote or newline."""
    from diffret_pyserini.model.representations import content_words

    query = normalize_text(re.split(r'["\n\u201c\u201d]', raw, maxsplit=1)[0]).strip(" .,;:-")
    if strip_the and query[:4].lower() == "the " and len(query) > 4:
        query = query[4].upper() + query[5:]
    lowered = query.lower()
    if not query:
        return None, "empty"
    if _DATE.search(query) or (_YEAR.search(query) and _MONTH.search(query)):
        return None, "trailer"  # copies the 'CACM June, 1958 ...' bibliographic line
    head, opening = _words(query)[:3], _words(text)[:3]
    if len(head) == 3 and head == opening:
        return None, "copies the text's opening"
    if any(phrase in lowered for phrase in _SELF_REFERENCE):
        return None, "talks about the text"
    if len(content_words(query)) < 2:
        return None, "under 2 content words"
    return query, ""


def cache_path(corpus: str | os.PathLike, args: Doc2QueryArguments) -> Path:
    """The cache file of this corpus content, model content and generation settings."""
    from diffret_pyserini.model.packaged import resolve_model_path

    key = fingerprint(corpus=path_digest(corpus), model=path_digest(resolve_model_path(args.model)), prompt=PROMPT,
                      prefill=PREFILL, max_new_tokens=args.max_new_tokens, max_doc_words=args.max_doc_words,
                      strip_the=args.strip_the, cut_trailer=args.cut_trailer, version=CODE_VERSION)
    return Path(args.cache_dir) / f"{key}.jsonl"


def read_cache(path: Path) -> dict[str, dict]:
    """docid -> cached entry; a torn last line (a run killed mid-write) is ignored."""
    entries: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("docid"), str):
                entries[obj["docid"]] = obj
    return entries


def _repair(path: Path, entries: dict[str, dict]) -> None:
    """Rewrite a cache that ends in a torn line, so the next appended chunk starts on a line of its own."""
    if path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with atomic_write(path) as f:
            f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in entries.values())


class QueryGenerator:
    """The tokenizer and model of `args.model` with the prompt around them. `generate_queries` loads one only when
    something is missing from the cache; pass one in to reuse a loaded model across calls."""

    def __init__(self, args: Doc2QueryArguments):
        import torch
        from transformers import AutoModelForCausalLM

        from diffret_pyserini.model.backbones.load import load_tokenizer
        from diffret_pyserini.model.packaged import resolve_model_path

        folder = resolve_model_path(args.model)
        self.torch, self.args = torch, args
        self.tokenizer = load_tokenizer(Path(folder))
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The folder's own dtype (float32 for the packaged SmolLM2): no torch_dtype/dtype, whose name changed.
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()

    @contextlib.contextmanager
    def threads(self, n: int | None) -> Iterator[None]:
        """Run the block with `n` torch threads (None: leave them), then put the caller's number back."""
        before = self.torch.get_num_threads()
        if n:
            self.torch.set_num_threads(n)
        try:
            yield
        finally:
            self.torch.set_num_threads(before)

    def prompt(self, text: str) -> str:
        shown = " ".join((before_trailer(text) if self.args.cut_trailer else text).split()[: self.args.max_doc_words])
        chat = [{"role": "user", "content": PROMPT.format(text=shown)}]
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + PREFILL

    def lengths(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: Sequence[str]) -> list[str]:
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False,
                             return_token_type_ids=False)  # generate() refuses token_type_ids
        with self.torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.args.max_new_tokens, do_sample=False,
                                      use_cache=True, pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


def _windows(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def generate_queries(corpus: str | os.PathLike, docids: Iterable[str] | None = None,
                     args: Doc2QueryArguments | None = None, min_words: int = 0, progress: bool = True,
                     generator: QueryGenerator | None = None) -> tuple[dict[str, str], Doc2QueryStats]:
    """docid -> generated query for `docids` (None: every document with >= `min_words` text words), in corpus
    order, and the call's stats. Dropped generations are cached too (with their reason), so they are not retried.
    A given `generator` brings its own model and settings (its `args`); `args` then only names the cache folder."""
    from tqdm.auto import tqdm

    args = args or Doc2QueryArguments()
    if generator is not None:
        args = replace(generator.args, cache_dir=args.cache_dir)
    for name in ("batch_size", "max_new_tokens", "max_doc_words", "commit_batches", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name} {getattr(args, name)!r}: must be an integer >= 1")
    wanted = None if docids is None else set(docids)
    docs = [(d.docid, d.text) for d in iter_corpus(corpus)
            if (wanted is None or d.docid in wanted) and len(d.text.split()) >= min_words]
    path = cache_path(corpus, args)
    stats = Doc2QueryStats(documents=len(docs), cache=str(path))
    with folder_lock(path.parent):  # two runs on one cache take turns; the second finds the first's entries
        entries = read_cache(path)
        _repair(path, entries)
        todo = [(docid, text) for docid, text in docs if docid not in entries]
        stats.cached = len(docs) - len(todo)
        if todo:
            atomic_write_json(path.with_suffix(".json"), {"prompt": PROMPT, "prefill": PREFILL,
                                                          "version": CODE_VERSION, **asdict(args)})
            generator = generator or QueryGenerator(args)
            start = time.perf_counter()
            bar = tqdm(total=len(todo), desc="doc2query", unit="doc", disable=not progress)
            with open(path, "a", encoding="utf-8") as out, generator.threads(args.threads):
                for window in _windows(todo, args.batch_size * args.commit_batches):
                    prompts = [generator.prompt(text) for _, text in window]
                    # Similar lengths share a batch (little padding); the chunk is written back in corpus order.
                    lengths = generator.lengths(prompts)
                    order = sorted(range(len(window)), key=lambda i: (lengths[i], i))
                    raw: dict[int, str] = {}
                    for batch in _windows(order, args.batch_size):
                        raw.update(zip(batch, generator.generate([prompts[i] for i in batch])))
                        bar.update(len(batch))
                    chunk = []
                    for i, (docid, text) in enumerate(window):
                        query, why = clean_query(raw[i], text, args.strip_the)
                        entries[docid] = {"docid": docid, "query": query, "raw": raw[i], "dropped": why or None}
                        chunk.append(json.dumps(entries[docid], ensure_ascii=False) + "\n")
                    out.write("".join(chunk))
                    out.flush()
                    os.fsync(out.fileno())  # a committed chunk survives a crash
                    stats.generated += len(window)
            bar.close()
            stats.seconds = time.perf_counter() - start
    queries = {}
    for docid, _ in docs:
        entry = entries[docid]
        if entry.get("query"):
            queries[docid] = entry["query"]
        else:
            stats.dropped[entry.get("dropped") or "empty"] += 1
    rate = f" in {stats.seconds:.1f} s, {stats.docs_per_second:.2f} docs/s" if stats.generated else ""
    log.info(f"doc2query: {len(queries)} queries for {len(docs)} documents ({stats.generated} generated{rate}, "
             f"{stats.cached} cached); {sum(stats.dropped.values())} got no query: "
             + (", ".join(f"{n} {why}" for why, n in stats.dropped.most_common()) or "none"))
    return queries, stats
