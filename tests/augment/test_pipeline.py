"""One pipeline: every face makes the same bytes for the same (seed, index, host, donor, options).

Parametrised over every registered method (a new method is covered without
editing this file): the Python API (``registry.generate``), the method command
(``lesionmix METHOD --seed S --index I``), export sample ``I`` and the online
engine under the MONAI/TorchIO/PyTorch faces. The studio's docks draw through
``registry.draw`` (tests/widgets check their replays against the registry).
"""

from __future__ import annotations

import dataclasses
import json
import os

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import pipeline, registry
from napari_lesionmix.cli import main
from napari_lesionmix.io.dataset import discover_dataset
from napari_lesionmix.random import choice_rng, retry_rng, sample_rng

SEED = 5
N = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline") / "src"
    for k in range(4):
        write_case(make_case(seed=120 + k, n_lesions=3, case_id=f"p{k}"), root)
    return root


def _hard_options(method) -> dict:
    """Options under which the method's labels are hard (export refuses soft ones), found from its Options."""
    if not method.soft_labels(method.Options()):
        return {}
    for f in dataclasses.fields(method.Options):
        if "hard" in (f.metadata.get("choices") or ()):
            return {f.name: "hard"}
    pytest.skip(f"{method.name} has no hard-label option")


def _cli(method, dataset, host, donor, index, options, out):
    args = [method.name]
    if method.needs_donor:
        args += ["--host-image", str(dataset / f"{host}.nii.gz"), "--host-label", str(dataset / f"{host}_seg.nii.gz"),
                 "--donor-image", str(dataset / f"{donor}.nii.gz"), "--donor-label", str(dataset / f"{donor}_seg.nii.gz")]
    else:
        args += ["--dataset", str(dataset), "--host", host]
    for k, v in options.items():
        args.append(f"--{k.replace('_', '-')}={v}")
    assert main([*args, "--seed", str(SEED), "--index", str(index), "--out", str(out)]) == 0
    return (np.asanyarray(nib.load(out / "image_0000.nii.gz").dataobj),
            np.asanyarray(nib.load(out / "label.nii.gz").dataobj))


def test_the_streams_are_apart():
    a, b, c = sample_rng(3, 2).random(), choice_rng(3, 2).random(), retry_rng(3, 2, 1).random()
    assert len({a, b, c}) == 3 and retry_rng(3, 2, 0).random() == a


@pytest.mark.parametrize("name", registry.method_names())
def test_every_face_gives_the_same_bytes(name, dataset, tmp_path):
    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.integrations.online import OnlineMethod

    method = registry.get_method(name)
    options = {"intensity_match": "none", **_hard_options(method)}
    ds = discover_dataset(dataset)
    cases = {r.case_id: r.load() for r in ds.cases}

    out = tmp_path / "export"
    export_dataset(ExportConfig(os.fspath(dataset), os.fspath(out), n=N, seed=SEED, n_folds=0,
                                methods=((name, 1.0),), options={name: options}))
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    engine = OnlineMethod(name, os.fspath(dataset), options)
    checked = 0
    for rec in sorted(records, key=lambda r: r["index"]):
        if rec.get("redrawn"):
            continue  # a redraw's params come from its own stream, which no single-pair face shares
        i, host, donor = rec["index"], rec["host"], rec["params"].get("donor_id")
        py = registry.generate(method, cases[host], cases[donor] if donor else None, seed=SEED, index=i,
                               options=options, training_set=ds)
        written = np.asanyarray(nib.load(out / "imagesTr" / f"{rec['id']}_0000.nii.gz").dataobj)
        np.testing.assert_array_equal(written, py.image[0], err_msg=f"export sample {i}")
        image, label = _cli(method, dataset, host, donor, i, options, tmp_path / f"cli{i}")
        np.testing.assert_array_equal(image, py.image[0], err_msg=f"CLI sample {i}")
        np.testing.assert_array_equal(label, py.label)
        # The online engine draws its own donor (from the choice stream): same bytes on the pair it chose.
        online = engine(SEED, i, cases[host])
        od = getattr(online.params, "donor_id", None)
        ref = py if od == donor else registry.generate(method, cases[host], cases[od] if od else None, seed=SEED,
                                                       index=i, options=options, training_set=ds)
        np.testing.assert_array_equal(online.image, ref.image, err_msg=f"online sample {i}")
        checked += 1
    assert checked >= 2


def test_a_refused_draw_is_redrawn_with_another_donor_and_recorded(dataset):
    """The retry path: the first donor is refused, another is drawn from the choice stream."""
    ds = discover_dataset(dataset)
    sources = registry.LocalSources(training_set=ds)
    method = registry.get_method("softcp")
    options = method.Options()
    resources = method.prepare(sources, options)
    host = sources.case("p0")

    class Refusing:
        """Sources whose donor 'p1' has a lesion nothing can place (as a 47 mL confluent lesion)."""

        def __getattr__(self, name):
            return getattr(sources, name)

    refusing = Refusing()
    real_sample = method.sample

    def sample(rng, inputs, opts, res):
        if inputs.donor.case_id == "p1":
            raise registry.DrawRejected("No position keeps >= 90% of donor lesion 1 (a test refusal).")
        return real_sample(rng, inputs, opts, res)

    object.__setattr__(method, "sample", sample)
    try:
        made = pipeline.draw(method, 0, 0, host, refusing, options, resources, donor_id="p1",
                             donor_ids=["p1", "p2", "p3"], choice=choice_rng(0, 0), apply=True)
    finally:
        del method.sample
    assert made.params.donor_id in ("p2", "p3") and made.inputs.donor.case_id == made.params.donor_id
    assert len(made.redraws) >= 1 and made.redraws[0].startswith("donor 'p1': Soft-CP found no valid placement")
    assert made.synthetic is not None and made.params.sample_index == 0
