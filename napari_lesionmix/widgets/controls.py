"""Small Qt controls shared by several dock widgets."""

from __future__ import annotations

import os

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

NIFTI_FILTER = "NIfTI (*.nii *.nii.gz)"


class PathField(QWidget):
    """A line edit with a "..." browse button.

    Parameters
    ----------
    placeholder : str
        Grey hint shown while the field is empty.
    mode : {"open", "save", "folder"}
        Which file dialog the button opens.
    caption, file_filter : str
        Dialog title and file-type filter (ignored for folders).
    """

    def __init__(self, placeholder: str, mode: str = "open", caption: str = "NIfTI file",
                 file_filter: str = NIFTI_FILTER, parent=None):
        super().__init__(parent)
        if mode not in ("open", "save", "folder"):
            raise ValueError(f"mode must be 'open', 'save' or 'folder', got {mode!r}")
        self.mode, self.caption, self.file_filter = mode, caption, file_filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        btn = QToolButton()
        btn.setText("...")
        btn.clicked.connect(self._browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(btn)

    def _browse(self) -> None:
        if self.mode == "folder":
            path = QFileDialog.getExistingDirectory(self, self.caption)
        else:
            pick = QFileDialog.getSaveFileName if self.mode == "save" else QFileDialog.getOpenFileName
            path, _ = pick(self, self.caption, self.edit.text(), self.file_filter)
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str | os.PathLike) -> None:  # noqa: N802 (Qt style)
        self.edit.setText(os.fspath(text))


def make_scrollable(widget: QWidget) -> QScrollArea:
    """Put ``widget``'s content (its layout) in a :class:`QScrollArea` filling the widget.

    A dock's minimum height is its content's; tabified docks share the tallest one, so one tall
    widget pushed the studio window past a 1600x1000 screen. Scrolled, a dock can be as short as
    the user makes it. Works on any built widget (the studio applies it to docks it did not
    write); calling it twice is harmless.
    """
    existing = getattr(widget, "scroll_area", None)
    if isinstance(existing, QScrollArea):
        return existing
    body = QWidget()
    body.setObjectName("lesionmix_scroll_body")
    # Qt takes the layout away from ``widget`` and re-parents its child widgets to ``body``.
    body.setLayout(widget.layout() or QVBoxLayout())
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(body)
    # Below Qt's default (about 70 px) so that eight docks stacked in one column still fit.
    area.setMinimumSize(60, 36)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    widget.scroll_area = area
    return area


class Collapsible(QWidget):
    """A titled group that shows its content only when opened (rarely used settings).

    Parameters
    ----------
    title : str
    content : QWidget
        What the arrow shows and hides.
    opened : bool
        Start opened.
    """

    def __init__(self, title: str, content: QWidget, opened: bool = False, parent=None):
        super().__init__(parent)
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.button.setStyleSheet("QToolButton { border: none; text-align: left; }")
        self.content = content
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.button)
        lay.addWidget(content)
        self.button.toggled.connect(self.set_open)
        self.set_open(opened)

    def set_open(self, opened: bool) -> None:
        self.button.blockSignals(True)
        self.button.setChecked(bool(opened))
        self.button.blockSignals(False)
        self.button.setArrowType(Qt.ArrowType.DownArrow if opened else Qt.ArrowType.RightArrow)
        self.content.setVisible(bool(opened))

    @property
    def is_open(self) -> bool:
        return self.button.isChecked()


class WorkIndicator(QProgressBar):
    """A busy bar in the dock while its background work runs, with that work's buttons disabled.

    napari's activity dot sits in the status bar, often off screen or unseen; work that takes longer
    than :attr:`SHOW_AFTER_MS` shows here, where it was started. The bar is indeterminate: the
    methods' cores report no steps (Export has its own counted bar and Cancel).
    """

    SHOW_AFTER_MS = 500

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setRange(0, 0)
        self.setTextVisible(False)
        self.setMaximumHeight(10)
        self.setVisible(False)
        self._buttons: list = []
        self._running = 0
        self._show = QTimer(self)
        self._show.setSingleShot(True)
        self._show.setInterval(self.SHOW_AFTER_MS)
        self._show.timeout.connect(lambda: self.setVisible(self._running > 0))

    @property
    def running(self) -> bool:
        return self._running > 0

    def track(self, worker, *buttons) -> None:
        """Disable ``buttons`` and show the bar (after a moment) until ``worker`` finishes."""
        if worker is None:
            return
        self._running += 1
        self._buttons = list(buttons)
        for b in buttons:
            b.setEnabled(False)
        self._show.start()
        worker.finished.connect(self._finished)

    def _finished(self, *_):
        self._running = max(0, self._running - 1)
        if self._running:
            return
        self._show.stop()
        self.setVisible(False)
        for b in self._buttons:
            b.setEnabled(True)
