"""The official GLUE metrics, named as Hugging Face `evaluate` names them, and macro-F1 for tasks of any size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def _as_float(x) -> float:
    return float(np.nan_to_num(x, nan=0.0))


METRICS = {
    "accuracy": lambda y, p: skm.accuracy_score(y, p),
    "f1": lambda y, p: skm.f1_score(y, p, zero_division=0.0),  # binary, positive class 1
    "macro_f1": lambda y, p: skm.f1_score(y, p, average="macro", zero_division=0.0),  # any number of classes
    "matthews_correlation": lambda y, p: skm.matthews_corrcoef(y, p),
    "pearson": lambda y, p: stats.pearsonr(y, p)[0],
    "spearmanr": lambda y, p: stats.spearmanr(y, p)[0],
}


def compute(names: Sequence[str], labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Each named metric of predictions (class ids, or scores for regression) against labels.

    A constant prediction has no correlation: reported as 0.0, as GLUE scorers do, not NaN.
    """
    if len(labels) != len(predictions):
        raise ValueError(f"expected one prediction per label, got {len(predictions)} for {len(labels)}")
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on an empty evaluation set")
    unknown = set(names) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; expected some of {sorted(METRICS)}")
    with np.errstate(all="ignore"):
        out = {}
        for name in names:
            if name in ("pearson", "spearmanr") and (np.ptp(predictions) == 0 or np.ptp(labels) == 0):
                out[name] = 0.0
            else:
                out[name] = _as_float(METRICS[name](labels, predictions))
    return out
