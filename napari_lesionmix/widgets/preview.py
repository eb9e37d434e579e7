"""Live triplanar preview: axial, coronal and sagittal planes of the current synthetic case.

Three plain Qt views (a ``QLabel`` showing a ``QImage``) are fed with numpy
planes from the session's :class:`~napari_lesionmix.io.display.PlaneSource`;
contours of the synthetic label (red) and of the mixing mask (yellow) are drawn
by comparing each mask with its shifted self, and a crosshair (cyan) marks the
session cursor. Drawing three planes costs a few milliseconds, against
65-90 ms for three napari canvases under software GL, so the preview redraws
on every slider move and schedules the paint (crosshair moves are coalesced to one
redraw per event-loop pass).

The crosshair follows the viewer's mouse (``mouse_move_callbacks``) and the
viewer's slider; a click in a view moves it, and the viewer's slider with it.
Views are drawn in radiological convention with anterior up (axial), superior
up (coronal, sagittal), at the voxel's physical aspect ratio.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QPainter
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.display import Plane, VolumePlanes
from napari_lesionmix.io.position import format_position
from napari_lesionmix.widgets.controls import Collapsible
from napari_lesionmix.widgets.state import PLANES, bind, get_session, notify_error
from napari_lesionmix.widgets.stats import format_rows, segment_statistics

LABEL_RGB = (255, 60, 60)
MASK_RGB = (255, 220, 0)
CROSS_RGB = (0, 200, 255)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (soft masks are cut at 0.5)."""
    m = mask > 0.5 if mask.dtype.kind == "f" else mask != 0
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return m & ~inner


def render_plane(plane: Plane, window: tuple[float, float], cross: tuple[int, int]) -> np.ndarray:
    """An RGB ``uint8`` picture of one plane with contours and a crosshair (row, col)."""
    lo, hi = window
    grey = np.clip((plane.image.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[boundary(plane.mask)] = MASK_RGB
    rgb[boundary(plane.label)] = LABEL_RGB
    r, c = cross
    if 0 <= r < rgb.shape[0]:
        rgb[r, :] = CROSS_RGB
    if 0 <= c < rgb.shape[1]:
        rgb[:, c] = CROSS_RGB
    return rgb


def to_screen(plane: Plane, name: str) -> Plane:
    """Flip a display-order plane for the screen: superior up on coronal and sagittal."""
    if name == "axial":
        return plane
    return Plane(plane.image[::-1], plane.label[::-1], plane.mask[::-1])


#: Preview zoom factors: 1 shows the whole plane, more crops around the crosshair (the lesion under
#: the cursor) and draws it larger.
ZOOMS = (1, 2, 4)


def crop_around(plane: Plane, cross: tuple[int, int], zoom: float) -> tuple[Plane, tuple[int, int]]:
    """The part of ``plane`` (screen order) ``zoom`` times smaller, centred on ``cross``.

    Returns the cropped plane and the (row, col) of its top-left pixel in ``plane``.
    """
    h, w = plane.image.shape
    if zoom <= 1:
        return plane, (0, 0)
    ch, cw = min(h, max(8, int(np.ceil(h / zoom)))), min(w, max(8, int(np.ceil(w / zoom))))
    r0 = int(np.clip(cross[0] - ch // 2, 0, h - ch))
    c0 = int(np.clip(cross[1] - cw // 2, 0, w - cw))
    box = (slice(r0, r0 + ch), slice(c0, c0 + cw))
    return Plane(plane.image[box], plane.label[box], plane.mask[box]), (r0, c0)


class PlaneView(QWidget):
    """One plane, painted from a ``QImage`` at its physical aspect; emits clicks as (row, col).

    Painting (not ``QLabel.setPixmap``) keeps the widget's size hint fixed, so a
    redraw never triggers a re-layout. :meth:`set_rgb` only schedules the paint
    (``update()``): a synchronous ``repaint()`` inside napari's window paints the
    whole window, vispy canvas included, in the middle of a layer change (a
    segfault in ``glDrawArrays`` when a pair of another grid replaced the layers).
    :attr:`paint_count` counts finished paints, so a benchmark can wait for them.
    """

    clicked = Signal(float, float)

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.setMinimumSize(80, 80)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setToolTip(f"{name} view: click to move the crosshair")
        self._rgb: np.ndarray | None = None
        self._qimage: QImage | None = None
        self._aspect = 1.0  # physical height / width of one pixel
        self._rect = None  # where the image sits: (x0, y0, w, h)
        self.offset = (0, 0)  # (row, col) of the shown crop's top-left pixel in the whole plane
        self.paint_count = 0

    def sizeHint(self):  # noqa: N802 (Qt API)
        return QSize(180, 180)

    def set_rgb(self, rgb: np.ndarray, pixel_aspect: float) -> None:
        self._rgb = np.ascontiguousarray(rgb)
        self._aspect = float(pixel_aspect)
        h, w, _ = self._rgb.shape
        # The QImage borrows self._rgb's buffer, which lives as long as the image.
        self._qimage = QImage(self._rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self._layout_rect()
        self.update()  # never repaint(): see the class docstring

    def clear(self) -> None:
        self._rgb = self._qimage = self._rect = None
        self.update()

    def _layout_rect(self) -> None:
        if self._rgb is None:
            return
        h, w, _ = self._rgb.shape
        W, H = max(self.width(), 1), max(self.height(), 1)
        phys_h = h * self._aspect
        f = min(W / w, H / phys_h)
        tw, th = max(w * f, 1.0), max(phys_h * f, 1.0)
        self._rect = ((W - tw) / 2, (H - th) / 2, tw, th)

    def resizeEvent(self, event):  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._layout_rect()

    def paintEvent(self, event):  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self._qimage is not None and self._rect is not None:
            p.drawImage(QRectF(*self._rect), self._qimage)
        p.end()
        self.paint_count += 1

    def mousePressEvent(self, event):  # noqa: N802 (Qt API)
        if self._rgb is None or self._rect is None:
            return
        pos = event.position() if hasattr(event, "position") else event.pos()
        x0, y0, tw, th = self._rect
        h, w, _ = self._rgb.shape
        col = (pos.x() - x0) / tw * w
        row = (pos.y() - y0) / th * h
        if 0 <= row < h and 0 <= col < w:
            self.clicked.emit(row + self.offset[0], col + self.offset[1])


class PreviewWidget(QWidget):
    """Triplanar preview dock widget (Plugins > LesionMix > Preview)."""

    #: Emitted after every redraw (the latency benchmark and tests wait on it).
    redrawn = Signal()
    #: Painted in a native window of its own, not napari's GL-composited one (widgets/docking.py).
    NATIVE_WINDOW = True

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = get_session(napari_viewer)
        self.redraw_count = 0
        self.last_redraw_ms = 0.0
        self.views = {name: PlaneView(name) for name in PLANES}
        grid = QGridLayout()
        grid.setSpacing(2)
        # 2 x 2: axial | coronal / sagittal | caption, so each view gets half the dock's width. Each title
        # sits in one box with its view, so a squeezed dock never draws a title over another view.
        spots = {"axial": (0, 0), "coronal": (0, 1), "sagittal": (1, 0)}
        self.titles = {}
        for name in PLANES:
            cell = QWidget()
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(1)
            self.titles[name] = title = QLabel(name)
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            title.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
            box.addWidget(title)
            box.addWidget(self.views[name], 1)
            grid.addWidget(cell, *spots[name])
            self.views[name].clicked.connect(lambda row, col, n=name: self._on_click(n, row, col))
        grid.setRowStretch(0, 1)
        grid.setRowStretch(1, 1)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        self.info = QLabel("Load a host/donor pair to see the preview.")
        self.info.setWordWrap(True)
        self.info.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        # The caption never sets the grid's height (it lost the views' room before); the views do.
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.info.setMinimumHeight(0)
        grid.addWidget(self.info, 1, 1)
        self.setMinimumHeight(240)  # the dock grows the views; the studio must fit 1600x1000
        # QA display: flip and compare host/synthetic, contours or filled overlays, zoom to the lesion.
        self.flip_btn = QPushButton("Flip host/synthetic")
        self.flip_btn.setToolTip("Hide or show the synthetic layer over the host, same slice and contrast")
        self.compare_box = QCheckBox("side by side")
        self.compare_box.setToolTip("Host and synthetic in napari's grid mode: linked slice, zoom and cursor")
        self.filled_box = QCheckBox("filled")
        self.filled_box.setToolTip("Labels filled and the mixing mask tinted, instead of contours")
        self.zoom = QComboBox()
        for z in ZOOMS:
            self.zoom.addItem(f"zoom {z}x", z)
        self.zoom.setToolTip("Preview zoom around the crosshair (the lesion under the cursor)")
        self.enlarge_btn = QPushButton("Enlarge")
        self.enlarge_btn.setCheckable(True)
        self.enlarge_btn.setToolTip("Float the preview in a large window of its own; press again to dock it back")
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        row1.addWidget(self.flip_btn)
        row1.addWidget(self.compare_box)
        row2.addWidget(self.filled_box)
        row2.addWidget(self.zoom)
        row2.addWidget(self.enlarge_btn)
        layout = QVBoxLayout(self)
        layout.setSpacing(3)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addLayout(grid, 1)
        # Segment statistics (as Slicer's): volume and median of host lesions, pasted lesions, normal brain.
        self.stats = QLabel("Make a sample to see its statistics.")
        self.stats.setTextFormat(Qt.TextFormat.RichText)
        self.stats.setWordWrap(True)
        self.stats_group = Collapsible("Statistics", self.stats, opened=True)
        layout.addWidget(self.stats_group)
        if self.session.shortcuts is not None:  # the studio's keys also with the focus in this dock
            from napari_lesionmix.widgets.shortcuts import add_qt_shortcuts

            self._shortcuts = add_qt_shortcuts(self, self.session.shortcuts)
        self.flip_btn.setToolTip(self.flip_btn.toolTip() + " (Shift+F)")
        self.zoom.setToolTip(self.zoom.toolTip() + " (Shift+Z)")
        self.enlarge_btn.toggled.connect(self.set_enlarged)
        self.flip_btn.clicked.connect(self.flip)
        self.compare_box.toggled.connect(self.session.set_compare)
        self.filled_box.toggled.connect(self.session.set_filled)
        self.zoom.currentIndexChanged.connect(lambda _: self.redraw())
        self._watched = None  # the synthetic layer whose contrast the preview follows
        self._cursor_timer = QTimer(self)
        self._cursor_timer.setSingleShot(True)
        self._cursor_timer.setInterval(0)
        self._cursor_timer.timeout.connect(self.redraw)
        bind(self, self.session.preview_changed, self.redraw)
        bind(self, self.session.synthetic_changed, self.update_stats)
        bind(self, self.session.cursor_changed, self._on_cursor)
        viewer = self.session.viewer
        mouse_cb = self._on_mouse_move
        viewer.mouse_move_callbacks.append(mouse_cb)
        viewer.dims.events.point.connect(self._on_dims)

        def _detach(*_, viewer=viewer, cb=mouse_cb, dims_cb=self._on_dims, me=self):
            if cb in viewer.mouse_move_callbacks:
                viewer.mouse_move_callbacks.remove(cb)
            viewer.dims.events.point.disconnect(dims_cb)
            me._watch(None)

        self.destroyed.connect(_detach)
        if self.session.preview is not None:
            self.redraw()

    # -- events --------------------------------------------------------------
    def _on_cursor(self, _cursor) -> None:
        # Mouse moves arrive faster than frames: coalesce them into one redraw per event-loop pass.
        if not self._cursor_timer.isActive():
            self._cursor_timer.start()

    def _on_mouse_move(self, viewer, event) -> None:
        s = self.session
        if s.orientation is None or event.position is None or len(event.position) < 3:
            return
        s.set_cursor(s.display_index(event.position))

    def _on_dims(self, event=None) -> None:
        s = self.session
        if s.orientation is None:
            return
        point = s.viewer.dims.point
        if len(point) < 3:
            return
        z = s.display_index(point)[0]
        s.set_cursor((z, *s.cursor[1:]))

    def _on_click(self, name: str, row: float, col: float) -> None:
        s = self.session
        if s.orientation is None:
            return
        z, y, x = s.cursor
        n_z = s.orientation.display_shape[0]
        if name == "axial":
            y, x = row, col
        elif name == "coronal":
            z, x = n_z - 1 - row, col  # screen rows run superior -> inferior
        else:
            z, y = n_z - 1 - row, col
        s.set_cursor((z, y, x), move_viewer=True)

    def update_stats(self) -> None:
        """Recompute the statistics table of the shown sample (in a worker: medians over the brain)."""
        s = self.session
        syn = s.synthetic
        if syn is None or s.host is None:
            self.stats.setText("Make a sample to see its statistics.")
            return
        pair = s.harmonized_pair
        before = pair[0] if pair is not None and syn is pair[1] else None
        s.run_latest(self, segment_statistics, s.host, s.host_brain_mask, syn, before,
                     on_done=lambda rows: self.stats.setText(format_rows(rows)), desc="Statistics")

    #: Size of the enlarged (floating) preview: most of a 1600x1000 screen.
    ENLARGED = (1000, 820)

    def _dock(self):
        """The ``QDockWidget`` holding this widget, or ``None`` (not docked)."""
        w = self.parent()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parent()
        return w

    def set_enlarged(self, on: bool) -> None:
        """Float the preview's dock at :attr:`ENLARGED` size (``on``) or put it back in the dock area."""
        dock = self._dock()
        if dock is None:
            return
        if bool(on) != self.enlarge_btn.isChecked():
            self.enlarge_btn.setChecked(bool(on))  # re-enters through toggled
            return
        self.enlarge_btn.setText("Dock back" if on else "Enlarge")
        dock.setFloating(bool(on))
        if on:
            dock.resize(*self.ENLARGED)
            screen = dock.screen().availableGeometry() if dock.screen() is not None else None
            if screen is not None:  # centred on the screen, never past its edges
                dock.move(screen.x() + max(0, (screen.width() - self.ENLARGED[0]) // 2),
                          screen.y() + max(0, (screen.height() - self.ENLARGED[1]) // 2))

    def flip(self) -> None:
        try:
            self.session.flip()
        except LesionMixError as exc:
            notify_error(str(exc))

    def _watch(self, layer) -> None:
        """Redraw when ``layer``'s contrast changes (and stop following the previous one)."""
        if layer is self._watched:
            return
        if self._watched is not None:
            self._watched.events.contrast_limits.disconnect(self._on_cursor)
        self._watched = layer
        if layer is not None:
            layer.events.contrast_limits.connect(self._on_cursor)

    def window(self) -> tuple[float, float]:
        """The preview's grey window: the synthetic layer's contrast (the user's), else the session's."""
        layer = self.session.layer("synthetic_image")
        self._watch(layer)
        if layer is not None:
            lo, hi = (float(v) for v in layer.contrast_limits)
            if hi > lo:
                return lo, hi
        return self.session.window

    # -- drawing -------------------------------------------------------------
    def redraw(self) -> None:
        """Draw the three planes through the cursor from the session's plane source."""
        s = self.session
        if s.preview is None or s.orientation is None:
            self._clear()
            return
        if tuple(s.preview.display_shape) != tuple(s.orientation.display_shape):
            return  # a source of another grid (a pair is being replaced): never index it with this cursor
        t0 = time.perf_counter()
        z, y, x = s.cursor
        planes = self._source().planes((z, y, x))
        sz, sy, sx = s.orientation.scale
        n_z = s.orientation.display_shape[0]
        cross = {"axial": (y, x), "coronal": (n_z - 1 - z, x), "sagittal": (n_z - 1 - z, y)}
        aspect = {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}
        window, zoom = self.window(), self.zoom.currentData() or 1
        for name in PLANES:
            plane, (r0, c0) = crop_around(to_screen(planes[name], name), cross[name], zoom)
            rgb = render_plane(plane, window, (cross[name][0] - r0, cross[name][1] - c0))
            self.views[name].offset = (r0, c0)
            self.views[name].set_rgb(rgb, aspect[name])
        self.redraw_count += 1
        self.last_redraw_ms = (time.perf_counter() - t0) * 1000
        self.info.setText(self._caption())
        self.redrawn.emit()

    def _source(self):
        """What the views show: the session's planes, or the host's alone while flipped to it."""
        s = self.session
        if not (s.showing_host and s.host is not None):
            return s.preview
        if getattr(self, "_host_planes", (None, None))[0] is not s.host:
            # No mask to draw on the host: a zero-stride view, no volume allocated.
            empty = np.broadcast_to(np.zeros((), bool), s.host.shape)
            self._host_planes = (s.host, VolumePlanes(s.host.image, s.host.label, empty, s.orientation))
        return self._host_planes[1]

    def _clear(self) -> None:
        for view in self.views.values():
            view.clear()
        self.info.setText("Load a host/donor pair and make a sample to see the preview."
                          if self.session.has_pair else "Load a host/donor pair to see the preview.")

    def cursor_text(self) -> str:
        """The crosshair as every face prints a position: the file's voxel (i, j, k) and its mm."""
        s = self.session
        return format_position(s.orientation.original_index(s.cursor), s.orientation.affine)

    def _caption(self) -> str:
        s = self.session
        lo, hi = self.window()
        lines = [f"crosshair: {self.cursor_text()}",
                 "red: synthetic label", "yellow: mixing mask", f"window {lo:.4g} .. {hi:.4g}"]
        if s.showing_host:
            lines[1:3] = ["red: host label", "flipped: the host alone (Shift+F: the synthetic)"]
            lines.insert(0, f"host: {s.host.case_id}")
        elif s.synthetic is not None:
            lines.insert(0, f"{s.synthetic.params.method}: {s.host.case_id} + {s.donor.case_id}")
        return "\n".join(lines)

