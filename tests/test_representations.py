"""The pure representation math, on tensors small enough to check by hand."""
import math

import pytest
import torch

from diffret_pyserini.model import representations as R


def test_dense_single_is_mean_of_normalised_slot_vectors():
    hidden = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # normalised: [.6,.8] and [0,1]
    assert torch.allclose(R.dense_single(hidden), torch.tensor([[0.3, 0.9]]))


def test_dense_single_ignores_invalid_slots():
    hidden = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    valid = torch.tensor([[True, False]])
    assert torch.allclose(R.dense_single(hidden, valid), torch.tensor([[0.6, 0.8]]))


def test_dense_multi_normalises_rows_and_zeroes_invalid_slots():
    hidden = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    out = R.dense_multi(hidden, torch.tensor([[True, False]]))
    assert torch.allclose(out, torch.tensor([[[0.6, 0.8], [0.0, 0.0]]]))


def test_sparse_slot_weights_is_log1p_relu():
    logits = torch.tensor([-1.0, 0.0, math.e - 1.0])
    assert torch.allclose(R.sparse_slot_weights(logits), torch.tensor([0.0, 0.0, 1.0]))


def test_sparse_slot_weights_softplus_keeps_negative_logits_graded():
    logits = torch.tensor([-2.0, 0.0])
    expected = torch.log1p(torch.log1p(torch.exp(logits)))
    assert torch.allclose(R.sparse_slot_weights(logits, "softplus"), expected)
    assert R.sparse_slot_weights(logits, "softplus")[0] > 0
    with pytest.raises(ValueError, match="sparse activation"):
        R.sparse_slot_weights(logits, "tanh")


def test_pool_sparse_top_n_then_max_over_valid_slots():
    # B=1, K=3, V=4
    w = torch.tensor([[[0.5, 0.9, 0.1, 0.0],
                       [0.7, 0.2, 0.3, 0.0],
                       [9.0, 9.0, 9.0, 9.0]]])   # invalid slot: must not count
    valid = torch.tensor([[True, True, False]])
    allowed = torch.tensor([[True, True, True, False]])
    # top-1 per slot: slot0 keeps id1=0.9, slot1 keeps id0=0.7; max over slots
    out = R.pool_sparse(w, allowed, valid, top_n=1)
    assert torch.allclose(out, torch.tensor([[0.7, 0.9, 0.0, 0.0]]))
    # no top-N: every allowed column, max over valid slots
    out = R.pool_sparse(w, allowed, valid, top_n=None)
    assert torch.allclose(out, torch.tensor([[0.7, 0.9, 0.3, 0.0]]))


def test_pool_sparse_filter_applies_before_top_n():
    w = torch.tensor([[[5.0, 1.0, 2.0]]])
    allowed = torch.tensor([[False, True, True]])  # the best column is filtered, so top-1 picks id2
    assert torch.allclose(R.pool_sparse(w, allowed, None, top_n=1), torch.tensor([[0.0, 0.0, 2.0]]))


def test_quantize_rounds_scaled_weights_to_ints():
    q = R.quantize(torch.tensor([0.004, 0.005001, 0.014, 1.2345, -3.0]), scale=100)
    assert q.tolist() == [0, 1, 1, 123, 0]
    assert q.dtype == torch.int64


def test_to_term_dicts_merges_colliding_terms_by_max_and_skips_none():
    id_to_term = ["cat", "cat", None, "dog"]
    q = torch.tensor([[3, 7, 9, 0], [0, 0, 0, 4]])
    assert R.to_term_dicts(q, id_to_term) == [{"cat": 7}, {"dog": 4}]


def test_to_term_dicts_maps_subset_columns_back_to_vocabulary_ids():
    id_to_term = ["a", "b", "c", "d"]
    q = torch.tensor([[5, 0, 2]])
    assert R.to_term_dicts(q, id_to_term, columns=torch.tensor([3, 0, 1])) == [{"d": 5, "b": 2}]


def test_to_term_dicts_maps_per_row_columns_back_to_each_rows_vocabulary_ids():
    id_to_term = ["a", "b", "c", "d"]
    q = torch.tensor([[5, 0, 2], [0, 6, 0]])
    columns = torch.tensor([[3, 0, 1], [2, 1, 0]])  # row 1 pads with id 0, never nonzero there
    assert R.to_term_dicts(q, id_to_term, columns=columns) == [{"d": 5, "b": 2}, {"b": 6}]


def test_content_words_drop_stopwords_punctuation_and_repeats():
    assert R.content_words("The cat, the HAT and the cat's hat!") == ["cat", "hat"]
    assert R.content_words("   ") == []
    assert R.content_words("检索 系统 🙂 retrieval") == ["检索", "系统", "retrieval"]


@pytest.mark.parametrize("token,style,term", [
    ("Ġhello", "bytelevel", "hello"),
    ("hello", "bytelevel", "hello"),
    ("Ã©t", "bytelevel", "ét"),          # UTF-8 bytes of 'é' then 't'
    ("Ã", "bytelevel", "<0xC3>"),        # half of a two-byte character
    ("Ġ", "bytelevel", None),            # only a space
    ("\u2581New", "metaspace", "New"),
    ("New\u2581York", "metaspace", "New_York"),
    ("##ing", "wordpiece", "##ing"),
    ("a b", "plain", "a_b"),
])
def test_render_term_is_lucene_safe(token, style, term):
    assert R.render_term(token, style) == term


def test_term_vocabulary_of_a_real_wordpiece_tokenizer_round_trips():
    from transformers import AutoTokenizer

    from diffret_pyserini.model.packaged import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("splade-tiny"), local_files_only=True)
    vocab = R.TermVocabulary(tok, excluded_ids=[tok.mask_token_id])
    assert vocab.style == "wordpiece"
    assert vocab.id_to_term[tok.mask_token_id] is None and vocab.id_to_term[tok.cls_token_id] is None
    terms = [t for t in vocab.id_to_term if t is not None]
    assert all(not any(c.isspace() for c in t) for t in terms)
    inverse = vocab.term_to_ids()
    for word in ("retrieval", "compiler", "##ing"):
        ids = inverse[word]
        assert [vocab.id_to_term[i] for i in ids] == [word] * len(ids)
        assert tok.convert_ids_to_tokens(ids[0]) == word


def test_word_cache_gives_the_joined_tokenisation_and_skips_known_words(monkeypatch):
    """For WordPiece the per-word cache is exact: the same ids as tokenising the joined words, and a second
    call with known words does not reach the tokenizer; byte-level BPE does not qualify for it."""
    from transformers import AutoTokenizer

    from diffret_pyserini.model.packaged import resolve_model_path

    bert = AutoTokenizer.from_pretrained(resolve_model_path("splade-tiny"), local_files_only=True)
    assert R.tokenizes_words_independently(bert)
    texts = ["Time-sharing systems for the IBM 7094, Café résumé naïve", "检索系统 🙂 retrieval of 12345 items",
             "", "   ", "x" * 300, "compilers compilers COMPILERS and the tokenizers' un-known-words"]
    expected = R.content_token_ids(bert, texts, excluded=[100])
    calls = []

    class Counting:
        def __call__(self, words, **kw):
            calls.append(list(words))
            return bert(words, **kw)

    cache: dict = {}
    assert R.content_token_ids(Counting(), texts, excluded=[100], word_cache=cache) == expected
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0]))  # each new word tokenised once
    assert R.content_token_ids(Counting(), texts[:2], excluded=[100], word_cache=cache) == expected[:2]
    assert len(calls) == 1  # every word known: no tokenizer call
    assert R.content_token_ids(Counting(), ["fresh vocabulary"], word_cache=cache) == \
        R.content_token_ids(bert, ["fresh vocabulary"])
    assert calls[-1] == ["fresh", "vocabulary"]
    # a full cache starts over with this call's words, known ones included
    monkeypatch.setattr(R, "WORD_CACHE_LIMIT", len(cache) + 1)
    assert R.content_token_ids(Counting(), ["fresh ideas", "vocabulary growth"], word_cache=cache) == \
        R.content_token_ids(bert, ["fresh ideas", "vocabulary growth"])
    assert sorted(cache) == ["fresh", "growth", "ideas", "vocabulary"]


def test_keep_drops_the_same_ids_with_and_without_the_word_cache():
    from transformers import AutoTokenizer

    from diffret_pyserini.model.packaged import resolve_model_path

    bert = AutoTokenizer.from_pretrained(resolve_model_path("splade-tiny"), local_files_only=True)
    texts = ["Parallel sorting algorithms on a multiprocessor", "sorting networks", ""]
    every = R.content_token_ids(bert, texts)
    odd = R.content_token_ids(bert, texts, keep=lambda i: i % 2 == 1)
    assert odd == [{i for i in ids if i % 2} for ids in every] and odd[0] and odd[2] == set()
    cache: dict = {}
    assert R.content_token_ids(bert, texts, word_cache=cache, keep=lambda i: i % 2 == 1) == odd
    assert all(i % 2 for ids in cache.values() for i in ids)  # the cache holds kept ids only
    assert R.content_token_ids(bert, texts[1:], excluded=sorted(odd[1])[:1], word_cache=cache,
                               keep=lambda i: i % 2 == 1) == [odd[1] - {sorted(odd[1])[0]}, set()]


def test_space_sensitive_tokenizers_keep_both_spellings_and_get_no_word_cache(tiny_model_dirs):
    from transformers import AutoTokenizer

    bpe = AutoTokenizer.from_pretrained(tiny_model_dirs["qwen2"], local_files_only=True)
    assert not R.tokenizes_words_independently(bpe)
    (ids,) = R.content_token_ids(bpe, ["retrieval systems"])
    plain = bpe(["retrieval systems"], add_special_tokens=False)["input_ids"][0]
    spaced = bpe([" retrieval systems"], add_special_tokens=False)["input_ids"][0]
    assert ids == set(plain) | set(spaced)
