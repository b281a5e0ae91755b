"""What the command lines of the benchmarks and the experiment harness share, stated once."""

from __future__ import annotations

import argparse
import os

from fedrp import glue

# The workplace's GLUE copy, beside the checkout. fedrp itself falls back to the Hugging Face Hub
# (fedrp.glue.data_dir); a benchmark must never download, so it reads this copy unless told otherwise.
SHARED_GLUE = "../shared/glue"


def glue_dir_default() -> str:
    """$FEDRP_GLUE_DIR, else the shared copy."""
    return os.environ.get(glue.GLUE_DIR_ENV) or SHARED_GLUE


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """--data-dir with the benchmarks' default."""
    parser.add_argument("--data-dir", default=glue_dir_default(),
                        help=f"GLUE folder in the official layout (default: ${glue.GLUE_DIR_ENV}, else {SHARED_GLUE})")
