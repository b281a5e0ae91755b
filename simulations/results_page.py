"""The results page: docs/RESULTS.md and one PNG per task under docs/results/, from the grid's cache.

    python -m simulations.results_page --config simulations/grid.toml

Every cell of the config appears: its official dev metric after the last round when the cache
has it, "not run: <reason>" when it has not, and "failed" with the error's last line when its
process failed. Nothing here runs a model; the numbers are the cache's (simulations/grid.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
from collections import defaultdict
from pathlib import Path

from fedrp import glue
from simulations.bench_federation import load_cache
from simulations.grid import (
    DEFAULT_CONFIG,
    Grid,
    cell_key,
    cells,
    data_dir_for,
    load_config,
    read_rows,
    task_label,
)

METRIC_NAMES = {"accuracy": "acc", "f1": "F1", "matthews_correlation": "MCC", "pearson": "Pearson",
                "spearmanr": "Spearman"}


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
    """One value, or 'low–high' when the tasks differ (e.g. a regression head has one output)."""
    if not values:
        return "–"
    low, high = min(values), max(values)
    return fmt(low) if low == high else f"{fmt(low)}–{fmt(high)}"


def finished(row: dict | None) -> bool:
    return row is not None and row.get("status") == "completed"


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
    """'1,000 of 3,668' (cap 0: all)."""
    if total is None:
        return "?"
    return f"{min(cap, total) if cap else total:,} of {total:,}"


# ---- tables -------------------------------------------------------------------------------

class Notes:
    """Failures numbered in the order the tables meet them."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str) -> str:
        self.lines.append(f"[{len(self.lines) + 1}] {text}")
        return f"failed [{len(self.lines)}]"


def table_entry(grid: Grid, task: str, cell: dict, row: dict | None, reason: str, notes: Notes) -> str:
    """A table entry: the metrics, 'not run: reason', or a numbered failure."""
    if row is None:
        return f"not run: {reason}"
    if not finished(row):
        where = "centralized reference" if cell["kind"] == "reference" else f"{cell['method']}, α={cell['alpha']:g}"
        return notes.add(f"{task_label(grid, task)} / {where}: `{row.get('error') or row.get('status')}`")
    return format_metrics(task, row["final_metrics"])


def results_table(grid: Grid, done: dict, reason: str, notes: Notes) -> list[str]:
    """Method x alpha rows, one column per task, then parameters and bytes; the centralized reference last."""
    heads = [f"{task_label(grid, t)} {metric_header(t)}" for t in grid.tasks]
    lines = ["| method | α | " + " | ".join(heads) + " | trainable params | bytes up / client / round |",
             "|---|---:|" + "---:|" * len(heads) + "---:|---:|"]
    by_key = {cell_key(c): c for c in cells(grid)}
    for alpha in grid.alphas:
        for method in grid.methods:
            keys = [k for k, c in by_key.items() if c["kind"] == "federated" and c["method"] == method
                    and c["alpha"] == alpha]
            lines.append(_row(grid, [by_key[k] for k in keys], done, reason, notes, method, f"{alpha:g}"))
    if grid.reference:
        refs = [c for c in by_key.values() if c["kind"] == "reference"]
        epochs = refs[0]["options"].get("epochs", 1.0) if refs else 1.0
        name = f"{grid.reference_options['method']}, centralized ({epochs:g} epochs)"
        lines.append(_row(grid, refs, done, reason, notes, name, "–"))
    return lines


def _row(grid: Grid, row_cells: list[dict], done: dict, reason: str, notes: Notes, name: str, alpha: str) -> str:
    by_task = {c["task"]: c for c in row_cells}
    rows = {t: done.get(cell_key(c)) for t, c in by_task.items()}
    entries = [table_entry(grid, t, by_task[t], rows[t], reason, notes) for t in grid.tasks]
    ok = [r for r in rows.values() if finished(r)]
    params = span([r["params"] for r in ok], lambda v: f"{v:,}")
    federated = [r for r in ok if r.get("kind") == "federated"]
    sent = span([max(r["bytes_up_per_client"]) for r in federated], human_bytes) if federated else "–"
    return f"| {name} | {alpha} | " + " | ".join(entries) + f" | {params} | {sent} |"


def time_table(grid: Grid, done: dict) -> list[str]:
    """Measured wall seconds per cell (the whole process, start-up included), by method and task."""
    seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in cells(grid):
        row = done.get(cell_key(cell))
        if finished(row) and "seconds" in row:
            name = "reference" if cell["kind"] == "reference" else cell["method"]
            seconds[(name, cell["task"])].append(row["seconds"])
    if not seconds:
        return ["No cell has run yet."]
    names = [*grid.methods, *(["reference"] if grid.reference else [])]
    lines = ["| cell | " + " | ".join(task_label(grid, t) for t in grid.tasks) + " |", "|---|" + "---:|" * len(grid.tasks)]
    for name in names:
        values = [seconds.get((name, t)) for t in grid.tasks]
        lines.append(f"| {name} | " + " | ".join(f"{sum(v) / len(v):.0f} s ({len(v)})" if v else "–" for v in values)
                     + " |")
    return lines


# ---- plots --------------------------------------------------------------------------------

def plot_task(grid: Grid, task: str, done: dict, folder: Path) -> Path | None:
    """Metric vs. round and vs. cumulative uplink bytes, one row per alpha that has run; None when nothing ran."""
    runs = {(c["method"], c["alpha"]): done[cell_key(c)] for c in cells(grid)
            if c["task"] == task and c["kind"] == "federated" and finished(done.get(cell_key(c)))}
    alphas = [a for a in grid.alphas if any(alpha == a for _, alpha in runs)]
    if not alphas:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = glue.get_task(task).primary_metric
    ref = next((done[cell_key(c)] for c in cells(grid) if c["task"] == task and c["kind"] == "reference"
                and finished(done.get(cell_key(c)))), None)
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(grid.methods)}
    fig, axes = plt.subplots(len(alphas), 2, figsize=(11, 0.6 + 3.0 * len(alphas)), squeeze=False, sharex="col")
    for (ax_round, ax_bytes), alpha in zip(axes, alphas):
        for method in grid.methods:
            if (method, alpha) in runs:
                _curves(ax_round, ax_bytes, runs[(method, alpha)], metric, colors[method], method)
        for ax in (ax_round, ax_bytes):
            if ref is not None:
                ax.axhline(100 * ref["final_metrics"][metric], color="black", linestyle="--", linewidth=1,
                           label=f"{ref['method']}, centralized")
            ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} x100 (dev)")
            ax.set_title(f"{task_label(grid, task)}, α={alpha:g}", fontsize=9)
            ax.grid(alpha=0.3)
        ax_bytes.set_xscale("log")
    axes[-1][0].set_xlabel("round")
    axes[-1][1].set_xlabel("cumulative bytes up, all clients (log)")
    labels = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    fig.legend(labels.values(), labels.keys(), loc="upper center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (0.6 + 3.0 * len(alphas))))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(ax_round, ax_bytes, row: dict, metric: str, color, label: str) -> None:
    """One run's metric from round 0 on, and from round 1 on against the bytes sent so far."""
    ys = [100 * m[metric] for m in row["metrics"]]
    ax_round.plot(range(len(ys) + 1), [100 * row["initial_metrics"][metric], *ys], marker=".", color=color, label=label)
    cumulative = [sum(row["bytes_up_total"][: i + 1]) for i in range(len(ys))]
    ax_bytes.plot(cumulative, ys, marker=".", color=color, label=label)


# ---- the page -----------------------------------------------------------------------------

def setup_lines(grid: Grid) -> list[str]:
    """What every cell shares and what was sized down, from the config itself."""
    fed = grid.federated
    n_train, n_eval = fed.get("max-train-samples", 0), fed.get("max-eval-samples", 0)
    rates = (f"per-method rates {grid.federated_lr}" if grid.federated_lr else
             "each method's federated default learning rate (`fedrp.methods.FEDERATED_LR`)")
    lines = [
        (f"- Tasks: {', '.join(task_label(grid, t) for t in grid.tasks)}; Dirichlet α: "
         f"{', '.join(f'{a:g}' for a in grid.alphas)}; methods: {', '.join(grid.methods)}."),
        f"- Federated cells: `python -m simulations.run` with {', '.join(f'`{k}={v}`' for k, v in fed.items())}; {rates}.",
        ("- Metric: the server's evaluation of the global model on the task's dev examples after the last "
         "round (official GLUE metrics x100: accuracy; MRPC F1/accuracy; CoLA Matthews corr.; STS-B Pearson/Spearman)."),
        ("- Bytes: what one client sends per round (the float32 trainable state); the plots' x axis sums "
         "every accepted client's upload over the rounds."),
    ]
    if grid.reference:
        opts = ", ".join(f"`{k}={v}`" for k, v in grid.reference_options.items() if k != "method")
        lines.append(f"- Reference: `fedrp train --method {grid.reference_options['method']}` ({opts}) on the same "
                     "training subset, evaluated on the same dev examples.")
    if "qnli" in grid.tasks:
        lines.append(f"- {task_label(grid, 'qnli')}: only QNLI's dev set is available here, so it is split by a "
                     f"seeded hash (seed {grid.qnli.seed}), stratified by label, into a federated training part and "
                     f"a held-out evaluation part, written to `{grid.qnli.dir}` (`simulations.grid.split_qnli`). "
                     "Its numbers are not comparable with the official QNLI dev results.")
    names = {t: glue.get_task(t).folder for t in grid.tasks}
    trained = "; ".join(f"{names[t]} {_used(n_train, split_rows(grid, t, 'train'))}" for t in grid.tasks)
    evaluated = "; ".join(f"{names[t]} {_used(n_eval, split_rows(grid, t, 'dev'))}" for t in grid.tasks)
    lines.append(f"- Sized down for 2 CPU cores: training examples per task {trained} (a seeded subset, the same for "
                 f"every method and the reference); the server evaluates every round on the first dev examples: "
                 f"{evaluated}; {fed.get('num-server-rounds', 10)} rounds of {fed.get('local-epochs', 1.0):g} local "
                 f"epoch. Estimated time of the whole grid: {grid.estimate or 'not stated'}.")
    return lines


def commands(grid: Grid, done: dict, argv: list[str]) -> list[str]:
    """The exact commands behind the page: the grid's (as the cache recorded them) and this one."""
    shown = [done[k] for k in map(cell_key, cells(grid)) if k in done]
    ran = sorted({row["command"] for row in shown if row.get("command")})
    full = f"python -m simulations.grid --config {grid.config}"
    lines = ["```", "# the whole grid (cells already in the cache are skipped):", full]
    if ran:
        lines += ["# the grid commands whose cells this page shows:", *ran]
    lines += ["# this page:", shlex.join(["python", "-m", "simulations.results_page", *argv]), "```"]
    return lines


def page(grid: Grid, done: dict, cache: Path, figures: dict[str, Path | None], out: Path, argv: list[str],
         reason: str) -> str:
    """docs/RESULTS.md."""
    notes = Notes()
    table = results_table(grid, done, reason, notes)
    sha = hashlib.sha256(grid.config.read_bytes()).hexdigest()[:16]
    total = len(cells(grid))
    ran = sum(finished(done.get(cell_key(c))) for c in cells(grid))
    intro = (f"Generated by `simulations/results_page.py` from the cache `{cache}` of `simulations/grid.py`, "
             f"config `{grid.config}` (sha256 {sha}…). {ran} of {total} cells have run; every other cell says why "
             "not. Do not edit by hand: rerun the commands below.")
    lines = ["# Results: the GLUE grid", "", intro, "", "## Commands", "", *commands(grid, done, argv),
             "", "## Setup", "", *setup_lines(grid), "", "## Dev metrics after the last round", "", *table, ""]
    if notes.lines:
        lines += ["Failures (the error's last line):", "", *(f"- {n}" for n in notes.lines), ""]
    lines += ["## Curves", ""]
    for task in grid.tasks:
        path = figures.get(task)
        if path is None:
            lines.append(f"- {task_label(grid, task)}: no figure, no federated cell has run.")
        else:
            link = Path(os.path.relpath(path, out.parent)).as_posix()
            lines += [f"### {task_label(grid, task)}", "", f"![{task_label(grid, task)}]({link})", ""]
    timing = ("Measured seconds per cell (mean, number of cells), process start-up included, "
              "on the machine that ran it:")
    lines += ["", "## Time", "", timing, "", *time_table(grid, done), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--cache", type=Path, default=None, help="default: the config's [grid] cache")
    parser.add_argument("--data-dir", default=None, help="GLUE folder, for the training-set sizes")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    parser.add_argument("--figures", type=Path, default=Path("docs/results"))
    parser.add_argument("--not-run-reason", default="time", help="why a cell missing from the cache did not run")
    args = parser.parse_args(argv)
    try:
        grid = load_config(args.config, args.data_dir)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    cache = args.cache or grid.cache
    done = load_cache(cache)
    figures = {task: plot_task(grid, task, done, args.figures) for task in grid.tasks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(grid, done, cache, figures, args.out, argv, args.not_run_reason))
    print(f"wrote {args.out} and {sum(p is not None for p in figures.values())} figures in {args.figures}")


if __name__ == "__main__":
    main()
