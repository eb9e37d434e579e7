"""npe2 sample data: each shipped subject, and a ready host/donor pair.

Each subject opens as its image and its lesion label (and brain mask) through
the same reader as files (:mod:`napari_lesionmix._reader`), so the layers carry
their geometry. The pair is :data:`PAIR`: a multiple-sclerosis host and a stroke
donor with a single large lesion, which makes a CarveMix carve easy to see.

(The module name shares its stem with the wheel's ``_sample_data/`` folder of
data files; that folder has no ``__init__.py``, so this module is what
``import napari_lesionmix._sample_data`` finds.)
"""

from __future__ import annotations

from functools import partial

from napari_lesionmix._reader import read_nifti
from napari_lesionmix.sample_data import sample_dataset

#: ``(host, donor)`` subject ids of the ready pair.
PAIR = ("sub-02", "sub-03")
#: Subjects the manifest lists (sub-01 .. sub-10).
SUBJECTS = tuple(f"sub-{i:02d}" for i in range(1, 11))


def subject_layers(case_id: str, prefix: str = "", with_brain_mask: bool = True) -> list[tuple]:
    """Layer data tuples of one shipped subject: image, label (and brain mask)."""
    rec = sample_dataset()[case_id]
    layers = [read_nifti(p) for p in rec.image_paths]
    if rec.label_path:
        layers.append(read_nifti(rec.label_path))
    if with_brain_mask and rec.brain_mask_path:
        data, kwargs, kind = read_nifti(rec.brain_mask_path)
        kwargs["visible"] = False
        layers.append((data, kwargs, kind))
    if prefix:
        for _, kwargs, _ in layers:
            kwargs["name"] = f"{prefix} {kwargs['name']}"
    return layers


def load_subject(case_id: str) -> list[tuple]:
    """Sample-data hook for one subject."""
    return subject_layers(case_id)


def load_pair() -> list[tuple]:
    """Sample-data hook: the host and donor of :data:`PAIR`, named ``host ...``/``donor ...``."""
    host, donor = PAIR
    return subject_layers(host, "host", False) + subject_layers(donor, "donor", False)


# One callable per subject, named in the manifest (sub_01 ... sub_10).
for _sid in SUBJECTS:
    globals()[_sid.replace("-", "_")] = partial(load_subject, _sid)
del _sid
