"""The one CLI convention: both flag spellings, one-line flag errors, --help that keeps its paragraphs."""
from __future__ import annotations

import pytest

from diffret_pyserini.cli import either_spelling


def test_either_spelling_maps_each_long_flag_to_the_known_one():
    known = ["--pq-m", "--batch_size", "-n"]
    assert either_spelling(["--pq_m", "8", "--batch-size=4", "-n", "3", "--other_flag", "--", "--pq_m"], known) == \
        ["--pq-m", "8", "--batch_size=4", "-n", "3", "--other_flag", "--", "--pq_m"]


def test_the_index_cli_takes_both_spellings():
    from diffret_pyserini.index.__main__ import build_parser

    parser = build_parser()
    dashed = parser.parse_args(["faiss", "--input", "a", "--output", "b", "--pq-m", "8", "--hnsw-m", "16"])
    underscored = parser.parse_args(["faiss", "--input", "a", "--output", "b", "--pq_m", "8", "--hnsw_m", "16"])
    assert vars(dashed) == vars(underscored) and dashed.pq_m == 8 and dashed.hnsw_m == 16


def test_the_encode_cli_takes_both_spellings():
    from diffret_pyserini.encode.__main__ import build_parser

    parser, _ = build_parser()
    for flag in ("--batch-size", "--batch_size"):
        args, _ = parser.parse_known_args(["input", "--corpus", "c.jsonl", "output", "--embeddings", "o",
                                           "encoder", "--encoder", "splade-tiny", flag, "7"])
        assert args is not None


def test_a_dataclass_cli_takes_both_spellings():
    from diffret_pyserini.cli import dataclass_parser
    from diffret_pyserini.pipeline.arguments import PipelineArguments

    parser = dataclass_parser([PipelineArguments])
    a, = parser.parse_args_into_dataclasses(["--batch-size", "7", "--passage-max-length", "64"])
    b, = parser.parse_args_into_dataclasses(["--batch_size", "7", "--passage_max_length", "64"])
    assert a == b and a.batch_size == 7 and a.passage_max_length == 64


def test_an_unknown_flag_of_a_dataclass_cli_is_one_line(capsys):
    from diffret_pyserini.pipeline.driver import main

    with pytest.raises(SystemExit) as stop:
        main(["--no_such_flag", "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and "--no_such_flag" in err


def test_help_keeps_the_description_paragraphs(capsys):
    from diffret_pyserini.pipeline import __doc__ as description
    from diffret_pyserini.pipeline.driver import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    # the stage list prints one stage a line, as written, not joined into one paragraph
    stages = [line.strip() for line in description.splitlines() if line.strip()[:3] in ("1. ", "2. ", "3. ")]
    printed = {line.strip() for line in out.splitlines()}
    assert len(stages) == 3 and all(stage in printed for stage in stages)
    assert "(default:" in out
