"""Session-wide test set-up: offline Hugging Face, two CPU threads, tiny model folders, the CACM data folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports transformers or huggingface_hub: nothing may reach the hub during tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# File digests are cached per user (fingerprint.py); tests keep theirs in a throwaway folder.
if "DIFFRET_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["DIFFRET_CACHE_DIR"] = tempfile.mkdtemp(prefix="diffret-test-cache-")

import pytest  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:  # lets test files `import tiny_models`
    sys.path.insert(0, str(TESTS_DIR))

import tiny_models  # noqa: E402

REPO_ROOT = TESTS_DIR.parent
CACM_DIR = REPO_ROOT.parent / "shared" / "data" / "cacm"


@pytest.fixture(autouse=True)
def _our_logs_reach_caplog():
    """A CLI run in this process (cli.configure_logging) stops our loggers propagating; caplog listens at root."""
    import logging

    logging.getLogger("diffret_pyserini").propagate = True
    yield


def pytest_configure(config):
    import torch

    torch.set_num_threads(2)


class TinyModelDirs(dict):
    """kind -> model folder; asking for Dream or LLaDA without ../shared/fixtures skips the test."""

    def __missing__(self, kind):
        if kind in tiny_models.NEEDS_FIXTURES:
            pytest.skip(tiny_models.FIXTURES_MISSING)
        raise KeyError(f"no tiny model kind {kind!r}; kinds: {', '.join(tiny_models.BUILDERS)}")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> TinyModelDirs:
    """Tiny real model folders built once per session: dream, llada, qwen2, llama, bert."""
    return TinyModelDirs(tiny_models.build_all(tmp_path_factory.mktemp("tiny_models")))


@pytest.fixture(scope="session")
def numeric_run(tmp_path_factory):
    """The main job once per session on the numeric collection (every system): (tmp, dataset, metrics).
    Tests that change its inputs put them back."""
    from diffret_pyserini import pipeline
    from numeric_collection import args_for, make_numeric_collection

    tmp = tmp_path_factory.mktemp("pipe")
    dataset = make_numeric_collection(tmp / "numeric-beir")
    return tmp, dataset, pipeline.run(args_for(tmp, dataset))


@pytest.fixture(scope="session")
def cacm_dir() -> Path:
    """The CACM data set folder ``../shared/data/cacm`` (skips when absent)."""
    if not CACM_DIR.is_dir():
        pytest.skip("../shared/data/cacm not found")
    return CACM_DIR
