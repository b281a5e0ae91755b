"""The results page: docs/RESULTS.md and one PNG per task under docs/results/, from the grid's cache.

    python -m simulations.results_page --config simulations/grid.toml

The page opens with one table (every federated method at each alpha, then the centralized
references; a column per task), then the targets, the rounds federated slash needs to come
within 0.95x of centralized slash, the curves, the measured cell times, the setup and the
commands. Only the cache's rows for the code version the grid reports count (simulations.grid.cell_key:
the working tree's, or the commit that grid.toml pins); a cell without one reads "not run". Nothing here runs a model, and nothing depends on the clock:
the page is a function of the config and the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from fedrp import glue
from fedrp.federation import FedConfig
from fedrp.methods import RATES
from fedrp.metrics import compute as compute_metrics
from simulations.cells import CellCache
from simulations.code_version import ENTRY_POINTS
from simulations.grid import cell_key, changed_since_pin, versions
from simulations.grid_config import (
    DEFAULT_CONFIG,
    Grid,
    cells,
    data_dir_for,
    federated_options,
    load_config,
    task_label,
    write_qnli_split,
)
from simulations.intervals import LEVEL, describe, estimate, verdict
from simulations.qnli_split import read_rows

METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "matthews_correlation": "MCC", "pearson": "Pearson",
                "spearmanr": "Spearman"}
# Federated slash over centralized full finetuning (first official metric), per alpha, on these tasks;
# the other tasks (RTE, CoLA) are reported as measured.
RATIO_TARGETS = {1.0: 0.95, 0.1: 0.90}
RATIO_TASKS = ("sst2", "mrpc", "stsb", "qnli")
LORA_POINTS = 2.0  # slash at most this many points (x100) below LoRA on average, at the same alpha
BYTES_LORA_OVER_SLASH = 40.0  # LoRA's upload per client per round over slash's, at least
REACH = 0.95  # rounds for federated slash to reach this fraction of centralized slash...
ROUNDS_TARGET = {1.0: 30}  # ...at most this many rounds, per alpha

Key = tuple[str, str, float | None]  # (task, method, alpha); alpha None: a centralized reference
Seeded = dict[Key, dict[int, dict]]  # each cell's cached rows by data seed (0: the grid's own)
ONE_SEED = "†"  # marks a table entry that rests on one seed


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


def row_specs(grid: Grid) -> list[tuple[str, str, str, float | None]]:
    """(name, α column, method, alpha) of each table row: federated methods per alpha, then the references."""
    federated = [(m, f"{a:g}", m, a) for a in grid.alphas for m in grid.methods]
    refs = [(f"centralized {m}", "–", m, None) for m in grid.reference_options["methods"]] if grid.reference else []
    return federated + refs


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
    accepted reply of a cell has the same size; rows cached before simulations.cells counted accepted bytes
    only divided all replies' bytes by the accepted count, which inflates the rounds that refused a reply."""
    return Counter(row["bytes_up_per_client"]).most_common(1)[0][0]


def trainable(row: dict) -> int:
    """Trainable parameters: a federated row's from its upload (every value float32), a reference's as reported."""
    return int(upload(row)) // 4 if "bytes_up_per_client" in row else row["params"]


def split_rows(grid: Grid, task: str, split: str) -> int | None:
    """How many examples a split of the task's folder holds (None: the file is missing)."""
    t = glue.get_task(task)
    path = data_dir_for(grid, task) / t.folder / f"{split}.tsv"
    if task == "qnli" and not path.is_file():  # the split is not written yet: its sizes follow from the config
        source = grid.data_dir / "QNLI" / "dev.tsv"
        total = len(read_rows(source)) - 1 if source.is_file() else None
        return None if total is None else grid.qnli.held_out if split == "dev" else total - grid.qnli.held_out
    return len(read_rows(path)) - int(t.header) if path.is_file() else None


def _used(cap: int, total: int | None) -> str:
    """'2,000 of 3,668' (cap 0: all)."""
    if total is None:
        return "?"
    return f"{min(cap, total) if cap else total:,} of {total:,}"


# ---- the first table ----------------------------------------------------------------------

class Notes:
    """Failures numbered in the order the table meets them, so the table stays narrow."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> str:
        self.lines.append(f"[{len(self.lines) + 1}] {text}")
        return f"failed [{len(self.lines)}]"


def table_entry(grid: Grid, seeded: Seeded, key: Key, name: str, notes: Notes) -> str:
    """The metrics' mean over the finished seeds, ± the first metric's interval, a federated cell's ratio to
    centralized full (the mean of the seeds' paired ratios), † for one seed; 'not run', or a numbered failure."""
    task, _, alpha = key
    runs = seeded.get(key, {})
    if not runs:
        return "not run"
    where = name if alpha is None else f"{name}, α={alpha:g}"
    failures = [notes.add(f"{task_label(grid, task)} / {where}" + (f", seed {s}" if s else "") +
                          f": `{row.get('error') or row.get('status')}`")
                for s, row in sorted(runs.items()) if not finished(row)]
    done = [row["final_metrics"] for row in runs.values() if finished(row)]
    if not done:
        return ", ".join(failures)
    means = {m: sum(d[m] for d in done) / len(done) for m in done[0] if all(m in d for d in done)}
    spread = estimate([100 * v for v in by_seed(task, runs).values()])
    text = format_metrics(task, means) + ("" if spread.half is None else f" ±{spread.half:.1f}")
    ratios = paired_ratios(seeded, task, key, (task, "full", None)) if alpha is not None else []
    text += f" ({sum(ratios) / len(ratios):.2f}x)" if ratios else ""
    return text + (f" {ONE_SEED}" if spread.half is None else "") + "".join(f" {f}" for f in failures)


def results_table(grid: Grid, seeded: Seeded, notes: Notes) -> list[str]:
    """The page's opening table: a row per federated method and alpha, then the references."""
    rows = seed_zero(seeded)
    heads = [f"{task_label(grid, t)} {metric_header(t)}" for t in grid.tasks]
    lines = ["| method | α | " + " | ".join(heads) + " | trainable params | bytes up / client / round |",
             "|---|---:|" + "---:|" * len(heads) + "---:|---:|"]
    for name, alpha_text, method, alpha in row_specs(grid):
        keys = [(t, method, alpha) for t in grid.tasks]
        entries = [table_entry(grid, seeded, k, name, notes) for k in keys]
        done = [rows[k] for k in keys if finished(rows.get(k))]
        params = span([trainable(r) for r in done if "params" in r or "bytes_up_per_client" in r],
                      lambda v: f"{v:,}")
        sent = span([upload(r) for r in done], human_bytes) if alpha is not None else "–"
        lines.append(f"| {name} | {alpha_text} | " + " | ".join(entries) + f" | {params} | {sent} |")
    floors = [majority_metrics(grid, t) for t in grid.tasks]
    lines.append("| majority class | – | " + " | ".join("–" if m is None else format_metrics(t, m)
                                                        for t, m in zip(grid.tasks, floors, strict=True)) + " | 0 | – |")
    return lines


def majority_metrics(grid: Grid, task: str) -> dict | None:
    """Dev metrics of always answering the training set's most frequent label: where a model that
    collapses to one class under label skew lands (None: a regression task, or no data here)."""
    t = glue.get_task(task)
    folder = data_dir_for(grid, task)
    if t.is_regression or not (folder / t.folder / "dev.tsv").is_file():
        return None
    train = np.asarray(glue.load_split(t, "train", folder)["label"])
    dev = np.asarray(glue.load_split(t, "dev", folder)["label"])
    return compute_metrics(t.metrics, dev, np.full(len(dev), np.bincount(train).argmax()))


def table_legend(grid: Grid) -> str:
    """What the table's numbers are, said once under it."""
    seeds = grid.seeds
    replicated = (f"Cells of {', '.join(glue.get_task(t).folder for t in seeds.tasks)} for federated "
                  f"{' and '.join(seeds.methods)} and centralized {' and '.join(seeds.reference_methods)} run at data "
                  f"seeds 0, {', '.join(map(str, seeds.seeds))}: their entry is the mean over the finished seeds, "
                  "± the half-width of the first metric's 95% t interval; " if seeds.seeds else "")
    return ("Official dev metrics x100 after the last round (accuracy; MRPC F1/acc; CoLA MCC; STS-B "
            "Pearson/Spearman). " + replicated + f"{ONE_SEED}: one seed, no interval. In parentheses: the task's "
            "first metric over centralized full finetuning's (the mean of the seeds' paired ratios). "
            "Bytes: what one client uploads per round (its float32 trainable state, as its accepted replies carry "
            "it). Majority class: always answering the training set's most frequent label, where a model that "
            f"collapses to one class lands. `not run`: not in the cache for the code version reported "
            f"({version_text(grid)}).")


# ---- targets ------------------------------------------------------------------------------

def met(ok: bool) -> str:
    """The verdict of a target that has no spread (the bytes a method sends)."""
    return "met" if ok else "not met"


def ratio_target_line(grid: Grid, seeded: Seeded, task: str, alpha: float) -> str:
    """Federated slash over centralized full on one task at one alpha (paired by seed), against the alpha's floor."""
    head = f"- slash at α={alpha:g} on {task_label(grid, task)}: "
    key, full = (task, "slash", alpha), (task, "full", None)
    mean_of = {k: by_seed(task, seeded.get(k)) for k in (key, full)}
    if not all(mean_of.values()):
        why = [f"{name} {'not run' if not seeded.get(k) else 'failed'}"
               for name, k in (("federated slash", key), ("centralized full", full)) if not mean_of[k]]
        return head + f"not yet measured ({', '.join(why)})"
    s, f = (estimate(list(mean_of[k].values())).mean for k in (key, full))
    ratios = paired_ratios(seeded, task, key, full)
    floor = RATIO_TARGETS.get(alpha) if task in RATIO_TASKS else None
    if not ratios:
        return head + f"{100 * s:.1f} vs centralized full {100 * f:.1f}, no ratio (no seed of both, or the reference " \
                      "is not positive)"
    e = estimate(ratios)
    measured = f"{e.mean:.2f}x centralized full ({100 * s:.1f} vs {100 * f:.1f}), {describe(e, lambda v: f'{v:.2f}x')}"
    if floor is None:
        return head + measured + "; no target, reported as measured"
    return head + measured + f"; target ≥ {floor:.2f}x: {verdict(e, floor)}"


def lora_gap_line(grid: Grid, seeded: Seeded, alpha: float) -> str:
    """Slash minus LoRA at one alpha: per seed, the mean difference over the target tasks; then its interval
    over the seeds that every target task has (RTE and CoLA, near their majority class, stay out)."""
    tasks = [t for t in RATIO_TASKS if t in grid.tasks]
    head = f"- slash vs LoRA at α={alpha:g} (first metric x100, slash minus LoRA at the same seed, averaged over the tasks): "
    paired = {t: {s: 100 * (v - lo) for s, v in by_seed(t, seeded.get((t, "slash", alpha))).items()
                  if (lo := by_seed(t, seeded.get((t, "lora", alpha))).get(s)) is not None} for t in tasks}
    common = sorted(set.intersection(*(set(d) for d in paired.values()))) if tasks else []
    if not common:
        return head + "not yet measured (no seed has both methods on every target task)"
    e = estimate([sum(paired[t][s] for t in tasks) / len(tasks) for s in common])
    names = ", ".join(glue.get_task(t).folder for t in tasks)
    line = (head + f"{signed(e.mean)} over {names}, {describe(e, signed)}; target slash at most "
            f"{LORA_POINTS:g} points below: {verdict(e, -LORA_POINTS)}")
    more = [t for t in tasks if len(paired[t]) > len(common)]  # tasks with seeds the others lack
    seeds = sorted(set.intersection(*(set(paired[t]) for t in more))) if more else []
    if len(more) > 1 and len(seeds) > len(common):
        part = estimate([sum(paired[t][s] for t in more) / len(more) for s in seeds])
        line += (f". So far over the {len(more)} tasks with {len(seeds)} seeds "
                 f"({', '.join(glue.get_task(t).folder for t in more)}): {signed(part.mean)}, "
                 f"{describe(part, signed)} (not a verdict)")
    return line


def signed(points: float) -> str:
    """'+1.5', '-0.4', and '+0.0' rather than '-0.0' for a mean that rounds to zero."""
    return f"{round(points, 1) + 0.0:+.1f}"


def bytes_target_line(grid: Grid, rows: dict[Key, dict]) -> str:
    """LoRA's upload over slash's, over every task and alpha where both ran (a size: no seed changes it)."""
    ratios = [upload(rows[(t, "lora", a)]) / upload(rows[(t, "slash", a)]) for a in grid.alphas for t in grid.tasks
              if finished(rows.get((t, "lora", a))) and finished(rows.get((t, "slash", a)))]
    head = "- LoRA's bytes up per client per round over slash's: "
    if not ratios:
        return head + "not yet measured (no task and alpha has both cached)"
    return (head + f"{span(ratios, lambda v: f'{v:.0f}x')} over {len(ratios)} cells (a payload's size, the same at "
            f"every seed); target ≥ {BYTES_LORA_OVER_SLASH:g}x: {met(min(ratios) >= BYTES_LORA_OVER_SLASH)}")


def target_lines(grid: Grid, seeded: Seeded) -> list[str]:
    """Every target line, from what the cache holds."""
    rows = seed_zero(seeded)
    intro = (f"Federated slash against centralized full finetuning (first official metric): at least "
             f"{', '.join(f'{v:.2f}x at α={a:g}' for a, v in RATIO_TARGETS.items())} on "
             f"{', '.join(glue.get_task(t).folder for t in RATIO_TASKS)}; the other tasks are reported as measured. "
             f"Each line gives the mean over seeds and its {LEVEL:.0%} t interval; a target is met or not met only "
             "when the whole interval lies on one side of it, undecided when the interval crosses it or when one "
             "seed is all there is.")
    lines = [intro, ""]
    for alpha in grid.alphas:
        lines += [ratio_target_line(grid, seeded, task, alpha) for task in grid.tasks]
    lines += [lora_gap_line(grid, seeded, alpha) for alpha in grid.alphas]
    return [*lines, bytes_target_line(grid, rows)]


# ---- rounds to 0.95x centralized slash ----------------------------------------------------

def first_round_reaching(row: dict, metric: str, threshold: float) -> int | None:
    """The first evaluated round whose metric reaches the threshold (rounds count from 1; `{}`: not evaluated)."""
    for rnd, metrics in enumerate(row["metrics"], start=1):
        if metric in metrics and metrics[metric] >= threshold:
            return rnd
    return None


def rounds_entry(seeded: Seeded, task: str, alpha: float) -> tuple[str, str | None]:
    """The table entry (each seed's first round, paired with centralized slash at the same seed) and the verdict
    of the alpha's round target: met when every seed reaches it in time, not met when none does, undecided when
    the seeds disagree or there is one (None: no target, or nothing to judge)."""
    fed, central = seeded.get((task, "slash", alpha), {}), by_seed(task, seeded.get((task, "slash", None)))
    seeds = sorted(s for s in fed.keys() & central.keys() if finished(fed[s]))
    if not seeds:
        return "not yet measured", None
    if any(central[s] <= 0 for s in seeds):
        return "– (centralized slash ≤ 0)", None
    metric = glue.get_task(task).primary_metric
    reached = [first_round_reaching(fed[s], metric, REACH * central[s]) for s in seeds]
    text = ", ".join(f"not in {len(fed[s]['metrics'])}" if r is None else f"<= {r}" for s, r in zip(seeds, reached))
    limit = ROUNDS_TARGET.get(alpha)
    if limit is None:
        return text + (f" {ONE_SEED}" if len(seeds) == 1 else ""), None
    in_time = [r is not None and r <= limit for r in reached]
    if len(seeds) == 1:
        return f"{text} {ONE_SEED}", "undecided (one seed)"
    return text, "met" if all(in_time) else "not met" if not any(in_time) else "undecided"


def rounds_section(grid: Grid, seeded: Seeded) -> list[str]:
    """Per task and alpha, how soon federated slash gets within 0.95x of centralized slash."""
    every = grid.federated.get("eval-every", 1)
    lines = [(f"The first evaluated round at which federated slash's first official metric reaches {REACH:g} x "
              f"centralized slash's at the same seed, one entry per seed; the server evaluates every {every} rounds "
              f"and after the last, so `<= {3 * every}` means not yet at round {2 * every} but by round {3 * every}. "
              f"Target: at most {', '.join(f'{n} rounds at α={a:g}' for a, n in ROUNDS_TARGET.items())}, met when "
              f"every seed is in time, not met when none is, undecided otherwise; {ONE_SEED}: one seed."), "",
             "| task | " + " | ".join(f"α={a:g}" for a in grid.alphas) + " |", "|---|" + "---:|" * len(grid.alphas)]
    verdicts: dict[str, list[str]] = {}
    for task in grid.tasks:
        entries = []
        for alpha in grid.alphas:
            text, said = rounds_entry(seeded, task, alpha)
            entries.append(text)
            if alpha in ROUNDS_TARGET:
                verdicts.setdefault(said or "not yet measured", []).append(glue.get_task(task).folder)
        lines.append(f"| {task_label(grid, task)} | " + " | ".join(entries) + " |")
    if verdicts:
        said = "; ".join(f"{k}: {', '.join(v)}" for k, v in verdicts.items())
        lines += ["", f"Round target by task: {said}."]
    return lines


# ---- curves -------------------------------------------------------------------------------

def curve_points(row: dict, metric: str) -> tuple[list[int], list[float], list[float]]:
    """Evaluated rounds (round 0 first), the metric x100 there, and all clients' bytes uploaded by then."""
    rounds, values, sent, total = [], [], [], 0.0
    if metric in row.get("initial_metrics", {}):
        rounds, values, sent = [0], [100 * row["initial_metrics"][metric]], [0.0]
    for rnd, (metrics, up) in enumerate(zip(row["metrics"], row["bytes_up_total"]), start=1):
        total += up
        if metric in metrics:
            rounds.append(rnd)
            values.append(100 * metrics[metric])
            sent.append(total)
    return rounds, values, sent


def plot_task(grid: Grid, task: str, rows: dict[Key, dict], folder: Path) -> Path | None:
    """Metric vs round (left) and vs cumulative bytes up (right, log); None when no federated cell ran."""
    runs = [(m, a, rows[(task, m, a)]) for a in grid.alphas for m in grid.methods if finished(rows.get((task, m, a)))]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = glue.get_task(task).primary_metric
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(dict.fromkeys([*grid.methods, "full", "slash"]))}
    styles = {a: ("-", ":", "-.", (0, (5, 1)))[i % 4] for i, a in enumerate(grid.alphas)}
    fig, (ax_round, ax_bytes) = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for method, alpha, row in runs:
        rounds, values, sent = curve_points(row, metric)
        style = dict(color=colors[method], linestyle=styles[alpha], marker=".", label=f"{method}, α={alpha:g}")
        ax_round.plot(rounds, values, **style)
        ax_bytes.plot([b for b in sent if b > 0], [v for v, b in zip(values, sent) if b > 0], **style)
    for method in grid.reference_options["methods"] if grid.reference else []:
        value = first_metric(task, rows.get((task, method, None)))
        if value is not None:
            for ax in (ax_round, ax_bytes):
                ax.axhline(100 * value, color=colors[method], linestyle="--", linewidth=1.2,
                           label=f"centralized {method}")
    ax_bytes.set_xscale("log")
    ax_round.set_xlabel("round")
    ax_bytes.set_xlabel("cumulative bytes up, all clients (log)")
    ax_round.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} x100 (dev)")
    for ax in (ax_round, ax_bytes):
        ax.grid(alpha=0.3)
    handles, labels = ax_round.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(task_label(grid, task), fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if len(labels) <= 6 else 0.15, 1, 1))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.png"
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def curve_lines(grid: Grid, figures: dict[str, Path | None], out: Path) -> list[str]:
    """Each task's figure, linked relative to the page; the tasks without one are named."""
    lines = [("The first official metric on the dev examples at each evaluated round (round 0: before training; seed 0), "
              "against the round and against the bytes all clients have uploaded so far; dashed: the centralized "
              "references after training."), ""]
    for task in grid.tasks:
        path = figures.get(task)
        if path is not None:
            link = Path(os.path.relpath(path, out.parent)).as_posix()
            lines += [f"### {task_label(grid, task)}", "", f"![{task_label(grid, task)}]({link})", ""]
    skipped = [task_label(grid, t) for t in grid.tasks if figures.get(t) is None]
    if skipped:
        lines.append(f"No figure yet (no federated cell cached): {', '.join(skipped)}.")
    return lines


# ---- times --------------------------------------------------------------------------------

def time_lines(grid: Grid, seeded: Seeded) -> list[str]:
    """Each cached cell's measured seconds (seed 0; the other seeds' in one total), to plan the cells still missing."""
    rows = seed_zero(seeded)
    lines = [("Wall seconds per cell, process start-up included, on the machine that ran it (`failed`: the "
              "seconds until it failed; `–`: not cached)."), "",
             "| cell | α | " + " | ".join(glue.get_task(t).folder for t in grid.tasks) + " |",
             "|---|---:|" + "---:|" * len(grid.tasks)]
    total = 0.0
    for name, alpha_text, method, alpha in row_specs(grid):
        entries = []
        for task in grid.tasks:
            row = rows.get((task, method, alpha))
            seconds = None if row is None else row.get("seconds")
            total += seconds or 0.0
            entries.append("–" if seconds is None else f"{seconds:,.0f} s" + ("" if finished(row) else " failed")
                           + (" ‡" if row is not None and elsewhere(row) else "")
                           + (" §" if row is not None and row.get("cores_shared") else ""))
        lines.append(f"| {name} | {alpha_text} | " + " | ".join(entries) + " |")
    extra = [row for runs in seeded.values() for seed, row in runs.items() if seed]
    if extra:
        seconds = sum(row.get("seconds") or 0.0 for row in extra)
        shared = sum(bool(row.get("cores_shared")) for row in extra)
        total += seconds
        lines += ["", f"The other seeds' {len(extra)} cached cells: {seconds / 60:,.0f} min ({seconds / 3600:.1f} h)"
                  + (f", {shared} of them §." if shared else ".")]
    devices = other_devices(rows)
    notes = [f"‡ Ran on {', '.join(devices)}, six cells at a time; every other cell on the 2 CPU cores."] if devices else []
    if any(r.get("cores_shared") for r in [*rows.values(), *extra]):
        notes.append("§ Ran while other jobs shared the 2 cores (`cores_shared` in its cached row): its time is an "
                     "upper bound, not what the cell costs on an idle machine.")
    return [*lines, "", f"Total over the cached cells: {total / 60:,.0f} min ({total / 3600:.1f} h).", *notes]


# ---- setup and commands -------------------------------------------------------------------

def setup_lines(grid: Grid) -> list[str]:
    """What every cell shares and how the tasks were sized, from the config itself."""
    fed = grid.federated
    n_train, n_eval = fed.get("max-train-samples", 0), fed.get("max-eval-samples", 0)
    rates = {m: local_rates(grid, m) for m in grid.methods}
    names = {t: glue.get_task(t).folder for t in grid.tasks}
    trained = "; ".join(f"{names[t]} {_used(n_train, split_rows(grid, t, 'train'))}" for t in grid.tasks)
    evaluated = "; ".join(f"{names[t]} {_used(n_eval, split_rows(grid, t, 'dev'))}" for t in grid.tasks)
    lines = [
        (f"- Grid: tasks {', '.join(task_label(grid, t) for t in grid.tasks)}; Dirichlet α "
         f"{', '.join(f'{a:g}' for a in grid.alphas)}; methods {', '.join(grid.methods)}; "
         f"{len(cells(grid))} cells."),
        (f"- Federated cells: `python -m simulations.run` through the `{fed.get('engine', 'flower')}` engine, "
         f"{fed.get('num-server-rounds', '?')} rounds, evaluated every {fed.get('eval-every', 1)} rounds and after "
         f"the last; options {', '.join(f'`{k}={v}`' for k, v in fed.items())}."),
        f"- Local optimizers and rates: {', '.join(f'{m} {rate}' for m, rate in rates.items())}.",
        f"- Training examples per task (a seeded subset, the same for every cell of the task): {trained}.",
        f"- Dev examples evaluated: {evaluated}.",
    ]
    if grid.reference:
        lines.append(reference_line(grid))
    if grid.seeds.seeds:
        s = grid.seeds
        lines.append(f"- Seeds: the grid's cells run at data seed 0; {', '.join(glue.get_task(t).folder for t in s.tasks)} "
                     f"also at data seeds {', '.join(map(str, s.seeds))} for federated {', '.join(s.methods)} and "
                     f"centralized {', '.join(s.reference_methods)} (`data-seed`; what it draws at each code version: "
                     "docs/guide/results.md, Seeds and verdicts). Cells at one seed are marked †.")
    if "qnli" in grid.tasks:
        pinned = ("; the cells shown ran at the pinned commit, whose split (its `simulations.qnli_split`) has changed "
                  "since" if "simulations.qnli_split" in changed_since_pin(grid) else "")
        lines.append(f"- {task_label(grid, 'qnli')}: only QNLI's dev set is available here, so it is split (seed "
                     f"{grid.qnli.seed}), by groups of rows that share a question or a sentence and keeping each "
                     f"label's share, into a federated training part and a held-out evaluation part, written to "
                     f"`{grid.qnli.dir}` (`simulations.qnli_split.split_qnli`){pinned}. Its numbers are not comparable "
                     "with the official QNLI dev results.")
    lines.append(f"- Code versions {version_text(grid)}: sha256 of the docstring-free syntax trees of the project modules "
                 f"that the entry points import ({', '.join(f'`{m}`' for e in ENTRY_POINTS.values() for m in e)}; "
                 "`simulations.code_version`); " + ("the config pins the commit whose code they are, and the grid "
                 "refuses to run cells under other result code" if grid.commit else
                 "a change there makes that kind of cell `not run` again") + ".")
    lines.append(f"- Estimated time of the whole grid: {grid.estimate or 'not stated'}.")
    return lines


def local_rates(grid: Grid, method: str) -> str:
    """A method's local optimizer and rate, with the alphas (and tasks) it applies at where overrides differ."""
    by_rate: dict[str, list[str]] = {}
    for alpha in grid.alphas:
        by_task: dict[str, list[str]] = {}
        for task in grid.tasks:
            by_task.setdefault(local_rate(method, federated_options(grid, method, alpha, task)), []).append(task)
        for rate, tasks in by_task.items():
            where = "" if len(by_task) == 1 else f" on {', '.join(task_label(grid, t) for t in tasks)}"
            by_rate.setdefault(rate, []).append(f"{alpha:g}{where}")
    if len(by_rate) == 1:
        return next(iter(by_rate))
    return "; ".join(f"{rate} at α {' and '.join(alphas)}" for rate, alphas in by_rate.items())


def local_rate(method: str, options: dict) -> str:
    """A method's local optimizer and rate in the grid's cells, as the clients' FedConfig resolves them."""
    cfg = FedConfig(method=method, lr=options.get("lr", 0.0), local_optimizer=options.get("local-optimizer", ""))
    return f"{'SGD (momentum 0.9)' if cfg.optimizer == 'sgd' else 'AdamW'} {cfg.learning_rate:g}"


def version_text(grid: Grid) -> str:
    """The reported code version of each kind of cell, for the page's text."""
    reported = versions(grid)
    return ", ".join(f"{kind} `{reported[kind]}`" for kind in ENTRY_POINTS)


def pin_text(grid: Grid) -> str:
    """Which code the numbers are of, when the config pins a commit, and what has changed in it since."""
    if grid.commit is None:
        return ""
    changed = changed_since_pin(grid)
    since = (f"the result code has changed since in {', '.join(f'`{m}`' for m in changed)}; "
             "rerun the grid at a new pin to measure it" if changed else
             "the result code is unchanged since")
    return f"\nThe numbers are of the result code at commit `{grid.commit}` ([grid] commit in the config); {since}."


def reference_line(grid: Grid) -> str:
    """The centralized references' command, epochs and rates."""
    opts = {k: v for k, v in grid.reference_options.items() if k != "methods"}
    methods = grid.reference_options["methods"]
    rates = ", ".join(f"{m} {opts.get('lr') or RATES[m].centralized:g}" for m in methods)
    shown = ", ".join(f"`{k}={v}`" for k, v in opts.items() if k not in ("epochs", "lr"))
    return (f"- Centralized references: `fedrp train --method M` for M in {', '.join(methods)}, "
            f"{opts.get('epochs', 1.0):g} epochs, learning rates {rates} (linear decay after warmup), other "
            f"options {shown or 'none'}; trained on the same subset and evaluated on the same dev examples as the "
            "federated cells.")


def command_lines(grid: Grid, seeded: Seeded, argv: list[str]) -> list[str]:
    """How to run the cells still missing and rebuild this page."""
    base = f"python -m simulations.grid --config {grid.config}"
    all_cells = cells(grid)
    absent = [c for c in all_cells if c["seed"] not in seeded.get((c["task"], c["method"], c["alpha"]), {})]
    rows = [row for runs in seeded.values() for row in runs.values()]
    failed = [r for r in rows if not finished(r)]
    ran = sorted({r["command"] for r in rows if r.get("command")})
    lines = ["```", f"# every cell not yet cached ({len(absent)} of {len(all_cells)}); cached cells are skipped:", base,
             "# which cells are cached:", f"{base} --dry-run"]
    tasks = [t for t in grid.tasks if any(c["task"] == t for c in absent)]
    if tasks:
        lines.append("# or one task at a time (its references included):")
        lines += [f"{base} --only task={t}   # {sum(c['task'] == t for c in absent)} missing" for t in tasks]
    seeds = sorted({c["seed"] for c in absent} - {0})
    if seeds:
        lines.append("# or one data seed at a time (the cells [seeds] names):")
        lines += [f"{base} --only seed={s}   # {sum(c['seed'] == s for c in absent)} missing" for s in seeds]
    if failed:
        lines += [f"# the failed cells again ({len(failed)}):", f"{base} --retry-failed"]
    if ran:
        lines += ["# the grid commands that ran the cells shown here:", *ran]
    return [*lines, "# this page:", shlex.join(["python", "-m", "simulations.results_page", *argv]), "```"]


# ---- the page -----------------------------------------------------------------------------

def intro(grid: Grid, done: dict[str, dict], seeded: Seeded, cache: Path) -> str:
    """How the page was made and how much of the grid the cache holds."""
    sha = hashlib.sha256(grid.config.read_bytes()).hexdigest()[:16]
    rows = {(*key, seed): row for key, runs in seeded.items() for seed, row in runs.items()}
    failed = sum(not finished(r) for r in rows.values())
    other = len(done) - len(rows)
    return (f"Generated by `python -m simulations.results_page` from the cache `{cache}` and the config "
            f"`{grid.config}` (sha256 {sha}…); do not edit by hand.\n"
            f"{len(rows)} of {len(cells(grid))} cells are in the cache for the code versions reported "
            f"({version_text(grid)}; {failed} failed); {other} cached rows of other code versions or settings are "
            "not shown." + pin_text(grid) + ran_elsewhere(seed_zero(seeded)))


def elsewhere(row: dict) -> bool:
    """Whether a cell ran on a machine other than the CPUs (its `device`; references say "cpu")."""
    return row.get("device") not in (None, "", "cpu")


def other_devices(rows: dict[Key, dict]) -> list[str]:
    """The machines other than the CPUs that ran cached cells."""
    return sorted({row["device"] for row in rows.values() if elsewhere(row)})


def ran_elsewhere(rows: dict[Key, dict]) -> str:
    """Which cells a machine other than the CPUs ran, said in the page's opening."""
    away = sorted(f"{t} {m} α={a:g}" for (t, m, a), row in rows.items() if elsewhere(row) and a is not None)
    devices = other_devices(rows)
    if not away:
        return ""
    return (f"\n{len(away)} federated cells ran on {', '.join(devices)} through the same in-process engine "
            f"(marked ‡ under Times): {', '.join(away)}.")


def page(grid: Grid, done: dict[str, dict], cache: Path, figures: dict[str, Path | None], out: Path,
         argv: list[str]) -> str:
    """docs/RESULTS.md: the table first, then targets, rounds, curves, times, setup and commands."""
    seeded = seeded_rows(grid, done)
    notes = Notes()
    lines = ["# Results: the GLUE grid", "", intro(grid, done, seeded, cache), "", *results_table(grid, seeded, notes),
             "", table_legend(grid)]
    if notes.lines:
        lines += ["", "Failed cells (the error's last line):", "", *(f"- {n}" for n in notes.lines)]
    lines += ["", "## Targets", "", *target_lines(grid, seeded),
              "", f"## Rounds to {REACH:g}x centralized slash", "", *rounds_section(grid, seeded),
              "", "## Curves", "", *curve_lines(grid, figures, out),
              "", "## Cell times", "", *time_lines(grid, seeded),
              "", "## Setup", "", *setup_lines(grid),
              "", "## Commands", "", *command_lines(grid, seeded, argv), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cache", type=Path, default=None, help="default: the config's [grid] cache")
    parser.add_argument("--data-dir", default=None, help="GLUE folder, for the training-set sizes")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    try:
        grid = load_config(args.config, args.data_dir)
        versions(grid)  # a pinned commit that git lacks (a shallow clone): one line
        if "qnli" in grid.tasks:  # the split sits in gitignored scratch; QNLI's majority-class row reads it
            write_qnli_split(grid)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    cache = args.cache or grid.cache
    done = CellCache(cache).done
    rows = seed_zero(seeded_rows(grid, done))
    figures = {task: plot_task(grid, task, rows, args.figures) for task in grid.tasks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(grid, done, cache, figures, args.out, argv))
    print(f"wrote {args.out} and {sum(p is not None for p in figures.values())} figures in {args.figures}")


if __name__ == "__main__":
    main()
