"""The tiny test models load offline and behave like the real checkpoints in the ways our code relies on.

Facts pinned here for the Dream / LLaDA checkpoint code (../shared/fixtures; opt-in tests that run that code,
`remote_code` mark, skipped under transformers >= 5), which the native classes replace (test_native.py):
- Dream: body ``model.model`` (DreamBaseModel, returns ``last_hidden_state`` after the final norm
  ``model.model.norm``), head ``model.lm_head``; accepts ``position_ids``; wants a 4D mask.
- LLaDA: body ``model.model`` (LLaDAModel; embeddings ``.transformer.wte``, blocks ``.transformer.blocks``, final
  norm ``.transformer.ln_f``), head ``model.model.transformer.ff_out``; no ``position_ids`` argument (RoPE always
  uses 0..L-1); wants a 2D padding mask.
- Both use relative RoPE only, so left padding that is masked out leaves the outputs at real positions unchanged.
"""
from __future__ import annotations

import pytest
import tiny_models as tm
import torch

ATOL = 1e-5


def load(path, kind="remote"):
    """kind "remote": the folder's own code (opt-in tests only, skipped under transformers >= 5); "causal" /
    "mlm": transformers' own classes."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    if kind == "remote":
        tm.require_remote_code()
        return AutoModel.from_pretrained(path, trust_remote_code=True, local_files_only=True).eval()
    cls = {"causal": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM}[kind]
    return cls.from_pretrained(path, local_files_only=True).eval()


def load_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def prompt_ids(tokenizer, text="the passage is about retrieval", k=4):
    return torch.tensor([tokenizer(text)["input_ids"] + [tokenizer.mask_token_id] * k])


def left_pad(ids, pad_id, n):
    """ids [1, L] -> padded ids [1, n+L] and the keep mask [1, n+L] (False on padding)."""
    padded = torch.cat([torch.full((1, n), pad_id), ids], dim=1)
    keep = torch.cat([torch.zeros(1, n, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)], dim=1)
    return padded, keep


# --- the shared tokenizer -------------------------------------------------------------------------------------

def test_tokenizer_ids_and_round_trip(tmp_path):
    tm.build_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    assert len(tok) == 256
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 1, 2, 255)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [tm.IM_START_ID, tm.IM_END_ID]
    for text in ["Hello world, the passage is 12345 here.", 'The words are: "', "  two  spaces\tand\nlines"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    ids = tok("café")["input_ids"]
    assert tok.unk_token_id in ids and max(ids) < 256
    # whole words keep prompts short
    assert len(tok(" passage query retrieval")["input_ids"]) == 3


def test_tokenizer_chat_template(tmp_path):
    tm.build_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    messages = [{"role": "system", "content": "You are an AI assistant."}, {"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are an AI assistant.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(text)["input_ids"]
    assert ids.count(tm.IM_START_ID) == 3 and ids.count(tm.IM_END_ID) == 2


# --- Dream ----------------------------------------------------------------------------------------------------

@pytest.mark.remote_code
def test_dream_loads_and_head_is_lm_head(tiny_model_dirs):
    path = tiny_model_dirs["dream"]
    model, tok = load(path), load_tokenizer(path)
    assert type(model).__name__ == "DreamModel"
    assert model.config.mask_token_id == tok.mask_token_id == 255
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = prompt_ids(tok)
    L = ids.shape[1]
    mask = torch.ones(1, 1, L, L, dtype=torch.bool)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True)
        body = model.model(ids, attention_mask=mask).last_hidden_state  # body without the head
    assert out.logits.shape == (1, L, 256)
    assert not hasattr(out, "last_hidden_state") or out.get("last_hidden_state") is None
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[-1], body, atol=ATOL, rtol=0)  # last = after final norm
    torch.testing.assert_close(model.lm_head(body), out.logits, atol=ATOL, rtol=0)


@pytest.mark.remote_code
def test_dream_mask_forms_and_positions(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["dream"]), load_tokenizer(tiny_model_dirs["dream"])
    ids = prompt_ids(tok)
    L = ids.shape[1]
    with torch.no_grad():
        ref = model(ids, attention_mask=torch.ones(1, 1, L, L, dtype=torch.bool)).logits
        torch.testing.assert_close(model(ids, attention_mask="full").logits, ref, atol=ATOL, rtol=0)
        # position_ids are accepted (default: 0..L-1)
        pos = torch.arange(L)[None]
        torch.testing.assert_close(model(ids, position_ids=pos).logits, ref, atol=ATOL, rtol=0)
        # left padding masked on the key side gives the same outputs at the real positions, with or without
        # position_ids (RoPE is relative); a key-only mask also keeps padded query rows finite
        n = 3
        padded, keep = left_pad(ids, tok.pad_token_id, n)
        key_mask = keep[:, None, None, :].expand(1, 1, L + n, L + n)
        out = model(padded, attention_mask=key_mask).logits
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[:, n:], ref, atol=ATOL, rtol=0)
        shifted = (keep.long().cumsum(-1) - 1).clamp(min=0)
        out = model(padded, attention_mask=key_mask, position_ids=shifted).logits
        torch.testing.assert_close(out[:, n:], ref, atol=ATOL, rtol=0)
        # an additive float mask works too
        additive = torch.zeros(1, 1, L + n, L + n)
        additive[..., :n] = torch.finfo(torch.float32).min
        torch.testing.assert_close(model(padded, attention_mask=additive).logits[:, n:], ref, atol=ATOL, rtol=0)
        # a 2D padding mask is not supported (batch > 1)
        batch = torch.cat([padded, padded])
        with pytest.raises(RuntimeError):
            model(batch, attention_mask=torch.cat([keep, keep]).long())
        with pytest.raises(RuntimeError):
            model(batch, attention_mask=torch.cat([keep, keep]))


# --- LLaDA ----------------------------------------------------------------------------------------------------

@pytest.mark.remote_code
def test_llada_loads_and_head_is_ff_out(tiny_model_dirs):
    path = tiny_model_dirs["llada"]
    model, tok = load(path), load_tokenizer(path)
    assert type(model).__name__ == "LLaDAModelLM"
    assert model.config.mask_token_id == tok.mask_token_id == 255
    assert tok.pad_token_id == tok.eos_token_id == model.config.pad_token_id == 2
    ids = prompt_ids(tok)
    L = ids.shape[1]
    with torch.no_grad():
        out = model(ids, attention_mask=torch.ones(1, L, dtype=torch.long), output_hidden_states=True)
    assert out.logits.shape == (1, L, 256)
    assert len(out.hidden_states) == model.config.n_layers + 1
    body = model.model.transformer
    assert not model.config.weight_tying and model.get_output_embeddings() is body.ff_out
    torch.testing.assert_close(body.ff_out(out.hidden_states[-1]), out.logits, atol=ATOL, rtol=0)
    # the body without the head, by hand: embeddings -> blocks -> final norm
    with torch.no_grad():
        x = body.wte(ids)
        for block in body.blocks:
            x, _ = block(x, attention_bias=None)
        x = body.ln_f(x)
    torch.testing.assert_close(x, out.hidden_states[-1], atol=ATOL, rtol=0)


@pytest.mark.remote_code
def test_llada_mask_and_positions(tiny_model_dirs):
    model, tok = load(tiny_model_dirs["llada"]), load_tokenizer(tiny_model_dirs["llada"])
    ids = prompt_ids(tok)
    L = ids.shape[1]
    with torch.no_grad():
        ref = model(ids).logits
        with pytest.raises(TypeError):
            model(ids, position_ids=torch.arange(L)[None])  # RoPE positions are always 0..L-1
        n = 3
        padded, keep = left_pad(ids, tok.pad_token_id, n)
        out = model(padded, attention_mask=keep.long()).logits
        torch.testing.assert_close(out[:, n:], ref, atol=ATOL, rtol=0)  # relative RoPE: padding is harmless
        unmasked = model(padded).logits
        assert (unmasked[:, n:] - ref).abs().max() > 1e-3  # ...only when masked
        # a 4D mask whose rows differ is silently misread (LLaDA flattens it and keeps its first row)
        row_col = (keep[:, None, :, None] & keep[:, None, None, :])
        wrong = model(padded, attention_mask=row_col).logits
        assert not torch.allclose(wrong[:, n:], ref, atol=1e-3)


# --- Dream and LLaDA in transformers' own classes --------------------------------------------------------------

@pytest.mark.parametrize("name", ["dream", "llada"])
def test_native_mask_forms_and_positions(tiny_model_dirs, name):
    """The native classes take what either checkpoint's code takes (a 4D key mask, a 2D padding mask, additive
    or bool) and position_ids; masked left padding leaves the real positions as they were, with or without
    shifted positions (RoPE is relative); unmasked padding does not."""
    from diffret_pyserini.model.backbones import load_backbone

    model = load_backbone(tiny_model_dirs[name], device="cpu").model
    tok = load_tokenizer(tiny_model_dirs[name])
    ids = prompt_ids(tok)
    L = ids.shape[1]
    n = 3
    padded, keep = left_pad(ids, tok.pad_token_id, n)
    key_mask = keep[:, None, None, :].expand(1, 1, L + n, L + n)
    additive = torch.zeros(1, 1, L + n, L + n)
    additive[..., :n] = torch.finfo(torch.float32).min
    shifted = (keep.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(ids).logits
        torch.testing.assert_close(model(ids, position_ids=torch.arange(L)[None]).logits, ref, atol=ATOL, rtol=0)
        for mask in (keep, keep.long(), key_mask, additive):
            for positions in (None, shifted):
                out = model(padded, attention_mask=mask, position_ids=positions).logits
                assert torch.isfinite(out).all()
                torch.testing.assert_close(out[:, n:], ref, atol=ATOL, rtol=0)
        assert (model(padded).logits[:, n:] - ref).abs().max() > 1e-3


# --- autoregressive and masked-LM backbones --------------------------------------------------------------------

@pytest.mark.parametrize("kind,arch", [("qwen2", "Qwen2ForCausalLM"), ("llama", "LlamaForCausalLM")])
def test_causal_lm_loads(tiny_model_dirs, kind, arch):
    path = tiny_model_dirs[kind]
    model, tok = load(path, "causal"), load_tokenizer(path)
    assert type(model).__name__ == arch
    assert model.config.vocab_size == len(tok) == 256 and tok.mask_token_id == 255
    ids = prompt_ids(tok)
    L = ids.shape[1]
    changed = ids.clone()
    changed[0, -1] = tok.eos_token_id  # change only the last token
    with torch.no_grad():
        out = model(ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
        causal_changed = model(changed, attention_mask=torch.ones_like(ids)).logits
        # an all-visible 4D float mask makes the causal model attend bidirectionally
        bi = model(ids, attention_mask=torch.zeros(1, 1, L, L)).logits
        bi_changed = model(changed, attention_mask=torch.zeros(1, 1, L, L)).logits
    assert out.logits.shape == (1, L, 256)
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(causal_changed[:, 0], out.logits[:, 0], atol=ATOL, rtol=0)  # causal: blind
    assert (bi_changed[:, 0] - bi[:, 0]).abs().max() > 1e-4  # bidirectional: position 0 sees the last token


def test_bert_mlm_loads(tiny_model_dirs):
    path = tiny_model_dirs["bert"]
    model, tok = load(path, "mlm"), load_tokenizer(path)
    assert type(model).__name__ == "BertForMaskedLM"
    # transformers 5 names its one (fast, Rust-backed) Bert tokenizer BertTokenizer
    assert tok.is_fast and type(tok).__name__ in ("BertTokenizerFast", "BertTokenizer")
    assert model.config.vocab_size == len(tok)
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    enc = tok("The passage describes information retrieval systems.", return_tensors="pt")
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]" and "system" in pieces and "##s" in pieces
    ids = torch.cat([enc["input_ids"][:, :-1], torch.tensor([[tok.mask_token_id] * 4 + [tok.sep_token_id]])], 1)
    with torch.no_grad():
        out = model(ids, attention_mask=torch.ones_like(ids))
    assert out.logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(out.logits).all()


def test_builds_are_deterministic(tmp_path):
    a, b = tm.build_qwen2(tmp_path / "a"), tm.build_qwen2(tmp_path / "b")
    wa, wb = load(a, "causal").state_dict(), load(b, "causal").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fixtures_skip_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(tm, "FIXTURES_DIR", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception, match=r"\.\./shared/fixtures not found"):
        tm.build_dream(tmp_path / "dream")
    assert set(tm.build_all(tmp_path / "all")) == {"qwen2", "llama", "bert"}
