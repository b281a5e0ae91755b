"""What travels between server and clients, and the checks every reply must pass.

A payload is a flat dict of float32 numpy arrays: z and the head for SLaSh and JR-WARP, the
trainable weights for the baselines. The projections never travel; their fingerprint does.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from fedrp.classifier import Classifier

# Why a reply was refused; the run store records these names.
MISSING = "missing-arrays"
UNEXPECTED = "unexpected-arrays"
SHAPE = "shape-mismatch"
DTYPE = "dtype-mismatch"
NON_FINITE = "non-finite"
FINGERPRINT = "fingerprint-mismatch"
NORM = "norm-bound"
EXAMPLES = "bad-num-examples"
CLIENT_ERROR = "client-error"  # the client crashed: a bug, or a fault injected as one
CLIENT_REFUSED = "client-refused"  # the client declined the round (fedrp.refusals)
OUTLIER = "norm-outlier"
REASONS = (MISSING, UNEXPECTED, SHAPE, DTYPE, NON_FINITE, FINGERPRINT, NORM, EXAMPLES, CLIENT_ERROR, CLIENT_REFUSED, OUTLIER)
MIN_FOR_MEDIAN = 3  # replies a round needs before norm-ratio compares them: a median of two is one of them


def trainable_state(model: Classifier) -> dict[str, np.ndarray]:
    """The model's trainable values as float32 arrays, in a stable order."""
    tensors = model.state_vectors()
    return {k: tensors[k].numpy().astype(np.float32, copy=True) for k in sorted(tensors)}


def load_trainable_state(model: Classifier, state: dict[str, np.ndarray]) -> None:
    """Copy a payload into the model; names and shapes must match exactly."""
    model.load_state_vectors({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})


def nbytes(state: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in state.values()))


def update_norm(state: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """L2 norm of the change a reply proposes, over every array."""
    return float(np.sqrt(sum(np.sum((state[k].astype(np.float64) - reference[k]) ** 2) for k in reference)))


def refusal(
    state: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    fingerprint: str | None = None,
    expected_fingerprint: str | None = None,
    num_examples: float | None = None,
    norm_bound: float | None = None,
) -> tuple[str, str] | None:
    """(reason, detail) when a reply must not be aggregated, else None."""
    verdict = array_refusal(state, reference)
    if verdict is not None:
        return verdict
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        return FINGERPRINT, f"fingerprint {str(fingerprint)[:16]}... differs from the run's {expected_fingerprint[:16]}..."
    if num_examples is None or not np.isfinite(num_examples) or num_examples < 1:
        return EXAMPLES, f"num-examples {num_examples!r} is not a positive count"
    if norm_bound:
        norm = update_norm(state, reference)
        if norm > norm_bound:
            return NORM, f"update norm {norm:.4g} exceeds the bound {norm_bound:.4g}"
    return None


def array_refusal(state: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                  what: str = "") -> tuple[str, str] | None:
    """(reason, detail) when arrays do not have the reference's names, shapes and float32 type, or are not
    finite; `what` names a record other than the weights (SCAFFOLD's gradient) in the detail."""
    of = f"{what}: " if what else ""
    missing, extra = set(reference) - set(state), set(state) - set(reference)
    if missing:
        return MISSING, f"{of}missing {sorted(missing)}"
    if extra:
        return UNEXPECTED, f"{of}unexpected {sorted(extra)}"
    for k, ref in reference.items():
        if state[k].shape != ref.shape:
            return SHAPE, f"{of}{k} has shape {state[k].shape}, expected {ref.shape}"
        if state[k].dtype != np.float32:
            return DTYPE, f"{of}{k} has dtype {state[k].dtype}, expected float32"
    for k in reference:
        if not np.isfinite(state[k]).all():
            return NON_FINITE, f"{of}{k} holds {int((~np.isfinite(state[k])).sum())} non-finite values"
    return None


def update_stats(state: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                 aggregate: dict[str, np.ndarray] | None = None) -> dict[str, float | None]:
    """What a reply's update did, for the run store: its L2 norm apart for the head and for the rest (z, or a
    baseline's own weights), and its cosine with the round's aggregate update (None without one, or for a zero
    update)."""
    delta = {k: state[k].astype(np.float64) - reference[k] for k in reference}
    head = [k for k in delta if k.startswith("head.")]
    out: dict[str, float | None] = {"norm_vector": _squares(delta, [k for k in delta if k not in head]) ** 0.5,
                                    "norm_head": _squares(delta, head) ** 0.5, "cosine": None}
    if aggregate is not None:
        agg = {k: aggregate[k].astype(np.float64) - reference[k] for k in reference}
        scale = (_squares(delta, list(delta)) * _squares(agg, list(agg))) ** 0.5
        if scale > 0:
            out["cosine"] = float(sum(np.sum(delta[k] * agg[k]) for k in reference)) / scale
    return out


def _squares(arrays: dict[str, np.ndarray], keys: list[str]) -> float:
    return float(sum(np.sum(arrays[k] ** 2) for k in keys))


def norm_outliers(norms: list[float], ratio: float) -> dict[int, str]:
    """Index -> detail of each update whose norm exceeds `ratio` times the median of the round's.

    Honest clients under label skew differ in their update norms by a small factor; a scaled or
    runaway update differs by orders of magnitude. Off with ratio 0 or fewer than MIN_FOR_MEDIAN.
    """
    if not ratio or len(norms) < MIN_FOR_MEDIAN:
        return {}
    median = float(np.median(norms))
    return {i: f"update norm {n:.4g} is {n / median:.3g}x the round's median {median:.4g} (norm-ratio {ratio:g})"
            for i, n in enumerate(norms) if n > ratio * median}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failed))(:|$)")


_FLOWER_WRAPPED = re.compile(r"Exception \w+ occurred\. Message: (.*?)(?:'>)?$")  # Flower's ClientAppException


def error_line(text: str) -> str:
    """The last line of an error report that names an exception (else its last line), without
    terminal colour codes: what a store or a page shows of a client's crash or a failed process.
    A client's exception that Flower wrapped (ClientAppException) gives its own message."""
    lines = [ln.strip() for ln in _ANSI.sub("", text or "").splitlines() if ln.strip()]
    wrapped = [m.group(1) for ln in lines if (m := _FLOWER_WRAPPED.search(ln)) and m.group(1)]
    if wrapped:
        return wrapped[-1]
    named = [ln for ln in lines if _ERROR_LINE.match(ln)]
    return (named or lines or ["(no output)"])[-1]
