"""Tiny but real model folders for CPU tests (a test utility, not part of the product).

Every builder writes a folder that loads through the ordinary ``from_pretrained`` path, offline:

- ``build_dream`` / ``build_llada``: checkpoint folders as Dream / LLaDA ship them (config.json and model code from
  ``../shared/fixtures``, weights under the checkpoint's own names) with random weights made by the native
  classes, so building runs none of that code; tests skip when that folder is absent (a user's fresh clone).
  ``load_backbone`` loads them natively; the opt-in tests (``remote_code`` mark) also run the shipped code.
- ``build_qwen2`` / ``build_llama``: ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` (2 layers, hidden 64, vocab 256).
- ``build_bert_mlm``: ``BertForMaskedLM`` with a tiny WordPiece vocabulary.

The four decoder folders share one 256-token tokenizer (:func:`build_tokenizer`): pad 0, bos 1, eos 2, mask 255,
``<|im_start|>``/``<|im_end|>`` and a Qwen-style chat template. It is a Unigram model over single characters plus
whole words (the prompt's words and common English words), so it encodes any English text (unknown characters
become ``<unk>``) and decodes it back exactly.
"""
from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"
FIXTURES_MISSING = "../shared/fixtures not found"
SEED = 1234


VOCAB_SIZE = 256
PAD, BOS, EOS, UNK, IM_START, IM_END, MASK = (
    "<pad>", "<bos>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>", "<mask>")
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IM_START, IM_END]  # ids 0..5; MASK is id 255
PAD_ID, BOS_ID, EOS_ID, UNK_ID, IM_START_ID, IM_END_ID, MASK_ID = 0, 1, 2, 3, 4, 5, 255
SPACE = "\u2581"  # the Metaspace marker that stands for a space

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Words that follow a special token, a newline or a quote in the prompts: no leading space.
BARE_WORDS = ["system", "user", "assistant", "You", "Passage", "Query", "The", "passage", "query", "the", "words",
              "retrieval"]
# Words preceded by a space: the DiffRetriever prompt first, then common English and CACM-like words.
SPACED_WORDS = """
are an AI assistant that can understand human language Passage Query passage query Use a few words word to
represent the in retrieval task Make sure your lowercase one The is of and or on for with this be by as at it
from not we which was were has have its into computer computers system systems program programs programming
algorithm algorithms data information search index document documents text method methods time paper problem
problems result results model models use used using new design analysis languages processing memory network
file files structure structures function functions number set code operating storage user users machine process
performance list table science research theory given two all some such these may also between each other more
than only how what when about describes presented general large based efficient simple small "
""".split()


def require_fixtures() -> Path:
    """The shared Dream/LLaDA fixtures folder; skips the calling test when it is absent."""
    if not FIXTURES_DIR.is_dir():
        import pytest

        pytest.skip(FIXTURES_MISSING)
    return FIXTURES_DIR


def _base_pieces() -> list[str]:
    punctuation = list(string.punctuation) + ["\n", "\t"]
    return [SPACE, *string.ascii_lowercase, *string.ascii_uppercase, *string.digits, *punctuation]


def tokenizer_vocab() -> list[str]:
    """The 256 pieces in id order: specials, single characters, whole words, filler, ``<mask>`` last."""
    pieces = SPECIAL_TOKENS + _base_pieces()
    seen = set(pieces)
    for word in BARE_WORDS + [SPACE + w for w in SPACED_WORDS]:
        if word not in seen and len(pieces) < VOCAB_SIZE - 1:
            pieces.append(word)
            seen.add(word)
    pieces += [f"<extra_{i}>" for i in range(VOCAB_SIZE - 1 - len(pieces))]
    pieces.append(MASK)
    assert len(pieces) == VOCAB_SIZE and pieces[MASK_ID] == MASK
    return pieces


def build_tokenizer(out_dir: str | Path | None = None, pad_token: str = PAD):
    """The shared 256-token ``PreTrainedTokenizerFast``; saved into ``out_dir`` when given.

    ``pad_token`` lets a folder match its config (LLaDA pads with eos, id 2).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = []
    for i, piece in enumerate(tokenizer_vocab()):
        if i < len(SPECIAL_TOKENS) or piece == MASK or piece.startswith("<extra_"):
            score = -100.0
        elif len(piece) == 1:
            score = -10.0
        else:
            score = -2.0  # one whole word beats spelling it out
        vocab.append((piece, score))
    tok = Tokenizer(models.Unigram(vocab, unk_id=UNK_ID, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS + [MASK]])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=pad_token, mask_token=MASK,
        additional_special_tokens=[IM_START, IM_END], model_max_length=512, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def require_remote_code() -> Path:
    """The fixtures folder, for the opt-in tests that run the checkpoints' own code: skips the calling test when the
    folder is absent, or under transformers >= 5, where that code does not run."""
    import pytest
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip(f"the Dream/LLaDA checkpoint code does not run under transformers {transformers.__version__}")
    return require_fixtures()


def _fixture_model(fixture: str, out_dir: str | Path, pad_token: str) -> Path:
    from diffret_pyserini.model.backbones.native import random_checkpoint

    src = require_fixtures() / fixture
    out_dir = Path(out_dir)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    random_checkpoint(config, out_dir, seed=SEED)
    for file in [src / "config.json", *src.glob("*.py")]:
        shutil.copy(file, out_dir / file.name)
    build_tokenizer(out_dir, pad_token=pad_token)
    return out_dir


def build_dream(out_dir: str | Path) -> Path:
    """A Dream folder (``DreamModel`` code and config): vocab 256, mask 255, pad 0, bos 1, eos 2; random weights."""
    return _fixture_model("dream-tiny", out_dir, pad_token=PAD)


def build_llada(out_dir: str | Path) -> Path:
    """A LLaDA folder (``LLaDAModelLM`` code and config): vocab 256, mask 255, eos = pad = 2; random weights."""
    return _fixture_model("llada-tiny", out_dir, pad_token=EOS)


DECODER_SIZE = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, tie_word_embeddings=False)


def _decoder(config, cls, out_dir: str | Path) -> Path:
    import torch

    out_dir = Path(out_dir)
    torch.manual_seed(SEED)
    cls(config).save_pretrained(out_dir)
    build_tokenizer(out_dir)
    return out_dir


def build_qwen2(out_dir: str | Path) -> Path:
    """``Qwen2ForCausalLM``: 2 layers, hidden 64, 4 heads, 2 kv heads, vocab 256 (shared tokenizer)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _decoder(Qwen2Config(**DECODER_SIZE), Qwen2ForCausalLM, out_dir)


def build_llama(out_dir: str | Path) -> Path:
    """``LlamaForCausalLM``: 2 layers, hidden 64, 4 heads, 2 kv heads, vocab 256 (shared tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return _decoder(LlamaConfig(**DECODER_SIZE), LlamaForCausalLM, out_dir)


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = """
the a an of and or in on to is are for with that this be by as at it from not which was were has have its
into can passage query words word few use represent retrieval task make sure your lowercase one you ai
assistant understand human language computer system program algorithm data information search index
document text method time paper problem result model design analysis processing memory network file
structure function number set code storage user machine process performance list table science research
theory two all some these may also between each other more than only how what when about general large
""".split()
BERT_SUFFIXES = ["##s", "##es", "##ed", "##ing", "##er", "##ly", "##ion", "##al", "##ment"]


def bert_vocab() -> list[str]:
    """The tiny WordPiece vocabulary: specials, characters, ## characters, digits, punctuation, words, suffixes."""
    chars = list(string.ascii_lowercase)
    pieces = (BERT_SPECIALS + chars + ["##" + c for c in chars] + list(string.digits)
              + ["##" + d for d in string.digits] + list(".,;:!?'\"()-/"))
    seen = set(pieces)
    for w in BERT_WORDS + BERT_SUFFIXES:
        if w not in seen:
            pieces.append(w)
            seen.add(w)
    return pieces


def build_bert_mlm(out_dir: str | Path) -> Path:
    """``BertForMaskedLM`` (2 layers, hidden 64) with a ``BertTokenizerFast`` over :func:`bert_vocab`."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # positional: the vocabulary file is `vocab_file` in transformers 4 and `vocab` in 5
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=True, model_max_length=512)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=512, pad_token_id=0)
    torch.manual_seed(SEED)
    BertForMaskedLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


BUILDERS = {"dream": build_dream, "llada": build_llada, "qwen2": build_qwen2, "llama": build_llama,
            "bert": build_bert_mlm}
NEEDS_FIXTURES = ("dream", "llada")


def build_all(root: str | Path) -> dict[str, Path]:
    """Build every kind under ``root/<kind>``; Dream and LLaDA are left out when the fixtures are absent."""
    root = Path(root)
    out = {}
    for kind, build in BUILDERS.items():
        if kind in NEEDS_FIXTURES and not FIXTURES_DIR.is_dir():
            continue
        out[kind] = build(root / kind)
    return out


def plant_import_markers(files, markers) -> None:
    """Append to each Python file a line that writes its marker when the file is imported."""
    for py, marker in zip(files, markers):
        with Path(py).open("a", encoding="utf-8") as f:
            f.write(f"\nimport pathlib as _p; _p.Path({str(marker)!r}).write_text('imported')\n")


def run_fresh(code: str, args, tmp_path: Path) -> dict:
    """`python -c code *args` in a fresh interpreter with an empty module cache and no network; the JSON object
    its last line prints."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

