"""The Flower ClientApp: trains z and the head (or a baseline's weights) on this device's data."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.faults import corrupt
from fedrp import glue
from fedrp.federation import (FedConfig, check_identity, client_eval_data, client_train_data, local_data_file,
                              local_evaluate, local_train, model_for)
from fedrp.privacy.budget import BudgetExhausted, ClientBudget

REFUSED = 1  # error code: this device refuses the round (backbone or projection mismatch, bad data, no budget left)
BUDGET_KEY = "dp-budget"


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


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
    return fn(cfg, model.tokenizer, pid, n)


def _budget(cfg: FedConfig, context: Context) -> ClientBudget | None:
    """This node's DP accounting so far (None without DP)."""
    if cfg.privacy is None:
        return None
    kept = context.state.config_records.get(BUDGET_KEY)
    return ClientBudget.from_lists(cfg.privacy, dict(kept) if kept is not None else None)


def build_client_app(overrides: dict | None = None) -> ClientApp:
    """A ClientApp; `overrides` stand in for the run config where the engine passes none."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        pid, n = _partition(context)
        if "data-file" in context.node_config and "partition-id" not in context.node_config:
            pid = -1  # no GLUE partition: the server samples this node by its node id
        return Message(RecordDict({"partition": ConfigRecord({"partition-id": pid, "num-partitions": n})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = FedConfig.from_run_config(context.run_config, overrides)
        sent_config = dict(msg.content["config"])
        try:
            check_identity(model_for(cfg), sent_config)
            train_data = _data(cfg, context, "train")
        except (ValueError, FileNotFoundError) as err:
            return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
        sent = _arrays(msg.content["arrays"])
        pid, _ = _partition(context)
        budget = _budget(cfg, context)
        try:
            state, metrics = local_train(cfg, sent, train_data, int(sent_config["server-round"]), pid, budget=budget)
        except BudgetExhausted as err:
            return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
        if budget is not None:  # the node state outlives this message (and, deployed, this process)
            context.state[BUDGET_KEY] = ConfigRecord(budget.to_lists())
        fingerprint = sent_config.get("fingerprint")
        if pid in cfg.faults:
            state, fingerprint = corrupt(cfg.faults[pid], state, sent, fingerprint)
        meta = ConfigRecord({"fingerprint": fingerprint or "", "partition-id": pid})
        arrays = ArrayRecord({k: Array(v) for k, v in state.items()})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), "meta": meta}),
                       reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = FedConfig.from_run_config(context.run_config, overrides)
        try:
            check_identity(model_for(cfg), dict(msg.content["config"]))
            eval_data = _data(cfg, context, "eval")
        except (ValueError, FileNotFoundError) as err:
            return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
        metrics = local_evaluate(cfg, _arrays(msg.content["arrays"]), eval_data)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = build_client_app()
