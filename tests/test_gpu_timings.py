"""benchmarks/gpu_timings.py: the CPU smoke run (--quick) writes the table and the JSON; CUDA only where present."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_timings.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_timings  # noqa: E402

torch = pytest.importorskip("torch")


def run_script(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, dict, str]:
    """The script in its own process (it sets torch's thread count), its JSON and its Markdown table."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("OUT", None)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads((out / "gpu_timings.json").read_text()), (out / "gpu_timings.md").read_text()


def rows_of(result: dict, part: str) -> list[dict]:
    return [r for r in result["rows"] if r["part"] == part]


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_table(result: dict, table: str, stdout: str) -> None:
    """One table line per row, the same table printed and written."""
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| ---")]
    assert lines[0] == "| part | measurement | result | compared with | ratio |"
    assert len(lines) == 1 + len(result["rows"])
    for r, ln in zip(result["rows"], lines[1:], strict=True):
        assert ln.startswith(f"| {r['part']} | {r['measurement']} | {r['result']} |")
    assert table in stdout


def test_quick_cpu_run_measures_every_part(tmp_path):
    proc, result, table = run_script(tmp_path, "--device", "cpu", "--quick", "--cpu-threads", "1", "--workers", "2")
    check_table(result, table, proc.stdout)
    assert result["quick"] and result["environment"]["device"] == "cpu"
    # On the CPU the CPU-training reference part is the training part itself.
    assert {k: v["status"] for k, v in result["parts"].items()} == {"inference": "done", "training": "done",
                                                                  "export": "done"}
    assert result["elapsed_s"] < result["budget_s"]

    gen = [r for r in rows_of(result, "inference") if r["measurement"].startswith("generator")]
    assert [(r["patch"], r["batch"]) for r in gen] == gpu_timings.SIZES["quick"]["gen"]
    assert all(positive(r["patches_per_s"]) and positive(r["cpu_patches_per_s"]) and positive(r["ratio"]) for r in gen)
    (paste,) = [r for r in rows_of(result, "inference") if r["measurement"].startswith("harmonize")]
    assert paste["grid"] == "2 mm" and paste["patches"] > 0 and positive(paste["seconds"]) and positive(paste["cpu_seconds"])
    assert paste["ran_at_spacing"] == [2.0, 2.0, 2.0]

    (train,) = rows_of(result, "training")
    assert train["amp"] == "fp32" and train["timed_steps"] == 2 and train["epochs_done"] == 1
    assert positive(train["it_per_s"]) and positive(train["data_ms"]) and train["peak_gpu_gib"] is None
    assert math.isclose(train["it_per_s"], 1e3 / train["step_ms_median"])

    export = {r["measurement"]: r for r in rows_of(result, "export")}
    made = {(r["method"], r["workers"], r["scheduler"]) for r in export.values() if "cases_per_s" in r}
    expected = {("carvemix", 1, None), ("carvemix", 2, None), ("lesionmix", 1, None)}
    try:
        import distributed  # noqa: F401
    except ImportError:
        assert any("Dask" in k and v["result"].startswith("skipped: distributed") for k, v in export.items())
    else:
        expected.add(("carvemix", 2, "dask"))
    assert made == expected
    for r in export.values():
        if "cases_per_s" in r:
            assert positive(r["cases_per_s"]) and positive(r["baseline_cases_per_s"]) and r["n"] == 12
            assert math.isclose(r["ratio"], r["cases_per_s"] / r["baseline_cases_per_s"], rel_tol=1e-2)
            assert r["baseline_volumes"] == "carvemix"  # --quick: LesionMix's baseline writes CarveMix's volumes
    assert export["lesionmix, 2 workers and Dask"]["result"] == "skipped: --quick"


def test_a_short_budget_skips_parts_and_says_so(tmp_path):
    proc, result, table = run_script(tmp_path, "--device", "cpu", "--quick", "--budget-s", "0.5", "--cpu-threads", "1")
    assert all(p["status"].startswith("skipped: ") and "--budget-s 0.5," in p["status"] for p in result["parts"].values())
    assert len(result["rows"]) == 3 and all(r["result"].startswith("skipped: ") for r in result["rows"])
    check_table(result, table, proc.stdout)


@pytest.mark.parametrize("argv, says", [
    (["--device", "tpu"], "--device must be cuda, cuda:N or cpu"),
    (["--parts", "inference,speed"], "unknown part(s) speed"),
    (["--budget-s", "nan"], "--budget-s must be a positive number"),
    (["--budget-s", "-3"], "--budget-s must be a positive number"),
    (["--workers", "-1", "--device", "cpu"], "--workers and --cpu-threads must be >= 1"),
])
def test_bad_arguments_are_one_sentence(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_timings.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the no-CUDA refusal cannot be seen")
def test_no_cuda_is_one_sentence(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        gpu_timings.main(["--out", str(tmp_path)])  # --device cuda is the default
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "sees no CUDA device" in err and "--device cpu" in err
    assert len(err.splitlines()) == 1 and not any(tmp_path.iterdir())


def test_missing_packages_are_named_with_the_wheel_folder(monkeypatch, capsys):
    monkeypatch.setitem(gpu_timings.NEEDS, "no_such_module_lmx", "no-such-dist")
    with pytest.raises(SystemExit):
        gpu_timings.check_requirements("cpu")
    err = capsys.readouterr().err.strip()
    assert "no-such-dist not installed here" in err and "--fetch-wheels .whl" in err and len(err.splitlines()) == 1


def test_fetch_wheels_pins_the_versions_installed_here(monkeypatch, tmp_path):
    from importlib import metadata

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert gpu_timings.main(["--fetch-wheels", str(tmp_path / "w")]) == 0
    (cmd,) = calls
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--no-deps" in cmd
    assert cmd[cmd.index("-d") + 1] == str(tmp_path / "w")
    pins = [a for a in cmd if "==" in a]
    assert pins == [f"{n}=={metadata.version(n)}" for n in gpu_timings.CARRIED]


def test_cpu_training_row_gets_the_gpu_ratio():
    rows = [gpu_timings.row("training", "bf16", "x", it_per_s=8.0, amp="bf16 AMP"),
            gpu_timings.row("training", "fp32", "x", it_per_s=5.0, amp="fp32"),
            gpu_timings.row("training-cpu", "fp32", "x", it_per_s=0.25, amp="fp32"),
            gpu_timings.row("training-cpu", "(whole part)", "skipped: ...")]
    gpu_timings.compare_training(rows, "cuda")
    assert rows[2]["ratio"] == 20.0 and rows[2]["compared_with"] == "5.00 it/s fp32 on cuda"
    assert rows[3]["ratio"] is None and rows[3]["compared_with"] == ""
    skipped_gpu = [gpu_timings.row("training", "fp32", "skipped: ..."), dict(rows[2], ratio=None, compared_with="")]
    gpu_timings.compare_training(skipped_gpu, "cuda")
    assert skipped_gpu[1]["ratio"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_cuda_run_times_the_gpu(tmp_path):
    proc, result, table = run_script(tmp_path, "--device", "cuda", "--quick", "--parts", "inference,training,training-cpu")
    check_table(result, table, proc.stdout)
    assert result["environment"]["gpu"] and all(p["status"] == "done" for p in result["parts"].values())
    gen = [r for r in rows_of(result, "inference") if r["measurement"].startswith("generator")]
    assert gen and all("(cuda)" in r["result"] and positive(r["patches_per_s"]) for r in gen)
    train = rows_of(result, "training")
    assert sorted(r["amp"] for r in train) == sorted(["fp32", "bf16 AMP" if torch.cuda.is_bf16_supported() else "fp16 AMP"])
    assert all(positive(r["peak_gpu_gib"]) and positive(r["it_per_s"]) for r in train)
    (cpu,) = rows_of(result, "training-cpu")
    assert positive(cpu["ratio"]) and "fp32 on cuda" in cpu["compared_with"]
