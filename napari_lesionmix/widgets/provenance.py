"""Provenance dock widget: the params of the current synthetic case, copy as JSON, replay.

The text box shows ``{"version", "inputs", "params"}`` (the ``params.json``
layout of :func:`napari_lesionmix.io.synthetic.write_synthetic`). "Replay" reads
the box (or any pasted ``params.json`` or export manifest record), rebuilds the
params with :func:`~napari_lesionmix.augment.params.params_from_json`, checks
that they were drawn on the loaded cases, and replays them: through the
replayer a method's dock registered in ``session.replayers`` (which also moves
its controls, and applies the recorded intensity maps as the registry does),
else through the registry
(:func:`~napari_lesionmix.augment.registry.replay`), so any registered method
replays. A bad JSON becomes a notification, and nothing else changes.

Params recorded on other cases than the loaded ones would give another sample
(the same draw on other scans): the message names the recorded and the loaded
case ids, and a "Replay anyway" button appears, the explicit choice to apply
them to the loaded pair.

A record with ``"harmonization"`` (what Harmonize recorded: method, checkpoint
and its sha256, device) replays whole: once the method's sample is back, the
same harmonizer (:func:`~napari_lesionmix.harmonize.harmonizer_from_record`)
harmonizes it again in a worker.
"""

from __future__ import annotations

import json

from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment.params import Synthetic, params_from_json
from napari_lesionmix.augment.registry import Inputs, check_recorded_cases, get_method, replay
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.widgets.controls import make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error


def provenance_record(session) -> dict:
    """The JSON-ready record of the session's current synthetic case."""
    from napari_lesionmix import __version__

    syn = session.synthetic
    if syn is None:
        return {}
    inputs = {}
    for role, case in (("host", session.host), ("donor", session.donor)):
        if case is not None:
            inputs[role] = {"case_id": case.case_id, "images": list(case.image_paths),
                            "label": case.label_path}
    # Params first: they are what a user reads and replays.
    record = {"version": __version__, "params": syn.params.to_dict(), "inputs": inputs}
    if session.harmonization:
        record["harmonization"] = session.harmonization  # so a harmonized sample replays whole
    return record


def _harmonization_of(text: str) -> dict | None:
    """The ``"harmonization"`` record of a params.json text, if it has one."""
    data = json.loads(text)
    return data.get("harmonization") if isinstance(data, dict) and isinstance(data.get("harmonization"), dict) else None


class ProvenanceWidget(QWidget):
    """Provenance dock widget (Plugins > LesionMix > Provenance)."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.text = QPlainTextEdit()
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setPlaceholderText("The params of the current synthetic case appear here; "
                                     "paste a params.json here to replay it.")
        self.copy_btn = QPushButton("Copy JSON")
        self.replay_btn = QPushButton("Replay from JSON")
        self.anyway_btn = QPushButton("Replay anyway")
        self.anyway_btn.setToolTip("Apply params recorded on other cases to the loaded pair (another sample)")
        self.anyway_btn.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.copy_btn)
        row.addWidget(self.replay_btn)
        row.addWidget(self.anyway_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text)
        lay.addLayout(row)
        lay.addWidget(self.status)
        make_scrollable(self)
        self.copy_btn.clicked.connect(self.copy_json)
        self.replay_btn.clicked.connect(lambda: self.replay())
        self.anyway_btn.clicked.connect(lambda: self.replay(anyway=True))
        self.text.textChanged.connect(lambda: self.anyway_btn.setVisible(False))
        bind(self, self.session.synthetic_changed, self.refresh)
        bind(self, self.session.synthetic_changed, self._harmonize_replayed)
        self._pending = None  # (params, harmonization record) of a replay still to be harmonized
        self.refresh()

    def refresh(self) -> None:
        rec = provenance_record(self.session)
        self.text.setPlainText(json.dumps(rec, indent=2) if rec else "")
        if rec:
            p = self.session.synthetic.params
            self.status.setText(f"Current case: {p.method} of donor '{getattr(p, 'donor_id', '?')}' "
                                f"into host '{getattr(p, 'host_id', '?')}'.")

    def copy_json(self) -> str:
        text = self.text.toPlainText()
        QApplication.clipboard().setText(text)
        self.status.setText("Copied the JSON to the clipboard.")
        return text

    def replay(self, text: str | None = None, anyway: bool = False) -> bool:
        """Replay params JSON (default: the text box); ``True`` if the replay was started.

        ``anyway``: replay params recorded on other cases on the loaded ones (the user's explicit choice).
        """
        text = self.text.toPlainText() if text is None else text
        self.anyway_btn.setVisible(False)
        self._pending = None
        try:
            if not text.strip():
                raise LesionMixError("There is no params JSON to replay; paste a params.json first.")
            params = params_from_json(text)
            method = get_method(params.method)
            s = self.session
            if s.host is None:
                raise LesionMixError("No host is loaded; use the Load widget first.")
            inputs = Inputs(s.host, s.donor if method.needs_donor else None, s.host_brain_mask)
            harmonization = _harmonization_of(text)
            if not anyway:
                try:
                    check_recorded_cases(params, inputs, "The params in the box")
                except LesionMixError as exc:
                    self._offer_anyway(params, inputs, exc)
                    return False
            replayer = s.replayers.get(params.method)
            if harmonization:
                self._pending = (params, harmonization)
            if replayer is not None:
                replayer(params)
            else:
                method.check_inputs(inputs)
                s.run(replay, params, inputs.host, inputs.donor, brain_mask=inputs.brain_mask, sources=s,
                      on_done=s.set_synthetic, desc=f"Replaying {method.label}", owner=self)
        except LesionMixError as exc:
            notify_error(str(exc))
            self.status.setText(str(exc))
            return False
        self.status.setText(f"Replaying {params.method} params"
                            + (" on the loaded cases, not the recorded ones..." if anyway else "..."))
        return True

    def _harmonize_replayed(self) -> None:
        """The replayed sample is back: harmonize it as it was recorded (in a worker)."""
        s = self.session
        if self._pending is None or s.synthetic is None or s.synthetic.params != self._pending[0]:
            return
        record = self._pending[1]
        self._pending = None
        syn, spacing = s.synthetic, s.host.spacing

        def _work():
            from napari_lesionmix.harmonize import harmonizer_from_record

            h = harmonizer_from_record(record)
            image = h.harmonize(syn.image, syn.mask, label=syn.label, spacing=spacing)
            return image, {**h.params(), "device": str(getattr(h, "device", record.get("device", "cpu")))}

        def _done(result):
            image, used = result
            if s.synthetic is syn:
                s.set_synthetic(Synthetic(image=image, label=syn.label, mask=syn.mask, params=syn.params),
                                harmonization=used)
                self.status.setText(f"Replayed and harmonized with {used['method']} on {used['device']}.")

        self.status.setText(f"Harmonizing the replayed sample with {record.get('method')}...")
        s.run_latest(self, _work, on_done=_done, desc="Provenance: harmonize the replayed sample",
                     on_error=lambda exc: self.status.setText(str(exc)))

    def _offer_anyway(self, params, inputs, exc: LesionMixError) -> None:
        """Say which cases the params were recorded on and which are loaded; offer "Replay anyway"."""
        def ids(host, donor):
            return f"host '{host}'" + (f", donor '{donor}'" if donor is not None else "")

        loaded = ids(inputs.host.case_id, inputs.donor.case_id if inputs.donor is not None else None)
        recorded = ids(params.host_id, getattr(params, "donor_id", None))
        msg = (f"{exc} Recorded on {recorded}; loaded: {loaded}. Press 'Replay anyway' to apply them to the "
               "loaded cases (another sample than the recorded one).")
        notify_error(msg)
        self.status.setText(msg)
        self.anyway_btn.setVisible(True)
