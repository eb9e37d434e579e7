"""CarveMix (Zhang et al., MICCAI 2021), exactly as the paper's Eqs. (1)-(7).

A lesion-shaped ROI is carved from a *donor* scan by thresholding the signed
distance of its lesion mask, and pasted, image and label, into a *host* scan:

    X = X_donor * M + X_host * (1 - M)          (Eq. 1)
    Y = Y_donor * M + Y_host * (1 - M)          (Eq. 2)
    M = {D(Y_donor) <= lambda}                  (Eq. 4)
    lambda ~ 1/2 U(-|Dmin|/2, 0) + 1/2 U(0, |Dmin|)   (Eq. 7)

Facts matched from the authors' code: the donor is the lesion source and the
host keeps its header; one lambda for all lesions of the donor; lambda = 0
gives M equal to the donor's lesion mask. Deviations, on purpose:

* any non-zero label is lesion for D (their code measures the outside distance
  to label 1 only, which carves wrong ROIs around other classes);
* D is computed on the lesions' bounding box plus a margin, which is exact
  (see :mod:`napari_lesionmix.augment.distance`) and 10-40x faster.

The optional *per-lesion* variant gives each connected component its own
lambda_k drawn from Eq. (7) with its own |Dmin_k|: one global negative lambda
(set by the largest lesion) erases most small lesions, per-lesion lambdas
shrink each lesion relative to its own size.

Usage, the random/deterministic split::

    field = CarveField.from_case(donor)            # once per donor (cache it)
    params = sample_carvemix(rng, field, host.case_id, donor.case_id)
    synthetic = carvemix(host, donor, params, field=field)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.distance import BoxDistance, roi_at, signed_distance_box
from napari_lesionmix.augment.lesions import CONNECTIVITY, connectivity_rank
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.registry import Inputs, Method, Options, Sources, option, register
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.morphology import connected_components
from napari_lesionmix.io.nifti import Case, check_same_grid


@dataclass(frozen=True)
class CarveMixParams(Params):
    """Everything needed to replay one CarveMix sample.

    Attributes
    ----------
    host_id, donor_id : str
        Case ids of the host (background, header) and the donor (lesion source).
    lam : float or None
        The global threshold lambda in mm (Eq. 4); ``None`` in the per-lesion variant.
    lesion_lams : tuple of float
        Per-lesion variant: lambda_k of each connected component of the donor
        label, in ``scipy.ndimage.label`` order (raster order of first voxel).
    per_lesion : bool
        Use ``lesion_lams`` instead of ``lam``.
    connectivity : int
        6, 18 or 26: how components are found in the per-lesion variant.
    seed, sample_index : int or None
        The root seed and sample index the params were drawn with (provenance).
    """

    method = "carvemix"
    host_id: str
    donor_id: str
    lam: float | None = None
    lesion_lams: tuple[float, ...] = ()
    per_lesion: bool = False
    connectivity: int = 26
    seed: int | None = None
    sample_index: int | None = None

    def __post_init__(self):
        if self.per_lesion:
            if not self.lesion_lams:
                raise LesionMixError("Per-lesion CarveMix params need one lambda per lesion (lesion_lams).")
        elif self.lam is None or not np.isfinite(self.lam):
            raise LesionMixError(f"CarveMix needs a finite lambda, got {self.lam!r}.")
        if self.connectivity not in CONNECTIVITY:
            raise LesionMixError(f"Connectivity must be 6, 18 or 26, got {self.connectivity}.")

    @property
    def lambdas(self) -> float | tuple[float, ...]:
        """What :meth:`CarveField.roi` takes: the global lambda, or the per-lesion ones."""
        return self.lesion_lams if self.per_lesion else self.lam


class CarveField:
    """A donor's lesion signed distance, precomputed once, thresholded at any lambda.

    This is the precompute-then-threshold API of the live preview: building the
    field costs the EDTs; :meth:`roi` then costs one comparison on the box.

    Parameters
    ----------
    label : ndarray, 3D
        The donor's label map; every non-zero voxel is lesion.
    spacing : sequence of 3 floats
        Voxel size in mm.
    per_lesion : bool
        Keep one field per connected component (per-lesion variant).
    connectivity : int
        Component connectivity for ``per_lesion``.
    max_lambda : float, optional
        Serve lambdas above the Eq. (7) bound |Dmin| (e.g. a user's slider).
    backend : {"edt", "scipy"}
        Distance transform used; see :func:`signed_distance_box`.
    """

    def __init__(
        self,
        label: np.ndarray,
        spacing: Sequence[float],
        per_lesion: bool = False,
        connectivity: int = 26,
        max_lambda: float | None = None,
        backend: str = "edt",
    ):
        mask = np.asarray(label) != 0
        if not mask.any():
            raise LesionMixError("The donor label has no lesion voxels; CarveMix needs at least one lesion.")
        self.shape = mask.shape
        self.spacing = tuple(float(s) for s in spacing)
        self.per_lesion = bool(per_lesion)
        self.connectivity = int(connectivity)
        if per_lesion:
            comps, n = connected_components(mask, connectivity_rank(connectivity))
            boxes = ndi.find_objects(comps)
            self.fields: list[BoxDistance] = []
            for k, box in enumerate(boxes, start=1):
                # Each component on its own, on a crop just large enough for its margin.
                crop = _crop_for_component(box, self.shape, self.spacing, max_lambda, comps, k)
                sub = comps[crop] == k
                f = signed_distance_box(sub, self.spacing, max_lambda, backend)
                box_full = tuple(
                    slice(c.start + b.start, c.start + b.stop) for c, b in zip(crop, f.box, strict=True)
                )
                self.fields.append(BoxDistance(box_full, f.values, f.d_min, f.max_lambda))
        else:
            self.fields = [signed_distance_box(mask, self.spacing, max_lambda, backend)]

    @classmethod
    def from_case(cls, donor: Case, **kwargs) -> CarveField:
        """Field of a donor case (checks that it has a lesion)."""
        donor.require_lesion("Donor")
        return cls(donor.label, donor.spacing, **kwargs)

    @property
    def n_lesions(self) -> int:
        """Number of fields: connected components (per-lesion) or 1."""
        return len(self.fields)

    @property
    def d_min(self) -> float:
        """``D(Y)min`` over all lesions (Eq. 6)."""
        return min(f.d_min for f in self.fields)

    @property
    def lambda_range(self) -> tuple[float, float]:
        """Support of Eq. (7): ``(-|Dmin|/2, |Dmin|)`` in mm."""
        return lambda_bounds(self.d_min)

    @property
    def box(self) -> tuple[slice, ...]:
        """Bounding box of every voxel any admissible ROI can touch."""
        starts = [min(f.box[a].start for f in self.fields) for a in range(3)]
        stops = [max(f.box[a].stop for f in self.fields) for a in range(3)]
        return tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))

    def roi(self, lam: float | Sequence[float]) -> np.ndarray:
        """The carved ROI ``M = {D <= lambda}`` (Eq. 4) on the full volume.

        ``lam`` is one float, or (per-lesion) one float per component.
        """
        m = np.zeros(self.shape, dtype=bool)
        for f, lam_k in zip(self.fields, self.lambdas(lam), strict=True):
            m[f.box] |= f.roi_in_box(lam_k)
        return m

    def serves(self, params: CarveMixParams, shape: Sequence[int]) -> bool:
        """Whether this field can replay ``params`` exactly (variant, shape and lambda range)."""
        if (
            self.per_lesion != params.per_lesion
            or (self.per_lesion and self.connectivity != params.connectivity)
            or tuple(shape) != self.shape
        ):
            return False
        lams = params.lesion_lams if params.per_lesion else [params.lam] * len(self.fields)
        if len(lams) != len(self.fields):
            return False
        return all(lam <= f.max_lambda + 1e-9 for f, lam in zip(self.fields, lams, strict=True))

    def lambdas(self, lam: float | Sequence[float]) -> list[float]:
        """One lambda per field: ``lam`` repeated, or the per-lesion values checked for count."""
        if np.ndim(lam) == 0:
            return [float(lam)] * len(self.fields)
        lams = [float(v) for v in lam]
        if len(lams) != len(self.fields):
            raise LesionMixError(
                f"Got {len(lams)} per-lesion lambda(s) but the donor has {len(self.fields)} lesion(s)."
            )
        return lams


def _crop_for_component(box, shape, spacing, max_lambda, comps, k):
    """A crop around component ``k`` large enough for any admissible margin.

    |Dmin_k| is at most half the component's smallest extent in mm, so the
    component's own box grown by that (or ``max_lambda``) plus 2 voxels suffices.
    """
    extent_mm = min((b.stop - b.start) * s for b, s in zip(box, spacing, strict=True))
    reach = max(extent_mm / 2 + max(spacing), max_lambda or 0.0)
    margin = [int(np.ceil(reach / s)) + 2 for s in spacing]
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, n)) for b, m, n in zip(box, margin, shape, strict=True))


def lambda_bounds(d_min: float) -> tuple[float, float]:
    """``(lambda_l, lambda_u) = (-|Dmin|/2, |Dmin|)`` (Eq. 6)."""
    return -0.5 * abs(d_min), abs(d_min)


def sample_lambda(rng: np.random.Generator, d_min: float) -> float:
    """Draw lambda from the mixture of Eq. (7): 1/2 U(-|Dmin|/2, 0) + 1/2 U(0, |Dmin|)."""
    low, high = lambda_bounds(d_min)
    if rng.random() < 0.5:
        return float(rng.uniform(low, 0.0))
    return float(rng.uniform(0.0, high))


def lambda_density(d_min: float, lam: np.ndarray) -> np.ndarray:
    """Probability density of Eq. (7) at ``lam`` (what the studio draws under the slider)."""
    low, high = lambda_bounds(d_min)
    lam = np.asarray(lam, dtype=float)
    dens = np.zeros_like(lam)
    if high > 0:
        dens[(lam >= low) & (lam < 0)] = 0.5 / (0 - low)
        dens[(lam >= 0) & (lam <= high)] = 0.5 / high
    return dens


def sample_carvemix(
    rng: np.random.Generator,
    field: CarveField,
    host_id: str,
    donor_id: str,
    seed: int | None = None,
    sample_index: int | None = None,
) -> CarveMixParams:
    """Draw CarveMix params: one lambda (Eq. 7), or one per lesion if ``field.per_lesion``."""
    if field.per_lesion:
        lams = tuple(sample_lambda(rng, f.d_min) for f in field.fields)
        return CarveMixParams(
            host_id, donor_id, None, lams, True, field.connectivity, seed, sample_index
        )
    return CarveMixParams(
        host_id, donor_id, sample_lambda(rng, field.d_min), (), False, field.connectivity, seed, sample_index
    )


def mix_with_roi(
    host_image: np.ndarray,
    host_label: np.ndarray,
    donor_image: np.ndarray,
    donor_label: np.ndarray,
    roi: np.ndarray,
    box: tuple[slice, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. (1)-(2): replace image channels and label of the host inside ``roi``.

    Images are ``(C, I, J, K)``; labels keep their integer values (multi-class
    labels survive). Only ``box`` (the ROI's bounding box, found if not given)
    is touched after the copy.
    """
    image = host_image.copy()
    label = host_label.astype(np.result_type(host_label.dtype, donor_label.dtype), copy=True)
    boxes = [box] if box is not None else ndi.find_objects(roi.view(np.uint8))
    if boxes:
        b = boxes[0]
        m = roi[b]
        np.copyto(image[(slice(None), *b)], donor_image[(slice(None), *b)], where=m[None])
        np.copyto(label[b], donor_label[b], where=m)
    return image, label


def carvemix(
    host: Case,
    donor: Case,
    params: CarveMixParams,
    field: CarveField | None = None,
) -> Synthetic:
    """Apply CarveMix params to a host/donor pair (deterministic).

    Parameters
    ----------
    host, donor : Case
        Same grid and channels; the donor must have a lesion.
    params : CarveMixParams
    field : CarveField, optional
        The donor's precomputed field. Without one (or with one that cannot
        serve the params), a global lambda costs only the distances it needs
        (:func:`~napari_lesionmix.augment.distance.roi_at`); per-lesion params
        build their field.

    Returns
    -------
    Synthetic
        Image and label of Eqs. (1)-(2); ``mask`` is the ROI M (bool).
    """
    check_same_grid(host, donor)
    donor.require_lesion("Donor")
    host.require_label("Host", "CarveMix")
    lam = params.lambdas
    if field is not None and field.serves(params, donor.shape):
        roi, box = field.roi(lam), field.box
    elif params.per_lesion:
        field = CarveField(donor.label, donor.spacing, per_lesion=True, connectivity=params.connectivity,
                           max_lambda=max(float(np.max(lam)), 0.0))
        roi, box = field.roi(lam), field.box
    else:
        # One known lambda: only the distances it needs (see roi_at), not the whole field.
        roi_box, box = roi_at(donor.label != 0, donor.spacing, float(lam))
        roi = np.zeros(donor.shape, dtype=bool)
        roi[box] = roi_box
    image, label = mix_with_roi(host.image, host.label, donor.image, donor.label, roi, box)
    return Synthetic(image=image, label=label, mask=roi, params=params)


# --------------------------------------------------------------------------- the registered method


@dataclass(frozen=True)
class CarveMixOptions(Options):
    """Settings of CarveMix (the CLI flags and export ``carvemix.NAME`` keys)."""

    per_lesion: bool = option(False, "one lambda per connected lesion, each from its own |Dmin| (Eq. 7)")
    connectivity: int = option(26, "connectivity of the lesions of --per-lesion", choices=(6, 18, 26))
    lam: float | None = option(None, "threshold lambda in mm instead of a draw from Eq. 7")


class _CarveFields:
    """A donor's :class:`CarveField` for given options, built once per donor through the sources' cache."""

    def __init__(self, sources: Sources, options: CarveMixOptions):
        self.sources, self.options = sources, options

    def field(self, donor: Case) -> CarveField:
        o = self.options
        max_lambda = None if o.lam is None else max(o.lam, 0.0)
        key = ("carvefield", donor.case_id, o.per_lesion, o.connectivity, max_lambda)
        return self.sources.cached(key, lambda: CarveField.from_case(
            donor, per_lesion=o.per_lesion, connectivity=o.connectivity, max_lambda=max_lambda))


@register
class CarveMixMethod(Method):
    """CarveMix through the :mod:`~napari_lesionmix.augment.registry` protocol."""

    name = "carvemix"
    label = "CarveMix"
    summary = "carve a lesion ROI from a donor scan and paste it into a host scan"
    Options = CarveMixOptions
    Params = CarveMixParams

    def prepare(self, sources: Sources, options: CarveMixOptions) -> _CarveFields:
        # The donor's signed distance is what costs; every sample it donates to reuses it.
        return _CarveFields(sources, options)

    def check_inputs(self, inputs: Inputs) -> None:
        super().check_inputs(inputs)  # the one gate: cases, grid, host != donor
        inputs.donor.require_lesion("Donor")

    def sample(self, rng, inputs: Inputs, options: CarveMixOptions, resources: _CarveFields) -> CarveMixParams:
        host_id, donor_id = inputs.host.case_id, inputs.donor.case_id
        field = resources.field(inputs.donor)
        if options.lam is None:
            return sample_carvemix(rng, field, host_id, donor_id)
        if options.per_lesion:
            return CarveMixParams(host_id, donor_id, None, (options.lam,) * field.n_lesions, True,
                                  options.connectivity)
        return CarveMixParams(host_id, donor_id, options.lam, connectivity=options.connectivity)

    def apply(self, inputs: Inputs, params: CarveMixParams, resources: _CarveFields | None) -> Synthetic:
        field = resources.field(inputs.donor) if resources is not None else None
        return carvemix(inputs.host, inputs.donor, params, field=field)

    def donor_region(self, inputs: Inputs, params: CarveMixParams, resources) -> tuple[slice, ...] | None:
        # Eqs. (1)-(2) read the donor inside the field's box only (when the prepared field serves the params).
        if resources is None:
            return None
        field = resources.field(inputs.donor)
        return field.box if field.serves(params, inputs.donor.shape) else None

    def options_for(self, params: CarveMixParams) -> CarveMixOptions:
        lam = params.lambdas
        return CarveMixOptions(params.per_lesion, params.connectivity, float(np.max(lam)))

    def describe(self, synthetic: Synthetic) -> str:
        p = synthetic.params
        lam = f"{len(p.lesion_lams)} per-lesion lambdas" if p.per_lesion else f"lambda={p.lam:.3f} mm"
        return f"{lam}, ROI {int(synthetic.mask.sum())} voxels"
