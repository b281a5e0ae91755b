"""Overhead of SLaSh and JR-WARP on the default backbone, printed as one JSON object.

Training: time per sample of a full step (forward, loss, backward, AdamW) for each method,
against its floor: the same frozen backbone's forward plus the backward pass of activation
gradients down to where the method's vector first enters (SLaSh: block 0's output Linear;
JR-WARP: block 0's input), with no weight gradients; every variant cycles through the same batches. Inference: latency of the
exported SLaSh backbone (shifts folded into biases) against the untouched backbone.
Variants run interleaved and the median is reported, so load from elsewhere hits all alike.

    python -m simulations.bench_overhead [--data-dir ../shared/glue] [--batch-size 32] [--rounds 7]
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from fedrp import artifact
from fedrp.adapters import build_model, make_config
from fedrp.backbone import load_backbone, target_linears
from fedrp.export import export, load_exported
from fedrp.inputs import batch_inputs, classify
from simulations.bench_options import glue_dir_default, machine, report

TARGETS = {"slash_train_ratio_max": 1.10, "export_latency_ratio_max": 1.02}


def sst2_sentences(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "SST-2" / "dev.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"expected SST-2 dev sentences at {path} (GLUE layout); pass --data-dir")
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [r[0] for r in rows[:n]]


class Floor(torch.nn.Module):
    """The frozen backbone's forward plus the backward that a method's own gradient needs: activation
    gradients from the loss down to the output of `entry`, the first module whose output the
    method's vector changes, and no further; no weight gradients."""

    def __init__(self, backbone, entry: torch.nn.Module, num_labels: int = 2) -> None:
        super().__init__()
        self.backbone = backbone.model
        self.tokenizer = backbone.tokenizer
        self.head = torch.nn.Linear(backbone.hidden_size, num_labels).requires_grad_(False)
        entry.register_forward_hook(lambda m, a, out: out.detach().requires_grad_())

    def forward(self, **batch):
        hidden = self.backbone(**batch).last_hidden_state
        return classify(hidden, batch, self.head, "mask", self.tokenizer.mask_token_id)


def floor_for(method: str) -> Floor:
    """SLaSh's first shift is added to block 0's output Linear; JR-WARP's prompt enters block 0's input."""
    backbone = load_backbone()
    if method == "slash":
        return Floor(backbone, target_linears(backbone.model, "output")[0])
    return Floor(backbone, backbone.model.embeddings)


def train_step(model, batch, labels, optimizer) -> None:
    loss = torch.nn.functional.cross_entropy(model(**batch), labels)
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if optimizer is not None:
        optimizer.step()


def interleaved_medians(fns: dict, rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per call of each fn, the variants taking turns round by round."""
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_training(batches, labels, rounds: int, steps: int) -> dict:
    models = {"slash": build_model(load_backbone(), make_config("slash")),
              "jrwarp": build_model(load_backbone(), make_config("jrwarp"))}
    opts = {k: torch.optim.AdamW(m.trainable_parameters().values(), lr=1e-2) for k, m in models.items()}
    for m in models.values():
        m.train()

    def runner(model, opt):
        position = {"i": 0}

        def run():  # every variant walks the same batches in the same order
            train_step(model, batches[position["i"] % len(batches)], labels, opt)
            position["i"] += 1
        return run

    fns = {**{f"floor_{k}": runner(floor_for(k), None) for k in models},
           **{k: runner(m, opts[k]) for k, m in models.items()}}
    med = interleaved_medians(fns, rounds, steps)
    bs = len(labels)
    out = {k: {"ms_per_sample": 1000 * v / bs, "samples_per_second": bs / v} for k, v in med.items()}
    for k in models:
        out[k]["ratio_to_floor"] = med[k] / med[f"floor_{k}"]
    return out


def bench_inference(texts: list[str], rounds: int, steps: int) -> dict:
    model = build_model(load_backbone(), make_config("slash"))
    with torch.no_grad():
        model.z.normal_()
    with tempfile.TemporaryDirectory() as tmp:
        path = artifact.save(artifact.from_model(model), Path(tmp) / "a.safetensors")
        exported = load_exported(export(path, Path(tmp) / "exported")).backbone
    plain = load_backbone()
    results = {}
    for bs in (1, 32):
        batch = batch_inputs(plain.tokenizer, texts[:bs], pooling="mask")
        with torch.inference_mode():
            med = interleaved_medians(
                {"backbone": lambda b=batch: plain.model(**b), "exported_slash": lambda b=batch: exported(**b)},
                rounds, steps,
            )
        results[f"batch_{bs}"] = {
            "backbone_ms": 1000 * med["backbone"], "exported_slash_ms": 1000 * med["exported_slash"],
            "ratio": med["exported_slash"] / med["backbone"],
        }
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(glue_dir_default()))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    host = machine()  # before the work: whether other jobs shared the cores
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)

    texts = sst2_sentences(args.data_dir, args.batch_size * args.num_batches)
    tok = load_backbone().tokenizer
    batches = [batch_inputs(tok, texts[i:i + args.batch_size]) for i in range(0, len(texts), args.batch_size)]
    labels = torch.randint(0, 2, (args.batch_size,))
    train = bench_training(batches, labels, args.rounds, args.steps)
    infer = bench_inference(texts, args.rounds, args.steps * 3)
    result = {
        "device": "cpu", "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "batch_size": args.batch_size,
        "mean_tokens": sum(int(b["attention_mask"].sum()) for b in batches) / len(texts),
        "train": train, "inference": infer, "targets": TARGETS,
        "met": {
            "slash_train": train["slash"]["ratio_to_floor"] <= TARGETS["slash_train_ratio_max"],
            "export_latency": all(v["ratio"] <= TARGETS["export_latency_ratio_max"] for v in infer.values()),
        },
    }
    report(result, host)


if __name__ == "__main__":
    main()
