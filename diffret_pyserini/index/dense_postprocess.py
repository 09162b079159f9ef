"""Post-processing of dense vectors against the anisotropy of decoder LMs: fit on a corpus sample, apply anywhere.

Zero-shot decoders put nearly all document vectors in one narrow cone (mean pairwise cosine 0.995 for SmolLM2
run bidirectionally: a few "massive activation" dimensions carry the same large value for every text), so the
inner product ranks by what every document shares, not by what the query asks. Every fix here is one affine map
followed by L2 normalisation, `y = normalise((x - mean) @ matrix)`, fitted on document vectors only:

    center     matrix = I                                        (subtract the corpus mean)
    drop       matrix = I without the n dims of largest |mean|   (the outlier dimensions), centred
    abtt       matrix = I - U_n U_n^T                            ("all but the top": centre, remove n top PCs)
    whiten     matrix = U_d / sqrt(S_d + eps)                    (PCA whitening to d dims)

The same transform is applied to documents and queries (queries are never used to fit). A fitted transform is a
small `.npz`; `apply_to_faiss_dir` / `apply_to_encoded_queries` rewrite a FAISS dir (index + docid) and a
pre-encoded query dir (embedding.pkl) so Pyserini's FaissSearcher reads the result unchanged:

    python -m diffret_pyserini.index.dense_postprocess --faiss IDX/dense --queries IDX/queries/dense \
        --method center --out OUT     # OUT/dense, OUT/queries, OUT/transform.npz
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffret_pyserini.atomic import atomic_path, atomic_write_text
from diffret_pyserini.cli import InputError
from diffret_pyserini.index.faiss_dirs import read_faiss_dir, write_faiss_dir
from diffret_pyserini.model.representations import l2_normalize

__all__ = ["DenseTransform", "METHODS", "fit_transform", "mean_pairwise_cosine",
           "apply_to_faiss_dir", "apply_to_encoded_queries", "main"]

METHODS = ("none", "center", "drop", "abtt", "whiten")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero): representations.l2_normalize on a float32 array."""
    return l2_normalize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def mean_pairwise_cosine(x: np.ndarray) -> float:
    """Mean cosine over all pairs of distinct rows (how collapsed a set of vectors is; 1.0 = all the same)."""
    u = _unit_rows(x).astype(np.float64)
    n = len(u)
    s = u.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1))) if n > 1 else 1.0


@dataclass(frozen=True)
class DenseTransform:
    """y = normalise((x - mean) @ matrix); matrix None is the identity."""

    method: str
    mean: np.ndarray
    matrix: np.ndarray | None = None
    normalise: bool = True

    @property
    def dim(self) -> int:
        return len(self.mean) if self.matrix is None else self.matrix.shape[1]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform rows [N, H] (or one vector [H]) into float32 [N, dim]."""
        x = np.asarray(x, dtype=np.float32)
        y = x - self.mean
        if self.matrix is not None:
            y = y @ self.matrix
        y = _unit_rows(y) if self.normalise else y
        return np.ascontiguousarray(y, dtype=np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """One .npz (mean, matrix, method, normalise), written atomically."""
        arrays = {"mean": self.mean, "normalise": np.array(self.normalise), "method": np.array(self.method)}
        if self.matrix is not None:
            arrays["matrix"] = self.matrix
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DenseTransform":
        with np.load(path, allow_pickle=False) as data:
            return cls(method=str(data["method"]), mean=data["mean"],
                       matrix=data["matrix"] if "matrix" in data else None, normalise=bool(data["normalise"]))


def fit_transform(sample: np.ndarray, method: str = "center", n: int = 1, dims: int | None = None,
                  eps: float = 1e-6) -> DenseTransform:
    """Fit `method` on document vectors `sample` [N, H] (see the module docstring).

    `n`: dimensions dropped (drop) or principal components removed (abtt); `dims`: components kept by whiten
    (default min(N - 1, H), since a sample of N vectors spans at most N - 1 centred directions)."""
    x = np.asarray(sample, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise InputError(f"need a sample of at least 2 vectors [N, H], got shape {x.shape}")
    h = x.shape[1]
    if method == "none":
        return DenseTransform("none", np.zeros(h, np.float32))
    mean = x.mean(axis=0)
    if method == "center":
        return DenseTransform("center", mean.astype(np.float32))
    if method == "drop":
        if not 1 <= n < h:
            raise InputError(f"drop: n must be in [1, {h - 1}], got {n}")
        keep = np.sort(np.argsort(-np.abs(mean), kind="stable")[n:])
        return DenseTransform("drop", mean.astype(np.float32), np.eye(h, dtype=np.float32)[:, keep])
    # principal directions of the centred sample, largest variance first
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    variance = s ** 2 / (len(x) - 1)
    if method == "abtt":
        if not 1 <= n < len(vt):
            raise InputError(f"abtt: n must be in [1, {len(vt) - 1}], got {n}")
        top = vt[:n].T
        return DenseTransform("abtt", mean.astype(np.float32), (np.eye(h) - top @ top.T).astype(np.float32))
    if method == "whiten":
        d = dims or min(len(x) - 1, h)
        if not 1 <= d <= len(vt):
            raise InputError(f"whiten: dims must be in [1, {len(vt)}], got {d}")
        matrix = vt[:d].T / np.sqrt(variance[:d] + eps)
        return DenseTransform("whiten", mean.astype(np.float32), matrix.astype(np.float32))
    raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------ Pyserini files
def sample_rows(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Up to `size` rows drawn without replacement (all rows, in order, when there are fewer)."""
    if len(vectors) <= size:
        return vectors
    rng = np.random.default_rng(seed)
    return vectors[np.sort(rng.choice(len(vectors), size, replace=False))]


def apply_to_faiss_dir(src: str | os.PathLike, dst: str | os.PathLike, transform: DenseTransform) -> Path:
    """Write `dst` (index + docid, IndexFlatIP) with every vector of `src` transformed; swapped in whole."""
    docids, vectors = read_faiss_dir(src)
    return write_faiss_dir(dst, docids, [transform.apply(vectors)], transform.dim)


def apply_to_encoded_queries(src: str | os.PathLike, dst: str | os.PathLike, transform: DenseTransform) -> Path:
    """Rewrite a pre-encoded query dir (embedding.pkl: text, embedding) with transformed vectors."""
    import pandas as pd

    from diffret_pyserini.index.faiss_dirs import write_query_embeddings_pkl

    frame = pd.read_pickle(Path(src) / "embedding.pkl")
    vectors = transform.apply(np.stack(frame["embedding"].to_list()))
    return write_query_embeddings_pkl(dst, frame["text"].to_list(), vectors)


def main(argv: Sequence[str] | None = None) -> int:
    """Fit a transform on a FAISS dir's vectors and write the transformed FAISS dir and queries."""
    from diffret_pyserini.cli import OneLineArgumentParser, check_at_least, configure_logging, guarded, pop_debug

    args, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    parser = OneLineArgumentParser(prog="python -m diffret_pyserini.index.dense_postprocess",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--faiss", required=True, help="FAISS dir (index + docid) to fit on and transform")
    parser.add_argument("--queries", help="pre-encoded query dir (embedding.pkl) to transform alongside")
    parser.add_argument("--out", required=True, help="output folder: dense/, queries/, transform.npz")
    parser.add_argument("--method", default="center", choices=METHODS, help="see the module docstring")
    parser.add_argument("--n", type=int, default=1, help="drop: dims dropped; abtt: components removed")
    parser.add_argument("--dims", type=int, default=None, help="whiten: components kept")
    parser.add_argument("--sample", type=int, default=20000, help="documents the transform is fitted on")
    opts = parser.parse_args(args)
    configure_logging()

    def call():
        check_at_least("sample", opts.sample, 2)
        for name in ("faiss", "queries"):
            folder = getattr(opts, name)
            wanted = "index" if name == "faiss" else "embedding.pkl"
            if folder is not None and not (Path(folder) / wanted).is_file():
                raise InputError(f"--{name} {folder}: no {wanted} there")
        _, vectors = read_faiss_dir(opts.faiss)
        transform = fit_transform(sample_rows(vectors, opts.sample), opts.method, n=opts.n, dims=opts.dims)
        out = Path(opts.out)
        transform.save(out / "transform.npz")
        apply_to_faiss_dir(opts.faiss, out / "dense", transform)
        if opts.queries:
            apply_to_encoded_queries(opts.queries, out / "queries", transform)
        info = {"method": transform.method, "dim": transform.dim, "sample": min(len(vectors), opts.sample),
                "cosine_before": mean_pairwise_cosine(sample_rows(vectors, 2000)),
                "cosine_after": mean_pairwise_cosine(transform.apply(sample_rows(vectors, 2000)))}
        atomic_write_text(out / "transform.json", json.dumps(info, indent=2) + "\n")
        print(json.dumps(info))

    code, _ = guarded(call, debug)
    return code


if __name__ == "__main__":
    sys.exit(main())
