"""Train ARHNet on a labelled dataset (self-supervised, Sec. 2.1 and 3.1.2).

One step: draw ``batch_size`` patches around lesions of training cases,
perturb their foreground by Eq. 1, update D with the hinge loss (Eq. 3),
then G with ``lambda_rec * L1 + lambda_btv * BTV + lambda_adv * L_adv(G)``
(Eq. 6). Patches and perturbations of epoch ``e`` come from
``sample_rng(seed, e)``, so a resumed run draws exactly what an
uninterrupted one would. A checkpoint is written atomically after every epoch,
and the best one so far (:func:`best_rule`) beside it as ``NAME.best.pt``
(inference-only).
On CUDA, mixed precision (bfloat16 where supported, else float16 with a
gradient scaler) when ``config.amp``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_lesionmix import __version__
from napari_lesionmix.errors import Cancelled, LesionMixError
from napari_lesionmix.harmonize import losses
from napari_lesionmix.harmonize.checkpoint import load_checkpoint, load_state, save_checkpoint, slim
from napari_lesionmix.harmonize.config import TrainConfig
from napari_lesionmix.harmonize.data import (
    TrainingCase,
    load_training_cases,
    make_batch,
    make_pair,
    normalisation_spec,
    split_cases,
    summarise_domain,
)
from napari_lesionmix.harmonize.device import resolve_device
from napari_lesionmix.harmonize.metrics import all_metrics
from napari_lesionmix.harmonize.model import Discriminator, Generator
from napari_lesionmix.random import sample_rng

VAL_STREAM = 10**6  # sample_rng index offset of the fixed validation patches
CROSS_SHIFTS = ("as is", "donor x0.6", "donor x1.7")
#: Settings a resume may change: where it runs (not what it learns), ``epochs`` (a finished run may be
#: extended) and the split's inputs (the split itself is compared).
RESUME_MAY_CHANGE = ("device", "amp", "epochs", "val_cases", "n_val")


class Diverged(LesionMixError):
    """Training produced a non-finite loss, weight or validation number; the run stops."""


def check_out_not_input(dataset, out_path: Path) -> None:
    """The checkpoint (and ``NAME.best.pt``) may not be a file of the dataset it trains on."""
    from napari_lesionmix.io.atomic import check_not_input
    from napari_lesionmix.io.dataset import discover_dataset

    if not isinstance(dataset, (str, os.PathLike)):
        return
    try:
        records = discover_dataset(dataset).cases
    except LesionMixError:
        records = []  # no case to replace; loading the dataset says what is wrong with it
    files = [dataset] + [p for r in records for p in (*r.image_paths, r.label_path, r.brain_mask_path)]
    for target in (out_path, best_path(out_path)):
        check_not_input(target, files, "Checkpoint", inside_folders=False)


def cosine_factor(schedule: Sequence[Sequence[int]], epoch: int, step: int, n_steps: int) -> float:
    """The cosine learning-rate factor at ``step`` of ``epoch``: 1 to 0 over the segment holding the epoch.

    ``schedule`` lists ``[first, end)`` epoch segments: one for a run, one more per
    extension of a finished run (a warm restart from the base rates). A function of the
    global step alone, so a resumed run follows the same schedule.
    """
    a, b = next(((a, b) for a, b in schedule if a <= epoch < b), schedule[-1])
    return 0.5 * (1.0 + math.cos(math.pi * ((epoch - a) * n_steps + step) / ((b - a) * n_steps)))


def _resume_settings(saved: TrainConfig, config: TrainConfig, where: str) -> None:
    """Refuse a resume whose training settings differ, naming each one with both values."""
    import dataclasses

    diff = [f.name for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(config, f.name)]
    if diff:
        def show(v):
            return v.to_dict() if hasattr(v, "to_dict") else v

        what = ", ".join(f"{k} ({show(getattr(saved, k))}, now {show(getattr(config, k))})" for k in diff)
        raise LesionMixError(f"Checkpoint '{where}' was trained with a different {what}; resume needs the same "
                             "settings (or train anew with --overwrite).")


def _stop_hooks(modules, stop: Callable[[], bool]) -> list:
    """Hooks raising :class:`Cancelled` once ``stop()`` is true: before every leaf layer's forward
    pass and whenever a parameter's gradient is computed (the backward pass, layer by layer).

    They read and change nothing, so a run that is not stopped computes exactly what it would without
    them; the caller removes them (``handle.remove()``).
    """
    def check(*_):
        if stop():
            raise Cancelled("Training stopped.")

    handles = []
    for module in modules:
        for layer in module.modules():
            if not any(True for _ in layer.children()):
                handles.append(layer.register_forward_pre_hook(check))
        handles += [p.register_hook(check) for p in module.parameters() if p.requires_grad]
    return handles


def _finite(modules) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters())


def best_path(out_path: str | os.PathLike) -> Path:
    """Where the best checkpoint of a run writing ``out_path`` goes: ``NAME.best.pt`` beside it."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}.best{out_path.suffix or '.pt'}")


def best_rule(config: TrainConfig, val: dict[str, float]) -> tuple[str, bool]:
    """Which validation number ranks checkpoints, and whether this validation may be the best.

    Anchored models get the host's lesion level as an input, so their contrast
    error stays near 0 as long as the generator keeps that level: they are ranked
    by the paper's fMAE task among validations whose every cross-subject paste is
    within 15 %. Others are ranked by the mean contrast error when it is scored,
    else by fMAE.
    """
    from napari_lesionmix.harmonize.criterion import WITHIN_15_PERCENT

    if config.anchor == "host-lesions":
        return "fmae", val.get("contrast_error_max", 0.0) <= WITHIN_15_PERCENT
    return ("contrast_error_mean" if "contrast_error_mean" in val else "fmae"), True


def cross_subject_pastes_of(cases: Sequence[TrainingCase], seed: int) -> list:
    """CarveMix (lambda = 0) pastes between held-out cases, as is and with the donor at gain x0.6 and x1.7."""
    from napari_lesionmix.harmonize.criterion import cross_subject_pastes

    if len(cases) < 2:
        return []
    return cross_subject_pastes([c.as_case() for c in cases], None, CROSS_SHIFTS, ("carvemix",), seed)


def cross_subject_errors(generator: Generator, pastes: Sequence, config: TrainConfig, device, *,
                         should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Mean and max contrast error |log(c / c_host lesions)| of ``generator`` on ``pastes``.

    ``should_stop()`` is polled before every batch of patches; once true it raises
    :class:`~napari_lesionmix.errors.Cancelled` (a whole-volume paste can take seconds).
    """
    from napari_lesionmix.harmonize.inference import harmonize_anchored

    spec = normalisation_spec(config.normalisation)
    errs = [p.error(harmonize_anchored(generator, p.image, np.asarray(p.mask, np.float32), p.label, config.anchor,
                                       config.patch_size, spec, device, should_stop=should_stop)) for p in pastes]
    raw = [p.error(p.image) for p in pastes]
    return {"contrast_error_mean": float(np.mean(errs)), "contrast_error_max": float(np.max(errs)),
            "composite_contrast_error_mean": float(np.mean(raw))}


def validation_pairs(cases: Sequence[TrainingCase], config: TrainConfig) -> list[dict]:
    """Fixed validation pairs: ``val_patches_per_case`` per held-out case, same every epoch."""
    pairs = []
    for i, case in enumerate(cases):
        rng = sample_rng(config.seed, VAL_STREAM + i)
        pairs += [make_pair(rng, case, config.patch_size, config.alpha_range, config.lam_range)
                  for _ in range(config.val_patches_per_case)]
    return pairs


@torch.no_grad()
def evaluate(generator: Generator, pairs: Sequence[dict], device, batch_size: int = 4, *,
             should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Mean MAE, fMAE, PSNR, fPSNR over patches, for ARHNet and for the unharmonized composite.

    ``should_stop()`` is polled before every batch; once true it raises
    :class:`~napari_lesionmix.errors.Cancelled` (the generator's mode restored).
    """
    if not pairs:
        return {}
    was_training = generator.training
    generator.eval()
    rows, base = [], []
    for b0 in range(0, len(pairs), batch_size):
        if should_stop is not None and should_stop():
            generator.train(was_training)
            raise Cancelled(f"Validation cancelled after {b0} of {len(pairs)} patch(es).")
        chunk = pairs[b0:b0 + batch_size]
        comp = torch.from_numpy(np.stack([p["composite"] for p in chunk])).to(device)
        mask = torch.from_numpy(np.stack([p["mask"] for p in chunk])).to(device)
        pred = generator(comp, mask).float().cpu().numpy()
        for p, y in zip(chunk, pred, strict=True):
            rows.append(all_metrics(y, p["real"], p["mask"][0][None].repeat(y.shape[0], 0)))
            base.append(all_metrics(p["composite"], p["real"], p["mask"][0][None].repeat(y.shape[0], 0)))
    generator.train(was_training)
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out.update({f"composite_{k}": float(np.mean([r[k] for r in base])) for k in base[0]})
    return out


def train_harmonizer(
    dataset: str | os.PathLike | Sequence,
    out_path: str | os.PathLike,
    config: TrainConfig | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ARHNet on the lesions of ``dataset`` and save the checkpoint to ``out_path``.

    Parameters
    ----------
    dataset : folder or list of Case
        Labelled scans (any layout :func:`~napari_lesionmix.io.dataset.discover_dataset` reads).
    out_path : path
        Checkpoint file, rewritten atomically after every epoch.
    config : TrainConfig
    callback : callable, optional
        Called after every step with ``{"epoch", "epochs", "step", "n_steps",
        "global_step", "loss_g", "loss_d", "l1", "btv", "adv", "elapsed"}``
        (``elapsed``: seconds since the run started, for an ETA) and after
        every validation with the same keys of the epoch's means plus
        ``"val": {"mae", "fmae", "psnr", "fpsnr", "composite_*"}``.
    should_stop : callable, optional
        Polled while the run prepares, before every step and between its
        discriminator and generator updates, and between the batches of a
        validation (so a Stop takes effect within about one forward pass); when
        it returns True the run saves what it has (an interrupted epoch is redone
        on resume; one whose validation was interrupted counts as done, without
        that validation) and returns.
    resume : bool
        Continue from ``out_path`` when it exists (its config must match).
    log : callable, optional
        Receives one-line messages (split, device, skips).

    Returns
    -------
    dict
        ``{"out", "epochs_done", "stopped", "val", "history", "seconds"}``; ``out`` is None
        when a stop came while the cases were loading (nothing was written).
    """
    config = config or TrainConfig()
    say = log or (lambda msg: None)
    out_path = Path(out_path)
    check_out_not_input(dataset, out_path)
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    try:
        cases = load_training_cases(dataset, log=say, normalisation=config.normalisation, should_stop=should_stop)
    except Cancelled:  # stopped before anything was trained: nothing is written
        return {"out": None, "epochs_done": 0, "stopped": True, "val": {}, "history": [],
                "seconds": time.perf_counter() - t0, "config": config, "best": None, "best_path": None}
    if config.val_cases is None and config.n_val > len(cases) - 1:
        # split_cases keeps one case for training: say so rather than hold out fewer in silence.
        say(f"n_val {config.n_val} would hold out all {len(cases)} case(s) with lesions; "
            f"{max(len(cases) - 1, 0)} are held out so that one remains for training")
    n_ch = int(cases[0].image.shape[0])
    want = {"in_channels": n_ch, "anchor_channel": config.anchor == "host-lesions"}
    if any(getattr(config.model, k) != v for k, v in want.items()):
        config = config.replace(model=config.model.__class__(**{**config.model.to_dict(), **want}))
    train_ids, val_ids = split_cases([c.case_id for c in cases], config.val_cases, config.n_val, config.seed)
    by_id = {c.case_id: c for c in cases}
    train_cases = [by_id[i] for i in train_ids]
    val_cases = [by_id[i] for i in val_ids]
    say(f"device {device}; {len(train_cases)} training case(s), {len(val_cases)} validation case(s): {', '.join(val_ids) or 'none'}")

    torch.manual_seed(config.seed)
    gen = Generator(config.model).to(device)
    disc = Discriminator(config.model).to(device)
    opt_g = torch.optim.AdamW(gen.parameters(), lr=config.lr_g, betas=config.betas, weight_decay=config.weight_decay)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=config.lr_d, betas=config.betas, weight_decay=config.weight_decay)
    start_epoch, history = 0, []
    schedule = [[0, config.epochs]]  # cosine segments (cosine_factor)
    extensions: list[dict[str, int]] = []
    saved_epoch = None  # the epoch the file at out_path holds for this run (None: nothing of this run)
    if resume and out_path.exists():
        state = load_checkpoint(out_path, map_location=device)
        where = os.fspath(out_path)
        if "opt_g" not in state or "discriminator" not in state:
            raise LesionMixError(f"Checkpoint '{where}' is inference-only and cannot be resumed.")
        # Files written before anchoring and the schedule ran without them.
        saved = TrainConfig.from_dict({"anchor": "none", "lr_decay": "none", **state["train_config"]})
        _resume_settings(saved, config, where)
        if state.get("split", {}).get("val") != val_ids:
            raise LesionMixError(f"Checkpoint '{where}' was trained with a different validation split "
                                 f"({', '.join(state.get('split', {}).get('val') or []) or 'none'}, now "
                                 f"{', '.join(val_ids) or 'none'}); resume needs the same settings.")
        start_epoch, history = int(state["epoch"]), list(state.get("history", []))
        schedule = [list(seg) for seg in state.get("schedule", [[0, saved.epochs]])]
        extensions = list(state.get("extensions", []))
        if config.epochs < start_epoch:
            raise LesionMixError(f"Checkpoint '{where}' already holds {start_epoch} epoch(s); --epochs "
                                 f"{config.epochs} cannot shorten it (give {start_epoch} or more).")
        if config.epochs != saved.epochs:
            if start_epoch < saved.epochs and config.lr_decay != "none":
                raise LesionMixError(
                    f"Checkpoint '{where}' was trained with a different epochs ({saved.epochs}, now {config.epochs}) "
                    f"and stopped at epoch {start_epoch}: its cosine schedule spans {saved.epochs} epochs, so resume "
                    f"it with --epochs {saved.epochs}, then extend the finished run."
                )
            if start_epoch >= saved.epochs:
                # A finished run extended: a new cosine segment from the base rates over the added epochs.
                schedule.append([saved.epochs, config.epochs])
                extensions.append({"from_epochs": saved.epochs, "to_epochs": config.epochs})
                say(f"extending the finished run of {saved.epochs} epoch(s) to {config.epochs}"
                    + (" (a new cosine from the base learning rates)" if config.lr_decay == "cosine" else ""))
            else:
                schedule[-1][1] = config.epochs
        load_state(gen, state["generator"], where, "generator")
        load_state(disc, state["discriminator"], where, "discriminator")
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        saved_epoch = start_epoch
        say(f"resuming from epoch {start_epoch} of {config.epochs}")

    def stop() -> bool:
        return should_stop is not None and bool(should_stop())

    # Each preparation can take seconds at 1 mm; a Stop meanwhile skips the rest (the first step stops the run).
    val_pairs = [] if stop() else validation_pairs(val_cases, config)
    pastes = cross_subject_pastes_of(val_cases, config.seed) if config.cross_val_every and not stop() else []
    domain = summarise_domain([c.domain for c in train_cases])
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if amp_dtype is not None:
        say(f"mixed precision: {str(amp_dtype).replace('torch.', '')}")

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    best = {"score": math.inf, "epoch": 0, "metric": None}
    if history:
        best = dict(history[-1].get("best", best))
    n_steps = max(1, math.ceil(len(train_cases) * config.patches_per_case / config.batch_size))
    use_adv = config.lambda_adv > 0
    stopped = False
    last_val = history[-1].get("val", {}) if history else {}

    def diverged(what: str, epoch: int) -> Diverged:
        kept = (f"'{out_path}' keeps epoch {saved_epoch}, the last finite one" if saved_epoch is not None
                else "no checkpoint of this run was written")
        return Diverged(f"Training diverged in epoch {epoch + 1}: {what}; {kept}; lower the learning rates "
                        "(--lr-g, --lr-d) and train anew.")

    def snapshot(epochs_done: int) -> None:
        nonlocal saved_epoch
        save_checkpoint({
            "lesionmix_version": __version__,
            "model_config": config.model.to_dict(),
            "train_config": config.to_dict(),
            "normalisation": normalisation_spec(config.normalisation),
            "domain": domain,
            "generator": gen.state_dict(),
            "discriminator": disc.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "epoch": epochs_done,
            "split": {"train": train_ids, "val": val_ids},
            "history": history,
            "val": last_val,
            "best": best,
            "schedule": schedule,
            "extensions": extensions,
        }, out_path)
        saved_epoch = epochs_done

    def train_step(rng, epoch: int, step: int) -> dict[str, float]:
        """One update of D (Eq. 3), then of G (Eq. 6); the step's losses."""
        if config.lr_decay == "cosine":
            f = cosine_factor(schedule, epoch, step, n_steps)
            for opt, lr in ((opt_g, config.lr_g), (opt_d, config.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * f
        batch = make_batch(rng, train_cases, config.batch_size, config.patch_size, config.alpha_range,
                           config.lam_range, config.gain_range, config.anchor)
        real = torch.from_numpy(batch["real"]).to(device)
        comp = torch.from_numpy(batch["composite"]).to(device)
        mask = torch.from_numpy(batch["mask"]).to(device)
        flag = torch.from_numpy(batch["anchored"]).to(device)
        band = losses.boundary_band(mask, config.model.boundary_width)

        loss_d = torch.zeros((), device=device)
        if use_adv:
            with torch.no_grad(), autocast():
                fake = gen(comp, mask, flag)
            with autocast():
                loss_d = losses.d_hinge_loss(disc(real, comp, mask), disc(fake, comp, mask))  # Eq. 3
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)

        with autocast():
            fake = gen(comp, mask, flag)
            l1 = losses.reconstruction_loss(fake.float(), real)                          # Eq. 2
            btv = losses.btv_loss(fake.float(), band)                                    # Eq. 5
            adv = losses.g_hinge_loss(disc(fake, comp, mask)) if use_adv else torch.zeros((), device=device)  # Eq. 4
            loss_g = config.lambda_rec * l1 + config.lambda_btv * btv + config.lambda_adv * adv  # Eq. 6
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
        scaler.step(opt_g)
        scaler.update()
        if use_adv:
            disc.zero_grad(set_to_none=True)  # G's step must not leave gradients in D

        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "l1": l1.item(), "btv": btv.item(), "adv": adv.item()}

    # A step takes seconds on a loaded CPU (G's backward alone 5-12 s at batch 16, patch 24): Stop is
    # polled inside every layer's forward and backward pass as well, not only between steps.
    hooks = _stop_hooks((gen, disc), stop) if should_stop is not None else []
    gen.train()
    disc.train()
    for epoch in range(start_epoch, config.epochs):
        rng = sample_rng(config.seed, epoch)
        sums = {"loss_g": 0.0, "loss_d": 0.0, "l1": 0.0, "btv": 0.0, "adv": 0.0}
        done = 0
        for step in range(n_steps):
            if stop():
                stopped = True
                break
            try:
                values = train_step(rng, epoch, step)
            except Cancelled:  # Stop pressed inside a forward or backward pass (_stop_hooks)
                stopped = True
                break
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise diverged(f"{bad[0]} is {values[bad[0]]} at step {step + 1}", epoch)
            for k, v in values.items():
                sums[k] += v
            done += 1
            if callback is not None:
                callback({"epoch": epoch + 1, "epochs": config.epochs, "step": step + 1, "n_steps": n_steps,
                          "global_step": epoch * n_steps + step + 1, **values,
                          "elapsed": time.perf_counter() - t0})
        if stopped:
            snapshot(epoch)
            break
        if not _finite((gen, disc)):  # a finite loss can still leave weights at inf (a huge learning rate)
            raise diverged("the network's weights are not finite", epoch)
        means = {k: v / max(done, 1) for k, v in sums.items()}
        record: dict[str, Any] = {"epoch": epoch + 1, **means}
        if val_pairs and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            val_before = last_val
            try:
                last_val = evaluate(gen, val_pairs, device, should_stop=should_stop)
                n_val_done = sum(1 for h in history if "val" in h)
                if pastes and (n_val_done % config.cross_val_every == 0 or epoch + 1 == config.epochs):
                    last_val.update(cross_subject_errors(gen, pastes, config, device, should_stop=should_stop))
            except Cancelled:
                # Stopped while validating: the epoch's training is whole, so it counts as done, without
                # its validation (a resume goes on from the next epoch exactly as an uninterrupted run).
                last_val, stopped = val_before, True
            else:
                bad = [k for k, v in last_val.items() if not math.isfinite(v)]
                if bad:
                    raise diverged(f"validation {bad[0]} is {last_val[bad[0]]}", epoch)
                metric, eligible = best_rule(config, last_val)
                if best["metric"] not in (None, metric):
                    best = {"score": math.inf, "epoch": 0, "metric": None}
                if eligible and last_val[metric] < best["score"]:
                    best = {"score": float(last_val[metric]), "epoch": epoch + 1, "metric": metric}
                    record["is_best"] = True
                record["val"] = last_val
        record["best"] = dict(best)
        history.append(record)
        if record.get("is_best"):
            # The best file first: when the disk fills between the two, the resumable file still
            # holds the epoch before, and the resume redoes this epoch and writes both.
            state = slim({"lesionmix_version": __version__, "model_config": config.model.to_dict(),
                          "train_config": config.to_dict(), "normalisation": normalisation_spec(config.normalisation),
                          "domain": domain, "generator": gen.state_dict(), "epoch": epoch + 1,
                          "split": {"train": train_ids, "val": val_ids}, "history": history, "val": last_val,
                          "best": best})
            save_checkpoint(state, best_path(out_path))
        snapshot(epoch + 1)
        if callback is not None and "val" in record:
            callback({"epochs": config.epochs, "step": n_steps, "n_steps": n_steps,
                      "global_step": (epoch + 1) * n_steps, **record})
        if stopped:
            break
    for h in hooks:
        h.remove()
    epochs_done = len(history)
    return {"out": out_path, "epochs_done": epochs_done, "stopped": stopped, "val": last_val,
            "history": history, "seconds": time.perf_counter() - t0, "config": config,
            "best": best, "best_path": best_path(out_path) if best["epoch"] else None}
