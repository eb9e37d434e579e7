"""nnU-Net trainers in-process: per-worker seeded draws, and LesionMix in patch space (no nnU-Net run here)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is not installed (pip install 'napari-lesionmix[nnunet]')")
torch = pytest.importorskip("torch")

from factories import make_case  # noqa: E402

from napari_lesionmix.augment.lesion_load import lesion_load_ml  # noqa: E402
from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.integrations import nnunet  # noqa: E402
from napari_lesionmix.integrations.nnunet_lesionmix import FoldLesions, LesionMixPatchTransform  # noqa: E402

SPACING = (1.2, 1.0, 1.5)


class _FakeDataset:
    """nnU-Net's dataset interface over in-memory cases (``load_case`` -> data, seg, prev, properties)."""

    cases: dict = {}

    def __init__(self, folder, keys):
        self.keys = list(keys)

    def load_case(self, key):
        assert key in self.keys, f"{key} is not a case this dataset was opened with"
        case = self.cases[key]
        seg = case.label[None].astype(np.int16)
        seg[:, :2] = -1  # outside nnU-Net's nonzero region
        return case.image, seg, None, {"class_locations": {1: np.argwhere(seg == 1)}}


@pytest.fixture
def fake_cases():
    _FakeDataset.cases = {f"c{i}": make_case(seed=i, n_lesions=3) for i in range(4)}
    return _FakeDataset


def _patch(seed=9, n_lesions=1):
    case = make_case(seed=seed, n_lesions=n_lesions)
    seg = case.label[None].astype(np.int16)
    seg[:, :2] = -1
    return torch.from_numpy(case.image.copy()), torch.from_numpy(seg)


def _run(transform, worker, n=3, seed=9):
    """``n`` patches made by ``worker`` of a fresh copy of ``transform`` (as a forked worker starts)."""
    t = copy.copy(transform)  # what a forked worker holds: the same settings, its own counters of patches
    t.set_worker(worker)
    image, seg = _patch(seed)
    return [t(image=image.clone(), segmentation=seg.clone()) for _ in range(n)]


def _same(a, b) -> bool:
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["segmentation"], y["segmentation"])
               for x, y in zip(a, b, strict=True))


def test_patch_streams_are_keyed_by_seed_worker_and_patch():
    draw = [g.random() for g in nnunet.patch_streams(5, 3, 1)]
    assert draw == [g.random() for g in nnunet.patch_streams(5, 3, 1)]
    others = [nnunet.patch_streams(*key)[1].random() for key in ((6, 3, 1), (5, 4, 1), (5, 3, 2))]
    assert len({draw[1], *others}) == 4


@pytest.mark.parametrize("method", ["carvemix", "lesionmix"])
def test_two_workers_repeat_across_runs_with_one_seed_and_differ_with_another(fake_cases, method):
    donors = nnunet.DonorPatches("unused", ["c1", "c2"], fake_cases)
    fold = FoldLesions("unused", ["c1", "c2"], fake_cases, SPACING)

    def make(seed):
        if method == "lesionmix":
            return LesionMixPatchTransform({"mode": "populate", "load_dist": "high"}, 1.0, seed, fold)
        return nnunet.OnlineLesionTransform(method, {}, 1.0, seed, donors, SPACING)

    run1 = {w: _run(make(4), w) for w in (0, 1)}
    run2 = {w: _run(make(4), w) for w in (1, 0)}  # another run, its workers started in another order
    assert _same(run1[0], run2[0]) and _same(run1[1], run2[1])
    assert not _same(run1[0], run1[1])  # two workers never repeat each other
    assert not _same(run1[0], _run(make(5), 0))  # another seed, other draws
    image, _ = _patch()
    assert not torch.equal(run1[0][0]["image"], image)  # the method did change the patch


def test_worker_aware_loader_numbers_the_transforms():
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    t = nnunet.OnlineLesionTransform("carvemix", {}, 1.0, 0, nnunet.DonorPatches("unused", ["a"], _FakeDataset),
                                     SPACING)
    loader = object.__new__(nnunet.worker_aware_loader(nnUNetDataLoader))  # only set_thread_id is exercised
    loader.transforms = ComposeTransforms([t])
    loader.set_thread_id(3)
    assert loader.thread_id == 3 and t._worker == 3 and t._next_index() == (0, 3)
    assert issubclass(type(loader), nnUNetDataLoader)


def test_lesionmix_patch_transform_populates_to_a_scaled_target_inside_the_nonzero_region(fake_cases):
    fold = FoldLesions("unused", ["c1", "c2", "c3"], fake_cases, SPACING)
    assert sorted(fold.loads) == ["c1", "c2", "c3"] and len(fold.bank) > 0 and fold.mean_nonzero_ml > 0
    t = LesionMixPatchTransform({"mode": "populate", "load_dist": "high"}, 1.0, 0, fold)
    image, seg = _patch(n_lesions=1)
    outs = [t(image=image.clone(), segmentation=seg.clone()) for _ in range(4)]
    assert int(t.counts[0].value) >= 1 and int(t.counts[0].value) + int(t.counts[1].value) == 4
    grown = [o for o in outs if (o["segmentation"] > 0).sum() > (seg > 0).sum()]
    assert grown, "no patch got lesions"
    for o in grown:
        out_seg = o["segmentation"][0].numpy()
        assert np.all(out_seg[:2] == -1)  # nothing is pasted outside nnU-Net's nonzero region
        assert np.all(out_seg[seg[0].numpy() > 0] > 0)  # the host's lesions stay (populate only adds)
        assert o["image"].dtype == torch.float32 and o["segmentation"].dtype == seg.dtype
    # The target is a case load scaled by the patch's share of the fold's mean nonzero volume.
    real = LesionMixPatchTransform({"load_dist": "real"}, 1.0, 0, fold)
    halves = {round(2 * real.patch_target(np.random.default_rng(i), fold.mean_nonzero_ml / 2), 9) for i in range(40)}
    assert halves == {round(v, 9) for v in fold.loads.values()}
    fixed = LesionMixPatchTransform({"target_load": 3.0}, 1.0, 0, fold)
    assert fixed.patch_target(np.random.default_rng(0), 2 * fold.mean_nonzero_ml) == pytest.approx(6.0)


def test_lesionmix_patch_transform_inpaints_when_the_target_is_below_the_patch_load(fake_cases):
    fold = FoldLesions("unused", ["c1", "c2"], fake_cases, SPACING)
    t = LesionMixPatchTransform({"mode": "inpaint", "target_load": 0.0, "tolerance_ml": 0.0}, 1.0, 0, fold)
    image, seg = _patch(n_lesions=3)
    out = t(image=image.clone(), segmentation=seg.clone())
    before = lesion_load_ml(seg[0].numpy() > 0, SPACING)
    after = lesion_load_ml(out["segmentation"][0].numpy() > 0, SPACING)
    assert after < before and int(t.counts[0].value) == 1
    assert not torch.equal(out["image"], image)  # the removed lesions are inpainted


def test_lesionmix_patch_options_that_need_the_raw_grid_are_refused(fake_cases):
    fold = FoldLesions("unused", ["c1"], fake_cases, SPACING)
    with pytest.raises(LesionMixError, match="raw scans' grid"):
        LesionMixPatchTransform({"likelihood": "map.nii.gz"}, 1.0, 0, fold)
    with pytest.raises(LesionMixError, match="sigma_mm"):
        LesionMixPatchTransform({"sigma_mm": 2.0}, 1.0, 0, fold)
    with pytest.raises(LesionMixError, match="no training case"):
        FoldLesions("unused", [], fake_cases, SPACING)
    assert {"nnUNetTrainerLesionMix", "nnUNetTrainerLesionMix_smoke"} <= set(nnunet.TRAINERS)


def _worker_draws(transform, want=2, max_batches=400) -> dict:
    """``{(worker, patch number): image bytes}`` from two real batchgenerators worker processes (as nnU-Net runs)."""
    from batchgenerators.dataloading.data_loader import DataLoader
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import (
        NonDetMultiThreadedAugmenter,
    )
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

    class PatchLoader(DataLoader):
        def __init__(self, transforms):
            super().__init__(None, 1, 1, infinite=True)
            self.transforms, self.n = transforms, 0

        def generate_train_batch(self):
            image, seg = _patch()
            self.n += 1
            return {"key": (self.thread_id, self.n), "image": self.transforms(image=image, segmentation=seg)["image"]}

    loader = nnunet.worker_aware_loader(PatchLoader)(ComposeTransforms([transform]))
    augmenter = NonDetMultiThreadedAugmenter(loader, None, num_processes=2, num_cached=2, seeds=None)
    got: dict = {}
    try:
        for _ in range(max_batches):  # until both workers have made their first `want` patches
            batch = next(augmenter)
            got[tuple(batch["key"])] = batch["image"].numpy().tobytes()
            if all((w, n) in got for w in (0, 1) for n in range(1, want + 1)):
                break
    finally:
        augmenter._finish()
    return {k: v for k, v in got.items() if k[1] <= want}


# batchgenerators' `_finish` terminates the worker processes while its results thread may be taking a
# tensor from one (torch hands it over by file descriptor): that thread then dies with EOFError after
# the draws were collected (seen in 2 of about 6 CI runs). A teardown race of the library, not of ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_worker_processes_repeat_their_draws_from_one_run_to_the_next(fake_cases):
    donors = nnunet.DonorPatches("unused", ["c1", "c2"], fake_cases)
    first, second = (_worker_draws(nnunet.OnlineLesionTransform("carvemix", {}, 1.0, 7, donors, SPACING))
                     for _ in range(2))
    assert sorted(first) == sorted(second) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert first == second  # each worker's draws are a function of (seed, worker, patch)
    assert first[(0, 1)] != first[(1, 1)]  # and the two workers do not repeat each other
    other = _worker_draws(nnunet.OnlineLesionTransform("carvemix", {}, 1.0, 8, donors, SPACING))
    assert other[(0, 1)] != first[(0, 1)] and other[(1, 1)] != first[(1, 1)]
