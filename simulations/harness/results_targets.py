"""The results page's targets and their verdicts: federated slash against centralized full finetuning and
against LoRA, bytes, and rounds, each from the seeds' mean and interval (simulations.harness.intervals)."""

from __future__ import annotations

from fedrp import glue
from simulations.harness.grid_config import Grid, task_label
from simulations.harness.intervals import LEVEL, describe, estimate, verdict
from simulations.harness.results_rows import Key, Seeded, by_seed, finished, paired_ratios, seed_zero, span, upload

# Federated slash over centralized full finetuning (first official metric), per alpha, on these tasks;
# the other tasks (RTE, CoLA) are reported as measured.
RATIO_TARGETS = {1.0: 0.95, 0.1: 0.90}
RATIO_TASKS = ("sst2", "mrpc", "stsb", "qnli")
LORA_POINTS = 2.0  # slash at most this many points (x100) below LoRA on average, at the same alpha
BYTES_LORA_OVER_SLASH = 40.0  # LoRA's upload per client per round over slash's, at least
REACH = 0.95  # rounds for federated slash to reach this fraction of centralized slash...
ROUNDS_TARGET = {1.0: 30}  # ...at most this many rounds, per alpha
ONE_SEED = "†"  # marks a table entry that rests on one seed


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
