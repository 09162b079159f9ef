"""Every backbone kind on tiny real models (Dream/LLaDA natively: transformers' Qwen2 / Llama, non-causal)."""
import json
import shutil

import numpy as np
import pytest
import torch

from diffret_pyserini.model.backbones import load_backbone
from diffret_pyserini.model.backbones.bidirectional import bool_key_mask_4d
from diffret_pyserini.model.encoder import DiffRetEncoder, EncoderSettings

TEXTS = ["the cat sat on the mat", "retrieval of passages with diffusion models and many words in it",
         "", "query words"]
ONE_PASS = [("dream", None), ("llada", None), ("qwen2", "bidirectional"), ("llama", "bidirectional"),
            ("bert", None)]
ALL_KINDS = ONE_PASS + [("qwen2", "causal"), ("llama", "causal")]


def load(tiny_model_dirs, name, kind, **kwargs):
    return load_backbone(tiny_model_dirs[name], kind=kind, device="cpu", **kwargs)


@pytest.mark.parametrize("name,kind", ONE_PASS)
@pytest.mark.parametrize("k", [1, 4, 16])
def test_one_forward_call_per_batch_for_any_k(tiny_model_dirs, name, kind, k):
    bb = load(tiny_model_dirs, name, kind)
    enc = DiffRetEncoder(bb, EncoderSettings(kq=k, kp=k, content_filter=False))
    before = bb.forward_calls
    out = enc.encode(TEXTS, "passage")
    assert bb.forward_calls - before == 1
    assert out.multi.shape == (len(TEXTS), k, bb.hidden_size)
    assert out.dense.shape == (len(TEXTS), bb.hidden_size)


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_autoregressive_multi_token_makes_k_sequential_steps(tiny_model_dirs, name):
    bb = load_backbone(tiny_model_dirs[name], kind="causal", device="cpu", stop_early=False)
    for k in (1, 3, 6):
        enc = DiffRetEncoder(bb, EncoderSettings(kq=k, kp=k))
        before = bb.forward_calls
        enc.encode(TEXTS[:2], "query")
        assert bb.forward_calls - before == k


@pytest.mark.parametrize("name,kind", ALL_KINDS)
def test_batch_equals_single_encodes(tiny_model_dirs, name, kind):
    bb = load(tiny_model_dirs, name, kind)
    enc = DiffRetEncoder(bb, EncoderSettings(kq=3, kp=5, content_filter=False, top_n=20))
    batch = enc.encode(TEXTS, "passage")
    for i, text in enumerate(TEXTS):
        one = enc.encode([text], "passage")
        np.testing.assert_allclose(one.dense[0], batch.dense[i], atol=1e-5)
        np.testing.assert_allclose(one.multi[0], batch.multi[i], atol=1e-5)
        assert (one.multi_valid[0] == batch.multi_valid[i]).all()
        assert one.sparse[0].keys() == batch.sparse[i].keys()
        assert all(abs(one.sparse[0][t] - batch.sparse[i][t]) <= 1 for t in one.sparse[0])


@pytest.mark.parametrize("name,kind", ONE_PASS)
def test_slot_logits_equal_the_full_model_logits_at_the_slots(tiny_model_dirs, name, kind):
    """Splitting the decoder off the body changes nothing: logits at the slots match a plain forward."""
    bb = load(tiny_model_dirs, name, kind)
    enc = DiffRetEncoder(bb, EncoderSettings(kp=4))
    batch = enc.builder("passage").build(TEXTS[:2])
    states = bb.read_slots(batch)
    inputs = {"input_ids": batch.input_ids, **bb.attention_inputs(batch)}
    if bb.takes_position_ids:
        inputs["position_ids"] = batch.position_ids
    with torch.no_grad():
        full = bb.model(**inputs).logits
    expected = full.gather(1, batch.slot_positions.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    with torch.no_grad():
        got = bb.vocab_logits(states.features)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    cols = torch.tensor([3, 7, 11])
    with torch.no_grad():
        torch.testing.assert_close(bb.vocab_logits(states.features, cols), expected[..., cols], atol=1e-5, rtol=1e-5)
        rows = torch.tensor([[3, 7, 11], [5, 0, 2]])  # per-row columns: row b reads its own ids
        per_row = bb.vocab_logits(states.features, rows)
        for b in range(2):
            torch.testing.assert_close(per_row[b], expected[b][..., rows[b]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,kind", [("dream", None), ("llada", None), ("qwen2", "bidirectional")])
def test_read_offset_is_the_read_position_relative_to_the_slot(tiny_model_dirs, name, kind):
    bb = load(tiny_model_dirs, name, kind)
    assert bb.read_offset == 0  # the reference reads the mask positions themselves, unshifted
    enc = DiffRetEncoder(bb, EncoderSettings(kp=3))
    batch = enc.builder("passage").build(["a text"])
    at_slots = bb.read_slots(batch).hidden
    shifted = load(tiny_model_dirs, name, kind, read_offset=-1).read_slots(batch).hidden
    # the offset moves the read window one column left: the 2nd and 3rd shifted reads are the 1st and 2nd slots
    torch.testing.assert_close(shifted[:, 1:], at_slots[:, :-1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shifted[:, 0], at_slots[:, 0])


@pytest.mark.parametrize("name,kind", ONE_PASS)
def test_one_pass_backbones_attend_bidirectionally(tiny_model_dirs, name, kind):
    """Slots see the tail after them: changing the token after the last slot changes the slot states."""
    bb = load(tiny_model_dirs, name, kind)
    enc = DiffRetEncoder(bb, EncoderSettings(kp=2))
    batch = enc.builder("passage").build(["some words"])
    base = bb.read_slots(batch).hidden
    batch.input_ids[0, -1] = (batch.input_ids[0, -1] + 1) % 200 + 6
    assert not torch.allclose(bb.read_slots(batch).hidden, base, atol=1e-6)


def test_causal_single_reads_the_last_prompt_position(tiny_model_dirs):
    bb = load_backbone(tiny_model_dirs["qwen2"], kind="causal", device="cpu")
    enc = DiffRetEncoder(bb, EncoderSettings(kq=1))
    batch = enc.builder("query").build(["hello world"])
    with torch.no_grad():
        out = bb.model(input_ids=batch.input_ids, output_hidden_states=True)
    states = bb.read_slots(batch)
    torch.testing.assert_close(states.hidden[:, 0], out.hidden_states[-1][:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_native_diffusion_lms_take_any_padding_mask_and_attend_both_ways(tiny_model_dirs, name):
    """Padding is invisible with the masks we pass (checked by batch==single above). The native classes build
    their own all-visible mask, so Dream's 4D bool mask (what its own code needs), LLaDA's 2D padding mask and
    an additive 4D mask all give one result; no mask at all sees the padding; a later token changes earlier
    positions (no causal mask crept back)."""
    bb = load(tiny_model_dirs, name, None)
    ids = torch.tensor([[0, 7, 8, 9], [6, 7, 8, 9]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert bool_key_mask_4d(mask).shape == (2, 1, 4, 4)
    additive = (1.0 - bool_key_mask_4d(mask).float()) * torch.finfo(torch.float32).min
    with torch.no_grad():
        ref = bb.model(input_ids=ids, attention_mask=bool_key_mask_4d(mask)).logits
        assert torch.isfinite(ref).all()
        for other in (mask, mask.bool(), additive):
            torch.testing.assert_close(bb.model(input_ids=ids, attention_mask=other).logits, ref, atol=1e-6, rtol=0)
        assert not torch.allclose(bb.model(input_ids=ids).logits[0], ref[0], atol=1e-4)  # padding seen
        changed = ids.clone()
        changed[:, -1] = 10
        later = bb.model(input_ids=changed, attention_mask=mask).logits
    assert (later[:, 1] - ref[:, 1]).abs().max() > 1e-4


def test_mask_ids_come_from_the_checkpoint_config(tiny_model_dirs, tmp_path):
    assert load(tiny_model_dirs, "dream", None).slot_id == 255
    assert load(tiny_model_dirs, "llada", None).slot_id == 255
    bert = load(tiny_model_dirs, "bert", None)
    assert bert.slot_id == bert.tokenizer.mask_token_id
    broken = tmp_path / "dream-no-mask"
    shutil.copytree(tiny_model_dirs["dream"], broken)
    config = json.loads((broken / "config.json").read_text())
    del config["mask_token_id"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: mask_token_id: missing"):
        load_backbone(broken, device="cpu")


def test_unknown_kind_and_non_model_folder_give_clear_errors(tiny_model_dirs, tmp_path):
    with pytest.raises(ValueError, match="unknown backbone kind"):
        load_backbone(tiny_model_dirs["qwen2"], kind="sideways", device="cpu")
    with pytest.raises(ValueError, match="no config.json"):
        load_backbone(tmp_path, device="cpu")
