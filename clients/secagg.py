"""The ClientApp's side of SecAgg+: Flower's mod around the train handler, and the round it masks.

Flower 1.42's `secaggplus_mod` speaks the legacy FitIns/FitRes records, so a SecAgg+ round arrives
and leaves in that shape; this module converts at the edge, and the ClientApp's own round
(`local_round`) stays the same under SecAgg+ as without it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Context, Error, Message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from fedrp.federation import FedConfig
from fedrp.refusals import REFUSED, Refusal, StateMismatch
from fedrp.secagg import client_update

# (run config, the round's config, the arrays sent, context) -> (state, metrics, fingerprint); raises a Refusal
LocalRound = Callable[[FedConfig, dict, dict[str, np.ndarray], Context], tuple[dict, dict, str | None]]


class Refused(Exception):
    """Raised inside SecAgg+'s stage 2, whose mod expects a result, when this device refuses the round."""


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """SecAgg+ for the messages of its workflow (they carry its config record); the rest pass through."""
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)

    def train_or_raise(m: Message, c: Context) -> Message:
        reply = call_next(m, c)
        if reply.has_error():
            raise Refused(reply.error.reason)
        return reply

    try:
        return secaggplus_mod(msg, context, train_or_raise)
    except Refused as err:  # SecAgg+ treats this node as a dropout and unmasks the others without it
        return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)


def train_secure(cfg: FedConfig, msg: Message, context: Context, local_round: LocalRound,
                 partition_id: int) -> Message:
    """A round inside SecAgg+: the state comes as a legacy FitIns, the update leaves as a FitRes for the mod to mask."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    names = str(config.get("array-names", "")).split(",")
    arrays = parameters_to_ndarrays(fitins.parameters)
    try:
        if len(names) != len(arrays):
            raise StateMismatch(f"the round sends {len(arrays)} arrays but names {len(names)}: {names}")
        sent = dict(zip(names, arrays, strict=True))  # local_train refuses names or shapes this model lacks
        state, metrics, fingerprint = local_round(cfg, config, sent, context)
        update, weight = client_update(sent, state, int(metrics["num-examples"]), cfg.secagg, cfg.client_dp)
    except Refusal as err:
        return Message(Error(code=REFUSED, reason=str(err)), reply_to=msg)
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), int(weight),
                    {**metrics, "fingerprint": fingerprint or "", "partition-id": partition_id})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
