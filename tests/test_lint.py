"""ruff's rules over the whole tree, with the version the test extra pins, so CI runs them with the tests;
and the generated reference page, which must not drift from the code it documents."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_the_reference_page_is_what_the_config_classes_and_parsers_generate():
    from simulations.reference import PATH, render

    assert PATH.read_text() == render(), "docs/guide/reference.md is stale: run `python -m simulations.reference`"
