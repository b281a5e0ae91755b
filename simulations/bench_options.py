"""What the command lines and the JSON of the benchmarks and the experiment harness share, stated once.

Nothing here imports fedrp at module level: a benchmark that times fedrp's imports (bench_task_scale)
uses it too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

# The workplace's GLUE copy, beside the checkout. fedrp itself falls back to the Hugging Face Hub
# (fedrp.glue.data_dir); a benchmark must never download, so it reads this copy unless told otherwise.
SHARED_GLUE = "../shared/glue"
BUSY_LOAD = 0.5  # a 1-minute load average above this at the start: other work shares the cores


def glue_dir_default() -> str:
    """$FEDRP_GLUE_DIR, else the shared copy."""
    from fedrp.glue import GLUE_DIR_ENV  # here, not above: fedrp.glue imports datasets

    return os.environ.get(GLUE_DIR_ENV) or SHARED_GLUE


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """--data-dir with the benchmarks' default."""
    parser.add_argument("--data-dir", default=glue_dir_default(),
                        help=f"GLUE folder in the official layout (default: $FEDRP_GLUE_DIR, else {SHARED_GLUE})")


def machine() -> dict:
    """What a benchmark's JSON says of the machine its timings come from, and whether other work was running
    when it started (`idle_at_start`; a timing from a busy machine is an upper bound, not a measurement)."""
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if cpuinfo.is_file() else platform.processor()
    load = os.getloadavg()
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_total_mb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20),
            "load_average_at_start": [round(x, 2) for x in load], "idle_at_start": load[0] <= BUSY_LOAD,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform()}


def commit() -> str | None:
    """The checkout's commit, with "+changes" when tracked files differ from it (None outside git): which code
    the numbers are of."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changed else "")


def report(out: dict, host: dict) -> dict:
    """A benchmark's JSON on stdout, with the machine (`machine()`, taken before the work) and the commit."""
    out = {**out, "machine": host, "commit": commit()}
    print(json.dumps(out, indent=1))
    return out
