"""The overhead benchmark's floor does the backward its method needs, no more and no less."""

import pytest
import torch

from fedrp.adapters import build_model, make_config
from fedrp.backbone import blocks, load_backbone
from fedrp.inputs import batch_inputs
from simulations.bench_overhead import floor_for


def _reaches_block0_attention(model, backbone_model) -> bool:
    """Whether a training step's backward pass runs through block 0's attention."""
    fired = []
    blocks(backbone_model)[0].attention.register_full_backward_hook(lambda *a: fired.append(1))
    batch = batch_inputs(model.tokenizer, ["a fine film", "not good at all"])
    torch.nn.functional.cross_entropy(model(**batch), torch.tensor([1, 0])).backward()
    return bool(fired)


@pytest.mark.parametrize("method", ["slash", "jrwarp"])
def test_floor_backpropagates_as_deep_as_the_method(method):
    model = build_model(load_backbone(), make_config(method))
    floor = floor_for(method)
    reached = _reaches_block0_attention(floor, floor.backbone)
    assert reached is (method == "jrwarp")  # SLaSh's first shift lies after block 0's attention
    assert reached is _reaches_block0_attention(model, model.backbone)
