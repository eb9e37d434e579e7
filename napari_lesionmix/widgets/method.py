"""The generic method dock: the studio as a face of the registry, as the CLI is.

:class:`MethodDock` builds one control per field of a registered method's
:class:`~napari_lesionmix.augment.registry.Options` (its default, bounds,
choices and help text are the field's), draws sample ``index`` of ``seed`` with
:func:`~napari_lesionmix.augment.registry.draw` over the session (the
registry's ``Sources``) and applies it with
:func:`~napari_lesionmix.augment.registry.apply_params`, in a ``thread_worker``.
So a studio sample is ``lesionmix METHOD --seed S --index I`` with the same
options, byte for byte. The shared ``intensity_match`` option is the session's
(one toggle for every dock) and is left out of the form.

Every dock keeps a history of the samples it made: back/forward (Ctrl+Z,
Ctrl+Shift+Z with the focus in the dock) apply a recorded sample again;
Ctrl+Return samples.

A method with no dock of its own gets one from the manifest with no widget
code: ``python_name: napari_lesionmix.widgets.method:NAME_dock`` (resolved by
this module's ``__getattr__``). Per-method extras subclass the dock (Soft-CP's
place at cursor, LesionMix's load histogram; CarveMix's live slider is its own
widget).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.widgets.controls import Collapsible, WorkIndicator, make_scrollable
from napari_lesionmix.widgets.state import bind, get_session, notify_error

#: Options no dock shows: the session holds the shared intensity step for every dock.
SESSION_OPTIONS = ("intensity_match",)
#: Samples a dock's history keeps (params only: a step back re-applies them).
HISTORY = 50
ERROR_STYLE = "color: #ff6b6b;"


def field_label(name: str) -> str:
    return name.replace("_", " ")


class OptionControl:
    """One Options field as a Qt control: :meth:`value` reads it, :meth:`set_value` writes it.

    bool: a check box; a choice: a combo box; a tuple of choices: one check box per choice
    (:attr:`boxes`); int and float: spin boxes within the field's bounds; an optional number: a
    check box that turns its spin box on; a pair of numbers: two spin boxes; other tuples and text: a
    line edit (empty = the default).
    """

    def __init__(self, f: dataclasses.Field, hint, label: str | None = None):
        self.field, self.name = f, f.name
        self.label = label or field_label(f.name)
        self.kind, self.many = registry.option_types(hint)
        self.meta = f.metadata
        self.optional = f.default is None
        self.boxes: dict[Any, QCheckBox] = {}
        self.spins: list = []
        self.enable: QCheckBox | None = None
        self.widget = self._build()
        self.widget.setToolTip(self.meta.get("help", ""))
        self.set_value(f.default)

    # -- building ----------------------------------------------------------------
    def _spin(self):
        lo, hi = self.meta.get("low"), self.meta.get("high")
        if self.kind is int:
            s = QSpinBox()
            s.setRange(int(lo if lo is not None else -(2**31) + 1) + bool(self.meta.get("open_low")),
                       int(hi if hi is not None else 2**31 - 1) - bool(self.meta.get("open_high")))
            return s
        s = QDoubleSpinBox()
        s.setDecimals(3)
        eps = 1e-3
        s.setRange(float(lo if lo is not None else -1e6) + (eps if self.meta.get("open_low") else 0.0),
                   float(hi if hi is not None else 1e6) - (eps if self.meta.get("open_high") else 0.0))
        s.setSingleStep(0.05 if hi is not None and hi <= 1.0 else 0.5)
        return s

    def _build(self) -> QWidget:
        choices = self.meta.get("choices")
        if self.kind is bool:
            return QCheckBox(self.label)
        if choices and self.many:
            box = QWidget()
            grid = QGridLayout(box)
            grid.setContentsMargins(0, 0, 0, 0)
            grid.setHorizontalSpacing(6)
            for i, c in enumerate(choices):
                self.boxes[c] = QCheckBox(str(c).replace("_", "-"))
                grid.addWidget(self.boxes[c], i // 3, i % 3)
            return box
        if choices:
            combo = QComboBox()
            for c in choices:
                combo.addItem(str(c), c)
            return combo
        if self.kind in (int, float) and not self.many and not self.optional:
            self.spins.append(self._spin())
            return self.spins[0]
        if self.kind in (int, float) and (not self.many or len(self.field.default or ()) == 2):
            row = QWidget()
            lay = QHBoxLayout(row)
            lay.setContentsMargins(0, 0, 0, 0)
            if self.optional:
                self.enable = QCheckBox("set")
                self.enable.setToolTip("unticked: the method's default")
                lay.addWidget(self.enable)
            for i in range(2 if self.many else 1):
                if i:
                    lay.addWidget(QLabel("to"))
                s = self._spin()
                self.spins.append(s)
                lay.addWidget(s, 1)
            if self.enable is not None:
                self.enable.toggled.connect(lambda on: [s.setEnabled(on) for s in self.spins])
            return row
        edit = QLineEdit()
        edit.setPlaceholderText("default" if self.optional or self.many else "")
        return edit

    # -- values ------------------------------------------------------------------
    def value(self) -> Any:
        """The control's value as the field takes it (raises LesionMixError for text that is no value)."""
        w = self.widget
        if self.kind is bool:
            return w.isChecked()
        if self.boxes:
            out = tuple(c for c, b in self.boxes.items() if b.isChecked())
            if not out:
                raise LesionMixError(f"Tick at least one {self.label} ('none' for no transform).")
            return out
        if isinstance(w, QComboBox):
            return w.currentData()
        if self.spins:
            if self.enable is not None and not self.enable.isChecked():
                return None
            values = tuple(self.kind(s.value()) for s in self.spins)
            return values if self.many else values[0]
        text = w.text().strip()
        if self.many:
            try:
                return tuple(self.kind(v) for v in text.replace(",", " ").split())
            except ValueError:
                raise LesionMixError(f"{self.label}: '{text}' is not a list of numbers.") from None
        if not text:
            return None if self.optional else ""
        return text

    def set_value(self, value: Any) -> None:
        w = self.widget
        if self.kind is bool:
            w.setChecked(bool(value))
        elif self.boxes:
            for c, b in self.boxes.items():
                b.setChecked(c in tuple(value or ()))
        elif isinstance(w, QComboBox):
            i = w.findData(value)
            if i >= 0:
                w.setCurrentIndex(i)
        elif self.spins:
            if self.enable is not None:
                self.enable.setChecked(value is not None)
                for s in self.spins:
                    s.setEnabled(value is not None)
            if value is not None:
                for s, v in zip(self.spins, value if self.many else (value,), strict=False):
                    s.setValue(v)
        else:
            w.setText(" ".join(map(str, value)) if self.many else ("" if value is None else str(value)))


class MethodDock(QWidget):
    """A studio dock for one registered method, its controls generated from the method's ``Options``.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes a ``PublicOnlyProxy``).
    method : str
        A registered method name (:func:`~napari_lesionmix.augment.registry.method_names`).

    Subclasses may set :attr:`GROUPS` (titled groups of fields), :attr:`LABELS` (shorter labels),
    :attr:`HIDDEN` (fields set otherwise, e.g. by a button) and :attr:`CUSTOM` (fields whose controls
    the subclass builds in :meth:`build_extras` and reads in :meth:`extra_options`).
    """

    METHOD: ClassVar[str] = ""
    #: (title, field names, opened) per group; fields in none go to a last group.
    GROUPS: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = ()
    LABELS: ClassVar[dict[str, str]] = {}
    HIDDEN: ClassVar[tuple[str, ...]] = ()
    CUSTOM: ClassVar[tuple[str, ...]] = ()

    def __init__(self, napari_viewer, method: str | None = None, parent=None):
        super().__init__(parent)
        self.session = get_session(napari_viewer)
        self.method = registry.get_method(method or self.METHOD)
        self.params: Params | None = None
        self.history: list[Params] = []
        self.position = -1  # index in history of the shown sample

        hints = typing.get_type_hints(self.method.Options)
        skip = set(SESSION_OPTIONS) | set(self.HIDDEN) | set(self.CUSTOM)
        self.controls: dict[str, OptionControl] = {}
        for f in dataclasses.fields(self.method.Options):
            if f.name not in skip:
                self.controls[f.name] = self.make_control(f, hints[f.name])

        lay = QVBoxLayout(self)
        self.build_extras(lay)
        placed: set[str] = set()
        rest = [n for n in self.controls if not any(n in names for _, names, _ in self.GROUPS)]
        groups = [*self.GROUPS, *([("Options" if not self.GROUPS else "More options", tuple(rest),
                                    not self.GROUPS)] if rest else [])]
        self.groups: dict[str, QWidget] = {}
        for title, names, opened in groups:
            names = [n for n in names if n in self.controls and n not in placed]
            if not names:
                continue
            box = QWidget()
            form = QFormLayout(box)
            form.setContentsMargins(0, 0, 0, 0)
            form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
            for n in names:
                ctl = self.controls[n]
                if ctl.kind is bool:
                    form.addRow(ctl.widget)
                else:
                    form.addRow(ctl.label, ctl.widget)
                placed.add(n)
            group = Collapsible(title, box, opened=opened)
            self.groups[title] = group
            lay.addWidget(group)

        # seed, index, sample, history
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("root seed: sample i of seed s is the CLI's --seed s --index i")
        self.index = QSpinBox()
        self.index.setRange(0, 2**31 - 1)
        self.index.setToolTip("index of the next sample (advances per sample)")
        self.sample_btn = QPushButton("Sample")
        self.sample_btn.setToolTip(f"Draw and apply {self.method.label} sample (seed, index)")
        #: Buttons that start work: off while it runs and without the cases they need.
        self.action_buttons = [self.sample_btn]
        row = QHBoxLayout()
        row.addWidget(QLabel("seed"))
        row.addWidget(self.seed, 1)
        row.addWidget(QLabel("index"))
        row.addWidget(self.index, 1)
        lay.addLayout(row)
        self.buttons = QHBoxLayout()
        self.back_btn = QToolButton()
        self.back_btn.setText("<")
        self.back_btn.setToolTip("previous sample of this dock (Ctrl+Z)")
        self.forward_btn = QToolButton()
        self.forward_btn.setText(">")
        self.forward_btn.setToolTip("next sample of this dock (Ctrl+Shift+Z)")
        self.history_label = QLabel("")
        self.buttons.addWidget(self.sample_btn, 1)
        self.buttons.addWidget(self.back_btn)
        self.buttons.addWidget(self.history_label)
        self.buttons.addWidget(self.forward_btn)
        lay.addLayout(self.buttons)
        self.work = WorkIndicator()
        lay.addWidget(self.work)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        lay.addStretch(1)
        make_scrollable(self)

        self.sample_btn.clicked.connect(self.sample)
        self.back_btn.clicked.connect(lambda: self.step(-1))
        self.forward_btn.clicked.connect(lambda: self.step(+1))
        bind(self, self.session.cases_changed, self._on_cases)
        bind(self, self.session.dataset_changed, self._on_cases)
        bind(self, self.session.intensity_changed, self._on_intensity)
        name, replayers, mine = self.method.name, self.session.replayers, self.replay
        replayers[name] = mine
        self.destroyed.connect(lambda *_: replayers.pop(name) if replayers.get(name) == mine else None)
        self._on_cases()

    # -- keys ------------------------------------------------------------------------
    def _key_action(self, event):
        """The dock's action for a key press, or ``None``: Ctrl+Z back, Ctrl+Shift+Z forward, Ctrl+Return sample."""
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        ctrl, shift = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.ShiftModifier
        key = event.key()
        if key == Qt.Key.Key_Z and mods == ctrl:
            return lambda: self.step(-1)
        if key == Qt.Key.Key_Z and mods == ctrl | shift:
            return lambda: self.step(+1)
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and mods == ctrl:
            return self.sample
        return None

    def event(self, event):  # noqa: N802 (Qt API)
        # Claim our keys before window-wide shortcuts (napari's) see them, while the focus is in the dock.
        if event.type() == QEvent.Type.ShortcutOverride and self._key_action(event) is not None:
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event):  # noqa: N802 (Qt API)
        action = self._key_action(event)
        if action is None:
            super().keyPressEvent(event)
            return
        event.accept()
        action()

    # -- hooks for subclasses ----------------------------------------------------------
    def make_control(self, f: dataclasses.Field, hint) -> OptionControl:
        return OptionControl(f, hint, self.LABELS.get(f.name))

    def build_extras(self, layout: QVBoxLayout) -> None:
        """Add a subclass's own controls above the generated ones (default: none)."""

    def extra_options(self) -> dict[str, Any]:
        """Values of the :attr:`CUSTOM` fields (raise LesionMixError for an invalid one)."""
        return {}

    def sources(self):
        """The registry's ``Sources`` this dock draws over: the session."""
        return self.session

    def resources(self, options: registry.Options):
        """The method's prepared work (its heavy parts in the session's cache)."""
        return self.method.prepare(self.sources(), options)

    def ready(self) -> str | None:
        """Why the dock cannot sample now, or ``None``."""
        s = self.session
        if self.method.needs_donor and not s.has_pair:
            return "No host/donor pair is loaded; use the Load widget first."
        if s.host is None:
            return "No host is loaded; use the Load widget first."
        return None

    def describe(self, synthetic: Synthetic) -> str:
        return self.method.describe(synthetic)

    # -- options ---------------------------------------------------------------------
    def options(self, **overrides) -> registry.Options:
        """The method's Options from the controls, with the session's intensity step (raises LesionMixError)."""
        values = {n: c.value() for n, c in self.controls.items()}
        values.update(self.extra_options())
        values.update(overrides)
        values["intensity_match"] = self.session.intensity_match
        return self.method.Options(**values)

    def set_options(self, options: registry.Options) -> None:
        """Show ``options`` in the generated controls."""
        for n, c in self.controls.items():
            c.set_value(getattr(options, n))

    # -- state -----------------------------------------------------------------------
    def _on_cases(self) -> None:
        why = self.ready()
        for btn in self.action_buttons:
            btn.setEnabled(why is None)
        self.sample_btn.setToolTip(why or f"Draw and apply {self.method.label} sample (seed, index)")
        self.status.setStyleSheet("")
        s = self.session
        if why is not None:
            self.status.setText(why)
        elif self.method.needs_donor:
            self.status.setText(f"Host '{s.host.case_id}', donor '{s.donor.case_id}'.")
        else:
            self.status.setText(f"Host '{s.host.case_id}'.")
        # Samples of another pair do not replay here.
        self.history, self.position = [], -1
        self._update_history()

    def _update_history(self) -> None:
        n = len(self.history)
        self.back_btn.setEnabled(self.position > 0)
        self.forward_btn.setEnabled(0 <= self.position < n - 1)
        self.history_label.setText(f"{self.position + 1}/{n}" if n else "")

    # -- compute ---------------------------------------------------------------------
    def sample(self) -> None:
        """Draw sample (seed, index) through the registry and apply it (in a worker); the index advances."""
        try:
            why = self.ready()
            if why is not None:
                raise LesionMixError(why)
            options = self.options()
        except LesionMixError as exc:
            notify_error(str(exc))
            return
        seed, index = int(self.seed.value()), int(self.index.value())
        self.index.setValue(index + 1)
        self.start_draw(options, seed, index, f"Sampling (seed {seed}, index {index})")

    def start_draw(self, options: registry.Options, seed: int, index: int, what: str) -> None:
        """Draw and apply ``options`` for (seed, index) in a worker (the registry's one path)."""
        s, m = self.session, self.method
        inputs, sources = s.inputs(m.needs_donor), self.sources()

        def _work():
            resources = self.resources(options)
            params = registry.draw(m, seed, index, inputs, options, resources, sources=sources)
            return self.finish(registry.apply_params(m, inputs, params, resources))

        self._start(_work, what, record=True)

    def finish(self, synthetic: Synthetic):
        """Worker side, after apply: what :meth:`show_result` gets (default: the synthetic case)."""
        return synthetic

    def _start(self, func, what: str, record: bool = False) -> None:
        s = self.session
        self.status.setStyleSheet("")
        self.status.setText(f"{what}...")

        def _done(result):
            syn = result[0] if isinstance(result, tuple) else result
            self.params = syn.params
            if record:
                del self.history[self.position + 1:]
                self.history = [*self.history, syn.params][-HISTORY:]
                self.position = len(self.history) - 1
            self._update_history()
            s.set_synthetic(syn)
            self.show_result(result)

        def _failed(exc):
            self.status.setStyleSheet(ERROR_STYLE)
            self.status.setText(str(exc))

        s.run_latest(self, func, on_done=_done, on_error=_failed, desc=f"{self.method.label}: {what.lower()}",
                     track=lambda worker: self.work.track(worker, *self.action_buttons))

    def show_result(self, result) -> None:
        syn = result[0] if isinstance(result, tuple) else result
        self.status.setStyleSheet("")
        self.status.setText(self.describe(syn))

    def apply_recorded(self, params: Params, what: str, fit: bool = False) -> None:
        """Apply ``params`` again on the loaded cases (``fit``: refit the intensity maps in the session's mode)."""
        s, m = self.session, self.method
        inputs, sources = s.inputs(m.needs_donor), self.sources()

        def _work():
            resources = self.resources(m.options_for(params))
            p = registry.fit_intensity(m, params, inputs, s.intensity_match, sources) if fit else params
            return self.finish(registry.apply_params(m, inputs, p, resources))

        self._start(_work, what)

    def replay(self, params: Params) -> None:
        """Replay recorded params (the Provenance widget) on the loaded cases, with their recorded maps."""
        why = self.ready()
        if why is not None:
            raise LesionMixError(why)
        self.apply_recorded(params, f"Replaying {self.method.label} params")

    def step(self, delta: int) -> None:
        """Show the previous (``-1``) or next (``+1``) sample of this dock's history."""
        i = self.position + delta
        # Not refused while other studio work runs (a preview redraw, statistics): the session runs the
        # latest request of this dock, so a key press is never lost.
        if not 0 <= i < len(self.history):
            return
        self.position = i
        self._update_history()
        self.apply_recorded(self.history[i], f"Sample {i + 1} of {len(self.history)}")

    def _on_intensity(self, _mode: str) -> None:
        """Redo the shown sample of this method in the new mode: the same draw, other intensity maps."""
        syn = self.session.synthetic
        if syn is not None and syn.params.method == self.method.name and self.ready() is None:
            self.apply_recorded(syn.params, "Matching intensities again", fit=True)


_DOCKS: dict[str, type[MethodDock]] = {}


def dock_class(name: str) -> type[MethodDock]:
    """The manifest widget class of method ``name``: :class:`MethodDock` with only ``METHOD`` set.

    A class, not a function: napari looks for ``napari_viewer`` in the widget's ``__init__``.
    """
    if name not in _DOCKS:
        label = registry.get_method(name).label  # an unknown name fails when napari resolves the entry
        _DOCKS[name] = type(f"{name}_dock", (MethodDock,), {
            "METHOD": name, "__module__": __name__,
            "__doc__": f"The studio dock of {label}, generated from its Options."})
    return _DOCKS[name]


def __getattr__(attr: str):
    """``NAME_dock`` for every registered method: the manifest's ``python_name`` of a generated dock."""
    if attr.endswith("_dock") and attr[:-5] in registry.method_names():
        return dock_class(attr[:-5])
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
