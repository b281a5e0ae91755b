"""The results page's rows: the cache's cells by seed at the code version the grid reports, and the numbers read
from them (simulations.harness.results_targets judges them; simulations.harness.results_page renders them)."""

from __future__ import annotations

from collections import Counter

from fedrp import glue
from simulations.harness.grid import cell_key
from simulations.harness.grid_config import Grid, cells

METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "matthews_correlation": "MCC", "pearson": "Pearson",
                "spearmanr": "Spearman"}

Key = tuple[str, str, float | None]  # (task, method, alpha); alpha None: a centralized reference
Seeded = dict[Key, dict[int, dict]]  # each cell's cached rows by data seed (0: the grid's own)


# ---- the cache's rows ---------------------------------------------------------------------

def seeded_rows(grid: Grid, done: dict[str, dict]) -> Seeded:
    """The cached rows of each cell by seed, at the code version the grid reports, so other versions' rows
    never mix in."""
    out: Seeded = {}
    for cell in cells(grid):
        row = done.get(cell_key(cell, grid.commit))
        if row is not None:
            out.setdefault((cell["task"], cell["method"], cell["alpha"]), {})[cell["seed"]] = row
    return out


def seed_zero(seeded: Seeded) -> dict[Key, dict]:
    """Each cell's seed-0 row: what the curves, bytes and times show."""
    return {key: runs[0] for key, runs in seeded.items() if 0 in runs}


def by_seed(task: str, rows: dict[int, dict] | None) -> dict[int, float]:
    """The first official metric of each finished seed."""
    out = {seed: first_metric(task, row) for seed, row in (rows or {}).items()}
    return {seed: value for seed, value in out.items() if value is not None}


def paired_ratios(seeded: Seeded, task: str, key: Key, reference: Key) -> list[float]:
    """The cell's first metric over the reference's, seed by seed, where both finished and the reference is positive."""
    values, yardstick = by_seed(task, seeded.get(key)), by_seed(task, seeded.get(reference))
    return [values[s] / yardstick[s] for s in sorted(values.keys() & yardstick.keys()) if yardstick[s] > 0]


def finished(row: dict | None) -> bool:
    """Whether a cached row has metrics to show (a failed cell has only its error)."""
    return row is not None and row.get("status") == "completed"


def first_metric(task: str, row: dict | None) -> float | None:
    """The task's first official metric after the last round, the one every ratio and target uses."""
    if not finished(row):
        return None
    return row["final_metrics"].get(glue.get_task(task).primary_metric)


# ---- numbers ------------------------------------------------------------------------------

def metric_header(task: str) -> str:
    """'acc', 'F1/acc', 'MCC', 'Pearson/Spearman': the official metrics, x100."""
    return "/".join(METRIC_NAMES.get(m, m) for m in glue.get_task(task).metrics)


def format_metrics(task: str, metrics: dict) -> str:
    """The official metrics x100, one decimal, in GLUE's order (MRPC: F1/accuracy)."""
    return "/".join(f"{100 * metrics[m]:.1f}" if m in metrics else "?" for m in glue.get_task(task).metrics)


def human_bytes(n: float) -> str:
    """7176 -> '7.0 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def span(values: list, fmt) -> str:
    """One value, or 'low–high' when the tasks differ (a regression head has one output)."""
    if not values:
        return "–"
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def upload(row: dict) -> float:
    """Bytes one accepted reply carries (the float32 trainable state): the most common per-round value. Every
    accepted reply of a cell has the same size; rows cached before simulations.harness.cells counted accepted bytes
    only divided all replies' bytes by the accepted count, which inflates the rounds that refused a reply."""
    return Counter(row["bytes_up_per_client"]).most_common(1)[0][0]


def trainable(row: dict) -> int:
    """Trainable parameters: a federated row's from its upload (every value float32), a reference's as reported."""
    return int(upload(row)) // 4 if "bytes_up_per_client" in row else row["params"]
