"""Every trainable method by name, with the defaults a user gets when naming none."""

from __future__ import annotations

from fedrp.adapters import METHODS as ADAPTERS
from fedrp.adapters import build_model, get_method
from fedrp.backbone import Backbone
from fedrp.baselines import BASELINES, BaselineModel
from fedrp.classifier import Classifier
from fedrp.spec import ModelSpec

METHODS = (*ADAPTERS, *BASELINES)

# The best of a sweep on SST-2 (1,000 training examples, one epoch, batch 32, MiniLM-L6):
# `python -m simulations.bench_glue --suite sweep`; docs/guide/method.md lists every point.
DEFAULT_LR = {
    "slash": 3e-2, "jrwarp": 1e-2, "head": 3e-2, "full": 3e-4, "lora": 1e-2, "bitfit": 3e-3,
}

# Federated rates: each round restarts the clients' AdamW, whose first steps move every weight by
# about the rate whatever its gradient, so a restarted head swings under label skew at the
# centralized rate. SLaSh's was chosen on held-out training examples (`python -m simulations.tune`,
# docs/guide/results.md, "Tuning on held-out examples"), with local batches of 8 (FedConfig.batch_size): 25 local steps a round on
# a client's 200 examples instead of 7 at 32, for the same compute. On 1,000 held-out QNLI
# examples (10 Dirichlet(1.0) clients, 5 a round, 20 rounds, cosine decay; mean of the last three
# evaluations) AdamW at 1.5e-2 scored 0.668, at 3e-2 0.643, at 5e-3 0.55 after 5 rounds and 0.567
# after 10 (stopped); SGD with momentum 0.9 at 0.3 and batches of 32, the previous default, 0.522
# with FedAdam (server-lr 0.01): its steps are in proportion to the gradient, which is far larger
# for the head than for z, so z barely moved (norm 2.2 after 30 rounds against 8.3 centrally).
# On SST-2 (Dirichlet(0.5)) AdamW at 1.5e-2 with batches of 8 scored 0.816 against SGD's 0.803.
# The other methods' rates were chosen for batches of 32 and not measured again.
FEDERATED_LR = {
    "slash": 1.5e-2, "jrwarp": 3e-3, "head": 1e-2, "full": 1e-4, "lora": 3e-3, "bitfit": 1e-3,
}
FEDERATED_OPTIMIZER: dict[str, str] = {}  # every method: AdamW, unless local-optimizer says "sgd"
FEDERATED_SGD_LR = {"slash": 0.3}  # SGD with momentum 0.9 and batches of 32: 0.803 on the SST-2 split above


def federated_local(method: str, optimizer: str = "") -> tuple[str, float | None]:
    """A method's local optimizer in a federation (given, or its default) and that optimizer's rate (None: unmeasured)."""
    optimizer = optimizer or FEDERATED_OPTIMIZER.get(method, "adamw")
    rates = FEDERATED_SGD_LR if optimizer == "sgd" else FEDERATED_LR
    return optimizer, rates.get(method)


def build(spec: ModelSpec, backbone: Backbone) -> Classifier:
    """The model a spec describes, on a loaded backbone."""
    if spec.method in ADAPTERS:
        return build_model(backbone, get_method(spec.method).config_class.from_spec(spec))
    return BaselineModel(backbone, spec.method, spec.num_labels, spec.pooling, lora_rank=spec.lora_rank, seed=spec.seed)


def payload_bytes(model: Classifier, bytes_per_value: int = 4) -> int:
    """What one update of this method would send: every trainable value."""
    return model.num_trainable() * bytes_per_value
