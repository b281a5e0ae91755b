"""The label-skew comparison's page (issue 38): docs/results/label_skew.md, from its cache alone.

    python -m simulations.harness.label_skew_page [--cache docs/results/label_skew.jsonl] [--out docs/results/label_skew.md]

One table per task and setting (the alpha, and the epsilon under DP): each remedy run by
simulations/harness/label_skew.sh, scored on the held-out training examples (never dev) as
simulations.harness.tune scores a setting (the mean of the last three evaluations), its difference from
plain FedAvg at the same code version in the same setting, its curve, the bytes each client sent per
round and its hours. Nothing here runs a model; the page is a function of the cache.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from fedrp import glue
from simulations.harness.intervals import estimate
from simulations.harness.tune import LAST, score

CACHE = Path("docs/results/label_skew.jsonl")
OUT = Path("docs/results/label_skew.md")
# The settings a remedy is compared within, never across: its rows get their own table and their own FedAvg.
CONTEXT = ("alpha", "dp-epsilon")
SEED = "data-seed"  # a remedy's rows at several data seeds are one line, each paired with FedAvg's at its seed


def remedy(settings: dict, common: dict) -> str:
    """What a row changes from its table's FedAvg settings ("fedavg" when only the rule is set); a setting that
    FedAvg's row sets and this row leaves at its default is named too ("k=default")."""
    own = {k: v for k, v in settings.items() if common.get(k) != v and k != SEED}
    own |= {k: "default" for k in common if k not in settings and k not in (SEED, "aggregation")}
    if own in ({}, {"aggregation": "fedavg"}):
        return "fedavg"
    return ", ".join(f"{k}={v}" for k, v in sorted(own.items()))


def shared_settings(settings: list[dict]) -> dict:
    """What a row's remedy is told apart from: the table's plain FedAvg run (the FedAvg row that sets the fewest
    keys, seeds aside); with none, each setting that more than half of the rows give the same value."""
    fedavg = [s for s in settings if s.get("aggregation", "fedavg") == "fedavg"]
    if fedavg:
        plain = min(fedavg, key=lambda s: len(set(s) - {SEED, "aggregation"}))
        return {k: v for k, v in plain.items() if k != SEED}
    counts = Counter(item for row in settings for item in row.items())
    return {k: v for (k, v), n in counts.items() if n > len(settings) / 2}


def context(settings: dict) -> str:
    """The setting a row was run in: 'alpha 0.1', or 'alpha 0.1, dp-epsilon 8' under DP."""
    return ", ".join(f"{k} {settings[k]}" for k in CONTEXT if float(settings.get(k) or 0))


def rows_by_table(cache: Path) -> dict[tuple[str, str], list[dict]]:
    """The cache's completed rows per (task, setting), in the order they were run, each with its remedy,
    score and code."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for number, line in enumerate(cache.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            cell = entry["cell"]
            if cell.get("status") == "completed":
                where = (cell["settings"]["task"], context(cell["settings"]))
                groups.setdefault(where, []).append({**cell, "code": json.loads(entry["key"])["code"]})
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"line {number} is not a cached run ({type(err).__name__}: {err})") from None
    out = {}
    for (task, where), cells in groups.items():
        common = shared_settings([c["settings"] for c in cells]) | {"aggregation": "fedavg"}
        metric = glue.get_task(task).metrics[0]
        out[task, where] = [{"remedy": remedy(c["settings"], common), "metric": metric, "score": score(c, metric),
                             "seed": str(c["settings"].get(SEED, 0)), "every": int(c["settings"].get("eval-every", 1)),
                             "curve": [m[metric] for m in c["metrics"] if metric in m], "code": c["code"],
                             "bytes_up": max(c["bytes_up_per_client"]), "hours": sum(c["wall_seconds"]) / 3600,
                             "cores_shared": bool(c.get("cores_shared"))} for c in cells]
    return out


def merge_seeds(rows: list[dict]) -> list[dict]:
    """One line per remedy and code version: its scores by seed, the mean curve, the largest upload, the hours."""
    by_line: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_line.setdefault((r["remedy"], r["code"]), []).append(r)
    scores = {key: {r["seed"]: r["score"] for r in runs} for key, runs in by_line.items()}  # a rerun seed: the last
    return [{"remedy": remedy_, "code": code, "scores": scores[remedy_, code],
             "estimate": estimate(list(scores[remedy_, code].values())), "every": runs[0]["every"],
             "curve": [sum(v) / len(v) for v in zip(*(r["curve"] for r in runs))],
             "bytes_up": max(r["bytes_up"] for r in runs), "hours": sum(r["hours"] for r in runs),
             "cores_shared": any(r["cores_shared"] for r in runs)} for (remedy_, code), runs in by_line.items()]


def points(e, scale: float = 1.0, sign: str = "") -> str:
    """'0.580' for one seed, '0.580 ± 0.012 (3 seeds)' for several (the 95% t interval)."""
    text = f"{scale * e.mean:{sign}.{1 if scale > 1 else 3}f}"
    return text if e.half is None else f"{text} ± {scale * e.half:.{1 if scale > 1 else 3}f} ({e.n} seeds)"


def table(rows: list[dict]) -> list[str]:
    """A task's rows, against FedAvg's at the same code version and seed (blank where there is none)."""
    merged = merge_seeds(rows)
    base = {line["code"]: line["scores"] for line in merged if line["remedy"] == "fedavg"}
    every = Counter(r["every"] for r in rows).most_common(1)[0][0]  # a line that evaluates otherwise says so
    lines = [(f"| remedy | held-out {rows[0]['metric']} | vs fedavg | evaluations (every {every} rounds) | bytes up "
             "per client per round | hours | code |"), "| --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in sorted(merged, key=lambda r: -r["estimate"].mean):
        paired = [r["scores"][seed] - fedavg for seed, fedavg in base.get(r["code"], {}).items() if seed in r["scores"]]
        diff = points(estimate(paired), 100, "+") if paired and r["remedy"] != "fedavg" else ""
        curve = " ".join(f"{v:.3f}" for v in r["curve"]) + (f" (every {r['every']})" if r["every"] != every else "")
        (seed,) = r["scores"] if len(r["scores"]) == 1 else ("0",)
        at = "" if seed == "0" else f" (data seed {seed})"  # one run at a data seed other than 0 says which
        lines.append(f"| {r['remedy']} | {points(r['estimate'])}{at} | {diff} | {curve} | {r['bytes_up']:,.0f} | "
                     f"{r['hours']:.2f}{'*' if r['cores_shared'] else ''} | {r['code'][:8]} |")
    return lines


def render(tables: dict[tuple[str, str], list[dict]], cache: Path) -> str:
    """The page's Markdown."""
    lines = ["# Strong label skew: the remedies compared",
             "",
             (f"Generated by `python -m simulations.harness.label_skew_page` from `{cache}`; do not edit by hand. "
             "The runs: `simulations/harness/label_skew.sh` (slash at Dirichlet alpha 0.1, the grid's federated "
             "settings, 30 rounds, 1,000 held-out training examples; one seed each unless a line says how many), "
             "and the same at alpha 1 or under DP where a table's title says so. A score is the mean of the "
             f"last {LAST} evaluations. One evaluation on 1,000 examples has a standard error of about "
             f"{100 * math.sqrt(0.25 / 1000):.1f} points at 50% accuracy; a difference of a few points between "
             "single runs is within the noise. A line over several data seeds (`data-seed`: the subset, the partition, "
             "the sampling) gives their mean and its 95% t interval, and its difference from FedAvg is the mean of "
             "the differences at each seed FedAvg ran. Hours marked * were measured with other jobs on the cores."),
             ""]
    for task, where in sorted(tables):
        title = glue.get_task(task).name + (f" ({where})" if where else "")
        lines += [f"## {title}", "", *table(tables[task, where]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.cache.is_file():
        parser.error(f"--cache {args.cache} is not a file: expected the comparison's JSON lines")
    try:
        tables = rows_by_table(args.cache)
    except ValueError as err:
        parser.error(f"--cache {args.cache}: {err}; expected the comparison's JSON lines")
    page = render(tables, args.cache)
    args.out.write_text(page)
    return page


if __name__ == "__main__":
    main()
