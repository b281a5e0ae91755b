"""The server's round loop: train, validate, aggregate, evaluate, checkpoint, record.

Flower's `Strategy.start` runs rounds too, but it can neither resume from a checkpoint nor
stop cleanly when too few replies survive validation; this loop adds both and keeps using
the strategy's own configure/aggregate steps.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedrp import glue, payload, tasks
from fedrp.classifier import Classifier
from fedrp.federation import (
    FedConfig,
    federation_offsets,
    identity,
    initial_state,
    model_for,
    round_lr,
    server_evaluate,
)
from fedrp.federation.config import check_run_max_length
from fedrp.files import check_writable_folder
from fedrp.privacy.client_level import epsilon_after
from fedrp.secagg import server_state
from server import checkpoint, secagg
from server.stopping import Interrupted, StoppableGrid
from server.store import RunStore
from server.strategy import Validating, from_record, make_strategy, to_record

log = logging.getLogger("fedrp.server")


class TooFewReplies(RuntimeError):
    """Fewer valid replies than min-train-nodes: the round cannot be aggregated."""


@dataclasses.dataclass
class Run:
    """What every round of a federation shares: its config, the grid, the strategy, the store, the server's model,
    what a client must prove (its identity, with the run's lineage) and the label prior the clients reported."""

    cfg: FedConfig
    grid: Grid
    strategy: Validating
    store: RunStore
    run_id: int
    model: Classifier
    ident: dict
    prior: tuple[float, ...] | None = None


def discover(grid: Grid, known: dict[int, int | None], timeout: float, wait: float = 60.0,
             minimum: int = 1, counts: dict[int, list[int]] | None = None) -> dict[int, int | None]:
    """Ask nodes not seen yet for their partition id (node id -> partition id, None for a node's own data);
    the label counts that some report go into `counts` (node id -> counts)."""
    deadline = time.time() + wait
    while len(list(grid.get_node_ids())) < minimum and time.time() < deadline:
        time.sleep(0.5)
    new = [n for n in grid.get_node_ids() if n not in known]
    if new:
        msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition"})}), dst_node_id=n,
                        message_type=MessageType.QUERY) for n in new]
        for reply in grid.send_and_receive(msgs, timeout=timeout):
            if not reply.has_error():
                answer = reply.content["partition"]
                pid = int(answer["partition-id"])
                known[reply.metadata.src_node_id] = pid if pid >= 0 else None
                if counts is not None and "label-counts" in answer:
                    counts[reply.metadata.src_node_id] = [int(c) for c in answer["label-counts"]]
    return dict(known)


def run_federation(grid: Grid, cfg: FedConfig) -> dict:
    """Run (or resume) a federation; returns the summary `simulations.run --json` prints."""
    task = glue.get_task(cfg.task)
    strategy: Validating = make_strategy(cfg)  # an unknown rule is refused before the model loads
    check_run_max_length(cfg)  # and what would fail only later: a client's longer example, the first checkpoint
    check_writable_folder(cfg.checkpoint_dir, "checkpoint-dir", "checkpoints")
    model = model_for(cfg)
    ident = {**identity(model), **tasks.label_identity(task)}  # a device with another label map refuses
    grid = StoppableGrid(grid)
    store = RunStore(cfg.store)
    store.mark_orphans()  # runs whose server process died (SIGKILL, power loss) while running
    if cfg.resume_from:
        start_round, state, server_state, meta = checkpoint.load(cfg.resume_from)
        if meta.get("fingerprint") != ident.get("fingerprint") or meta.get("method") != cfg.method:
            raise ValueError(f"checkpoint {cfg.resume_from} is for another method or projection; refusing to resume")
        strategy.load_server_state(server_state)
    else:
        start_round, state, meta = 0, initial_state(cfg), {}
    # One name for a run and its resumptions: DP clients keep their budget under it, node-locally.
    lineage = meta.get("lineage") or uuid.uuid4().hex
    run_id = store.start_run(task.name, cfg.method, ident["backbone"], cfg.to_run_config(), ident.get("spec"),
                             ident.get("fingerprint"), cfg.num_server_rounds, cfg.resume_from or None)
    folder = Path(cfg.checkpoint_dir) / f"run-{run_id}"
    log.info("run %d: %s / %s, rounds %d..%d, store %s", run_id, task.name, cfg.method, start_round + 1,
             cfg.num_server_rounds, cfg.store)
    counts: dict[int, list[int]] = {}  # node id -> the label counts it reported (FedConfig.eval_prior)
    run = Run(cfg, grid, strategy, store, run_id, model, {**ident, "run-lineage": lineage})
    try:
        nodes = discover(grid, {}, cfg.round_timeout, minimum=cfg.min_train_nodes, counts=counts)
        store.set_label_counts(run_id, counts, nodes)
        prior = _federation_prior(counts, None)  # before round 0, whose evaluation uses it too
        if start_round == 0:
            initial = server_evaluate(cfg, model, state, cfg.evaluation_prior(prior))
            store.add_round(run_id, 0, initial)
            log.info("round %*d/%d  %s  (before training)", len(str(cfg.num_server_rounds)), 0, cfg.num_server_rounds,
                     format_metrics(initial))
        for rnd in range(start_round + 1, cfg.num_server_rounds + 1):
            nodes = discover(grid, nodes, cfg.round_timeout, minimum=cfg.min_train_nodes, counts=counts)
            store.set_label_counts(run_id, counts, nodes)
            prior = run.prior = _federation_prior(counts, prior)
            strategy.prepare(nodes, cfg.data_seed, ident.get("fingerprint"), cfg.norm_bound, cfg.client_dp, cfg.norm_ratio)
            state = _one_round(run, rnd, state)
            checkpoint.save(folder, rnd, state, strategy.server_state(), {
                "method": cfg.method, "fingerprint": ident.get("fingerprint"), "run_id": run_id, "lineage": lineage})
    except (KeyboardInterrupt, Interrupted):
        done = checkpoint.latest_round(folder)
        resume = folder if done else cfg.resume_from
        store.end_run(run_id, "interrupted", f"stopped on request after round {max(done, start_round)}" + (
            f"; resume-from {resume}" if resume else ""))
        raise
    except BaseException as err:
        store.end_run(run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    store.end_run(run_id, "completed")
    out = summary(store, run_id)
    if prior is not None:
        out["label_prior"] = [round(float(p), 4) for p in np.exp(prior)]
    return out


def _federation_prior(counts: dict[int, list[int]], before: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """The logit offsets of the clients' reported label counts, logged when they change (new nodes reported)."""
    prior = federation_offsets([counts[n] for n in sorted(counts)])
    if prior is not None and prior != before:
        log.info("label prior from %d clients' reported counts: %s (added to the logits when the server evaluates)",
                 len(counts), ", ".join(f"{p:.3f}" for p in np.exp(prior)))
    return prior


def _one_round(run: Run, rnd: int, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Send the state to the round's sample, aggregate what comes back, evaluate, record; the new state."""
    start = time.time()
    cfg, strategy = run.cfg, run.strategy
    config = ConfigRecord({**run.ident, "local-epochs": cfg.local_epochs, "lr": round_lr(cfg, rnd)})
    if cfg.local_loss == "prior-relative" and run.prior is not None:
        config["label-prior"] = list(run.prior)  # the federation's log prior, that clients offset against
    messages = list(strategy.configure_train(rnd, to_record(state), config, run.grid))
    sent_to = [m.metadata.dst_node_id for m in messages]
    bytes_down = len(messages) * payload.nbytes(state)
    if cfg.secagg is None:
        new_state, train_metrics, records = _validated_train(run, rnd, messages)
    else:
        new_state, train_metrics, records = _secure_train(run, rnd, state, dict(config), sent_to)
    run.store.add_replies(run.run_id, rnd, "train", records)
    accepted = sum(r["status"] == "accepted" for r in records)
    if new_state is None:
        raise TooFewReplies(
            f"round {rnd}: {accepted} valid replies, fewer than min-train-nodes {cfg.min_train_nodes}; "
            f"refused: {[(r['partition_id'], r['reason']) for r in records if r['status'] != 'accepted']}"
        )
    if cfg.client_dp is not None:  # every round samples the same fraction of the known nodes
        train_metrics["client-dp-epsilon"] = epsilon_after(cfg.client_dp, len(messages) / len(strategy.nodes), rnd)
    evaluated = rnd % cfg.eval_every == 0 or rnd == cfg.num_server_rounds
    eval_metrics = _client_evaluation(run, rnd, new_state, config) if evaluated else {}
    server_metrics = server_evaluate(cfg, run.model, new_state, cfg.evaluation_prior(run.prior)) if evaluated else {}
    run.store.add_round(run.run_id, rnd, server_metrics, train_metrics, eval_metrics,
                        bytes_up=sum(r.get("bytes", 0) for r in records), bytes_down=bytes_down, accepted=accepted,
                        refused=len(records) - accepted, wall_seconds=time.time() - start)
    log.info("round %*d/%d  %s  %d accepted, %d refused  %s B up per client  %.1f s", len(str(cfg.num_server_rounds)),
             rnd, cfg.num_server_rounds, format_metrics(server_metrics), accepted, len(records) - accepted,
             f"{sum(r.get('bytes', 0) for r in records) // max(accepted, 1):,}", time.time() - start)
    return new_state


def format_metrics(metrics: dict[str, float]) -> str:
    """'accuracy 0.7810, f1 0.8123'; '(not evaluated)' for a round skipped by eval-every."""
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "(not evaluated)"


def _validated_train(run: Run, rnd: int, messages: list[Message]):
    """Plain replies: each is validated, then the strategy aggregates the accepted ones."""
    cfg, strategy = run.cfg, run.strategy
    replies = list(run.grid.send_and_receive(messages, timeout=cfg.round_timeout))
    arrays, train_metrics = strategy.aggregate_train(rnd, replies)
    strategy.describe_updates(None if arrays is None else from_record(arrays))
    records = strategy.records
    answered = {r["node_id"] for r in records}
    records += [{"node_id": m.metadata.dst_node_id, "partition_id": strategy.nodes.get(m.metadata.dst_node_id),
                 "status": "missing", "reason": "no-reply", "detail": f"no reply within {cfg.round_timeout}s"}
                for m in messages if m.metadata.dst_node_id not in answered]
    return (None if arrays is None else from_record(arrays)), dict(train_metrics or {}), records


def _secure_train(run: Run, rnd: int, state: dict[str, np.ndarray], config: dict, sent_to: list[int]):
    """SecAgg+: the same sampled clients, but the server learns only their weighted mean update."""
    cfg = run.cfg
    config["server-round"] = rnd
    config["array-names"] = ",".join(sorted(state))  # legacy Parameters are an unnamed list
    arrays = [state[k] for k in sorted(state)]
    mean, survivors, reasons = secagg.secure_round(run.grid, rnd, sent_to, arrays, config, cfg.secagg,
                                                   cfg.round_timeout)
    records = secagg.records(sent_to, survivors, reasons, run.strategy.nodes, secagg.masked_nbytes(arrays))
    if mean is None or len(survivors) < cfg.min_train_nodes:
        return None, {}, records
    # Fresh OS entropy for client-level DP noise, never the run seed (see Validating.aggregate_train).
    new_state = server_state(state, mean, len(survivors), len(sent_to), cfg.client_dp, np.random.default_rng())
    accepted = [r["metrics"] for r in records if r["status"] == "accepted"]
    keys = set.intersection(*(set(m) for m in accepted))  # FedAvg's rule: weighted by num-examples
    train_metrics = {k: float(np.average([m[k] for m in accepted], weights=[m["num-examples"] for m in accepted]))
                     for k in sorted(keys)}
    return new_state, train_metrics, records


def _client_evaluation(run: Run, rnd: int, state, config) -> dict:
    """The weighted average of the clients' own dev metrics."""
    messages = list(run.strategy.configure_evaluate(rnd, to_record(state), ConfigRecord(dict(config)), run.grid))
    if not messages:
        return {}
    replies = [r for r in run.grid.send_and_receive(messages, timeout=run.cfg.round_timeout) if not r.has_error()]
    if not replies:
        return {}
    return dict(run.strategy.aggregate_evaluate(rnd, replies) or {})


def summary(store: RunStore, run_id: int) -> dict:
    rounds = store.rounds(run_id)
    accepted_bytes = Counter()  # bytes_up counts refused replies too: what arrived, not what was averaged
    for reply in store.replies(run_id, "accepted"):
        if reply["kind"] == "train":
            accepted_bytes[reply["round"]] += reply["bytes"] or 0
    out = {
        "run_id": run_id, "store": str(store.path), "status": store.run(run_id)["status"],
        "rounds": [{"round": r["round"], "metrics": r["server_metrics"], "client_metrics": r["eval_metrics"],
                    "bytes_up": r["bytes_up"], "bytes_up_accepted": accepted_bytes[r["round"]],
                    "bytes_down": r["bytes_down"], "accepted": r["accepted"], "refused": r["refused"],
                    "wall_seconds": r["wall_seconds"]} for r in rounds],
        "final_metrics": rounds[-1]["server_metrics"] if rounds else {},
        "refusals": [{k: r[k] for k in ("round", "partition_id", "reason", "detail")}
                     for r in store.replies(run_id) if r["status"] != "accepted"],
    }
    spent = epsilon_spent(store, run_id)
    if spent:
        out["epsilon_spent"] = spent
    if rounds and "client-dp-epsilon" in (rounds[-1]["train_metrics"] or {}):
        out["client_dp_epsilon"] = rounds[-1]["train_metrics"]["client-dp-epsilon"]
    return out


def epsilon_spent(store: RunStore, run_id: int) -> dict[str, float]:
    """Each DP client's epsilon so far (its latest report), by partition id or, for own-data nodes, node id."""
    spent: dict[str, float] = {}
    for r in store.replies(run_id, "accepted"):
        if "epsilon" in (r["metrics"] or {}):
            spent[str(r["partition_id"] if r["partition_id"] is not None else r["node_id"])] = r["metrics"]["epsilon"]
    return spent
