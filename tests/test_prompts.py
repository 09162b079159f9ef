"""Prompt layout: slots and tail survive truncation, left padding keeps positions, templates override."""
import json

import pytest
from transformers import AutoTokenizer

from diffret_pyserini.model.packaged import resolve_model_path
from diffret_pyserini.model.prompts import DEFAULT_TEMPLATES, PromptBuilder, build_layout, load_templates


@pytest.fixture(scope="module")
def bert_tok():
    return AutoTokenizer.from_pretrained(resolve_model_path("splade-tiny"), local_files_only=True)


def make_builder(tok, k=4, max_text=16, role="passage", style="multi", with_slots=True):
    return PromptBuilder(tok, DEFAULT_TEMPLATES[role][style], k, tok.mask_token_id, max_text, tok.pad_token_id,
                         with_slots=with_slots)


def test_layout_without_chat_template_wraps_cls_and_sep(bert_tok):
    lay = build_layout(bert_tok, DEFAULT_TEMPLATES["passage"]["multi"], 3, bert_tok.mask_token_id)
    assert lay.prefix[0] == bert_tok.cls_token_id
    assert lay.tail[-1] == bert_tok.sep_token_id
    assert bert_tok.decode(lay.suffix).endswith('the words are : "')
    assert bert_tok.decode(lay.tail[:-1]) == '"'


# A 100k-character single "word" is one [UNK] for WordPiece (words over 100 characters), so it is not cut.
@pytest.mark.parametrize("text,truncated", [("word " * 20000, True), ("x" * 100_000, False), ("", False),
                                            ("検索 " * 5000, True)])
def test_truncation_cuts_the_text_never_the_prompt_or_slots(bert_tok, text, truncated):
    b = make_builder(bert_tok, k=5, max_text=16)
    batch = b.build([text])
    ids = batch.input_ids[0].tolist()
    lay = b.layout
    assert ids[: len(lay.prefix)] == list(lay.prefix)
    tail_start = len(ids) - len(lay.tail)
    assert ids[tail_start:] == list(lay.tail)
    assert ids[tail_start - 5: tail_start] == [bert_tok.mask_token_id] * 5
    suffix_end = tail_start - 5
    assert ids[suffix_end - len(lay.suffix): suffix_end] == list(lay.suffix)
    assert len(ids) <= lay.overhead + 16
    assert batch.text_lengths[0] <= 16
    assert batch.truncated[0] == truncated


def test_left_padding_puts_slots_in_the_same_columns_and_positions_ignore_padding(bert_tok):
    b = make_builder(bert_tok, k=3, max_text=32)
    batch = b.build(["short", "a much longer text with many more words in it than the first"])
    assert batch.input_ids.shape[0] == 2
    for row in range(2):
        assert batch.input_ids[row, batch.slot_positions[row]].tolist() == [bert_tok.mask_token_id] * 3
    pad = int((batch.attention_mask[0] == 0).sum())
    assert pad > 0 and batch.attention_mask[0, :pad].sum() == 0
    assert batch.position_ids[0, pad].item() == 0
    assert batch.position_ids[0, -1].item() == batch.attention_mask[0].sum().item() - 1
    assert batch.position_ids[1].tolist() == list(range(batch.input_ids.shape[1]))


def test_generation_layout_ends_at_the_answer_prefix(bert_tok):
    b = make_builder(bert_tok, k=4, with_slots=False)
    batch = b.build(["some text"])
    assert bert_tok.mask_token_id not in batch.input_ids[0].tolist()
    assert batch.slot_positions.tolist() == [[batch.input_ids.shape[1] - 1]]
    assert batch.k == 4


def test_kq_and_kp_are_independent(bert_tok):
    q = make_builder(bert_tok, k=2, role="query").build(["q"])
    p = make_builder(bert_tok, k=7, role="passage").build(["p"])
    assert q.slot_positions.shape[1] == 2 and p.slot_positions.shape[1] == 7
    assert "Query" in DEFAULT_TEMPLATES["query"]["multi"].user


def test_chat_template_layout_with_a_real_chat_tokenizer():
    try:
        tok = AutoTokenizer.from_pretrained(resolve_model_path("smollm2"), local_files_only=True)
    except FileNotFoundError as err:
        pytest.skip(f"SmolLM2 folder not built (make models): {err}")
    slot = tok.convert_tokens_to_ids("<empty_output>")
    lay = build_layout(tok, DEFAULT_TEMPLATES["query"]["single"], 1, slot)
    prefix = tok.decode(lay.prefix)
    assert prefix.startswith("<|im_start|>system\nYou are an AI assistant") and prefix.endswith('Query: "')
    assert tok.decode(lay.suffix).endswith('<|im_start|>assistant\nThe word is: "')
    assert tok.decode(lay.tail).startswith('"<|im_end|>')


def test_template_file_overrides_one_entry_and_validates(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"query": {"multi": {"user": "Q: {text}"}}}))
    t = load_templates(path)
    assert t["query"]["multi"].user == "Q: {text}"
    assert t["query"]["multi"].assistant_prefix == DEFAULT_TEMPLATES["query"]["multi"].assistant_prefix
    assert t["passage"] == DEFAULT_TEMPLATES["passage"]
    path.write_text(json.dumps({"query": {"multi": {"user": "no placeholder"}}}))
    with pytest.raises(ValueError, match=r"prompts.json: query.multi.user: must contain \{text\}"):
        load_templates(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="prompts.json: cannot read"):
        load_templates(path)
