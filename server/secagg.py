"""One training round through Flower's SecAgg+ workflow: the server learns only the weighted mean update.

In Flower 1.42 SecAgg+ runs only on the legacy path (a `LegacyContext` with a legacy
`Strategy`), so this module drives `SecAggPlusWorkflow` for a single round with a relay
strategy: it hands the workflow the clients fedrp's sampler chose and keeps what comes back.
Per-reply validation is impossible by design; clients check their identity and the
finiteness of their update themselves, and a client that fails or refuses counts as a
dropout, whose masks SecAgg+ removes from the others' shares.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
from flwr.serverapp import Grid

from fedrp import payload
from fedrp.secagg import SecAggConfig


class _Relay(Strategy):
    """A legacy strategy that samples nothing itself: fedrp's seeded sampler has chosen the clients."""

    def __init__(self, fitins: list[tuple[GridClientProxy, FitIns]]) -> None:
        self.fitins = fitins
        self.results: list[tuple[int, FitRes]] = []
        self.failures: list[BaseException] = []
        self.mean: Parameters | None = None

    def configure_fit(self, server_round, parameters, client_manager):
        return self.fitins

    def aggregate_fit(self, server_round, results, failures):
        # The workflow has already replaced every result's parameters by the unmasked weighted mean.
        self.results = [(proxy.node_id, res) for proxy, res in results]
        self.failures = list(failures)
        self.mean = results[0][1].parameters if results else None
        return self.mean, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def secure_round(grid: Grid, rnd: int, node_ids: list[int], arrays: list, config: dict, secagg: SecAggConfig,
                 timeout: float) -> tuple[list | None, dict[int, dict], list[str]]:
    """Run SecAgg+ over `node_ids`; returns the mean update (None if the protocol halted), each
    surviving node's plaintext metrics and the failures' reasons."""
    parameters = ndarrays_to_parameters(arrays)
    fitins = [(GridClientProxy(n, grid, grid.run.run_id), FitIns(parameters, dict(config))) for n in node_ids]
    relay = _Relay(fitins)
    context = LegacyContext(Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(),
                                    run_config={}), strategy=relay)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: rnd})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(parameters, True)
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=secagg.threshold,
                                  max_weight=secagg.max_weight, clipping_range=secagg.clipping_range,
                                  quantization_range=secagg.quantization_range, timeout=timeout)
    workflow(grid, context)
    survivors = {node: dict(res.metrics) for node, res in relay.results}
    reasons = [_reason(f) for f in relay.failures]
    mean = parameters_to_ndarrays(relay.mean) if relay.mean is not None else None
    return mean, survivors, reasons


def _reason(failure: BaseException) -> str:
    """The last line of a failed node's error (a refusal's reason, or a crash's final message)."""
    text = str(getattr(failure.args[0], "reason", failure.args[0])) if failure.args else str(failure)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(failure).__name__


def masked_nbytes(arrays: list) -> int:
    """What one client uploads in stage 2: every coordinate as an int64 below the 2^32 modulus, plus
    its quantised weight (SecAgg+ adds keys and shares in the other stages, not counted here)."""
    return 8 * (sum(int(np.prod(a.shape)) for a in arrays) + 1)


def records(sent_to: list[int], survivors: dict[int, dict], reasons: list[str], nodes: dict[int, int | None],
            nbytes: int) -> list[dict]:
    """One store record per sampled node; SecAgg+ cannot say which failure came from which dropout."""
    detail = "; ".join(sorted(set(reasons))) or "no reply"
    out = []
    for node in sent_to:
        record = {"node_id": node, "partition_id": nodes.get(node)}
        if node in survivors:
            metrics = {k: float(v) for k, v in survivors[node].items() if isinstance(v, int | float)}
            out.append({**record, "status": "accepted", "bytes": nbytes, "num_examples": metrics.get("num-examples"),
                        "metrics": metrics})
        else:
            out.append({**record, "status": "refused", "reason": payload.CLIENT_ERROR, "detail": detail})
    return out
