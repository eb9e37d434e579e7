"""The ``lesionmix`` command.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with
the parsed args; returns an exit code or ``None``). Modules are found
automatically, so adding a command touches no shared file. Heavy imports
(torch, dask) belong inside ``func`` so that ``lesionmix --help`` stays fast.

Input problems raise :class:`~napari_lesionmix.errors.LesionMixError`; they are
printed as one line on stderr and the command exits with status 2, no traceback.
Any ``OSError``, ``ValueError`` or ``MemoryError`` that escapes a command is
turned into one line and status 2 too (a last line of defence: known causes
have their own sentences first).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence

from napari_lesionmix import __version__
from napari_lesionmix.errors import LesionMixError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionmix",
        description="Lesion-aware augmentation for 3D segmentation datasets "
        "(CarveMix, Soft-CP, LesionMix, ARHNet harmonization, nnU-Net export).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    def plain_warning(message, category, filename, lineno, file=None, line=None) -> None:
        # One plain line, as errors are: the file and line number are for developers.
        print(f"lesionmix {args.command}: warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = plain_warning
            warnings.simplefilter("default")  # each warning once per command, whatever ran before it
            code = args.func(args)
    except LesionMixError as exc:
        print(f"lesionmix {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lesionmix {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"lesionmix {args.command}: error: not enough memory for this input or setting.", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        # The last line of defence: every cause we know has its own sentence before this.
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = f" ('{exc.filename}')" if isinstance(exc, OSError) and exc.filename else ""
        print(f"lesionmix {args.command}: error: {what}{where}.", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
