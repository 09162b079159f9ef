"""Training data: Tevatron-style jsonl examples and deterministic, resumable batches of groups.

One example per line (Tevatron's format):

    {"query_id": "q1", "query": "text", "positive_passages": [{"docid": "d1", "title": "", "text": "..."}],
     "negative_passages": [{"docid": "d7", "title": "...", "text": "..."}, ...]}

A passage is encoded as "title text" (as the corpus is at search time). Every problem raises the project's
one-line `DatasetError` "{path}:{line}: {field}: {what}".
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from diffret_pyserini.cli import InputError
from diffret_pyserini.datasets import DatasetError, Document, corpus_files, json_lines, json_object, normalize_text


@dataclass(frozen=True)
class Passage(Document):
    """A training passage: a corpus document as Tevatron's jsonl writes it."""

    def to_json(self) -> dict:
        return {"docid": self.docid, "title": self.title, "text": self.text}


@dataclass
class Example:
    query_id: str
    query: str
    positives: list[Passage]
    negatives: list[Passage]

    def to_json(self) -> dict:
        return {"query_id": self.query_id, "query": self.query,
                "positive_passages": [p.to_json() for p in self.positives],
                "negative_passages": [p.to_json() for p in self.negatives]}


def _passages(path: Path, lineno: int, obj: dict, key: str) -> list[Passage]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise DatasetError(path, f"expected a list, found {type(value).__name__}", line=lineno, field=key)
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise DatasetError(path, f"expected an object, found {type(item).__name__}", line=lineno, field=where)
        text, title = item.get("text"), item.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise DatasetError(path, "text and title must be strings", line=lineno, field=where)
        out.append(Passage(str(item.get("docid", "")), title, text))
    return out


def read_examples(path: str | os.PathLike) -> list[Example]:
    """All examples of a Tevatron jsonl file (optionally .gz) or a folder of them; each needs a positive."""
    examples = []
    for f in corpus_files(path):
        for lineno, line in json_lines(f):
            obj = json_object(f, lineno, line)
            query = obj.get("query")
            if not isinstance(query, str) or not query.strip():
                raise DatasetError(f, "missing or empty query text", line=lineno, field="query")
            positives = _passages(f, lineno, obj, "positive_passages")
            if not positives:
                raise DatasetError(f, "no positive passage", line=lineno, field="positive_passages")
            qid = str(obj.get("query_id", obj.get("_id", f"{f.name}:{lineno}")))
            examples.append(Example(qid, normalize_text(query), positives, _passages(f, lineno, obj,
                                                                                       "negative_passages")))
    if not examples:
        raise DatasetError(path, "no training examples")
    return examples


def write_examples(examples: list[Example], path: str | os.PathLike) -> Path:
    """Write examples as Tevatron jsonl, atomically."""
    from diffret_pyserini.atomic import atomic_write

    with atomic_write(path) as out:
        for ex in examples:
            out.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    return Path(path)


@dataclass
class Batch:
    queries: list[str]
    passages: list[str]  # query i's group is passages[i*G:(i+1)*G], positive first


class GroupBatches:
    """Epochs of shuffled batches; everything drawn from (seed, epoch, example), so step N is the same batch
    whether a run got there straight or resumed from a checkpoint."""

    def __init__(self, examples: list[Example], batch_size: int, group_size: int, seed: int,
                 drop_last: bool = True):
        if group_size < 1 or batch_size < 1:
            raise InputError("batch_size and group_size must be >= 1")
        if drop_last and len(examples) < batch_size:
            raise InputError(f"{len(examples)} training examples are fewer than one batch of {batch_size}")
        self.examples, self.batch_size, self.group_size, self.seed = examples, batch_size, group_size, seed
        self.drop_last = drop_last

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.examples)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def group(self, index: int, epoch: int) -> list[str]:
        """One positive and group_size-1 negatives; short negative lists are cycled (and shuffled) to fill up."""
        ex = self.examples[index]
        rng = random.Random(f"{self.seed}:{epoch}:{index}")
        positive = ex.positives[(epoch + rng.randrange(len(ex.positives))) % len(ex.positives)]
        need = self.group_size - 1
        pool = list(ex.negatives)
        if need and not pool:
            # No hard negatives at all: other examples' positives stand in (in-batch style negatives).
            pool = [self.examples[j].positives[0] for j in rng.sample(range(len(self.examples)),
                                                                     min(need + 1, len(self.examples)))
                    if j != index][:need]
        negatives: list[Passage] = []
        while len(negatives) < need and pool:
            negatives += rng.sample(pool, min(need - len(negatives), len(pool)))
        return [positive.contents] + [p.contents for p in negatives]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of one epoch, from batch `start` on."""
        order = list(range(len(self.examples)))
        random.Random(f"{self.seed}:{epoch}:order").shuffle(order)
        for b in range(start, len(self)):
            ids = order[b * self.batch_size:(b + 1) * self.batch_size]
            groups = [self.group(i, epoch) for i in ids]
            size = min(len(g) for g in groups)  # equal groups, so query i's positive sits at i * size
            yield Batch([self.examples[i].query for i in ids], [p for g in groups for p in g[:size]])

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Example indices of every batch of one epoch (the order `epoch` yields them in)."""
        order = list(range(len(self.examples)))
        random.Random(f"{self.seed}:{epoch}:order").shuffle(order)
        return [order[b * self.batch_size:(b + 1) * self.batch_size] for b in range(len(self))]


class RankBatchSampler:
    """A torch batch sampler over GroupBatches for one of `world` processes: global batch b (of world x B
    queries, exactly what one process with batch world x B draws) is split in `world` contiguous slices and
    process `rank` gets slice `rank`. Gathering the slices in rank order (trainer.gather) rebuilds the global
    batch, so N processes see the same in-batch negatives as one. Items are (epoch, example index)."""

    def __init__(self, batches: GroupBatches, rank: int = 0, world: int = 1):
        if batches.batch_size % world:
            raise InputError(f"global batch {batches.batch_size} does not split over {world} processes")
        self.batches, self.rank, self.world, self.epoch = batches, rank, world, 0
        self.local = batches.batch_size // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for ids in self.batches.global_batches(self.epoch):
            yield [(self.epoch, i) for i in ids[self.rank * self.local:(self.rank + 1) * self.local]]


class GroupDataset:
    """Map-style dataset for torch's DataLoader: (epoch, example index) -> (query, its group of passages)."""

    def __init__(self, batches: GroupBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches.examples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[str, list[str]]:
        epoch, index = key
        return self.batches.examples[index].query, self.batches.group(index, epoch)


def collate_groups(items: list[tuple[str, list[str]]], group_size: int | None = None) -> dict[str, list[str]]:
    """{'queries', 'passages'} in Tevatron's layout (query i's group at passages[i*G:(i+1)*G], positive first),
    groups cut to the shortest so positives sit at i * G (`group_size` fixes G across processes)."""
    size = min([len(g) for _, g in items] + ([group_size] if group_size else []))
    return {"queries": [q for q, _ in items], "passages": [p for _, g in items for p in g[:size]]}
