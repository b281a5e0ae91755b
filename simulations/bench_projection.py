"""Memory and time of the three projection modes, printed as one JSON object.

Two shapes: a big model (d = 4096, 32 blocks of H = 4096: 2 GiB of stored float32) and the
default (d = 1024, 6 blocks of H = 384). For each mode, in a fresh process: building the
projections (stored: generating W_l and copying them into buffers, as AdapterModel does, with
a fresh disk cache), the fingerprint, one forward z -> every z W_l and one backward to z.
Memory is the resident set: VmHWM after a step minus VmRSS before it (the high-water mark is
reset through /proc/self/clear_refs, glibc's mmap threshold is fixed so freed blocks go back
to the OS), so it counts numpy, torch and everything else. Big stored and streamed runs
measure a few blocks and scale times and stored bytes linearly (each block is independent);
the streamed peak does not grow with blocks and is reported as measured. CPU only; timings
on a shared machine are contended.

    python -m simulations.bench_projection [--big-blocks 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from simulations.bench_options import machine, report

SHAPES = {"big": (4096, 4096, 32), "default": (1024, 384, 6)}  # d, H, blocks
MODES = ("stored", "streamed", "srht")


def _status(field: str) -> int:
    """A /proc/self/status memory line in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _measured(step) -> tuple[object, float, int, int]:
    """(result, seconds, peak extra RSS during the step, RSS still held after it)."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    return result, seconds, _status("VmHWM") - before, _status("VmRSS") - before


def child(shape: str, mode: str, blocks: int) -> dict:
    """One mode on one shape, in this (fresh) process."""
    import torch

    from fedrp import projection
    from fedrp.adapters.projectors import make_projections

    d, width, total = SHAPES[shape]
    spec = projection.ProjectionSpec(0, d, "gaussian", "output", (width,) * blocks, mode=mode)
    proj, build_s, build_peak, held = _measured(lambda: make_projections(spec))
    if mode == "stored":
        projection.generate.cache_clear()  # the fingerprint below then reads the disk cache, as a new process would
    _, fp_s, fp_peak, _ = _measured(lambda: projection.fingerprint(spec))
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(d, generator=g) / d**0.5).requires_grad_()
    up = torch.randn(blocks, width, generator=g)
    shifts, fwd_s, fwd_peak, _ = _measured(lambda: [proj.project(i, z) for i in range(blocks)])
    loss = sum((s * up[i]).sum() for i, s in enumerate(shifts))
    _, bwd_s, bwd_peak, _ = _measured(loss.backward)
    scale = total / blocks
    grows = scale if mode == "stored" else 1.0  # stored holds every block; the others hold nothing per block
    return {
        "blocks_measured": blocks, "blocks": total, "scaled": blocks != total,
        "stored_bytes": 4 * d * width * total if mode == "stored" else 0,
        "held_rss_bytes": int(held * grows),
        "build_s": build_s * scale, "build_peak_bytes": int(held * grows + build_peak - held),  # held + transient
        "fingerprint_s": fp_s * scale, "fingerprint_peak_bytes": fp_peak,
        "generation_ns_per_value": fp_s / (d * width * blocks) * 1e9 if mode == "streamed" else None,
        "forward_s": fwd_s * scale, "forward_peak_bytes": fwd_peak,
        "backward_s": bwd_s * scale, "backward_peak_bytes": bwd_peak,
        "threads": torch.get_num_threads(),
    }


def run_child(shape: str, mode: str, blocks: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "FEDRP_CACHE": tempfile.mkdtemp(prefix="bench-proj-")}
    cmd = [sys.executable, "-m", "simulations.bench_projection", "--child", shape, mode, str(blocks)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-blocks", type=int, default=4, help="blocks measured (big stored, streamed), then scaled")
    parser.add_argument("--child", nargs=3, metavar=("SHAPE", "MODE", "BLOCKS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    host = machine()  # before the work: whether other jobs shared the cores
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    start = time.perf_counter()
    results: dict = {}
    for shape, (d, width, total) in SHAPES.items():
        results[shape] = {"d": d, "H": width, "blocks": total}
        for mode in MODES:
            blocks = min(args.big_blocks, total) if shape == "big" and mode != "srht" else total
            results[shape][mode] = run_child(shape, mode, blocks)
    results["memory"] = ("peak/held: resident set (VmHWM after a step minus VmRSS before it) in a fresh process "
                         "per mode; counts numpy, torch and the allocator")
    results["note"] = ("CPU only. Big stored and streamed "
                       f"measure {args.big_blocks} blocks and scale times and held bytes by blocks; peaks of "
                       "streamed and srht do not grow with blocks. Stored build includes writing the disk cache; "
                       "the buffers share generate()'s cached arrays (one copy of W). "
                       "generation_ns_per_value (streamed): its fingerprint pass, generate + hash, per W entry; "
                       "stored's fingerprint reads the disk cache its build wrote.")
    results["wall_s"] = time.perf_counter() - start
    report(results, {**host, "python": platform.python_version()})


if __name__ == "__main__":
    main()
