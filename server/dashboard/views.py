"""What the dashboard shows, computed from the run store: plain functions over its rows, no web code."""

from __future__ import annotations

import csv
import io
import json

from server.store import RunStore

NOT_CHARTED = {"num-examples"}  # a count, not a metric: it would dwarf the others on one axis


def run_list(store: RunStore) -> list[dict]:
    """Every run, newest first, with its server metric at the last evaluated round (what the run ended on), and
    the best with its round beside it: a best-of-rounds number alone would read as the run's result."""
    out = []
    for run in store.runs():
        rounds = store.rounds(run["id"])
        out.append({"id": run["id"], "status": run["status"], "task": run["task"], "method": run["method"],
                    "backbone": run["backbone"], "rounds_done": sum(r["round"] >= 1 for r in rounds),
                    "num_rounds": run["num_rounds"], **metric_summary(rounds), "started": run["started"],
                    "ended": run["ended"]})
    return out


def metric_summary(rounds: list[dict]) -> dict:
    """The task's first metric (GLUE's official one comes first): its value at the last evaluated round
    (`final`, `final_round`) and its best over the rounds (`best`, `best_round`, the first round that reached it)."""
    named = [(r["round"], r["server_metrics"]) for r in rounds if r["server_metrics"]]
    if not named:
        return {"metric": None, "final": None, "final_round": None, "best": None, "best_round": None}
    metric = next(iter(named[0][1]))
    values = [(rnd, m[metric]) for rnd, m in named if isinstance(m.get(metric), int | float)]
    if not values:
        return {"metric": metric, "final": None, "final_round": None, "best": None, "best_round": None}
    best_round, best = max(values, key=lambda v: (v[1], -v[0]))
    return {"metric": metric, "final": values[-1][1], "final_round": values[-1][0], "best": best,
            "best_round": best_round}


def _keys(dicts: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update({k: None for k, v in d.items() if isinstance(v, int | float) and k not in NOT_CHARTED})
    return list(keys)


def _client_key(reply: dict) -> str:
    return f"partition {reply['partition_id']}" if reply["partition_id"] is not None else f"node {reply['node_id']}"


def run_view(store: RunStore, run_id: int) -> dict:
    """A run page's data: identity, config, one value per completed round per series, refusals, clients."""
    run = store.run(run_id)
    rounds = store.rounds(run_id)
    done = [r for r in rounds if r["round"] >= 1]  # round 0 is the evaluation before training
    replies = store.replies(run_id)
    series = {
        "round": [r["round"] for r in done],
        "server": {k: [r["server_metrics"].get(k) for r in done] for k in _keys([r["server_metrics"] for r in done])},
        "clients": {k: [r["eval_metrics"].get(k) for r in done] for k in _keys([r["eval_metrics"] for r in done])},
        "train": {k: [r["train_metrics"].get(k) for r in done] for k in _keys([r["train_metrics"] for r in done])
                  if k in ("train-loss", "client-dp-epsilon")},
        **{k: [r[k] for r in done] for k in ("bytes_up", "bytes_down", "accepted", "refused", "wall_seconds")},
        "epsilon_max": _epsilon_by_round(replies, [r["round"] for r in done]),
    }
    return {
        "run": {k: run[k] for k in ("id", "status", "task", "method", "backbone", "num_rounds", "resumed_from",
                                    "started", "ended", "error", "fingerprint")},
        "config": json.loads(run["config"] or "{}"),
        "spec": json.loads(run["spec"]) if run["spec"] else None,
        "initial_metrics": rounds[0]["server_metrics"] if rounds and rounds[0]["round"] == 0 else {},
        "series": series,
        "updates": update_grid(replies, series["round"], json.loads(run["config"] or "{}")),
        "label_mix": label_mix(store.label_counts(run_id), json.loads(run["config"] or "{}")),
        "client_epsilon": client_epsilon(replies, series["round"], json.loads(run["config"] or "{}")),
        "refusals": [{"round": r["round"], "kind": r["kind"], "client": _client_key(r), "status": r["status"],
                      "reason": r["reason"], "detail": r["detail"]} for r in replies if r["status"] != "accepted"],
        "clients": clients(replies),
    }


def update_grid(replies: list[dict], rounds: list[int], config: dict) -> dict:
    """Clients x rounds of what each training reply's update did (norm, cosine with the aggregate, status and
    reason), for the heatmap; under SecAgg+ the server sees only the sum, so `withheld` says so instead."""
    if config.get("secure-aggregation", "none") != "none":
        return {"withheld": "under SecAgg+ the server sees only the sum of the updates: nothing per client"}
    train = [r for r in replies if r["kind"] == "train"]
    order = {rnd: j for j, rnd in enumerate(rounds)}
    keys = [c["client"] for c in clients(train)]
    row = {key: i for i, key in enumerate(keys)}
    grid = {name: [[None] * len(rounds) for _ in keys] for name in ("norm", "cosine", "weight", "status", "reason")}
    for r in train:
        if r["round"] not in order:
            continue
        i, j = row[_client_key(r)], order[r["round"]]
        parts = [r.get("norm_vector"), r.get("norm_head")]
        grid["norm"][i][j] = None if None in parts else (parts[0] ** 2 + parts[1] ** 2) ** 0.5
        grid["cosine"][i][j], grid["weight"][i][j] = r.get("cosine"), r.get("weight")
        grid["status"][i][j], grid["reason"][i][j] = r["status"], r["reason"]
    return {"clients": keys, "rounds": rounds, **grid, "withheld": None}


def label_mix(reported: list[dict], config: dict) -> dict:
    """Each client's label counts, as reported (for stacked bars), or why there are none."""
    if reported:
        return {"clients": [_client_key(r) for r in reported], "counts": [r["counts"] for r in reported],
                "withheld": None}
    if config.get("dp-epsilon") or config.get("client-dp-noise") or config.get("secure-aggregation", "none") != "none":
        why = "under DP or SecAgg+ the clients do not report their label counts: exact counts would escape the guarantee"
    else:
        why = ("the clients reported no label counts: they do only for a classification task with the logit-adjusted "
               "loss and eval-prior reported, or the prior-relative loss")
    return {"clients": [], "counts": [], "withheld": why}


def client_epsilon(replies: list[dict], rounds: list[int], config: dict) -> dict:
    """Each client's sample-level epsilon spent by every round (what its latest reply reported), and the
    budget it spends against; empty without DP."""
    spent: dict[str, dict[int, float]] = {}
    for r in replies:
        if r["kind"] == "train" and "epsilon" in r["metrics"]:
            spent.setdefault(_client_key(r), {})[r["round"]] = r["metrics"]["epsilon"]
    series = {}
    for client, by_round in sorted(spent.items()):
        running, points = None, []
        for rnd in rounds:
            running = by_round.get(rnd, running)
            points.append(running)
        series[client] = points
    return {"budget": config.get("dp-epsilon") or None, "clients": series}


def compare(store: RunStore, run_ids: list[int]) -> list[dict]:
    """Per run: what the legend names (method, task, alpha) and its first server metric against the round and
    against the bytes uploaded so far (accepted and refused replies: what the clients sent)."""
    out = []
    for run_id in run_ids:
        run, rounds = store.run(run_id), store.rounds(run_id)
        config = json.loads(run["config"] or "{}")
        metric = metric_summary(rounds)["metric"]
        sent, points = 0, {"round": [], "bytes_up": [], "value": []}
        for r in rounds:
            sent += r["bytes_up"] or 0
            if metric is not None and isinstance(r["server_metrics"].get(metric), int | float):
                points["round"].append(r["round"])
                points["bytes_up"].append(sent)
                points["value"].append(r["server_metrics"][metric])
        out.append({"id": run_id, "task": run["task"], "method": run["method"], "alpha": config.get("alpha"),
                    "metric": metric, **points})
    return out


def compare_rows(runs: list[dict]) -> list[dict]:
    """The compared runs' points as one flat table (the CSV download)."""
    return [{"run": c["id"], "task": c["task"], "method": c["method"], "alpha": c["alpha"], "metric": c["metric"],
             "round": rnd, "bytes_up": sent, "value": value}
            for c in runs for rnd, sent, value in zip(c["round"], c["bytes_up"], c["value"], strict=True)]


def _epsilon_by_round(replies: list[dict], rounds: list[int]) -> list[float | None]:
    """The largest epsilon any client had spent by each round (None when no client runs DP)."""
    reported = {}
    for r in replies:
        if r["kind"] == "train" and "epsilon" in r["metrics"]:
            reported[r["round"]] = max(reported.get(r["round"], 0.0), r["metrics"]["epsilon"])
    if not reported:
        return []
    out, running = [], 0.0
    for rnd in rounds:  # each client reports its spending so far, so the maximum only grows
        running = max(running, reported.get(rnd, 0.0))
        out.append(running)
    return out


def clients(replies: list[dict]) -> list[dict]:
    """One row per client: its examples, replies, the metrics and epsilon of its latest training reply."""
    rows: dict[str, dict] = {}
    for r in replies:
        row = rows.setdefault(_client_key(r), {"client": _client_key(r), "partition_id": r["partition_id"],
                                               "node_id": r["node_id"], "examples": None, "replies": 0,
                                               "accepted": 0, "refused": 0, "last_round": None,
                                               "last_metrics": {}, "epsilon": None})
        row["replies"] += 1
        row["accepted" if r["status"] == "accepted" else "refused"] += 1
        row["last_round"] = max(row["last_round"] or 0, r["round"])
        if r["kind"] == "train" and r["status"] == "accepted":
            row["examples"] = r["num_examples"]
            row["last_metrics"] = {k: v for k, v in r["metrics"].items() if k != "num-examples"}
            row["epsilon"] = r["metrics"].get("epsilon", row["epsilon"])
    return sorted(rows.values(), key=lambda c: (c["partition_id"] is None, c["partition_id"] or 0, c["node_id"]))


def rounds_table(store: RunStore, run_id: int) -> list[dict]:
    """Every stored round as one flat row (the CSV and JSON downloads). An unknown run raises ValueError
    (a 404), as run_view does, rather than giving an empty table."""
    store.run(run_id)
    out = []
    for r in store.rounds(run_id):
        row = {"round": r["round"]}
        for prefix, key in (("server", "server_metrics"), ("clients", "eval_metrics"), ("train", "train_metrics")):
            row.update({f"{prefix}_{k}": v for k, v in r[key].items()})
        row.update({k: r[k] for k in ("bytes_up", "bytes_down", "accepted", "refused", "wall_seconds")})
        out.append(row)
    return out


def replies_table(store: RunStore, run_id: int) -> list[dict]:
    """Every stored reply of a run as one flat row (the refusals, the clients' metrics and each update's norm,
    cosine and weight: what the tables and the heatmap show), for the CSV download."""
    store.run(run_id)  # an unknown run: ValueError, a 404
    keep = ("round", "kind", "partition_id", "node_id", "status", "reason", "detail", "num_examples", "bytes",
            "norm_vector", "norm_head", "cosine", "weight")
    return [{**{k: r[k] for k in keep}, **{f"metric_{k}": v for k, v in r["metrics"].items()}}
            for r in store.replies(run_id)]


def to_csv(rows: list[dict]) -> str:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
