"""The federated task, without Flower: run config, the model and data a client needs, local rounds.

The Flower apps in clients/ and server/ are thin wrappers over these functions, so the same
logic runs under the simulation engine, the deployment engine and plain Python tests:
config (the run config and the round schedule), model (the model a client builds and the
identity it proves), clientdata (a client's examples) and local (a client's round).
"""

from fedrp.data import label_counts
from fedrp.federation.clientdata import (
    client_eval_data,
    client_indices,
    client_train_data,
    local_data_file,
    validation_data,
    warm_caches,
)
from fedrp.federation.config import FedConfig, check_run_max_length, round_lr, round_seed
from fedrp.federation.local import (
    federation_offsets,
    local_evaluate,
    local_train,
    local_train_config,
    logit_offsets,
    round_correction,
    round_prior,
    server_evaluate,
)
from fedrp.federation.model import check_identity, check_labels, identity, initial_state, model_for

__all__ = [
    "FedConfig", "check_identity", "check_labels", "check_run_max_length", "client_eval_data", "client_indices", "client_train_data",
    "federation_offsets", "identity", "initial_state", "label_counts", "local_data_file", "local_evaluate",
    "local_train", "local_train_config", "logit_offsets", "model_for", "round_correction", "round_lr", "round_prior", "round_seed",
    "server_evaluate",
    "validation_data", "warm_caches",
]
