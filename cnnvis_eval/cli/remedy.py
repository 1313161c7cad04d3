"""``cnnvis-eval remedy``: train a shortcut model on a data set with an artefact, retrain it
with each remedy, and write the results (:func:`cnnvis_eval.remedy.results.evaluate`):
``OUT/remedies.parquet`` (the long frame), ``OUT/remedies_cams.png`` (the CAM of the true class
before and after each remedy, :func:`cnnvis_eval.remedy.results.cam_grid`) and
``OUT/remedies.html`` (the report section, with that grid)."""

from __future__ import annotations

import sys
from pathlib import Path

DATASET_CHOICES = ("sketches", "symbols", "xrays", "sketch", "symbol", "xray")


def add_parser(sub, common) -> None:
    """The ``remedy`` subcommand's options."""
    from ..remedy.retrain import REMEDIES

    r = sub.add_parser("remedy", parents=[common],
                       help="retrain a shortcut model away from its artefact; table per remedy (issue 17)")
    r.add_argument("--dataset", choices=DATASET_CHOICES, default="xrays", help="the data set (default xrays)")
    r.add_argument("--remedies", nargs="+", default=["pas", "pasa_contrast", "rrr", "random_crop"], metavar="REMEDY",
                   help=f"some of {', '.join(REMEDIES)} (default: pas pasa_contrast rrr random_crop)")
    r.add_argument("--out", required=True, metavar="DIR", help="folder for remedies.parquet and remedies.html")
    r.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    r.add_argument("--n-train", type=int, default=800, help="training images (default 800)")
    r.add_argument("--n-test", type=int, default=160, help="images per test variant (default 160)")
    r.add_argument("--train-epochs", type=int, default=10,
                   help="epochs of the shortcut model and the upper bound (default 10)")
    r.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per remedy (default 10)")
    r.add_argument("--lam", action="append", default=[], metavar="REMEDY=VALUE",
                   help="lambda of a loss remedy, e.g. pas=10; repeatable (default: the chosen ones)")
    r.add_argument("--sweep", nargs="+", type=float, default=None, metavar="LAMBDA",
                   help="choose the loss remedies' lambda among these on validation images with a swapped "
                        "artefact, and show the curve")
    r.add_argument("--cam-images", type=int, default=3, metavar="N",
                   help="test images (artefact swapped) of the before/after CAM grid remedies_cams.png; 0: none "
                        "(default 3)")
    r.add_argument("--no-upper-bound", action="store_true", help="skip training the upper bound")
    r.add_argument("--seed", type=int, default=0, help="seed of data, training and replacements")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_remedy)


def _lams(entries) -> dict:
    from ..errors import InputError

    out = {}
    for entry in entries:
        name, sep, value = entry.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise InputError(f"--lam takes REMEDY=VALUE (e.g. pas=10), got {entry!r}")
    return out


def cmd_remedy(args) -> int:
    from ..errors import CnnVisError
    from ..evaluation.store import atomic_write
    from ..remedy.results import cam_grid, evaluate, results_html

    remedies = [p for v in args.remedies for p in v.split(",") if p]
    cams = {} if args.cam_images > 0 else None
    try:
        frame = evaluate(args.dataset, remedies, size=args.size, n_train=args.n_train, n_test=args.n_test,
                         train_epochs=args.train_epochs, epochs=args.epochs, lams=_lams(args.lam), sweep=args.sweep,
                         seed=args.seed, upper_bound=not args.no_upper_bound,
                         progress=None if args.quiet else print, cams=cams, cam_images=max(args.cam_images, 0))
    except CnnVisError as err:
        print(f"cnnvis-eval: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write(out / "remedies.parquet", lambda p: frame.to_parquet(p, index=False))
    grids, grid = [], out / "remedies_cams.png"
    if cams:
        atomic_write(grid, lambda p: cam_grid(p, cams))
        grids.append(grid)
    else:
        grid.unlink(missing_ok=True)  # not a previous run's grid beside this run's table
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>cnnvis-eval remedies</title></head><body>\n"
            + results_html(frame, grids) + "</body></html>\n")
    atomic_write(out / "remedies.html", lambda p: Path(p).write_text(page, encoding="utf-8"))
    print(f"remedies: {out / 'remedies.html'}")
    return 0
