"""Small Qt controls shared by several dock widgets."""

from __future__ import annotations

import os

from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLineEdit, QToolButton, QWidget

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
