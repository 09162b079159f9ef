"""Distributed encoding on Ray Data: the corpus in blocks, one backbone per actor, one merge at the end.

    python -m diffret_pyserini.encode input --corpus C output --embeddings OUT encoder ... --ray local --ray-workers 2

The driver scans the corpus bytes (no JSON parsing) into blocks of `chunk_size` documents: a block is a byte
range of one file with its first line number. Ray Data carries the blocks through `map_batches` to an actor
class that loads the backbone once per actor (one GPU each where the cluster has GPUs, CPU actors otherwise).
An actor parses its block with the same strict line parser as `datasets.iter_corpus` (so a bad line is the
same one-line `file:line: field` DatasetError, which pickles back to the driver), encodes it with
length-bucketed batches, and commits it as a `RepresentationShardWriter` chunk under `OUT/work/ray/block-NNNNNN/`
(chunk files, then the manifest, atomically: the commit point). A re-run after a killed driver or worker
starts Ray only for the blocks with no committed manifest. When every block is committed, the driver checks
counts (documents in = documents out, per block and in total) and duplicate ids across blocks, links the
block chunks in corpus order into `OUT/work/shard-000/` with one manifest, and lets the writer assemble
exactly the outputs of a single-process encode: FAISS dir, JsonVectorCollection, multi-vector store.

Nothing here imports Ray until a Ray encode runs.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from diffret_pyserini.atomic import atomic_write_json
from diffret_pyserini.cli import UserError
from diffret_pyserini.datasets import DatasetError, Document, corpus_files, document_lines, read_documents
from diffret_pyserini.encode.jobs import EncodeOptions, EncodeStats, encode_window, plan_window
from diffret_pyserini.fingerprint import fingerprint, path_digest
from diffret_pyserini.model.representations import REPRESENTATIONS

__all__ = ["EncoderRecipe", "Block", "scan_blocks", "encode_corpus_ray", "RayEncodeError"]

log = logging.getLogger(__name__)
RAY_DIR = Path("work") / "ray"
# Ray keeps Unix sockets under its temp dir: their paths must stay under the kernel's 107-byte limit.
_SOCKET_ROOM = 107 - len("/session_2026-12-01_17-18-32_412623_27489/sockets/plasma_store")


class RayEncodeError(UserError, RuntimeError):
    """A Ray encode that lost or duplicated documents (count in != count out)."""


@dataclass(frozen=True)
class EncoderRecipe:
    """How each actor builds its encoder (picklable; the driver never loads the model)."""

    model: str
    device: str = "auto"
    load: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    threads: int | None = None

    def build(self):
        """The encoder, with its lengths checked against the model's position limit."""
        from diffret_pyserini.model.spec import get_encoder

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        encoder = get_encoder(self.model, device=self.device, **self.load, **self.settings)
        encoder.check_lengths()
        return encoder

    def digest(self) -> dict:
        """What determines the vectors: the model files and the settings (not the device or thread count)."""
        from diffret_pyserini.model.backbones.load import resolve_path
        from diffret_pyserini.model.spec import parse_spec

        spec = parse_spec(self.model)
        return {"model": path_digest(resolve_path(spec.model)), "spec": self.model, "load": self.load,
                "settings": self.settings}


@dataclass(frozen=True)
class Block:
    """Documents [first_doc, first_doc + n_docs) of the corpus: `n_docs` non-blank lines of `path` from byte
    `offset`, the first of them on (1-based) line `first_line`."""

    index: int
    path: str
    offset: int
    first_line: int
    n_docs: int
    first_doc: int


def scan_blocks(corpus: str | os.PathLike, block_size: int) -> list[Block]:
    """Cut the corpus into blocks of `block_size` documents (a block never spans two files), from the bytes
    alone: `datasets.document_lines`, the documents every reader counts."""
    blocks: list[Block] = []
    first_doc = 0
    for path in corpus_files(corpus):
        start, n = (0, 0), 0
        for line in document_lines(path):
            start, n = (line if n == 0 else start), n + 1
            if n == block_size:
                blocks.append(Block(len(blocks), str(path), *start, n, first_doc))
                first_doc, n = first_doc + n, 0
        if n:
            blocks.append(Block(len(blocks), str(path), *start, n, first_doc))
            first_doc += n
    return blocks


def read_block(block: Block) -> tuple[list[Document], list[int]]:
    """The block's documents and their line numbers, read as `datasets.iter_corpus` reads them (duplicate ids
    within the block included; across blocks the driver checks them at the merge)."""
    pairs = list(read_documents(Path(block.path), block.offset, block.first_line, block.n_docs))
    return [doc for _, doc in pairs], [lineno for lineno, _ in pairs]


def block_dir(out_dir: Path, index: int) -> Path:
    return out_dir / RAY_DIR / f"block-{index:06d}"


def committed(out_dir: Path, block: Block, fp: str) -> bool:
    """Whether the block's chunk is committed (its manifest lists all its documents, with this fingerprint)."""
    from diffret_pyserini.encode.writers import RepresentationShardWriter

    manifest = RepresentationShardWriter.committed_manifest(block_dir(out_dir, block.index))
    return bool(manifest and manifest.get("fingerprint") == fp
                and sum(c["n_docs"] for c in manifest["chunks"]) == block.n_docs)


class BlockEncoder:
    """The Ray actor: loads the backbone once, then encodes and commits one block per row it is given."""

    def __init__(self, recipe: EncoderRecipe, out_dir: str, fp: str, options: EncodeOptions):
        self.out_dir, self.fp, self.options = Path(out_dir), fp, options
        self.representations = tuple(options.representations or REPRESENTATIONS)
        self.error: bytes = b""
        try:
            self.encoder = recipe.build()
        except Exception as err:  # noqa: BLE001 - a user error (bad setting, bad model folder) goes back as is
            self.error = _pickled_user_error(err)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "n_docs": [], "real_tokens": [], "padded_tokens": [], "batches": [],
                                "no_content": [], "error": []}
        for i in range(len(batch["index"])):
            block = Block(**{k: (str(batch[k][i]) if k == "path" else int(batch[k][i]))
                             for k in Block.__dataclass_fields__})
            error, stats = self.error, EncodeStats()
            if not error:
                try:
                    stats = self.encode_block(block)
                except Exception as err:  # noqa: BLE001 - see _pickled_user_error
                    error = _pickled_user_error(err)
            for key, value in (("index", block.index), ("n_docs", stats.docs), ("real_tokens", stats.real_tokens),
                               ("padded_tokens", stats.padded_tokens), ("batches", stats.batches),
                               ("no_content", stats.no_content), ("error", error)):
                out[key].append(value)
        return out

    def encode_block(self, block: Block) -> EncodeStats:
        from diffret_pyserini.encode.writers import RepresentationShardWriter

        docs, lines = read_block(block)
        if len(docs) != block.n_docs:
            raise RayEncodeError(f"{block.path}: block {block.index} from line {block.first_line} holds "
                                 f"{len(docs)} documents, the scan counted {block.n_docs}")
        o = self.options
        window = plan_window(self.encoder, docs, o.max_length, o.batch_size, o.max_tokens, o.length_buckets)
        arrays, stats = encode_window(self.encoder, window, self.representations, o.max_length)
        where = block_dir(self.out_dir, block.index)
        # ids and line numbers first: the manifest the writer writes last is the block's commit point
        atomic_write_json(where / "block.json", {**asdict(block), "ids": [d.docid for d in docs], "lines": lines})
        writer = RepresentationShardWriter(where, self.representations, chunk_size=block.n_docs,
                                           fingerprint=self.fp, overwrite=True, multi_dtype=o.multi_dtype)
        writer.write_batch([d.docid for d in docs], window.texts, **arrays)  # n_docs == chunk_size: commits
        return stats


def _pickled_user_error(err: Exception) -> bytes:
    """Our own errors (a bad line's DatasetError, a SettingError, ...) travel back to the driver pickled in
    the result row, so the user sees exactly the one line a single-process run prints; any other error is
    re-raised and reaches the driver as Ray's own task error, traceback and all."""
    import pickle

    if type(err).__module__.startswith("diffret_pyserini"):
        return pickle.dumps(err)
    raise err


def user_error(err: BaseException) -> BaseException | None:
    """The first of our own errors in a Ray exception's cause chain (a worker's DatasetError, SettingError...)."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if type(e).__module__.startswith("diffret_pyserini") and not type(e).__name__.startswith("Ray"):
            return e
        cause = getattr(e, "cause", None)
        stack += [c for c in (cause, e.__cause__, e.__context__) if isinstance(c, BaseException)]
    return None


def _temp_dir(out_dir: Path) -> Path:
    """Ray's session files under the output (removed afterwards), or under /tmp when that path is too long
    for Ray's Unix sockets."""
    wanted = (out_dir / RAY_DIR / "ray-tmp").resolve()
    if len(str(wanted)) <= _SOCKET_ROOM:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    return Path(tempfile.mkdtemp(prefix="diffret-ray-"))


def start_ray(address: str, out_dir: Path) -> tuple[dict, bool, Path | None]:
    """Connect to a cluster, or start a local instance ('local'); returns (cluster resources, whether this
    call connected (so it disconnects after), a temp dir to remove or None). An instance already up in this
    process (tests share one) is used as it is."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources(), False, None
    kwargs: dict = {"log_to_driver": False, "configure_logging": False}
    temp = None
    if address == "local":
        temp = _temp_dir(out_dir)
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=str(temp), **kwargs)
    else:
        ray.init(address=address, **kwargs)
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Data's per-dataset INFO lines: our log says it
    return ray.cluster_resources(), True, temp


def encode_corpus_ray(recipe: EncoderRecipe, corpus: str | Path, out_dir: str | Path,
                      options: EncodeOptions = EncodeOptions(), address: str = "local", workers: int | None = None,
                      stats: EncodeStats | None = None) -> dict:
    """Encode `corpus` on Ray (see the module docstring); returns {representation: path}, the outputs a
    single-process `encode_corpus` writes."""
    from diffret_pyserini.encode.writers import RepresentationShardWriter, ResumeError

    out, o = Path(out_dir), options
    representations = tuple(o.representations or REPRESENTATIONS)
    chunk_size, overwrite = o.chunk_size, o.overwrite
    fp = fingerprint(corpus=path_digest(corpus), recipe=recipe.digest(), max_length=o.max_length,
                     block_size=chunk_size, representations=sorted(representations), multi_dtype=o.multi_dtype)
    final = RepresentationShardWriter(out, representations, chunk_size=chunk_size, fingerprint=fp,
                                      overwrite=overwrite, multi_dtype=o.multi_dtype)
    if final.manifest.get("finalized"):
        return final.finalize()
    ray_manifest = out / RAY_DIR / "manifest.json"
    earlier = json.loads(ray_manifest.read_text(encoding="utf-8")).get("fingerprint") if ray_manifest.is_file() else fp
    if earlier != fp and not overwrite:
        raise ResumeError(f"{ray_manifest.parent}: existing blocks were made with other inputs or settings; "
                          "pass --overwrite to discard them")
    if overwrite or earlier != fp:
        shutil.rmtree(out / RAY_DIR, ignore_errors=True)
    blocks = scan_blocks(corpus, chunk_size)
    atomic_write_json(ray_manifest, {"fingerprint": fp, "block_size": chunk_size, "blocks": len(blocks),
                                     "docs": sum(b.n_docs for b in blocks)})
    todo = [b for b in blocks if not committed(out, b, fp)]
    log.info(f"{len(blocks) - len(todo)} of {len(blocks)} blocks already committed; {len(todo)} to encode")
    stats = stats if stats is not None else EncodeStats()
    if todo:
        _run_blocks(recipe, todo, out, address, workers, replace(o, representations=representations), fp, stats)
    return merge_blocks(out, blocks, representations, fp, chunk_size, o.multi_dtype)


def _run_blocks(recipe: EncoderRecipe, todo: list[Block], out: Path, address: str, workers: int | None,
                options: EncodeOptions, fp: str, stats: EncodeStats) -> None:
    import ray

    resources, connected, temp = start_ray(address, out)
    try:
        gpus = int(resources.get("GPU", 0))
        n = workers or (gpus if gpus else 2)
        n = max(1, min(n, len(todo)))
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": max(1, int(resources.get("CPU", 1)) // n)}
        if not gpus:
            recipe = EncoderRecipe(recipe.model, "cpu" if recipe.device == "auto" else recipe.device, recipe.load,
                                   recipe.settings, per_actor["num_cpus"])
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        rows = [asdict(b) for b in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        results = ds.map_batches(
            BlockEncoder, batch_size=1, concurrency=n, batch_format="numpy",
            fn_constructor_args=(recipe, str(out), fp, options), **per_actor)
        each = "1 GPU" if gpus else f"{per_actor['num_cpus']} CPU"
        log.info(f"encoding {len(todo)} blocks on {n} Ray actor(s), {each} each")
        done = []
        try:
            for row in results.iter_rows():
                if row["error"]:
                    import pickle

                    raise pickle.loads(row["error"])  # the worker's own one-line error; stops the dataset
                done.append(row)
        except Exception as err:  # noqa: BLE001 - a worker's own error is re-raised as it is
            mine = user_error(err)
            if mine is not None and mine is not err:
                raise mine from None
            raise
        for row in done:
            stats.add(EncodeStats(int(row["n_docs"]), int(row["batches"]), int(row["real_tokens"]),
                                  int(row["padded_tokens"]), int(row["no_content"])))
        expected = {b.index: b.n_docs for b in todo}
        got = {int(r["index"]): int(r["n_docs"]) for r in done}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            raise RayEncodeError(f"Ray returned {len(got)} of {len(expected)} blocks (missing {missing[:5]}) "
                                 "or wrong counts: no block may be dropped")
        log.info(stats.summary())
    finally:
        if connected:
            ray.shutdown()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def merge_blocks(out: Path, blocks: list[Block], representations: Sequence[str], fp: str, chunk_size: int,
                 multi_dtype: str) -> dict:
    """Check every block (committed, counts, ids unique), link their chunks in corpus order into the writer's
    work folder with one manifest, and assemble the final outputs."""
    from diffret_pyserini.encode.writers import RepresentationShardWriter

    def open_writer(folder: Path, overwrite: bool = False) -> RepresentationShardWriter:
        return RepresentationShardWriter(folder, representations, chunk_size=chunk_size, fingerprint=fp,
                                         multi_dtype=multi_dtype, overwrite=overwrite)

    seen: dict[str, int] = {}
    for block in blocks:
        if not committed(out, block, fp):
            raise RayEncodeError(f"block {block.index} ({block.path} from line {block.first_line}) is not "
                                 "committed: re-run to encode it")
        info = json.loads((block_dir(out, block.index) / "block.json").read_text(encoding="utf-8"))
        if len(info["ids"]) != block.n_docs:
            raise RayEncodeError(f"block {block.index}: {len(info['ids'])} ids for {block.n_docs} documents")
        for docid, line in zip(info["ids"], info["lines"]):
            if docid in seen:
                raise DatasetError(block.path, f"duplicate document id {docid!r}", line=line, field="id")
            seen[docid] = line
    writer = open_writer(out, overwrite=True)  # a merge killed before finalize left chunks: start the list over
    writer.adopt(open_writer(block_dir(out, block.index)) for block in blocks)
    if writer.completed_docs() != sum(b.n_docs for b in blocks):
        raise RayEncodeError(f"{writer.completed_docs()} documents encoded for {sum(b.n_docs for b in blocks)} "
                             "in the corpus")
    paths = writer.finalize()
    shutil.rmtree(out / RAY_DIR, ignore_errors=True)
    return paths
