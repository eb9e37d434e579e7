"""``lesionmix METHOD``: one synthetic sample, for every method of the registry.

The commands are generated from :mod:`napari_lesionmix.augment.registry`: the
inputs a method declares (a host/donor pair, or a host and the training set),
one flag per field of its ``Options`` (help, choices and checks from there),
and the one seeding rule: ``--seed S --index I`` makes sample ``I`` of seed
``S``, the same bytes as the studio and :func:`~napari_lesionmix.augment.registry.generate`
give. ``--params params.json`` replays any earlier sample (also one from an export).

Every command writes ``DIR/image_0000.nii.gz`` (one per channel),
``label.nii.gz``, ``mask.nii.gz`` and ``params.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import typing

from napari_lesionmix.augment.registry import (
    Inputs,
    LocalSources,
    Method,
    check_recorded_cases,
    methods,
    option_types,
)
from napari_lesionmix.cli._common import (
    add_pair_arguments,
    load_mask_on_grid,
    load_pair,
    load_side,
    non_negative_int,
    pair_inputs,
    read_params,
)
from napari_lesionmix.errors import LesionMixError


def register(sub: argparse._SubParsersAction) -> None:
    for method in methods():
        p = sub.add_parser(method.name, help=_escape(method.summary), description=_escape(_description(method)))
        _add_input_arguments(p, method)
        opts = p.add_argument_group(f"{method.label} options")
        for f in dataclasses.fields(method.Options):
            _add_option(opts, f, typing.get_type_hints(method.Options)[f.name])
        draw = p.add_argument_group("seeding and replay")
        draw.add_argument("--seed", type=non_negative_int, help="root seed: sample INDEX of this seed (default 0)")
        draw.add_argument("--index", type=non_negative_int, help="sample index under the seed (default 0); "
                          "the studio's n-th sample of a seed is index n-1")
        draw.add_argument("--params", metavar="params.json",
                          help="replay the params of an earlier sample (a params.json, or an export's record)")
        p.add_argument("--out", required=True, metavar="DIR", help="output folder (made whole or not at all)")
        p.add_argument("--overwrite", action="store_true", help="replace an earlier sample in --out")
        p.set_defaults(func=functools.partial(run, method))


def _description(method: Method) -> str:
    source = (sys.modules[type(method).__module__].__doc__ or "").strip().splitlines()[0]
    return (f"{method.label}: {method.summary} ({source}) Writes DIR/image_0000.nii.gz (one per channel), "
            "label.nii.gz, mask.nii.gz and params.json.")


def _add_input_arguments(p: argparse.ArgumentParser, method: Method) -> None:
    if method.needs_donor:
        add_pair_arguments(p)
    else:
        host = p.add_mutually_exclusive_group(required=True)
        host.add_argument("--host", metavar="CASE_ID", help="host case of the dataset")
        host.add_argument("--host-image", action="append", metavar="H.nii.gz",
                          help="host image file; repeat once per channel")
        p.add_argument("--host-label", metavar="HL.nii.gz", help="host label (with --host-image)")
    if method.needs_training_set:
        p.add_argument("--dataset", required=True, metavar="DIR",
                       help="dataset folder: the cases lesions are taken from")
    elif method.needs_donor:
        p.add_argument("--dataset", metavar="DIR", help="dataset folder that --host and --donor name cases of")
    p.add_argument("--brain-mask", metavar="BM.nii.gz",
                   help="the host's brain (or organ) mask (with --host: the dataset's, if it has one)")


def _escape(text: str) -> str:
    """argparse formats help strings with %: a literal one (e.g. "10 %") must be doubled."""
    return text.replace("%", "%%")


def _add_option(group, f: dataclasses.Field, hint) -> None:
    meta = {**f.metadata, "help": _escape(f.metadata.get("help", ""))}
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    kind, many = option_types(hint)
    kwargs: dict = {"dest": f.name, "default": argparse.SUPPRESS}
    default = f"[{f.default}]" if f.default not in (None, ()) else ""
    if kind is bool:
        kwargs.update(action="store_true", help=meta["help"])
    else:
        kwargs.update(type=kind, help=f"{meta['help']} {default}".strip())
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if many:
            kwargs["action"] = "append"
            kwargs["help"] += " (repeatable)"
    group.add_argument(flag, **kwargs)


def _options_given(method: Method, args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(method.Options)}
    return {k: v for k, v in vars(args).items() if k in names}


def load_inputs(method: Method, args: argparse.Namespace) -> tuple[Inputs, LocalSources, dict]:
    """The cases of one sample from the command line, the sources they are part of, and their record."""
    from napari_lesionmix.io.dataset import discover_dataset

    dataset = discover_dataset(args.dataset) if getattr(args, "dataset", None) else None
    brain = None
    masks = {}
    if method.needs_donor:
        host, donor, brain, donor_brain = load_pair(args, dataset)
        masks[donor.case_id] = donor_brain
        record = pair_inputs(host, donor)
    else:
        donor = None
        host, brain = load_side(args, "host", dataset)
        record = {"host_image": list(host.image_paths), "host_label": host.label_path}
    if args.brain_mask:
        brain = load_mask_on_grid(args.brain_mask, host)
    record["brain_mask"] = args.brain_mask
    if dataset is not None:
        record["dataset"] = str(dataset.root)
    masks[host.case_id] = brain
    sources = LocalSources([host, donor], masks, dataset)
    return Inputs(host, donor, brain), sources, record


def run(method: Method, args: argparse.Namespace) -> int:
    from napari_lesionmix.augment.intensity import gain_warning
    from napari_lesionmix.augment.registry import apply_params, draw, unchanged_host
    from napari_lesionmix.io.atomic import check_output
    from napari_lesionmix.io.synthetic import write_synthetic

    given = _options_given(method, args)
    if args.params and (given or args.seed is not None or args.index is not None):
        flags = ", ".join(sorted(["--" + k.replace("_", "-") for k in given]
                                 + [f for f, v in (("--seed", args.seed), ("--index", args.index)) if v is not None]))
        raise LesionMixError(f"--params replays a recorded sample; it cannot be combined with {flags}.")
    inputs, sources, record = load_inputs(method, args)
    input_files = [*_files(record), args.params, *(inputs.host.image_paths), inputs.host.label_path]
    check_output(args.out, input_files, args.overwrite, "Output folder")
    if args.params:
        params = read_params(args.params, method.Params)
        check_recorded_cases(params, inputs, f"The params in '{args.params}'")
        options = method.options_for(params)
        resources = method.prepare(sources, options)
        method.check_inputs(inputs)
    else:
        options = method.Options.from_dict(given)
        resources = method.prepare(sources, options)
        params = draw(method, args.seed or 0, args.index or 0, inputs, options, resources, sources)
        warning = gain_warning(params.intensity, inputs.host.case_id)
        if warning:
            print(warning, file=sys.stderr)
    synthetic = apply_params(method, inputs, params, resources)
    record["options"] = options.changed()
    paths = write_synthetic(args.out, synthetic, inputs.host, record)
    note = method.shortfall(inputs.host, synthetic.params)
    print(f"{method.name}: {method.describe(synthetic)}{f': {note}' if note else ''} -> {paths['params'].parent}")
    unchanged = unchanged_host(method, synthetic.params, synthetic)
    if unchanged:
        print(f"lesionmix {method.name}: warning: {unchanged}; it is a copy of a real case, not a synthetic one.",
              file=sys.stderr)
    return 0


def _files(record: dict) -> list:
    """The input files named in a sample's record (lists flattened; the dataset folder is no file)."""
    out = []
    for key, value in record.items():
        if key == "dataset":
            continue
        out.extend(value if isinstance(value, list) else [value])
    return [v for v in out if isinstance(v, str)]
