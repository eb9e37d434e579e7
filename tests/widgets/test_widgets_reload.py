"""Reloading pairs of other grids in a shown studio must never crash the process (issue 22).

The sequence (sample 2 mm pair, a 1 mm pair from files, the sample again, a 1 mm pair from a scanned
folder, then the host changed twice with the Provenance tab raised) runs in a child process
(:mod:`crash_sequence`) under the display pytest-xvfb started: a segfault there is a failed test
with the signal's name, never a skip and never a dead pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_reloading_pairs_of_other_grids_does_not_crash(tmp_path, qapp):
    # qapp: a GUI test (skipped with the installer's sentence only where no window can open at all).
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-X", "faulthandler", str(HERE / "crash_sequence.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        pytest.fail(f"the studio died of {signal.Signals(-proc.returncode).name} after "
                    f"{[ln for ln in proc.stdout.splitlines() if ln.startswith('STEP')][-1:]}:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]
    assert "DONE" in proc.stdout, out[-4000:]
