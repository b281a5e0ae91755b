"""The Flower ClientApp: trains z and the head (or a baseline's weights) on this device's data."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.secagg import secure_aggregation_mod, train_secure
from fedrp import glue
from fedrp.drift import Correction
from fedrp.faults import corrupt
from fedrp.federation import (
    FedConfig,
    check_identity,
    check_labels,
    client_eval_data,
    client_train_data,
    label_counts,
    local_data_file,
    local_evaluate,
    local_train,
    model_for,
    round_correction,
    round_prior,
)
from fedrp.privacy.budget import budget_path, node_budget
from fedrp.refusals import REFUSED, LocalDataError, Refusal, StateMismatch

BUDGET_KEY = "dp-budget"  # where a node's state keeps its DP accounting between rounds


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


def _run_config(context: Context, overrides: dict | None) -> FedConfig:
    """The run config, with this node's own task file (node config `task-file`) where it names one: a device
    keeps its definition beside its data, and refuses a round whose label map differs (check_labels)."""
    cfg = FedConfig.from_run_config(context.run_config, overrides)
    own = context.node_config.get("task-file")
    return dataclasses.replace(cfg, task=str(own)) if own else cfg


def _partition(context: Context) -> tuple[int, int]:
    node = context.node_config
    return int(node.get("partition-id", 0)), int(node.get("num-partitions", 1))


def _data(cfg: FedConfig, context: Context, kind: str):
    """Local data: a node's own file (node config `data-file` / `eval-file`), else its GLUE partition."""
    model = model_for(cfg)
    key = "data-file" if kind == "train" else "eval-file"
    if key in context.node_config:
        return local_data_file(str(context.node_config[key]), glue.get_task(cfg.task), model.tokenizer, cfg)
    pid, n = _partition(context)
    fn = client_train_data if kind == "train" else client_eval_data
    try:
        return fn(cfg, model.tokenizer, pid, n)
    except FileNotFoundError as err:  # this node lacks the GLUE files its partition comes from
        raise LocalDataError(str(err)) from err


def _round_settings(cfg: FedConfig, config: dict) -> FedConfig:
    """The run config with this round's rate and local epochs as the server's message sets them:
    the server owns the schedule (its decay over the rounds), as in Flower's apps."""
    try:
        lr, epochs = float(config["lr"]), float(config["local-epochs"])
    except (KeyError, TypeError, ValueError) as err:
        raise StateMismatch(f"the round's message must carry a numeric lr and local-epochs: {err!r}") from None
    if not (math.isfinite(lr) and lr > 0):
        raise StateMismatch(f"the round's message sets lr {lr}; expected a positive number")
    return dataclasses.replace(cfg, lr=lr, lr_decay="none", local_epochs=epochs)


def _local_round(cfg: FedConfig, config: dict, sent: dict[str, np.ndarray], context: Context,
                 correction: Correction | None = None):
    """This device's round: (state, metrics, fingerprint); raises a Refusal when it declines (other backbone or
    projection, bad data, a state that does not fit, no budget left). `correction`: the gradient terms of the
    server's rule (SCAFFOLD, FedProx, FedDyn), which record the mean gradient where the rule asks for it."""
    check_identity(model_for(cfg), config)
    check_labels(glue.get_task(cfg.task), config)
    cfg = _round_settings(cfg, config)
    train_data = _data(cfg, context, "train")
    pid, n = _partition(context)
    path = budget_path(context.node_config, context.node_id, config.get("run-lineage"))
    kept = context.state.config_records.get(BUDGET_KEY)
    budget = node_budget(cfg.privacy, dict(kept) if kept is not None else None, path)
    scheduled = "partition-id" in context.node_config  # the server samples it by partition id: a known schedule
    prior = round_prior(config, glue.get_task(cfg.task).num_labels)
    state, metrics = local_train(cfg, sent, train_data, int(config["server-round"]), pid, budget=budget,
                                 num_partitions=n if scheduled else None, correction=correction, label_prior=prior)
    if budget is not None:  # the node state outlives this message (and, deployed, this process); the file, the run
        context.state[BUDGET_KEY] = ConfigRecord(budget.to_lists())
        if path is not None:
            budget.save(path)
    fingerprint = config.get("fingerprint")
    if pid in cfg.faults:
        state, fingerprint = corrupt(cfg.faults[pid], state, sent, fingerprint)
    return state, metrics, fingerprint


def build_client_app(overrides: dict | None = None) -> ClientApp:
    """A ClientApp; `overrides` stand in for the run config where the engine passes none."""
    app = ClientApp(mods=[secure_aggregation_mod])

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        pid, n = _partition(context)
        if "data-file" in context.node_config and "partition-id" not in context.node_config:
            pid = -1  # no GLUE partition: the server samples this node by its node id
        reply = {"partition-id": pid, "num-partitions": n}
        try:
            cfg = _run_config(context, overrides)
            if cfg.reports_label_counts:  # for the prior the server evaluates with; never under DP or SecAgg+
                reply["label-counts"] = label_counts(_data(cfg, context, "train")["label"],
                                                     glue.get_task(cfg.task).num_labels)
        except (OSError, ValueError):  # no usable data or config here: no counts; the training round says why
            pass
        return Message(RecordDict({"partition": ConfigRecord(reply)}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = _run_config(context, overrides)
        if "fitins.parameters" in msg.content.array_records:  # SecAgg+'s stage 2 carries the legacy FitIns
            return train_secure(cfg, msg, context, _local_round, _partition(context)[0])
        sent_config = dict(msg.content["config"])
        sent = _arrays(msg.content["arrays"])
        drift = _arrays(msg.content["drift"]) if "drift" in msg.content.array_records else None
        try:
            correction = round_correction(sent_config, drift, sent)
            state, metrics, fingerprint = _local_round(cfg, sent_config, sent, context, correction)
        except Refusal as err:
            return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
        meta = ConfigRecord({"fingerprint": fingerprint or "", "partition-id": _partition(context)[0]})
        reply = RecordDict({"arrays": _record(state), "metrics": MetricRecord(metrics), "meta": meta})
        if correction is not None and correction.record:  # SCAFFOLD: the mean gradient is the client's new c_i
            reply["gradient"] = _record({k: t.numpy() for k, t in correction.mean_gradient().items()})
        return Message(reply, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = _run_config(context, overrides)
        try:
            check_identity(model_for(cfg), dict(msg.content["config"]))
            check_labels(glue.get_task(cfg.task), dict(msg.content["config"]))
            eval_data = _data(cfg, context, "eval")
        except Refusal as err:
            return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
        metrics = local_evaluate(cfg, _arrays(msg.content["arrays"]), eval_data)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = build_client_app()
