"""Command line: ``cnnvis-eval run | report | list``.

``cnnvis-eval run`` evaluates every method on the embedded default — the trained mini models
of the five families, on the synthetic benchmark and bundled photos — and writes
``reports/<run-id>/index.html``.  Running the same command again resumes the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import quiet  # first (the package __init__ has already used it to import TensorFlow quietly)


def _split(values):
    """Accept both ``--methods a b`` and ``--methods a,b``."""
    if not values:
        return ()
    out = []
    for v in values:
        out += [p for p in v.split(",") if p]
    return tuple(out)


def cmd_run(args) -> int:
    from .errors import CnnVisError
    from .evaluation import GridRun, RunConfig, RunLock, inputs
    from .models.files import ModelFile
    from .report import build_report
    from .report.benchmarks import load_benchmarks

    kw = {}
    if args.models:
        kw["models"] = _split(args.models)
    if args.model_file:
        kw["model_files"] = tuple(args.model_file)
        if not args.models:
            kw["models"] = ()
    if args.images:
        imgs = _split(args.images)
        kw["photos"] = tuple(i for i in imgs if not i.startswith("synthetic"))
        syn = [i for i in imgs if i.startswith("synthetic")]
        kw["synthetic"] = int(syn[0].split(":")[1]) if syn and ":" in syn[0] else (8 if syn else 0)
    if args.synthetic is not None:
        kw["synthetic"] = args.synthetic
    try:
        config = RunConfig(
            methods=_split(args.methods),
            weights=None if args.weights in (None, "none", "None") else args.weights,
            input_size=args.input_size,
            seed=args.seed,
            **kw,
        )
        for path in config.model_files:  # unreadable or unsafe files: fail before the run starts
            inputs.load_spec(ModelFile(path), config)
        if args.benchmarks:  # likewise an unreadable benchmark file
            load_benchmarks(args.benchmarks)
        out = Path(args.out) / (args.run_id or config.run_id())
        print(f"run {out.name}: {len(config.models) + len(config.model_files)} models x "
              f"{len(config.methods)} methods x {len(config.photos) + config.synthetic} images x 3 neurons -> {out}")
        args.run_folder = out  # named in the message of an interrupted run (main)
        with RunLock(out):  # one run per folder, from the first write to the report
            GridRun(config, out, progress=not args.quiet, workers=args.workers).run()
            page = build_report(out, benchmarks=args.benchmarks)
    except CnnVisError as err:
        print(f"cnnvis-eval: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    return 0


def cmd_report(args) -> int:
    from .errors import CnnVisError
    from .report import build_report

    try:
        page = build_report(args.results_dir, benchmarks=args.benchmarks)
    except CnnVisError as err:
        print(f"cnnvis-eval: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    return 0


def cmd_list(args) -> int:
    import cnnvis_eval as cv
    from .data.photos import DEFAULT_PHOTOS, list_photos
    from .metrics import list_metrics

    print("methods:", ", ".join(cv.list_methods()))
    print("models: ", ", ".join(cv.list_models()))
    print("metrics:", ", ".join(list_metrics()))
    print("images: ", ", ".join(list_photos()), "(default:", ", ".join(DEFAULT_PHOTOS) + ")",
          "and synthetic[:N]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    verbose_help = "show TensorFlow's start-up messages and retracing warnings (also: CNNVIS_VERBOSE=1)"
    p = argparse.ArgumentParser(prog="cnnvis-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help=verbose_help)
    common = argparse.ArgumentParser(add_help=False)  # --verbose after the command name too
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[common], help="run the comparison grid and write an HTML report")
    r.add_argument("--models", nargs="*", help="model names (default: the five mini models)")
    r.add_argument("--model-file", action="append", metavar="PATH",
                   help="evaluate a saved Keras model (.keras; loaded in safe mode); repeatable")
    r.add_argument("--methods", nargs="*", help="method names (default: all)")
    r.add_argument("--images", nargs="*", help="photo names and/or synthetic[:N]")
    r.add_argument("--synthetic", type=int, default=None, help="number of synthetic benchmark images")
    r.add_argument("--weights", default=None, help="none (random), imagenet, or a weights file (big models)")
    r.add_argument("--input-size", type=int, default=None, help="input size of the big models (default native)")
    r.add_argument("--out", default="reports", help="parent folder of the run folder")
    r.add_argument("--run-id", default=None, help="run folder name (default: derived from the configuration)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--workers", type=int, default=None,
                   help="models evaluated at once in separate processes (default: one per CPU core, "
                        "at most 4; 1 = in this process)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    bench_help = ("pytest-benchmark JSON file, or a folder of them (the newest is used), to show in the "
                  "report's benchmark table, e.g. fixtures/benchmarks")
    r.add_argument("--benchmarks", metavar="PATH", default=None, help=bench_help)
    r.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", parents=[common], help="(re)build index.html for a results folder")
    rep.add_argument("results_dir")
    rep.add_argument("--benchmarks", metavar="PATH", default=None, help=bench_help)
    rep.set_defaults(func=cmd_report)
    ls = sub.add_parser("list", parents=[common], help="list methods, models, metrics and images")
    ls.set_defaults(func=cmd_list)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (so the same
    clean-up runs: worker processes stopped, the run folder's lock released)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    """The ``cnnvis-eval`` program; returns its exit status.  An interrupted command (Ctrl-C,
    SIGTERM) prints one line and returns 130 (SIGINT) or 143 (SIGTERM); an interrupted run
    resumes when the same command runs again."""
    import signal
    import threading

    args = build_parser().parse_args(argv)
    if args.verbose:
        quiet.set_verbose(True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        return args.func(args)
    except KeyboardInterrupt as stop:
        folder = getattr(args, "run_folder", None)
        hint = f"; run again with the same command to resume ({folder})" if folder is not None else ""
        print(f"cnnvis-eval: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}{hint}",
              file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
