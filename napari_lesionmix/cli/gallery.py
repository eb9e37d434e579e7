"""``lesionmix gallery``: a QA contact sheet of exported cases (triplanar thumbnails, label contours)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gallery",
        help="render a PNG contact sheet of exported cases with lesion contours",
        description="Axial, coronal and sagittal thumbnails through each case's lesion centre of mass, "
        "in canonical RAS orientation (patient right on the right), with label contours in red.",
    )
    p.add_argument("out", metavar="OUT", help="exported dataset folder")
    p.add_argument("--out", dest="png", metavar="qa.png", default=None,
                   help="PNG to write (default OUT/qa_gallery.png)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--n", type=int, default=12, help="cases to show, spread evenly over the ids (default 12)")
    which.add_argument("--cases", nargs="+", metavar="CASE", help="show these case ids")
    p.add_argument("--columns", type=int, default=3, help="cases per row (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import zlib
    from pathlib import Path

    from napari_lesionmix.errors import LesionMixError
    from napari_lesionmix.export.gallery import render_gallery
    from napari_lesionmix.io.atomic import check_output

    png = Path(args.png) if args.png else Path(args.out) / "qa_gallery.png"
    if png.suffix.lower() != ".png":
        raise LesionMixError(f"The gallery is a PNG image; name the output '{png.with_suffix('.png')}', not '{png}'.")
    check_output(png, (), args.overwrite)
    try:
        png = render_gallery(args.out, args.cases if args.cases else args.n, png, columns=args.columns)
    except (EOFError, zlib.error) as exc:
        raise LesionMixError(f"An image of '{args.out}' is truncated or corrupt ({exc}); "
                             f"`lesionmix verify {args.out}` names it.") from None
    print(f"gallery: wrote {png}")
    return 0
