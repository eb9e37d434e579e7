"""Shared fixtures: small synthetic cases written to disk, and the shipped sample data.

Also decides, once per run, whether napari can open a window here: when it
cannot (no X server, missing Qt libraries), every GUI test is skipped with the
one sentence ``scripts/system-deps.sh`` prints, instead of Qt aborting the run.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Torch and BLAS threads fight over the 2 cores of CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# napari's settings (reader preferences the studio sets, ...) go to a throw-away file, never the user's.
if "NAPARI_CONFIG" not in os.environ:
    _napari_config = tempfile.mkdtemp(prefix="lesionmix-tests-napari-")
    atexit.register(shutil.rmtree, _napari_config, ignore_errors=True)
    os.environ["NAPARI_CONFIG"] = os.path.join(_napari_config, "settings.yaml")

from napari_lesionmix.io.nifti import Case  # noqa: E402
from napari_lesionmix.studio import gui_problem  # noqa: E402

SYSTEM_DEPS = Path(__file__).resolve().parents[1] / "scripts" / "system-deps.sh"
# Fixtures that start Qt: a test using one is a GUI test even without the ``gui`` marker.
GUI_FIXTURES = {"qtbot", "qapp", "make_napari_viewer", "make_napari_viewer_proxy"}


@functools.cache
def gui_skip_reason() -> str | None:
    """Why the GUI tests cannot run here (``None`` when they can); asked once per run.

    A napari viewer is started in a child process under the display pytest-xvfb
    set up (it has started Xvfb by now when it could): Qt aborts the process it
    fails in. The reason is the installer's sentence naming the missing
    packages, or Qt's own complaint when no package is missing.
    """
    problem = gui_problem(viewer=True)
    if problem is None:
        return None
    missing = subprocess.run(["bash", str(SYSTEM_DEPS), "--check"], capture_output=True, text=True)
    return missing.stdout.strip() or f"napari cannot open a window here: {problem}"


def pytest_collection_modifyitems(config, items):
    gui = [it for it in items if it.get_closest_marker("gui") or GUI_FIXTURES & set(it.fixturenames)]
    if gui and (reason := gui_skip_reason()) is not None:
        for item in gui:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """Report a GUI test module that cannot even import Qt's libraries as skipped, not as an error."""
    report = yield
    if (report.failed and isinstance(collector, pytest.Module) and "ImportError" in str(report.longrepr)
            and ("Qt" in str(report.longrepr)) and (reason := gui_skip_reason()) is not None):
        report.outcome, report.longrepr = "skipped", (str(collector.path), 0, f"Skipped: {reason}")
    return report

from factories import SHAPE, SPACING, blob_label, make_affine, make_case, write_case  # noqa: E402,F401 (fixtures use them)


@pytest.fixture
def host_case() -> Case:
    return make_case(seed=1, n_lesions=2, case_id="host")


@pytest.fixture
def donor_case() -> Case:
    return make_case(seed=2, n_lesions=4, case_id="donor")


@pytest.fixture
def pair_on_disk(tmp_path, host_case, donor_case):
    """Host and donor written as NIfTI files: {"host": {...}, "donor": {...}}."""
    return {
        "host": write_case(host_case, tmp_path / "in", "host"),
        "donor": write_case(donor_case, tmp_path / "in", "donor"),
    }


@pytest.fixture(scope="session")
def sample_dataset():
    """The shipped sample subjects (plain pairs layout)."""
    from napari_lesionmix.sample_data import sample_dataset as _sample

    return _sample()


def load_pair(qtbot, load, session, pair: dict | None = None, until=lambda: True, timeout: int = 20000) -> None:
    """Load a host/donor pair through the Load widget and wait until the session has it.

    ``pair`` is :func:`pair_on_disk`'s dict (typed into the file fields), or
    ``None`` for the shipped sample pair; ``until`` is any further condition
    to wait for (e.g. the CarveMix widget's first mix).
    """
    if pair is None:
        load.load_sample_pair()
    else:
        fill_pair(load, pair)
        load.load_files()
    qtbot.waitUntil(lambda: session.has_pair and not session.busy and until(), timeout=timeout)


def fill_pair(load, pair: dict) -> None:
    """Type a pair's file names (:func:`pair_on_disk`'s dict) into the Load widget's fields."""
    load.host_image.setText(str(pair["host"]["images"][0]))
    load.host_label.setText(str(pair["host"]["label"]))
    load.donor_image.setText(str(pair["donor"]["images"][0]))
    load.donor_label.setText(str(pair["donor"]["label"]))


PLUGIN = "napari-lesionmix"


@pytest.fixture
def studio(make_napari_viewer_proxy, qtbot):
    """Open studio docks by their manifest names: ``viewer, docks, session = studio("CarveMix", "Load")``.

    Docks come from the manifest (as napari opens them, with a ``PublicOnlyProxy``
    viewer), the ones after the first tabified (or those named in ``tabify``). ``pair``: ``False`` loads nothing,
    ``None`` the shipped sample pair, a :func:`pair_on_disk` dict those files,
    through the "Load" dock; the call then waits until ``until(session, docks)``.
    At teardown it waits until the session's workers are done. Test modules
    wrap it in their own ``studio`` fixture that names their docks.
    """
    from napari_lesionmix.widgets.state import get_session

    sessions = []

    def open_docks(*names, pair=False, until=lambda session, docks: True, tabify=True):
        viewer = make_napari_viewer_proxy()
        docks = {}
        for k, name in enumerate(names):
            tab = (k > 0) if tabify is True else name in tabify  # or only the docks named in tabify
            _, docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tab)
        session = get_session(viewer)
        sessions.append(session)
        if pair is not False:
            load_pair(qtbot, docks["Load"], session, pair, until=lambda: until(session, docks))
        return viewer, docks, session

    yield open_docks
    for session in sessions:
        qtbot.waitUntil(lambda session=session: not session.busy, timeout=60000)
