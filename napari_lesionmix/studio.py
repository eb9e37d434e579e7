"""``python -m napari_lesionmix.studio``: open napari with the LesionMix studio docked.

What ``make studio`` runs. The studio itself lives in
:mod:`napari_lesionmix.widgets.studio`, since only ``widgets/`` may import napari.
This module stays Qt-free: it first checks that a window can open here at all,
because Qt aborts the whole process (a core dump, no message) when it cannot.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

# What a GUI start needs, run in a child process so that Qt's abort cannot take the caller down.
# ``viewer=True`` goes as far as a napari viewer with its OpenGL canvas (what the GUI tests do).
_PROBE_APP = "from qtpy.QtWidgets import QApplication; app = QApplication([])"
_PROBE_VIEWER = _PROBE_APP + "; import napari; napari.Viewer(show=False).close()"


def gui_problem(viewer: bool = False, timeout: float = 120.0) -> str | None:
    """Why napari cannot open a window in this environment, or ``None`` when it can.

    Parameters
    ----------
    viewer : bool
        Start a whole napari viewer (Qt window and OpenGL canvas), not only a
        ``QApplication``: slower (seconds), but it also catches a broken GL.
    timeout : float
        Seconds the child process may take.

    Returns
    -------
    str or None
        The last line the failed start printed (Qt's own complaint), with its
        exit status; ``None`` when the start worked.
    """
    code = _PROBE_VIEWER if viewer else _PROBE_APP
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"starting a Qt window took over {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "qt.qpa" in ln or "Error" in ln), lines[-1] if lines else "")
    return f"starting a Qt window failed (exit {proc.returncode}): {detail}"


def missing_studio_packages() -> list[str]:
    """The packages of the ``studio`` extra that are not installed (found, not imported: imports are slow)."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a broken install counts as absent
            return True

    return [name for name in ("napari", "magicgui", "qtpy") if absent(name)]


def no_display() -> bool:
    """True on Linux with neither an X nor a Wayland display (and no Qt platform chosen by hand)."""
    return (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"))


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, check that a window can open, then open the studio."""
    parser = argparse.ArgumentParser(prog="python -m napari_lesionmix.studio",
                                     description="Open napari with the LesionMix studio docked.")
    parser.add_argument("--no-sample", action="store_true", help="open without loading the sample pair")
    args = parser.parse_args(argv)
    if (missing := missing_studio_packages()):
        sys.exit(f"The studio needs {', '.join(missing)}, which the core install leaves out: "
                 "pip install 'napari-lesionmix[qt]' (or [studio] beside a Qt binding you have).")
    if no_display():
        sys.exit("No display to open the studio on (neither DISPLAY nor WAYLAND_DISPLAY is set): "
                 "run it as 'xvfb-run -a make studio' on a headless machine, or from a desktop session.")
    problem = gui_problem()
    if problem is not None:
        sys.exit(f"The studio cannot open a window here: {problem}. On Debian/Ubuntu, "
                 "'scripts/system-deps.sh' (as root) installs what napari needs.")
    from napari_lesionmix.widgets.studio import run

    run(load_sample=not args.no_sample)


if __name__ == "__main__":
    main()
