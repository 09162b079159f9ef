"""Session-wide test set-up: offline Hugging Face, one CPU thread, tiny model folders, the CACM data folder, the
pytest-xdist work units."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Before anything imports transformers or huggingface_hub: nothing may reach the hub during tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One OpenMP thread in the CLIs the tests start, as in this process (pytest_configure): these tiny models gain
# nothing from two, and on a busy 2-core machine two spinning threads took twice the time (the memory test's
# encode: 21 s at two threads against 9.5 s at one, load average 4-5).
os.environ.setdefault("OMP_NUM_THREADS", "1")
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


# Where transformers imports a model folder's own code (config, model, tokenizer classes named by auto_map).
REMOTE_CODE_HOOKS = ("transformers.dynamic_module_utils", "transformers.models.auto.auto_factory",
                     "transformers.models.auto.configuration_auto", "transformers.models.auto.tokenization_auto")


def _no_remote_code(reference, *args, **kwargs):
    raise RuntimeError(f"a model folder's own code ({reference}) ran outside a remote_code test")


@pytest.fixture(autouse=True)
def _remote_code_only_where_marked(request, monkeypatch):
    """Only the opt-in `remote_code` tests may run a checkpoint's own code in this process: elsewhere Dream and
    LLaDA go the native way, and trust_remote_code slipping back into a test fails it. (Patched where transformers
    is already imported, as it is by the tiny model folders every model test reads.)"""
    if request.node.get_closest_marker("remote_code") is not None:
        return
    for name in REMOTE_CODE_HOOKS:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "get_class_from_dynamic_module"):
            monkeypatch.setattr(module, "get_class_from_dynamic_module", _no_remote_code)


def pytest_configure(config):
    import torch

    # One thread: pytest-xdist runs two workers on the two cores (two threads each would oversubscribe them),
    # and the CLIs the tests start get the same (OMP_NUM_THREADS above), so both sides compute alike.
    torch.set_num_threads(1)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistFileUnits(), "diffret-xdist-file-units")


# Under pytest-xdist (`-n 2 --dist loadfile`): a test file is one unit of work, so its module fixtures are built
# once; files that read the same expensive session fixture are one unit, so it is built once too.
XDIST_UNITS = {"tests/test_pipeline.py": "tests/test_by_hand.py"}  # both read numeric_run


class _XdistFileUnits:
    """--dist loadfile with the files of XDIST_UNITS merged (xdist's own loadgroup marks do not work with
    pytest 9: it renames items through an attribute pytest no longer reads)."""

    @staticmethod
    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") != "loadfile":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class FileUnits(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                return XDIST_UNITS.get(path, path)

        return FileUnits(config, log)


class TinyModelDirs(dict):
    """kind -> model folder, each built on first use; asking for Dream or LLaDA without ../shared/fixtures skips
    the test."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, kind):
        if kind not in tiny_models.BUILDERS:
            raise KeyError(f"no tiny model kind {kind!r}; kinds: {', '.join(tiny_models.BUILDERS)}")
        self[kind] = tiny_models.BUILDERS[kind](self.root / kind)  # Dream/LLaDA: require_fixtures may skip
        return self[kind]


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> TinyModelDirs:
    """Tiny real model folders (dream, llada, qwen2, llama, bert), each built once per session when first asked."""
    return TinyModelDirs(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def numeric_run(tmp_path_factory):
    """The main job once per session on the numeric collection (every system): (tmp, dataset, metrics).
    Tests that change its inputs put them back."""
    from numeric_collection import args_for, make_numeric_collection

    from diffret_pyserini import pipeline

    tmp = tmp_path_factory.mktemp("pipe")
    dataset = make_numeric_collection(tmp / "numeric-beir")
    # Equal weights, as Pyserini's own hybrid CLI fuses (tests/test_by_hand.py): these tests check the fusion
    # itself; how --alpha auto chooses is tested on its own (test_safe_choice.py, test_fusion_dev.py).
    return tmp, dataset, pipeline.run(args_for(tmp, dataset, alpha="0.5"))


@pytest.fixture(scope="session")
def cacm_dir() -> Path:
    """The CACM data set folder ``../shared/data/cacm`` (skips when absent)."""
    if not CACM_DIR.is_dir():
        pytest.skip("../shared/data/cacm not found")
    return CACM_DIR
