"""The shared intensity-matching step (augment/intensity.py through the registry): fit, replay, warning."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import intensity, registry
from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import discover_dataset


def _scaled(case, gains, case_id, offset=0.0):
    """``case`` with channel c multiplied by gains[c] (plus ``offset``) inside the head; background stays 0."""
    image = case.image.copy()
    head = np.ones(case.shape, bool)
    head[:2] = False  # a constant background slab, as outside a head
    for c, g in enumerate(gains):
        image[c] = np.where(head, image[c] * g + offset, 0.0)
    return dataclasses.replace(case, image=image.astype(np.float32), case_id=case_id)


@pytest.fixture
def pair():
    base_h = make_case(seed=1, n_lesions=2, n_channels=2)
    base_d = make_case(seed=2, n_lesions=4, n_channels=2)
    return _scaled(base_h, (1.0, 3.0), "host"), _scaled(base_d, (0.5, 1.6), "donor", offset=20.0)


def _normal(case, c):
    return case.image[c][intensity.normal_brain(case.image[c], case.label, None)]


@pytest.mark.parametrize("mode", ["brain-linear", "histogram"])
def test_matching_puts_the_donors_normal_brain_in_the_hosts_scale_per_channel(pair, mode):
    host, donor = pair
    m = intensity.fit_map(mode, intensity.brain_stats(donor.image, donor.label),
                          intensity.brain_stats(host.image, host.label), "donor")
    matched = dataclasses.replace(donor, image=m.apply(donor.image))
    for c in range(2):  # the two channels have different gains and get different maps
        d, h = _normal(matched, c), _normal(host, c)
        assert np.median(d) == pytest.approx(np.median(h), rel=1e-3)
        iqr = np.subtract(*np.percentile(d, [75, 25])), np.subtract(*np.percentile(h, [75, 25]))
        assert iqr[0] == pytest.approx(iqr[1], rel=0.02 if mode == "histogram" else 1e-3)
    assert m.source_landmarks[0] != m.source_landmarks[1]
    # The background keeps its value (Mixup and CutMix must not lift it).
    assert np.all(matched.image[:, :2] == 0)
    # Lesions stay brighter than the normal brain (by about the donor's own contrast with a linear map;
    # histogram extrapolates above the 99th percentile with the last segment's slope, as TorchIO does).
    les = donor.label != 0
    for c in range(2):
        own = np.median(donor.image[c][les]) / np.median(_normal(donor, c))
        got = np.median(matched.image[c][les]) / np.median(_normal(matched, c))
        assert got > 1.0
        if mode == "brain-linear":
            assert got == pytest.approx(own, rel=0.1)


def test_the_fit_uses_no_lesion_voxel(pair):
    host, donor = pair
    wild = donor.image.copy()
    wild[:, donor.label != 0] = 1e6  # lesions of any brightness
    other = dataclasses.replace(donor, image=wild)
    for mode in intensity.MODES:
        a = intensity.fit_map(mode, intensity.brain_stats(donor.image, donor.label),
                              intensity.brain_stats(host.image, host.label), "donor")
        b = intensity.fit_map(mode, intensity.brain_stats(other.image, other.label),
                              intensity.brain_stats(host.image, host.label), "donor")
        assert a == b


def test_a_brain_mask_is_the_region_when_given():
    case = make_case(seed=3)
    brain = np.zeros(case.shape, bool)
    brain[5:15, 5:15, 5:15] = True
    inside = intensity.normal_brain(case.image[0], case.label, brain)
    assert not inside[~brain].any() and not inside[case.label != 0].any()
    with pytest.raises(LesionMixError, match="no normal-brain voxel"):
        intensity.brain_stats(case.image, case.label, np.zeros(case.shape, bool))


@pytest.mark.parametrize("name", ["carvemix", "softcp", "mixup", "cutmix"])
@pytest.mark.parametrize("mode", ["brain-linear", "histogram"])
def test_every_pair_method_records_the_map_and_replays_exactly(pair, name, mode):
    host, donor = pair
    options = {"intensity_match": mode, **({"label": "hard"} if name in ("mixup", "cutmix") else {})}
    a = registry.generate(name, host, donor, seed=4, options=options)
    (m,) = a.params.intensity
    assert (m.case_id, m.mode) == ("donor", mode)
    plain = registry.generate(name, host, donor, seed=4, options={**options, "intensity_match": "none"})
    assert plain.params.intensity[0].mode == "none" and not np.array_equal(plain.image, a.image)
    assert dataclasses.replace(plain.params, intensity=a.params.intensity) == a.params  # the same draw
    params = params_from_json(a.params.to_json())
    assert params == a.params
    b = registry.replay(params, host, donor)
    assert np.array_equal(b.image, a.image) and np.array_equal(b.label, a.label)
    # Replay applies the recorded map, not a new fit: a donor edited in its lesions replays the same map.
    assert registry.replay(params, host, donor).params.intensity == a.params.intensity


def test_carvemix_pastes_the_lesion_at_the_hosts_contrast(pair):
    host, donor = pair
    normal_h = np.median(_normal(host, 0))
    own_d = np.median(donor.image[0][donor.label != 0]) / np.median(_normal(donor, 0))
    contrast = {}
    for mode in intensity.MODES:
        syn = registry.generate("carvemix", host, donor, options={"lam": 0.0, "intensity_match": mode})
        pasted = (syn.label != 0) & (host.label == 0)
        contrast[mode] = np.median(syn.image[0][pasted]) / normal_h
    assert contrast["none"] < 1.0  # the case: a hyperintense lesion pasted darker than the host's brain
    assert contrast["brain-linear"] == pytest.approx(own_d, rel=0.1)
    assert contrast["histogram"] > 1.0


def test_lesionmix_matches_each_source_case(tmp_path):
    root = tmp_path / "ds"
    for s, gain in enumerate((1.0, 0.5, 2.0)):
        write_case(_scaled(make_case(seed=40 + s, n_lesions=3), (gain,), f"c{s}"), root)
    ds = discover_dataset(root)
    host = ds["c0"].load()
    opts = {"target_load": 1.5, "mode": "populate", "intensity_match": "brain-linear"}
    a = registry.generate("lesionmix", host, seed=2, options=opts, training_set=ds)
    used = {ins.case_id for ins in a.params.insertions} - {"c0"}
    assert used and {m.case_id for m in a.params.intensity} == used
    assert all(m.mode == "brain-linear" for m in a.params.intensity)
    b = registry.replay(params_from_json(a.params.to_json()), host, training_set=ds)
    assert np.array_equal(a.image, b.image)
    plain = registry.generate("lesionmix", host, seed=2, options={**opts, "intensity_match": "none"},
                              training_set=ds)
    assert plain.params.insertions == a.params.insertions and not np.array_equal(plain.image, a.image)


def test_the_option_is_checked_and_shared_by_every_method():
    for m in registry.methods():
        assert m.Options().intensity_match == "none"
        with pytest.raises(LesionMixError, match=f"{m.name}.intensity_match must be one of none, brain-linear"):
            m.Options.from_dict({"intensity_match": "median"})
    with pytest.raises(LesionMixError, match="intensity_match must be one of"):
        from napari_lesionmix.export.plan import check_options

        check_options(["carvemix"], {"carvemix": {"intensity_match": "zscore"}})


def _write(case, folder):
    return write_case(case, folder, case.case_id)


def _cli_pair(files, *extra):
    return ["--host-image", str(files["host"]["images"][0]), "--host-label", str(files["host"]["label"]),
            "--donor-image", str(files["donor"]["images"][0]), "--donor-label", str(files["donor"]["label"]),
            *extra]


@pytest.fixture
def gain_pair_on_disk(tmp_path):
    host = _scaled(make_case(seed=1, n_lesions=2), (1.0,), "host")
    donor = _scaled(make_case(seed=2, n_lesions=4), (0.5,), "donor")
    return {"host": _write(host, tmp_path / "in"), "donor": _write(donor, tmp_path / "in")}


def test_cli_warns_once_about_unmatched_gain_and_replays_a_matched_sample(gain_pair_on_disk, tmp_path, capsys):
    files = gain_pair_on_disk
    assert main(["carvemix", *_cli_pair(files, "--out", str(tmp_path / "raw"))]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: normal-brain medians of host 'host'" in err
    assert "differ by 50%" in err and "intensity_match=brain-linear" in err
    out = tmp_path / "matched"
    assert main(["carvemix", *_cli_pair(files, "--intensity-match", "histogram", "--seed", "2",
                                        "--out", str(out))]) == 0
    assert capsys.readouterr().err == ""
    record = json.loads((out / "params.json").read_text())
    assert record["params"]["intensity"][0]["mode"] == "histogram"
    again = tmp_path / "again"
    assert main(["carvemix", *_cli_pair(files, "--params", str(out / "params.json"), "--out", str(again))]) == 0
    for f in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
        a, b = (np.asanyarray(nib.load(d / f).dataobj) for d in (out, again))
        assert np.array_equal(a, b), f
    with pytest.raises(SystemExit):
        main(["carvemix", *_cli_pair(files, "--intensity-match", "zscore", "--out", str(tmp_path / "x"))])


def test_gain_warning_reads_maps_and_their_json():
    m = intensity.IntensityMap("d", "none", (300.0,), (500.0,))
    assert m.gain == pytest.approx(0.4)
    line = intensity.gain_warning([m], "h")
    assert line == intensity.gain_warning([json.loads(json.dumps(dataclasses.asdict(m)))], "h")
    assert "'h' (500)" in line and "'d' (300)" in line and "40%" in line
    assert intensity.gain_warning([dataclasses.replace(m, source_median=(450.0,))], "h") is None
    linear = intensity.fit_map("brain-linear", intensity.BrainStats(((1.0,) * 13,), (0.0,)),
                               intensity.BrainStats(((2.0,) * 13,), (0.0,)), "d")
    assert intensity.gain_warning([linear]) is None  # matched: nothing to warn about


@pytest.fixture
def gain_dataset(tmp_path):
    """Four cases, two of them at half the gain of the others."""
    root = tmp_path / "ds"
    for s, gain in enumerate((1.0, 0.5, 1.0, 0.5)):
        write_case(_scaled(make_case(seed=60 + s, n_lesions=3), (gain,), f"c{s}"), root)
    return root


def test_export_defaults_to_brain_linear_and_warns_and_marks_unmatched_cases(gain_dataset, tmp_path, capsys):
    from napari_lesionmix.export import ExportConfig, export_dataset
    from napari_lesionmix.export.gallery import GAIN_MARK, gallery_figure, list_cases

    def gain_figure_titles(folder):
        fig = gallery_figure(folder, list_cases(folder))
        titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
        return {t.split()[0]: t for t in titles}

    matched = ExportConfig(str(gain_dataset), str(tmp_path / "m"), n=4, seed=1)
    assert matched.options == {"carvemix": {"intensity_match": "brain-linear"}}
    report = export_dataset(matched)
    assert report.gain_mismatches == {} and report.gain_warning() is None
    out = tmp_path / "raw"
    args = ["export", "--dataset", str(gain_dataset), "--out", str(out), "--n", "4", "--seed", "1",
            "--no-progress", "--option", "carvemix.intensity_match=none"]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(lines) == 1 and "intensity_match=none" in lines[0]
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    crossed = {r["id"] for r in records if r["method"] == "carvemix"
               and (r["host"] in ("c1", "c3")) != (r["donor"] in ("c1", "c3"))}
    assert crossed and f"{len(crossed)} synthetic case(s)" in lines[0]
    titles = gain_figure_titles(out)
    assert {cid for cid, t in titles.items() if GAIN_MARK in t} == crossed
    assert not any(GAIN_MARK in t for t in gain_figure_titles(tmp_path / "m").values())
