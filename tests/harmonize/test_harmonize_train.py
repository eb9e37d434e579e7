"""ARHNet training: Eq. 1 pairs, case split, loss decrease, checkpoints, resume, stop, CLI."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from factories import make_case, write_case  # noqa: E402

from napari_lesionmix.cli import main  # noqa: E402
from napari_lesionmix.errors import LesionMixError  # noqa: E402
from napari_lesionmix.harmonize import (  # noqa: E402
    ModelConfig,
    TrainConfig,
    load_harmonizer,
    losses,  # noqa: E402
    train_harmonizer,
)
from napari_lesionmix.harmonize.checkpoint import load_checkpoint  # noqa: E402
from napari_lesionmix.harmonize.data import (  # noqa: E402
    TrainingCase,
    make_batch,
    make_pair,
    minmax_scale,
    perturb,
    sample_perturbation,
    split_cases,
)
from napari_lesionmix.harmonize.model import Generator  # noqa: E402
from napari_lesionmix.random import sample_rng  # noqa: E402

TINY = ModelConfig(base_channels=4, depth=2, disc_channels=4, disc_layers=2)
CFG = TrainConfig(epochs=2, batch_size=2, patch_size=16, patches_per_case=2, n_val=1, val_patches_per_case=1,
                  lr_g=1e-3, lr_d=5e-4, device="cpu", seed=3, model=TINY)


@pytest.fixture(scope="module")
def cases():
    return [make_case(seed=10 + i, n_lesions=2, case_id=f"c{i}") for i in range(3)]


def test_perturbation_is_eq1():
    rng = np.random.default_rng(0)
    img = rng.random((1, 5, 5, 5)).astype(np.float32)
    mask = np.zeros((5, 5, 5), bool)
    mask[1:3, 1:3, 1:3] = True
    out = perturb(img, mask, 0.2, -0.1)
    assert np.allclose(out[0][mask], 1.2 * img[0][mask] - 0.1)
    assert np.array_equal(out[0][~mask], img[0][~mask])
    draws = np.array([sample_perturbation(rng) for _ in range(500)])
    assert draws.min() >= -0.3 and draws.max() <= 0.3 and draws.std(axis=0).min() > 0.15


def test_pairs_are_reproducible_and_contain_lesion(cases):
    tc = TrainingCase.from_arrays("c0", cases[0].image, cases[0].label, normalisation="minmax")
    assert tc.image.min() == 0.0 and tc.image.max() == 1.0
    a = make_pair(sample_rng(5, 0), tc, 16)
    b = make_pair(sample_rng(5, 0), tc, 16)
    for k in ("real", "composite", "mask"):
        assert np.array_equal(a[k], b[k])
    assert a["mask"].shape == (1, 16, 16, 16) and a["mask"].any()
    assert np.allclose(a["composite"], perturb(a["real"], a["mask"][0], a["alpha"], a["lam"]))
    batch = make_batch(sample_rng(5, 1), [tc], 3, 16)
    assert batch["real"].shape == (3, 1, 16, 16, 16)


def test_minmax_scale_handles_constant_channels():
    img = np.stack([np.full((3, 3, 3), 7.0), np.arange(27.0).reshape(3, 3, 3)])
    scaled, lo, hi = minmax_scale(img)
    assert np.array_equal(scaled[0], np.zeros((3, 3, 3))) and scaled[1].max() == 1.0
    assert lo.tolist() == [7.0, 0.0] and hi.tolist() == [8.0, 26.0]


def test_split_is_by_case():
    ids = [f"s{i}" for i in range(6)]
    train, val = split_cases(ids, None, 2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == sorted(ids)
    assert split_cases(ids, None, 2, seed=1) == (train, val)
    assert split_cases(ids, ["s4"], 2, 0) == (["s0", "s1", "s2", "s3", "s5"], ["s4"])
    with pytest.raises(LesionMixError, match="s9"):
        split_cases(ids, ["s9"], 2, 0)
    assert split_cases(["only"], None, 2, 0) == (["only"], [])


def test_a_few_steps_reduce_the_loss_on_a_toy_problem(cases):
    """Eq. 6 without the adversary on one fixed batch: the generator learns to undo Eq. 1."""
    torch.manual_seed(0)
    tcs = [TrainingCase.from_arrays(c.case_id, c.image, c.label) for c in cases]
    b = make_batch(sample_rng(0, 0), tcs, 4, 16)
    real, comp, mask = (torch.from_numpy(b[k]) for k in ("real", "composite", "mask"))
    band = losses.boundary_band(mask)
    gen = Generator(TINY)
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    history = []
    for _ in range(25):
        fake = gen(comp, mask)
        loss = 100 * losses.reconstruction_loss(fake, real) + 10 * losses.btv_loss(fake, band)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.7 * history[0]


def test_train_callback_checkpoint_and_round_trip(tmp_path, cases):
    events = []
    out = tmp_path / "m.pt"
    res = train_harmonizer(cases, out, CFG, callback=events.append)
    steps = [e for e in events if "val" not in e]
    vals = [e for e in events if "val" in e]
    assert len(steps) == 2 * steps[0]["n_steps"]  # 2 epochs
    assert {"epoch", "step", "n_steps", "loss_g", "loss_d", "l1", "btv", "adv"} <= set(steps[0])
    assert all(np.isfinite(e["loss_g"]) for e in steps)
    assert len(vals) == 2 and {"fmae", "fpsnr", "composite_fmae"} <= set(vals[-1]["val"])
    state = load_checkpoint(out)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert state["split"]["val"] and not set(state["split"]["val"]) & set(state["split"]["train"])
    assert {"opt_g", "opt_d", "discriminator", "normalisation", "train_config"} <= set(state)
    assert TrainConfig.from_dict(state["train_config"]) == res["config"]
    # Anchored training (the default) gives the generator its anchor channel.
    assert res["config"].model.anchor_channel and state["model_config"]["anchor_channel"]
    # Round trip: the saved generator gives what the in-memory one gives.
    gen = Generator(res["config"].model)
    gen.load_state_dict(state["generator"])
    gen.eval()
    h = load_harmonizer(out, device="cpu")
    x, m = torch.rand(1, 1, 16, 16, 16), torch.zeros(1, 1, 16, 16, 16)
    m[..., 5:10, 5:10, 5:10] = 1
    with torch.no_grad():
        assert torch.equal(gen(x, m), h.generator(x, m))


def test_resume_equals_an_uninterrupted_run(tmp_path, cases):
    full = tmp_path / "full.pt"
    train_harmonizer(cases, full, CFG)
    part = tmp_path / "part.pt"
    train_harmonizer(cases, part, CFG.replace(epochs=1))
    res = train_harmonizer(cases, part, CFG, resume=True)
    assert res["epochs_done"] == 2
    a, b = load_checkpoint(full)["generator"], load_checkpoint(part)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LesionMixError, match="different patch_size"):
        train_harmonizer(cases, part, CFG.replace(epochs=3, patch_size=8), resume=True)


def test_should_stop_saves_and_returns(tmp_path, cases):
    calls = []
    res = train_harmonizer(cases, tmp_path / "s.pt", CFG.replace(epochs=5),
                           callback=calls.append, should_stop=lambda: len(calls) >= 1)
    assert res["stopped"] and res["epochs_done"] == 0
    assert load_checkpoint(tmp_path / "s.pt")["epoch"] == 0


def test_cases_without_lesions_are_an_error(tmp_path):
    c = make_case(seed=1, n_lesions=1)
    c.label[:] = 0
    with pytest.raises(LesionMixError, match="non-empty lesion label"):
        train_harmonizer([c], tmp_path / "x.pt", CFG)


def test_cli_train_harmonizer(tmp_path, cases):
    for c in cases:
        write_case(c, tmp_path / "ds")
    out = tmp_path / "cli.pt"
    args = ["train-harmonizer", "--dataset", str(tmp_path / "ds"), "--out", str(out), "--epochs", "1",
            "--batch-size", "2", "--patch-size", "16", "--patches-per-case", "1", "--base-channels", "4",
            "--depth", "2", "--n-val", "1", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert load_checkpoint(out)["epoch"] == 1
    assert main([*args[:-1], "--epochs", "2", "--resume", "--quiet"]) == 0
    assert load_checkpoint(out)["epoch"] == 2
    assert main([*args[:2], str(tmp_path / "nowhere"), *args[3:]]) == 2


def test_cli_recipe_sets_the_defaults_and_flags_override_it(tmp_path, cases):
    for c in cases:
        write_case(c, tmp_path / "ds")
    common = ["--dataset", str(tmp_path / "ds"), "--epochs", "1", "--batch-size", "2", "--patch-size", "16",
              "--patches-per-case", "1", "--base-channels", "4", "--depth", "2", "--n-val", "1", "--device", "cpu",
              "--quiet"]
    assert main(["train-harmonizer", "--recipe", "cpu", "--out", str(tmp_path / "cpu.pt"), *common]) == 0
    cfg = load_checkpoint(tmp_path / "cpu.pt")["train_config"]
    recipe = TrainConfig.cpu_recipe()
    assert (cfg["lr_g"], cfg["gain_range"], cfg["anchor"]) == (recipe.lr_g, recipe.gain_range, "host-lesions")
    assert (cfg["epochs"], cfg["patch_size"]) == (1, 16)  # given flags win over the recipe
    assert main(["train-harmonizer", "--out", str(tmp_path / "paper.pt"), "--anchor", "none", *common]) == 0
    state = load_checkpoint(tmp_path / "paper.pt")
    assert (state["train_config"]["lr_g"], state["train_config"]["gain_range"]) == (1e-4, 0.0)
    assert state["train_config"]["anchor"] == "none" and not state["model_config"]["anchor_channel"]


def test_cosine_schedule_decays_to_zero_and_resumes_exactly(tmp_path, cases):
    cfg = CFG.replace(lr_decay="cosine", epochs=2)
    full = tmp_path / "full.pt"
    events = []
    train_harmonizer(cases, full, cfg, callback=events.append)
    state = load_checkpoint(full)
    n_steps = events[0]["n_steps"]
    last = 0.5 * (1 + np.cos(np.pi * (2 * n_steps - 1) / (2 * n_steps)))
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr_g * last)  # the last step's rate
    # Interrupted by a stop after the first step, then resumed: the same weights as uninterrupted.
    part = tmp_path / "part.pt"
    calls = []
    train_harmonizer(cases, part, cfg, callback=calls.append, should_stop=lambda: len(calls) >= n_steps)
    train_harmonizer(cases, part, cfg, resume=True)
    a, b = state["generator"], load_checkpoint(part)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A stopped cosine run resumes with its own epochs only; a finished one may be extended (issue 26).
    stopped = tmp_path / "stopped.pt"
    calls = []
    train_harmonizer(cases, stopped, cfg, callback=calls.append, should_stop=lambda: len(calls) >= n_steps)
    with pytest.raises(LesionMixError, match=r"different epochs \(2, now 3\) and stopped at epoch 1"):
        train_harmonizer(cases, stopped, cfg.replace(epochs=3), resume=True)
    res = train_harmonizer(cases, part, cfg.replace(epochs=3), resume=True)
    extended = load_checkpoint(part)
    assert res["epochs_done"] == 3 and extended["epoch"] == 3
    assert extended["schedule"] == [[0, 2], [2, 3]] and extended["extensions"] == [{"from_epochs": 2, "to_epochs": 3}]
    assert extended["train_config"]["epochs"] == 3


def test_step_records_carry_elapsed_seconds(tmp_path, cases):
    events = []
    train_harmonizer(cases, tmp_path / "e.pt", CFG.replace(epochs=1), callback=events.append)
    elapsed = [e["elapsed"] for e in events if "val" not in e]
    assert elapsed and all(b >= a >= 0 for a, b in zip(elapsed, elapsed[1:], strict=False))


@pytest.mark.parametrize("where", ["validation", "cross-subject"])
def test_stop_inside_validation_keeps_the_epoch_without_its_validation(tmp_path, cases, monkeypatch, where):
    """A Stop while validating (whole-volume pastes take seconds at 1 mm) ends the run there."""
    import napari_lesionmix.harmonize.inference as inference
    import napari_lesionmix.harmonize.train as train

    flag, events = [False], []
    if where == "validation":
        def cb(rec):  # after the epoch's last step the next poll is the validation's first batch
            events.append(rec)
            flag[0] = rec.get("step") == rec["n_steps"]
    else:
        real = inference.harmonize_anchored

        def harmonize_anchored(*args, **kwargs):
            flag[0] = True  # pressed while the first cross-subject paste is harmonized
            return real(*args, **kwargs)

        monkeypatch.setattr(inference, "harmonize_anchored", harmonize_anchored)
        cb = events.append
    evaluated = []
    real_evaluate = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: evaluated.append(1) or real_evaluate(*a, **k))
    cfg = CFG.replace(n_val=2 if where == "cross-subject" else 1, cross_val_every=1)
    res = train_harmonizer(cases, tmp_path / "v.pt", cfg, callback=cb, should_stop=lambda: flag[0])
    assert res["stopped"] and res["epochs_done"] == 1 and evaluated
    assert not [e for e in events if "val" in e]  # no validation reported
    state = load_checkpoint(tmp_path / "v.pt")
    assert state["epoch"] == 1 and "val" not in state["history"][0]


def test_stop_is_polled_inside_a_step_and_changes_nothing_until_pressed(tmp_path, cases):
    cfg = CFG.replace(epochs=1)
    plain = train_harmonizer(cases, tmp_path / "plain.pt", cfg)
    polls, at_step = [], []
    watched = train_harmonizer(cases, tmp_path / "watched.pt", cfg, callback=lambda r: at_step.append(len(polls)),
                               should_stop=lambda: polls.append(1) is not None)
    assert not plain["stopped"] and not watched["stopped"]
    a, b = load_checkpoint(tmp_path / "plain.pt")["generator"], load_checkpoint(tmp_path / "watched.pt")["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # polling alone changes no weight
    per_step = at_step[1] - at_step[0]
    assert per_step > 20  # every layer's forward and backward pass, not once a step
    # Pressed halfway through the second step: that step never reports, the run saves and returns.
    n, steps = [0], []

    def stop():
        n[0] += 1
        return n[0] > at_step[0] + per_step // 2

    res = train_harmonizer(cases, tmp_path / "s.pt", cfg, callback=steps.append, should_stop=stop)
    assert res["stopped"] and len(steps) == 1 and load_checkpoint(tmp_path / "s.pt")["epoch"] == 0


def test_stop_while_loading_writes_nothing(tmp_path, cases):
    res = train_harmonizer(cases, tmp_path / "n.pt", CFG, should_stop=lambda: True)
    assert res["stopped"] and res["out"] is None and not (tmp_path / "n.pt").exists()
