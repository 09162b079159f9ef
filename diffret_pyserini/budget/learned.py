"""The small learned budget selector: one ridge regression per candidate Kq, predicting a query's effectiveness
at that Kq from its label-free features; a query gets the Kq with the highest prediction.

It is trained on pseudo-queries made from the corpus (document titles; `train.mine.pseudo_queries`), whose
"relevant" document is the one the title came from, so no test topic or judgement is ever read. Closed-form
(no randomness), so the same training data always gives the same selector; saved as JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from diffret_pyserini.atomic import atomic_write_text
from diffret_pyserini.budget.select import argmax_k
from diffret_pyserini.budget.signals import SLOT_FEATURES

__all__ = ["FEATURES", "feature_vector", "Selector", "fit_selector"]

FEATURES = (*SLOT_FEATURES, "nqc", "agree")


def feature_vector(slot: Mapping[str, float], nqc_value: float, agree_value: float) -> list[float]:
    """A (query, Kq) pair's features, in FEATURES order."""
    return [float(slot[name]) for name in SLOT_FEATURES] + [float(nqc_value), float(agree_value)]


@dataclass
class Selector:
    """Standardisation and one linear model (weights, bias) per Kq."""

    mean: list[float]
    std: list[float]
    models: dict[int, tuple[list[float], float]]

    def predict(self, features: Mapping[int, Mapping[str, list[float]]]) -> dict[str, int]:
        """{qid: Kq} from {Kq: {qid: feature vector}} (only the Kq the selector was trained for)."""
        ks = [k for k in sorted(features) if k in self.models]
        qids = list(features[ks[0]])
        mean, std = np.asarray(self.mean), np.asarray(self.std)
        choice = {}
        for q in qids:
            scores = {}
            for k in ks:
                w, b = self.models[k]
                x = (np.asarray(features[k][q]) - mean) / std
                scores[k] = round(float(x @ np.asarray(w) + b), 12)  # rounded: ties stay ties across platforms
            choice[q] = argmax_k(scores)
        return choice

    def save(self, path: str | Path) -> Path:
        data = {"features": list(FEATURES), "mean": self.mean, "std": self.std,
                "models": {str(k): {"weights": w, "bias": b} for k, (w, b) in self.models.items()}}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Selector":
        data = json.loads(Path(path).read_text())
        return cls(data["mean"], data["std"], {int(k): (m["weights"], m["bias"]) for k, m in data["models"].items()})


def fit_selector(features: Mapping[int, Mapping[str, list[float]]], targets: Mapping[int, Mapping[str, float]],
                 ridge: float = 1.0) -> Selector:
    """Fit per-Kq ridge regressions of `targets[k][qid]` (e.g. nDCG@10 of a pseudo-query) on its features."""
    ks = sorted(features)
    rows = np.asarray([features[k][q] for k in ks for q in features[k]], dtype=np.float64)
    mean = rows.mean(0)
    std = rows.std(0)
    std[std == 0] = 1.0
    models = {}
    for k in ks:
        qids = [q for q in features[k] if q in targets[k]]
        x = (np.asarray([features[k][q] for q in qids]) - mean) / std
        y = np.asarray([targets[k][q] for q in qids], dtype=np.float64)
        bias = float(y.mean()) if len(y) else 0.0
        a = x.T @ x + ridge * np.eye(x.shape[1])
        w = np.linalg.solve(a, x.T @ (y - bias)) if len(y) else np.zeros(x.shape[1])
        models[k] = ([float(v) if math.isfinite(v) else 0.0 for v in w], bias)
    return Selector([float(v) for v in mean], [float(v) for v in std], models)
