"""The results page: docs/RESULTS.md and one PNG per task under docs/results/, from the grid's cache.

    python -m simulations.harness.results_page --config simulations/harness/grid.toml

The page opens with one table (every federated method at each alpha, then the centralized
references; a column per task), then the targets, the rounds federated slash needs to come
within 0.95x of centralized slash, the curves, the measured cell times, the setup and the
commands. Only the cache's rows for the code version the grid reports count (simulations.harness.grid.cell_key:
the working tree's, or the commit that grid.toml pins); a cell without one reads "not run". Nothing here runs a model, and nothing depends on the clock:
the page is a function of the config and the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from fedrp import glue
from fedrp.federation import FedConfig
from fedrp.methods import RATES
from fedrp.metrics import compute as compute_metrics
from simulations.harness.cells import CellCache
from simulations.harness.code_version import ENTRY_POINTS
from simulations.harness.grid import changed_since_pin, versions
from simulations.harness.grid_config import (
    DEFAULT_CONFIG,
    Grid,
    cells,
    data_dir_for,
    federated_options,
    load_config,
    task_label,
    write_qnli_split,
)
from simulations.harness.intervals import estimate
from simulations.harness.qnli_split import read_rows
from simulations.harness.results_rows import (
    METRIC_NAMES,
    Key,
    Seeded,
    by_seed,
    finished,
    first_metric,
    format_metrics,
    human_bytes,
    metric_header,
    paired_ratios,
    seed_zero,
    seeded_rows,
    span,
    trainable,
    upload,
)
from simulations.harness.results_targets import ONE_SEED, REACH, rounds_section, target_lines


def row_specs(grid: Grid) -> list[tuple[str, str, str, float | None]]:
    """(name, α column, method, alpha) of each table row: federated methods per alpha, then the references."""
    federated = [(m, f"{a:g}", m, a) for a in grid.alphas for m in grid.methods]
    refs = [(f"centralized {m}", "–", m, None) for m in grid.reference_options["methods"]] if grid.reference else []
    return federated + refs


# ---- the data's sizes ---------------------------------------------------------------------

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
        pinned = ("; the cells shown ran at the pinned commit, whose split (its `simulations.harness.qnli_split`) has changed "
                  "since" if "simulations.harness.qnli_split" in changed_since_pin(grid) else "")
        lines.append(f"- {task_label(grid, 'qnli')}: only QNLI's dev set is available here, so it is split (seed "
                     f"{grid.qnli.seed}), by groups of rows that share a question or a sentence and keeping each "
                     f"label's share, into a federated training part and a held-out evaluation part, written to "
                     f"`{grid.qnli.dir}` (`simulations.harness.qnli_split.split_qnli`){pinned}. Its numbers are not comparable "
                     "with the official QNLI dev results.")
    lines.append(f"- Code versions {version_text(grid)}: sha256 of the docstring-free syntax trees of the project modules "
                 f"that the entry points import ({', '.join(f'`{m}`' for e in ENTRY_POINTS.values() for m in e)}; "
                 "`simulations.harness.code_version`); " + ("the config pins the commit whose code they are, and the grid "
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
    base = f"python -m simulations.harness.grid --config {grid.config}"
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
    return [*lines, "# this page:", shlex.join(["python", "-m", "simulations.harness.results_page", *argv]), "```"]


# ---- the page -----------------------------------------------------------------------------

def intro(grid: Grid, done: dict[str, dict], seeded: Seeded, cache: Path) -> str:
    """How the page was made and how much of the grid the cache holds."""
    sha = hashlib.sha256(grid.config.read_bytes()).hexdigest()[:16]
    rows = {(*key, seed): row for key, runs in seeded.items() for seed, row in runs.items()}
    failed = sum(not finished(r) for r in rows.values())
    other = len(done) - len(rows)
    return (f"Generated by `python -m simulations.harness.results_page` from the cache `{cache}` and the config "
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
