"""Command line: ``cnnvis-eval run | list``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _photo(size: int):
    import numpy as np
    from skimage import data, transform

    img = data.chelsea()
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return (transform.resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)


def cmd_run(args) -> int:
    import cnnvis_eval as cv
    from cnnvis_eval.viz import save_grid

    methods = args.methods or cv.list_methods()
    out = Path(args.out) / time.strftime("demo-%Y%m%d-%H%M%S")
    spec = cv.load_model(args.model, weights=args.weights, input_shape=(args.size, args.size, 3))
    img = _photo(args.size)
    x = spec.preprocess(img[None])
    rows, signed = {}, {}
    for m in methods:
        t0 = time.perf_counter()
        exp = cv.explain(m, spec, x)
        rows[m] = [exp.heatmap[0]]
        signed[m] = bool(getattr(cv.get_method(m), "signed", False))
        print(f"{m:24s} {time.perf_counter() - t0:6.2f} s  target index {exp.indices[0]}")
    path = save_grid(out / "grid.png", [img], rows, signed=signed, col_titles=[f"{spec.name} ({args.weights or 'random'})"])
    print(f"wrote {path}")
    return 0


def cmd_list(args) -> int:
    import cnnvis_eval as cv

    print("methods:", ", ".join(cv.list_methods()))
    print("models:", ", ".join(cv.list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnvis-eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="explain a bundled photo with every method and write a PNG grid")
    r.add_argument("--model", default="mobilenet_v2")
    r.add_argument("--weights", default=None, help="none (random), imagenet, or a weights file")
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--methods", nargs="*")
    r.add_argument("--out", default="reports")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list methods and models")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "weights", None) in ("none", "None"):
        args.weights = None
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
