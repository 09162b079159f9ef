"""The reproduction matrix: every condition of the paper's comparison, and the commands that run one cell.

A condition is a system on a backbone, zero-shot (zs) or fine-tuned (ft), at its K; its name says all four:
`diffretriever-multi.dream.ft`, `diffembed.splade-tiny.zs`, `promptreps-dense.llama3.zs.k1` (a K other than the
backbone's own is spelled out), `bm25`. A cell is a condition on a dataset: `cacm`, `cacm-notitle` (packaged)
or a BEIR-7 folder under --data-root.

The backbones of the paper (Dream, LLaDA, LLaMA3, Qwen2.5) are local folders under --models-root; nothing is
downloaded. Their fine-tuned DiffRetriever cells read the released checkpoints (backbones/released.py); their
fine-tuned baselines are trained on MS MARCO first (the `train` command of the cell), as the paper does. The
packaged backbones (SPLADE-tiny, SmolLM2) run here; they are fine-tuned by the pipeline itself on the corpus's
own pseudo-queries (--finetune yes).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from diffret_pyserini.cli import InputError

BEIR7 = ("nq", "hotpotqa", "scifact", "fiqa", "arguana", "quora", "trec-covid")
LOCAL_DATASETS = ("cacm", "cacm-notitle")
# Pseudo-queries of the local fine-tuning: titles where the corpus has them, else sentences (pinned: no SmolLM2
# generation and no dev comparison of sources inside a reproduction run).
LOCAL_SOURCE = {"cacm": "titles", "cacm-notitle": "sentences"}
MODES = ("zs", "ft")
TRAIN_DATA = "msmarco-train.jsonl"  # under --data-root: MS MARCO train queries with 15 hard negatives each


@dataclass(frozen=True)
class Backbone:
    """A model a condition runs on."""

    name: str
    folder: str                      # packaged name (local) or a folder name under --models-root
    family: str                      # diffusion, masked (both one-pass) or autoregressive
    k: dict[str, tuple[int, int]]    # mode -> (Kq, Kp): DiffRetriever's slots, PromptReps' generation cap N
    local: bool = False              # ships with the package and runs on a CPU here
    remote_code: bool = False        # Dream and LLaDA checkpoints ship their model code
    released: dict[str, str] = field(default_factory=dict)  # 'single' / 'multi' -> released DiffRetriever folder
    datasets: tuple[str, ...] = BEIR7

    @property
    def one_pass(self) -> bool:
        return self.family != "autoregressive"


BACKBONES = {b.name: b for b in (
    Backbone("splade-tiny", "splade-tiny", "masked", {"zs": (4, 16), "ft": (4, 8)}, local=True,
             datasets=(*LOCAL_DATASETS, *BEIR7)),
    # SmolLM2 on CACM only: a 135M decoder costs tens of CPU minutes per corpus here (and its fine-tuning, LoRA
    # in bf16, about an hour per recipe)
    Backbone("smollm2", "smollm2", "autoregressive", {"zs": (1, 1), "ft": (1, 1)}, local=True,
             datasets=("cacm", *BEIR7)),
    Backbone("dream", "Dream-v0-Instruct-7B", "diffusion", {"zs": (4, 16), "ft": (4, 16)}, remote_code=True,
             released={"single": "diffretriever-dream-7b-single", "multi": "diffretriever-dream-7b-multi-q4-p16"}),
    Backbone("llada", "LLaDA-8B-Instruct", "diffusion", {"zs": (4, 4), "ft": (4, 4)}, remote_code=True,
             released={"single": "diffretriever-llada-8b-single", "multi": "diffretriever-llada-8b-multi-q4-p4"}),
    # PromptReps' generation cap: N=20 zero-shot, N=4 in fine-tuning (the reference's)
    Backbone("llama3", "Meta-Llama-3-8B-Instruct", "autoregressive", {"zs": (20, 20), "ft": (4, 4)}),
    Backbone("qwen2.5", "Qwen2.5-7B-Instruct", "autoregressive", {"zs": (20, 20), "ft": (4, 4)}),
)}

# system -> the pipeline system whose row holds its figure (None: a baseline system of the same name)
PIPELINE_SYSTEM = {"dense": "dense", "multi": "multi", "sparse": "sparse", "hybrid": "hybrid-multi"}
REPS = tuple(PIPELINE_SYSTEM)


@dataclass(frozen=True)
class Condition:
    name: str
    system: str                      # bm25, diffretriever-<rep>, promptreps-<rep>, diffembed, repllama
    backbone: str | None             # None for bm25
    mode: str = "zs"
    k: tuple[int, int] | None = None

    @property
    def method(self) -> str:
        return self.system.split("-")[0]

    @property
    def rep(self) -> str | None:
        return self.system.split("-", 1)[1] if "-" in self.system else None


def _name(system: str, backbone: Backbone, mode: str, k: tuple[int, int]) -> str:
    base = f"{system}.{backbone.name}.{mode}"
    return base if k == backbone.k[mode] else f"{base}.k{k[0]}" if k[0] == k[1] else f"{base}.k{k[0]}-{k[1]}"


def conditions() -> list[Condition]:
    """Every condition of the matrix, in table order."""
    out = [Condition("bm25", "bm25", None)]
    for b in BACKBONES.values():
        single = (1, 1)
        for mode in MODES:
            method = "diffretriever" if b.one_pass else "promptreps"
            budgets = [b.k[mode]] if b.name in ("splade-tiny", "smollm2") else [b.k[mode], single]
            if b.name == "smollm2":
                budgets = [single]  # PromptReps' single token: what the earlier CPU runs measured
            for k in budgets:
                reps = REPS if k != single else ("dense", "sparse", "hybrid")
                for rep in reps:
                    system = f"{method}-{rep}"
                    out.append(Condition(_name(system, b, mode, k), system, b.name, mode, k))
            baseline = "diffembed" if b.one_pass else "repllama"
            out.append(Condition(f"{baseline}.{b.name}.{mode}", baseline, b.name, mode, None))
    return out


def find(name: str) -> Condition:
    for c in conditions():
        if c.name == name:
            return c
    raise InputError(f"--condition {name}: no such condition (--list-conditions lists them)")


def datasets_of(condition: Condition) -> tuple[str, ...]:
    if condition.backbone is None:
        return (*LOCAL_DATASETS, *BEIR7)
    return BACKBONES[condition.backbone].datasets


@dataclass(frozen=True)
class Roots:
    """Where things are: data (BEIR-7 folders, MS MARCO training data), models, and the pipeline's caches."""

    data: Path = Path("data")
    models: Path = Path("models")
    indexes: Path = Path("indexes")
    runs: Path = Path("runs")
    device: str = "auto"


def dataset_arg(dataset: str, roots: Roots) -> str:
    return dataset if dataset in LOCAL_DATASETS else str(roots.data / dataset)


def model_arg(condition: Condition, roots: Roots) -> str:
    """The --model (for RepLLaMA: --repllama_model) a cell's pipeline command names."""
    b = BACKBONES[condition.backbone]
    if condition.mode == "ft" and not b.local and condition.method != "diffretriever":
        return str(ft_folder(condition, roots))
    return b.folder if b.local else str(roots.models / b.folder)


def row_of(condition: Condition, model_arg: str) -> str:
    """The row of the pipeline's table that holds a condition's figure."""
    if condition.system == "bm25":
        return "bm25"
    b = BACKBONES[condition.backbone]
    local_ft = b.local and condition.mode == "ft"
    if condition.system == "diffembed":
        return "ft-diffembed" if local_ft else "diffembed"
    if condition.system == "repllama":
        from diffret_pyserini.pipeline.baselines import row_name

        return ("ft-" if local_ft else "") + row_name("repllama", model_arg)
    system = PIPELINE_SYSTEM[condition.rep]
    if condition.k == (1, 1) and condition.rep == "hybrid":
        system = "hybrid-dense"  # one vector a side: the dense hybrid
    return ("ft-" if local_ft else "") + system


def ft_folder(condition: Condition, roots: Roots) -> Path:
    """Where a paper backbone's fine-tuned baseline is trained to (the output of its train command)."""
    k = condition.k or (0, 0)
    tag = condition.method if condition.method in ("diffembed", "repllama") else f"promptreps-k{k[0]}-{k[1]}"
    return roots.models / "ft" / f"{tag}-{condition.backbone}"


def train_command(condition: Condition, roots: Roots) -> list[str]:
    """The paper's fine-tuning of a baseline on MS MARCO (LoRA r=16, alpha=64, 1 positive + 15 hard negatives,
    global batch 128 on 4 GPUs, InfoNCE at 0.01; DiffEmbed and RepLLaMA at 0.02)."""
    b = BACKBONES[condition.backbone]
    cmd = ["torchrun", "--nproc_per_node", "4", "-m", "diffret_pyserini.train", "--model", str(roots.models / b.folder),
           "--train_data", str(roots.data / TRAIN_DATA), "--output_dir", str(ft_folder(condition, roots)),
           "--lora_r", "16", "--lora_alpha", "64", "--per_device_train_batch_size", "32", "--train_group_size", "16",
           "--gradient_checkpointing", "--bf16", "--deepspeed", "configs/deepspeed_zero2.json",
           "--learning_rate", "1e-4", "--warmup_ratio", "0.1", "--num_train_epochs", "1"]
    if b.remote_code:
        cmd.append("--trust_remote_code")
    if condition.method in ("diffembed", "repllama"):
        return cmd + ["--kind", condition.method, "--loss_multi", "0", "--loss_sparse", "0", "--temperature", "0.02"]
    kq, kp = condition.k
    return cmd + ["--kind", "causal", "--kq", str(kq), "--kp", str(kp), "--temperature", "0.01"]


def pipeline_argv(condition: Condition, dataset: str, roots: Roots) -> list[str]:
    """`python -m diffret_pyserini.pipeline` arguments for one cell (equal weights for every hybrid: alpha 0.5,
    the paper's)."""
    common = ["--dataset", dataset_arg(dataset, roots), "--indexes", str(roots.indexes), "--runs", str(roots.runs),
              "--alpha", "0.5", "--device", roots.device]
    if condition.system == "bm25":
        return [*common, "--systems", "bm25", "--finetune", "no"]
    b = BACKBONES[condition.backbone]
    model = b.folder if b.local else str(roots.models / b.folder)
    trust = ["--trust_remote_code"] if b.remote_code else []
    if b.local and condition.mode == "ft":
        source = LOCAL_SOURCE.get(dataset)  # a BEIR folder: the pipeline's own choice (--finetune_source auto)
        finetune = ["--finetune", "yes", *(["--finetune_source", source] if source else [])]
    else:
        finetune = ["--finetune", "no"]
    ft = condition.mode == "ft" and not b.local
    if condition.system in ("diffembed", "repllama"):
        folder = model_arg(condition, roots)
        flag = "--model" if condition.system == "diffembed" else "--repllama_model"
        extra = [] if condition.system == "diffembed" else ["--model", folder]  # names the table's folder
        return [*common, flag, folder, *extra, *trust, "--systems", condition.system, *finetune]
    system = row_of(condition, model).removeprefix("ft-")
    kq, kp = condition.k
    if condition.method == "diffretriever" and ft:  # the released checkpoint: K and prompt from its folder
        release = b.released["single" if condition.k == (1, 1) else "multi"]
        return [*common, "--model", str(roots.models / release), "--base_model", model, *trust, "--systems", system,
                *finetune]
    if ft:  # a PromptReps model fine-tuned on MS MARCO by its train command
        return [*common, "--model", str(ft_folder(condition, roots)), "--kind", "causal", "--kq", str(kq), "--kp",
                str(kp), "--systems", system, *finetune]
    kind = [] if b.one_pass else ["--kind", "causal"]
    # ft: the trained model's own K (a packaged decoder is trained by this command, at the K it names); a
    # packaged one-pass model at its own K needs no flags (and shares its invocation with the other systems on it)
    own_k = ((condition.mode == "ft" and b.one_pass) or (b.local and b.one_pass and condition.k == b.k["zs"]))
    budget = [] if own_k else ["--kq", str(kq), "--kp", str(kp)]
    return [*common, "--model", model, *kind, *trust, *budget, "--systems", system, *finetune]


def commands(condition: Condition, dataset: str, roots: Roots) -> list[list[str]]:
    """Every command of a cell, in order: a train command first where the paper fine-tunes a baseline on MS
    MARCO, then the pipeline."""
    out = []
    b = BACKBONES.get(condition.backbone or "")
    if b is not None and not b.local and condition.mode == "ft" and condition.method != "diffretriever":
        out.append(train_command(condition, roots))
    out.append(["python", "-m", "diffret_pyserini.pipeline", *pipeline_argv(condition, dataset, roots)])
    return out


def shell(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def missing_inputs(condition: Condition, dataset: str, roots: Roots) -> list[str]:
    """What a cell needs that is not here (a dataset folder, a model folder); [] when it can run."""
    missing = []
    if dataset not in LOCAL_DATASETS and not (roots.data / dataset / "corpus.jsonl").is_file():
        missing.append(f"dataset {roots.data / dataset}")
    b = BACKBONES.get(condition.backbone or "")
    if b is not None and not b.local:
        needed = [roots.models / b.folder]
        if condition.mode == "ft" and condition.method == "diffretriever":
            needed.append(roots.models / b.released["single" if condition.k == (1, 1) else "multi"])
        elif condition.mode == "ft" and not (ft_folder(condition, roots) / "diffret_config.json").is_file():
            needed.append(roots.data / TRAIN_DATA)  # the train command makes the model from it
        missing += [f"model {p}" for p in needed if not p.exists()]
    return missing
