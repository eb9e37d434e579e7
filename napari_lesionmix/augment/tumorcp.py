"""TumorCP: object-level copy-paste of tumours (Yang et al., MICCAI 2021, "TumorCP: A Simple but Effective
Object-Level Data Augmentation for Tumor Segmentation").

A tumour (a connected component of a donor label) is copied, transformed at
the object level and pasted into a host at a random position inside the
host's organ (here: the brain, or a label value such as the kidney):

* **object-level spatial transforms**: a rotation (angles U(-max_angle,
  max_angle) about each axis) and an isotropic scaling (U(*scale_range)),
  each applied with probability ``p_spatial``;
* **object-level photometric transform**: gamma (log-U(0.7, 1.5) on the crop's
  range) with probability ``p_gamma``;
* **a Gaussian-blurred paste edge** ("TumorCP uses a Gaussian blur to keep
  the surrounding context", as the Soft-CP paper describes it): the pasted
  weight is the binary tumour mask blurred with ``blur_sigma`` (in voxels),
  ``I = W * I_tumour + (1 - W) * I_host`` (the blend of Soft-CP's Eq. 1 with
  W in place of S), and the label is the tumour's binary extent;
* **placement**: the tumour's centre of mass on a voxel drawn uniformly from
  the organ, kept when at least ``delta1`` of it lies in the organ and at
  most ``delta2`` on the host's own lesions (the package's one rule for every
  pasting method, :mod:`~napari_lesionmix.augment.paste.placement`). The paper
  only asks the centre to lie in the organ; ``delta1 = 0`` is that.

Choices where the paper is silent are options with documented defaults. The
image-level transforms TumorCP leaves to nnU-Net's pipeline are not repeated
here. The whole method is this module: the shared machinery of
:mod:`napari_lesionmix.augment.paste` does the copying, transforming and
placing, and the registry gives it a CLI command, export, the studio's generic
dock and the MONAI/TorchIO faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from napari_lesionmix.augment.distance import bounding_box
from napari_lesionmix.augment.params import Params, Synthetic
from napari_lesionmix.augment.paste.objects import (
    DonorLesions,
    PastedLesion,
    PasteObject,
    prepare_object,
)
from napari_lesionmix.augment.paste.placement import (
    fits,
    host_lesions,
    parse_reference,
    paste_boxes,
    place,
    placement_message,
    reference_region,
)
from napari_lesionmix.augment.registry import (
    DrawRejected,
    Inputs,
    Method,
    Options,
    Sources,
    option,
    register,
)
from napari_lesionmix.augment.softmask import soft_paste
from napari_lesionmix.augment.transforms import AffineParams, sample_intensity, sample_rigid
from napari_lesionmix.errors import LesionMixError


@dataclass(frozen=True)
class TumorCPParams(Params):
    """Everything needed to replay one TumorCP sample.

    Attributes
    ----------
    host_id, donor_id : str
    tumours : tuple of PastedLesion
        The pasted tumours (donor component, transforms, host offset), in paste order.
    blur_sigma : float
        Gaussian blur of the paste weight, in voxels.
    reference : str
        The organ of the placement ("brain_mask" or "label:N").
    delta1, delta2 : float
        The placement constraints the positions were drawn under (provenance).
    skipped : tuple of int
        Donor tumours drawn but placed nowhere.
    lesion_labels, connectivity, order
        What a tumour is, and the image interpolation order.
    seed, sample_index : int or None
    """

    method = "tumorcp"
    host_id: str
    donor_id: str
    tumours: tuple[PastedLesion, ...] = ()
    blur_sigma: float = 1.0
    reference: str = "brain_mask"
    delta1: float = 0.9
    delta2: float = 0.0
    skipped: tuple[int, ...] = ()
    lesion_labels: tuple[int, ...] = ()
    connectivity: int = 26
    order: int = 1
    seed: int | None = None
    sample_index: int | None = None

    def __post_init__(self):
        if not self.tumours:
            raise LesionMixError("TumorCP params need at least one pasted tumour.")
        parse_reference(self.reference)


@dataclass(frozen=True)
class TumorCPOptions(Options):
    """Settings of TumorCP (the CLI flags and export ``tumorcp.NAME`` keys); see the module docstring."""

    n_tumours: int = option(1, "donor tumours pasted", low=1)
    p_spatial: float = option(0.5, "probability of each spatial transform (rotation, scaling)", low=0.0, high=1.0)
    max_angle: float = option(30.0, "largest rotation about each axis (degrees)", low=0.0, high=180.0)
    scale_min: float = option(0.7, "smallest isotropic scaling", low=0.0, open_low=True)
    scale_max: float = option(1.3, "largest isotropic scaling", low=0.0, open_low=True)
    p_gamma: float = option(0.5, "probability of the gamma transform", low=0.0, high=1.0)
    blur_sigma: float = option(1.0, "Gaussian blur of the paste edge (voxels); 0 pastes hard", low=0.0, high=5.0)
    reference: str = option("brain_mask", "organ of the placement: brain_mask (the brain, estimated when no "
                                          "mask is given) or label:N (a host label value, e.g. the kidney)")
    delta1: float = option(0.9, "least fraction of the tumour inside the organ", low=0.0, high=1.0)
    delta2: float = option(0.0, "largest fraction of the tumour on host lesions", low=0.0, high=1.0)
    max_tries: int = option(200, "positions tried per tumour", low=1)
    lesion_labels: tuple[int, ...] = option((), "label values that are tumour (default: every non-zero value)",
                                            low=1, flag="--lesion-label")
    connectivity: int = option(26, "connectivity of the donor's tumours", choices=(6, 18, 26))

    def __post_init__(self):
        super().__post_init__()
        parse_reference(self.reference)
        if self.scale_min > self.scale_max:
            raise LesionMixError(f"scale_min ({self.scale_min}) must not exceed scale_max ({self.scale_max}).")


def _blurred(obj: PasteObject, sigma: float) -> PasteObject:
    """``obj`` with its paste weight the Gaussian-blurred binary tumour (TumorCP's edge), clipped to [0, 1]."""
    lesion = obj.lesion.astype(np.float32)
    weight = lesion if sigma == 0 else np.clip(ndi.gaussian_filter(lesion, sigma, mode="constant"), 0.0, 1.0)
    return replace(obj, soft=np.maximum(weight, lesion * (sigma == 0)).astype(np.float32))


def _tumour(donor, lesions: DonorLesions, p: PastedLesion, sigma: float, order: int) -> PasteObject | None:
    # The crop keeps ceil(3 sigma) voxels around the tumour, so the blurred weight fits in it.
    pad = int(math.ceil(3.0 * sigma)) + 1
    obj = prepare_object(donor, lesions, p.component, p.rigid, p.intensity, 0.5, 0, pad, order)
    return None if obj is None else _blurred(obj, sigma)


@register
class TumorCPMethod(Method):
    """TumorCP through the registry: draws tumours, transforms and positions; pastes with a blurred edge."""

    name = "tumorcp"
    label = "TumorCP"
    summary = "copy a donor tumour, transform it at the object level and paste it into the host's organ"
    Options = TumorCPOptions
    Params = TumorCPParams

    def prepare(self, sources: Sources, options: TumorCPOptions):
        return DonorLesions.loader(sources, options.lesion_labels, options.connectivity)

    def sample(self, rng, inputs: Inputs, o: TumorCPOptions, resources) -> TumorCPParams:
        host, donor = inputs.host, inputs.donor
        lesions = resources(donor)
        if lesions.n < o.n_tumours:
            raise LesionMixError(f"Donor '{donor.case_id}' has {lesions.n} tumour(s) but {o.n_tumours} were asked for.")
        organ = reference_region(host, o.reference, inputs.brain_mask)
        organ_box = bounding_box(organ)
        occupied = host_lesions(host.label, o.lesion_labels, o.reference)
        queue = [int(c) for c in rng.permutation(np.arange(1, lesions.n + 1))]
        pasted, skipped = [], []
        while queue and len(pasted) < o.n_tumours:
            component = queue.pop(0)
            rigid: list[AffineParams] = []
            if rng.random() < o.p_spatial:
                rigid.append(sample_rigid(rng, "rotation", o.max_angle))
            if rng.random() < o.p_spatial:
                rigid.append(sample_rigid(rng, "scaling", scale_range=(o.scale_min, o.scale_max)))
            intensity = (sample_intensity(rng, "gamma"),) if rng.random() < o.p_gamma else ()
            p = PastedLesion(component, tuple(rigid), intensity)
            obj = _tumour(donor, lesions, p, o.blur_sigma, 1)
            if obj is None:
                skipped.append(component)
                continue
            offset, counts = place(rng, obj, organ, organ_box, occupied, o.delta1, o.delta2, o.max_tries)
            if offset is None:
                skipped.append(component)
                if not queue and not pasted:
                    raise DrawRejected(placement_message(component, obj, counts, o.reference, o.delta1, o.delta2,
                                                         o.max_tries, "random"))
                continue
            box, cbox = paste_boxes(offset, obj.shape, host.shape)
            occupied[box] |= obj.lesion[cbox]
            pasted.append(replace(p, offset=offset))
        if not pasted:
            raise DrawRejected(f"No tumour of donor '{donor.case_id}' survived its transforms or found a place.")
        return TumorCPParams(host.case_id, donor.case_id, tuple(pasted), o.blur_sigma, o.reference, o.delta1,
                             o.delta2, tuple(skipped), tuple(o.lesion_labels), o.connectivity)

    def apply(self, inputs: Inputs, params: TumorCPParams, resources) -> Synthetic:
        host, donor = inputs.host, inputs.donor
        lesions = resources(donor)
        image = host.image.copy()
        label = host.label.astype(np.result_type(host.label.dtype, donor.label.dtype), copy=True)
        mask = np.zeros(host.shape, np.float32)
        for p in params.tumours:
            obj = _tumour(donor, lesions, p, params.blur_sigma, params.order)
            if obj is None or not fits(p.offset, obj, host.shape):
                raise LesionMixError(f"Donor tumour {p.component} does not fit at {p.offset} in host '{host.case_id}'.")
            box, cbox = paste_boxes(p.offset, obj.shape, host.shape)
            obj = obj.crop(cbox)
            soft_paste(image, mask, box, obj.soft, obj.image)  # I = W * I_tumour + (1 - W) * I_host
            np.copyto(label[box], obj.label.astype(label.dtype), where=obj.lesion)
        return Synthetic(image=image.astype(np.float32, copy=False), label=label, mask=mask, params=params)

    def options_for(self, params: TumorCPParams) -> TumorCPOptions:
        return TumorCPOptions(lesion_labels=params.lesion_labels, connectivity=params.connectivity)

    def describe(self, synthetic: Synthetic) -> str:
        p = synthetic.params
        line = f"{len(p.tumours)} tumour(s) pasted (components {', '.join(str(t.component) for t in p.tumours)})"
        return line + (f", {len(p.skipped)} drawn tumour(s) skipped" if p.skipped else "")
