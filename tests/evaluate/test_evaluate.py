"""``lesionmix evaluate``: a tiny CPU run checks the files, the resume and the no-leak rule (not the scores)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_lesionmix.errors import LesionMixError
from napari_lesionmix.evaluate.metrics import case_metrics, dice
from napari_lesionmix.evaluate.protocol import EvalConfig, make_split, parse_condition
from napari_lesionmix.sample_data import sample_data_dir

pytest.importorskip("monai", reason="lesionmix evaluate needs the monai extra")
torch = pytest.importorskip("torch")

CASES = ("sub-01", "sub-02", "sub-04")
TINY = dict(conditions=("none", "carvemix"), train_sizes=(2,), seeds=1, n_synthetic=2, iterations=3, batch=1,
            patch=32, channels=(4, 8), cases=CASES, test_cases=("sub-04",), device="cpu", curve_every=2)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from napari_lesionmix.evaluate import run_evaluation

    out = tmp_path_factory.mktemp("eval") / "report"
    cfg = EvalConfig(str(sample_data_dir()), str(out), **TINY)
    first = run_evaluation(cfg)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    second = run_evaluation(cfg)
    return cfg, out, first, second, mtimes


def test_a_tiny_run_writes_every_report_file(tiny_run):
    _, out, first, _, _ = tiny_run
    for name in ("results.csv", "summary.md", "downstream.png", "eval_config.json"):
        assert (out / name).is_file(), name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    # one row per condition x K x seed x test case
    assert sorted((r["condition"], r["k"], r["seed"], r["test_case"]) for r in rows) == [
        ("carvemix", "2", "0", "sub-04"), ("none", "2", "0", "sub-04")]
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0 and 0.0 <= float(r["lesion_f1"]) <= 1.0
        assert float(r["abs_volume_diff_ml"]) >= 0.0
    summary = (out / "summary.md").read_text()
    assert "| 2 | carvemix |" in summary and "Δ Dice vs none" in summary
    assert (out / "downstream.png").read_bytes()[:4] == b"\x89PNG"
    assert first.n_done_before == 0 and len(first.runs) == 2


def test_a_rerun_resumes_without_training_again(tiny_run):
    _, out, _, second, mtimes = tiny_run
    assert second.n_done_before == 2
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == mtimes


def test_no_synthetic_voxel_comes_from_a_test_case(tiny_run):
    cfg, out, first, _, _ = tiny_run
    for run in first.runs:
        assert not set(run["train_cases"]) & set(run["test_cases"])
        assert set(run["synthetic_sources"]) <= set(run["train_cases"])
    (carve,) = [r for r in first.runs if r["condition"] == "carvemix"]
    assert carve["n_synthetic"] == cfg.n_synthetic and carve["synthetic_sources"]
    # The exporter saw only the K training cases: its manifest names no other case.
    manifest = out / "synthetic" / "K2_seed0" / "carvemix" / "manifest.jsonl"
    for line in manifest.read_text().splitlines():
        assert set(json.loads(line)["sources"]) <= {"sub-01", "sub-02"}
    linked = {p.name.split("_")[0] for p in (out / "synthetic" / "K2_seed0" / "train_cases").iterdir()}
    assert linked == {"sub-01", "sub-02"}


def test_a_report_folder_with_other_settings_is_refused(tiny_run):
    from napari_lesionmix.evaluate import run_evaluation

    cfg, out, _, _, _ = tiny_run
    other = EvalConfig(cfg.dataset, str(out), **{**TINY, "iterations": 4})
    with pytest.raises(LesionMixError, match="other settings"):
        run_evaluation(other)


def test_a_dataset_too_small_for_the_split_is_one_sentence(tmp_path):
    cfg = EvalConfig(str(sample_data_dir()), str(tmp_path / "r"), **{**TINY, "train_sizes": (2, 3)})
    with pytest.raises(LesionMixError, match=r"K = 3 training case\(s\) needs at least 4") as err:
        make_split(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad, match", [
    ({"conditions": ("none", "nosuch")}, "Unknown augmentation method"),
    ({"conditions": ("carvemix+magic",)}, "Harmonizer 'magic'"),
    ({"train_sizes": (1,)}, "every training size must be >= 2"),
    ({"patch": 31}, "multiple of 2"),
    ({"synthetic_ratio": 1.0}, "synthetic ratio"),
    ({"iterations": 0}, "iterations"),
    ({"test_cases": ("sub-99",)}, "Test case 'sub-99'"),
    ({"options": {"carvemix": {"nope": 1}}}, "has no option nope"),
    ({"options": {"softcp": {"n_lesions": 2}}}, "not among the conditions"),
])
def test_bad_settings_are_clear_errors(tmp_path, bad, match):
    with pytest.raises(LesionMixError, match=match):
        make_split(EvalConfig(str(sample_data_dir()), str(tmp_path / "r"), **{**TINY, **bad}))


def test_the_same_k_cases_for_every_condition_and_test_cases_never_drawn(tmp_path):
    cfg = EvalConfig(str(sample_data_dir()), str(tmp_path / "r"), **{**TINY, "cases": None, "test_cases": None,
                                                                     "train_sizes": (2, 4)})
    split = make_split(cfg)
    assert split.test_ids and not set(split.test_ids) & set(split.pool_ids)
    for seed in range(5):
        for k in (2, 4):
            ids = split.train_ids(k, seed)
            assert len(ids) == k and ids == split.train_ids(k, seed) and not set(ids) & set(split.test_ids)
    assert parse_condition("CarveMix+ARHNet") == ("carvemix", "arhnet")


def test_lesion_metrics_count_26_connected_lesions():
    ref = np.zeros((10, 10, 10), bool)
    ref[1, 1, 1] = ref[2, 2, 2] = True          # one lesion: corners touch (26-connected)
    ref[6:8, 6:8, 6:8] = True                   # a second lesion
    pred = np.zeros_like(ref)
    pred[1, 1, 1] = True                        # finds lesion 1
    pred[4, 0, 9] = True                        # a false positive
    m = case_metrics(pred, ref, voxel_ml=0.008)
    assert m["true_lesions"] == 2 and m["pred_lesions"] == 2
    assert m["lesion_recall"] == 0.5 and m["lesion_precision"] == 0.5 and m["lesion_f1"] == 0.5
    assert m["abs_volume_diff_ml"] == pytest.approx(8 * 0.008)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_the_command_runs_and_says_one_sentence_for_a_small_dataset(tmp_path, capsys):
    from napari_lesionmix.cli import main

    code = main(["evaluate", "--dataset", str(sample_data_dir()), "--out", str(tmp_path / "r"), "--cases", *CASES,
                 "--train-cases", "3", "--methods", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "an evaluation with K = 3 training case(s) needs at least 4" in err


def test_a_folder_that_no_evaluation_wrote_is_refused(tmp_path):
    from napari_lesionmix.evaluate import run_evaluation

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(LesionMixError, match="no evaluation wrote"):
        run_evaluation(EvalConfig(str(sample_data_dir()), str(tmp_path), **TINY))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_the_summary_says_which_protocol_ran_and_gives_a_verdict_per_method(tiny_run):
    cfg, out, first, _, _ = tiny_run
    summary = (out / "summary.md").read_text()
    assert "Sampling protocol: **pooled**" in summary and "synthetic patches added in extra steps" in summary
    assert "## Verdict" in summary and "**carvemix** (K = 2)" in summary
    assert any(w in summary for w in ("helped", "hurt", "made no difference beyond the seed spread"))
    assert "## Calibration" in summary
    (carve,) = [r for r in first.runs if r["condition"] == "carvemix"]
    (none,) = [r for r in first.runs if r["condition"] == "none"]
    # pooled with K = 2 and N = 2: half the patches synthetic, all of none's real patches kept
    assert none["steps"] == cfg.iterations and carve["steps"] == 2 * cfg.iterations
    assert carve["synthetic_share"] == 0.5 and carve["validation_is_train"]
    assert carve["synthetic_load_ml"] > 0 and carve["real_load_ml"] > 0
    with open(out / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert {"volume_ratio", "overlap_f1", "val_threshold", "dice_at_val_threshold"} <= set(row)


def test_the_fixed_ratio_protocol_is_kept_as_an_option(tmp_path):
    from napari_lesionmix.evaluate import run_evaluation

    cfg = EvalConfig(str(sample_data_dir()), str(tmp_path / "r"),
                     **{**TINY, "conditions": ("carvemix",), "sampling": "ratio", "extra_iterations": False,
                        "iterations": 2})
    assert cfg.foreground_fraction == 0.5
    report = run_evaluation(cfg)
    assert report.runs[0]["steps"] == 2
    assert "Sampling protocol: **ratio**" in (tmp_path / "r" / "summary.md").read_text()


@pytest.mark.parametrize("how", ["cap", "match"])
def test_a_load_choice_keeps_n_of_the_candidates(tiny_run, tmp_path, how):
    from napari_lesionmix.evaluate.protocol import choose_synthetic

    cfg, out, _, _, _ = tiny_run
    choice = EvalConfig(cfg.dataset, str(tmp_path / "r"), **{**TINY, "n_synthetic": 1, "synthetic_load": how})
    split = make_split(choice)
    ids, info = choose_synthetic(choice, split, 2, 0, out / "synthetic" / "K2_seed0" / "carvemix")
    assert len(ids) == 1 and info["n_candidates"] == 2
    assert info["synthetic_load_ml"] <= info["candidates_load_ml"] + 1e-9 or how == "match"


def test_a_harmonized_condition_runs(tmp_path):
    """``METHOD+HARMONIZER`` exports under a name nnU-Net accepts (a '+' in it was refused)."""
    from napari_lesionmix.evaluate import run_evaluation

    cfg = EvalConfig(str(sample_data_dir()), str(tmp_path / "report"),
                     **{**TINY, "conditions": ("none", "carvemix+hm")})
    report = run_evaluation(cfg)
    assert sorted(r["condition"] for r in report.runs) == ["carvemix+hm", "none"]
    assert "| 2 | carvemix+hm |" in (tmp_path / "report" / "summary.md").read_text()
