"""The Method protocol: every registered method through one path, and one seeding rule for every face."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
from factories import make_case, write_case

from napari_lesionmix.augment import registry
from napari_lesionmix.augment.params import params_from_json
from napari_lesionmix.cli import main
from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.io.dataset import discover_dataset
from napari_lesionmix.io.nifti import load_case

BUILT_IN = ["carvemix", "cutmix", "lesionmix", "mixup", "softcp"]


@pytest.fixture
def dataset(tmp_path):
    """Four cases in the plain pairs layout (a LesionMix training set)."""
    root = tmp_path / "ds"
    for s in range(4):
        write_case(make_case(seed=30 + s, n_lesions=3, case_id=f"c{s}"), root)
    return discover_dataset(root)


def _inputs(method, dataset):
    host = dataset["c0"].load()
    return host, (dataset["c1"].load() if method.needs_donor else None)


def test_the_built_in_methods_are_registered_with_valid_defaults():
    assert set(BUILT_IN) <= set(registry.method_names())  # a lower bound: a new method breaks no test
    for m in registry.methods():
        assert m.label and m.summary and m.Params.method == m.name
        opts = m.Options()
        assert m.Options.from_dict(opts.to_dict()) == opts
        for f in dataclasses.fields(m.Options):
            assert f.metadata["help"], f"{m.name}.{f.name} has no help text"
    with pytest.raises(LesionMixError, match="Unknown augmentation method 'nosuch'"):
        registry.get_method("nosuch")


@pytest.mark.parametrize("name", BUILT_IN)
def test_generate_then_replay_gives_the_same_sample(name, dataset):
    method = registry.get_method(name)
    host, donor = _inputs(method, dataset)
    options = {"label": "hard"} if name in ("mixup", "cutmix") else None
    a = registry.generate(name, host, donor, seed=5, index=2, options=options, training_set=dataset)
    assert (a.params.seed, a.params.sample_index) == (5, 2)
    again = registry.generate(name, host, donor, seed=5, index=2, options=options, training_set=dataset)
    other = registry.generate(name, host, donor, seed=5, index=3, options=options, training_set=dataset)
    params = params_from_json(a.params.to_json())
    assert params == a.params
    replayed = registry.replay(params, host, donor, training_set=dataset)
    for x in (again, replayed):
        assert np.array_equal(x.image, a.image) and np.array_equal(x.label, a.label)
        assert np.array_equal(x.mask, a.mask) and x.params == a.params
    assert other.params != a.params
    assert method.source_ids(a.params)[0] == "c0"


def test_options_are_checked_against_their_declaration():
    cm = registry.get_method("carvemix").Options
    assert cm.from_dict({"connectivity": 6, "lam": 1}).lam == 1.0  # ints become floats
    for data, message in [
        ({"connectivity": 7}, "carvemix.connectivity must be one of 6, 18, 26"),
        ({"per_lesion": 1}, "carvemix.per_lesion must be true or false"),
        ({"lam": float("inf")}, "carvemix.lam must be a finite number"),
        ({"lambda": 1.0}, "Method 'carvemix' has no option lambda"),
    ]:
        with pytest.raises(LesionMixError, match=message):
            cm.from_dict(data)
    scp = registry.get_method("softcp").Options
    assert scp(lesion_labels=[2, 3]).lesion_labels == (2, 3)
    with pytest.raises(LesionMixError, match="softcp.a must be > 0.0"):
        scp(a=0.0)
    with pytest.raises(LesionMixError, match="Unknown reference 'brain'"):
        scp(reference="brain")


def _cli_pair(pair, *extra):
    return ["--host-image", str(pair["host"]["images"][0]), "--host-label", str(pair["host"]["label"]),
            "--donor-image", str(pair["donor"]["images"][0]), "--donor-label", str(pair["donor"]["label"]), *extra]


@pytest.mark.parametrize("name", ["carvemix", "softcp", "mixup", "cutmix"])
def test_cli_seed_and_index_give_the_python_api_sample_byte_for_byte(name, pair_on_disk, tmp_path):
    from napari_lesionmix.io.synthetic import write_synthetic

    out = tmp_path / "cli"
    assert main([name, *_cli_pair(pair_on_disk, "--seed", "3", "--index", "1", "--out", str(out))]) == 0
    host = load_case(pair_on_disk["host"]["images"], pair_on_disk["host"]["label"])
    donor = load_case(pair_on_disk["donor"]["images"], pair_on_disk["donor"]["label"])
    syn = registry.generate(name, host, donor, seed=3, index=1)
    write_synthetic(tmp_path / "api", syn, host)
    for f in ("image_0000.nii.gz", "label.nii.gz", "mask.nii.gz"):
        assert (out / f).read_bytes() == (tmp_path / "api" / f).read_bytes(), f
    record = json.loads((out / "params.json").read_text())
    assert record["params"] == syn.params.to_dict()
    # The default index is 0, which is another sample of the same seed.
    assert main([name, *_cli_pair(pair_on_disk, "--seed", "3", "--out", str(tmp_path / "i0"))]) == 0
    first = json.loads((tmp_path / "i0" / "params.json").read_text())["params"]
    assert first["sample_index"] == 0 and first != record["params"]


def test_cli_replay_refuses_other_cases(pair_on_disk, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["carvemix", *_cli_pair(pair_on_disk, "--seed", "1", "--out", str(out))]) == 0
    swapped = ["--host-image", str(pair_on_disk["donor"]["images"][0]), "--host-label",
               str(pair_on_disk["donor"]["label"]), "--donor-image", str(pair_on_disk["host"]["images"][0]),
               "--donor-label", str(pair_on_disk["host"]["label"])]
    capsys.readouterr()
    assert main(["carvemix", *swapped, "--params", str(out / "params.json"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "were drawn for other cases than the given host 'donor' (recorded: 'host')" in err
    assert not (tmp_path / "b").exists()


def test_an_export_record_replays_through_the_cli(tmp_path):
    from napari_lesionmix.export import ExportConfig, export_dataset

    root = tmp_path / "ds"
    for s in range(3):
        write_case(make_case(seed=40 + s, n_lesions=3, case_id=f"c{s}"), root)
    out = tmp_path / "Dataset501_T"
    export_dataset(ExportConfig(str(root), str(out), n=3, methods=(("carvemix", 1.0), ("mixup", 1.0)), seed=4, n_folds=0,
                                options={"mixup": {"label": "hard"}}))
    for line in (out / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec_file = tmp_path / f"{rec['id']}.json"
        rec_file.write_text(line)
        host, donor = rec["host"], rec["sources"][1]
        args = ["--host-image", str(root / f"{host}.nii.gz"), "--host-label", str(root / f"{host}_seg.nii.gz"),
                "--donor-image", str(root / f"{donor}.nii.gz"), "--donor-label", str(root / f"{donor}_seg.nii.gz")]
        replay = tmp_path / f"replay-{rec['id']}"
        assert main([rec["method"], *args, "--params", str(rec_file), "--out", str(replay)]) == 0
        for exported, replayed in ((out / "imagesTr" / f"{rec['id']}_0000.nii.gz", replay / "image_0000.nii.gz"),
                                   (out / "labelsTr" / f"{rec['id']}.nii.gz", replay / "label.nii.gz")):
            a, b = nib.load(exported), nib.load(replayed)
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
            assert a.get_data_dtype() == b.get_data_dtype()


def test_mixup_and_cutmix_hard_labels_are_the_larger_weight(host_case, donor_case):
    mix = registry.generate("mixup", host_case, donor_case, seed=0, options={"label": "hard"})
    expected = donor_case.label if mix.params.lam > 0.5 else host_case.label
    assert mix.label.dtype == np.uint8 and np.array_equal(mix.label, expected)
    cut = registry.generate("cutmix", host_case, donor_case, seed=0, options={"label": "hard"})
    assert np.array_equal(cut.label, np.where(cut.mask, donor_case.label, host_case.label))
    soft = registry.generate("cutmix", host_case, donor_case, seed=0)
    lam = np.float32(soft.params.lam(host_case.shape))
    assert np.allclose(soft.label, lam * donor_case.label + (1 - lam) * host_case.label)


def test_a_third_party_package_registers_a_method_through_its_entry_point(monkeypatch):
    """``[project.entry-points."napari_lesionmix.methods"]``: the CLI, export and the studio then find it."""
    class Identity(registry.Method):
        name, label, summary = "plugin-test", "Plug-in test", "a method from another package"

    class FakeEntryPoint:
        name, value = "plugin-test", "some_package.method:Identity"

        def load(self):
            return Identity

    class Broken(FakeEntryPoint):
        name, value = "broken", "missing_package"

        def load(self):
            raise ImportError("No module named 'missing_package'")

    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint(), Broken()]
                        if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    with pytest.warns(registry.LesionMixWarning, match="plug-in 'broken' .* failed to load"):
        names = registry.method_names()
    try:
        assert "plugin-test" in names and registry.get_method("plugin-test").label == "Plug-in test"
    finally:
        registry._METHODS.pop("plugin-test", None)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_hard_label_baselines_keep_multi_class_ids(name):
    """BraTS-style labels 0-4: hard Mixup/CutMix keep the class of the larger weight; soft ones refuse."""
    from factories import make_case

    host, donor = make_case(seed=1, case_id="h"), make_case(seed=2, case_id="d")
    host.label = host.label * 2   # classes {0, 2}
    donor.label = donor.label * 4  # classes {0, 4}
    syn = registry.generate(name, host, donor, seed=1, options={"label": "hard"})
    assert set(np.unique(syn.label)) <= {0, 2, 4} and syn.label.dtype.kind in "iu"
    with pytest.raises(LesionMixError, match="soft labels are defined for binary lesion labels only; label=hard"):
        registry.generate(name, host, donor, seed=1)


def test_local_sources_keep_a_bounded_number_of_training_cases_loaded(tmp_path, monkeypatch):
    """A Python loop over a large training set must not keep every case it read (35 MB each at 1 mm)."""
    monkeypatch.setattr(registry, "LOADED_CASES", 3)
    for s in range(5):
        write_case(make_case(seed=s, n_lesions=1, case_id=f"k{s}", shape=(16, 18, 14)), tmp_path)
    sources = registry.LocalSources(training_set=discover_dataset(tmp_path))
    first = sources.case("k0")
    assert sources.case("k0") is first  # kept while recent
    for s in range(1, 5):
        sources.case(f"k{s}")
    assert len(sources._read.data) == 3 and "k0" not in sources._read.data
    again = sources.case("k0")
    assert again is not first and np.array_equal(again.image, first.image)
