"""Command line: ``cnnvis-eval run | check | remedy | report | list``.

``cnnvis-eval run`` evaluates every method on the embedded default — the trained mini models
of the five families, on the synthetic benchmark and bundled photos — and writes
``reports/<run-id>/index.html``.  Running the same command again resumes the same run.

``cnnvis-eval check MODEL_FILE --images PATH`` runs the sanity checks of
:mod:`cnnvis_eval.testing` on a user's model, prints the scorecard and writes the HTML report;
exit status 1 when a ``--require``-d method fails a check.

``cnnvis-eval remedy --dataset xrays --remedies pas pasa random_crop --out DIR`` trains a
shortcut model on a data set with an artefact, retrains it with each remedy and writes the
results table (``DIR/remedies.parquet``, ``DIR/remedies.html``).
"""

from __future__ import annotations

import argparse
import sys

from .. import quiet  # first (the package __init__ has already used it to import TensorFlow quietly)
from .check import cmd_check
from .remedy import add_parser as _remedy_parser
from .report import cmd_list, cmd_report
from .run import cmd_plan, cmd_run


def _input_size_help() -> str:
    from ..evaluation.config import MAX_INPUT_SIZE
    from ..models import ARCHS

    limits = ", ".join(f"{m} {a.min_size}-{MAX_INPUT_SIZE[m]}" for m, a in ARCHS.items())
    return f"input side of the big models (default native): {limits}; an error when the run has no big model"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one ``cnnvis-eval: error: ...`` line, exit 2
    (argparse prints the usage first; ``--help`` shows it)."""

    def error(self, message):
        self.exit(2, f"cnnvis-eval: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    verbose_help = "show TensorFlow's start-up messages and retracing warnings (also: CNNVIS_VERBOSE=1)"
    p = _Parser(prog="cnnvis-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action="store_true", help=verbose_help)
    common = argparse.ArgumentParser(add_help=False)  # --verbose after the command name too
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[common], help="run the comparison grid and write an HTML report")
    _config_arguments(r)
    r.add_argument("--out", default="reports", help="parent folder of the run folder")
    r.add_argument("--run-id", default=None, help="run folder name (default: derived from the configuration)")
    r.add_argument("--workers", type=int, default=None,
                   help="models evaluated at once in separate processes (default: one per CPU core, "
                        "at most 4; 1 = in this process); with --executor ray: Ray workers")
    _executor_arguments(r, "worker processes on this machine (default)")
    _images_per_task_argument(r)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    bench_help = ("pytest-benchmark JSON file, or a folder of them (the newest is used), to show in the "
                  "report's benchmark table, e.g. fixtures/benchmarks")
    r.add_argument("--benchmarks", metavar="PATH", default=None, help=bench_help)
    r.set_defaults(func=cmd_run)
    pl = sub.add_parser("plan", parents=[common],
                        help="the cells, CPU-hours and wall time of a run before it runs (from measured costs)")
    _config_arguments(pl)
    pl.add_argument("--workers", type=int, default=None, help="workers the wall time is for (default 1)")
    _images_per_task_argument(pl)
    pl.add_argument("--speed", type=float, default=1.0,
                    help="speed of a worker relative to the measuring machine (2 cores; default 1)")
    pl.add_argument("--study", action="store_true",
                    help="plan the study's full grid (5 ImageNet architectures at native size, 10 photos, "
                         "3 neurons, every method, LIME with 1,000 samples) instead of the options")
    pl.set_defaults(func=cmd_plan)
    c = sub.add_parser("check", parents=[common], help="sanity checks of saliency maps on your model file")
    c.add_argument("model_file", metavar="MODEL_FILE", help="a saved Keras model (.keras in safe mode, or .h5)")
    c.add_argument("--images", required=True, metavar="PATH",
                   help="a folder of JPEG/PNG images (centre-cropped and resized to the model input), or an "
                        ".npz with an 'images' array")
    c.add_argument("--masks", default=None, metavar="PATH",
                   help="ground-truth masks for localization: a folder of PNGs named like the images, or an "
                        ".npz with 'masks'")
    c.add_argument("--methods", nargs="*", help="method names (default: saliency, integrated_gradients, "
                                                 "guided_backprop, grad_cam, lrp_epsilon)")
    c.add_argument("--checks", nargs="*", help="checks or check.variant (default: all; see cnnvis-eval list)")
    c.add_argument("--require", nargs="*", metavar="METHOD",
                   help="exit status 1 when one of these methods fails a check (they are checked even if "
                        "not in --methods)")
    c.add_argument("--preprocess", default=None, metavar="MODE",
                   help="0-255 (default) | -1,1 | 0-1 | caffe | torch | module:function")
    c.add_argument("--classes", nargs="*", metavar="NAME", help="class names, one per model output")
    c.add_argument("--output", default=None, metavar="NAME",
                   help="the output layer to explain, for models with several outputs")
    c.add_argument("--custom-object", action="append", metavar="MODULE:NAME",
                   help="a class the model file needs that is not registered with Keras (a subclassed model, "
                        "a custom layer), imported from MODULE; repeatable")
    c.add_argument("--input-shape", default=None, metavar="H,W,C",
                   help="the input shape of a subclassed model whose file does not record one")
    c.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="a method parameter (VALUE read as JSON, else text), e.g. lime.num_samples=1000; "
                        "repeatable. Default: the comparison grid's settings (LIME 200 samples, RISE 250 "
                        "masks, integrated gradients 16 steps)")
    c.add_argument("--out", default=None, help="report folder (default reports/check-<model file stem>)")
    c.add_argument("--seed", type=int, default=0, help="seed of randomization, random orders and noise")
    _executor_arguments(c, "this process (default)", choices=("local", "ray"))
    c.add_argument("--workers", type=int, default=None,
                   help="with --executor ray: Ray workers, each loads the model once (default: one per CPU, "
                        "at most 4 on a local instance)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_check)
    _remedy_parser(sub, common)
    rep = sub.add_parser("report", parents=[common], help="(re)build index.html for a results folder")
    rep.add_argument("results_dir")
    rep.add_argument("--benchmarks", metavar="PATH", default=None, help=bench_help)
    rep.set_defaults(func=cmd_report)
    ls = sub.add_parser("list", parents=[common], help="list methods, models, metrics and images")
    ls.set_defaults(func=cmd_list)
    return p


def _executor_arguments(r, default: str, choices=("process", "ray")) -> None:
    """``--executor`` and ``--ray-address`` (``run`` and ``check``)."""
    r.add_argument("--executor", choices=choices, default=choices[0],
                   help=f'where tasks run: {default}, or Ray actors (pip install "cnnvis_eval[ray]")')
    r.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="join this Ray cluster (default: start a local Ray instance on 127.0.0.1)")


def _images_per_task_argument(r) -> None:
    r.add_argument("--images-per-task", type=int, default=None, metavar="N",
                   help="with --executor ray: at most N images per explain task, so that few models balance "
                        "over many workers (default: automatic); rounded up to whole explain batches of the "
                        "task's methods, so that the results do not depend on it, bit for bit")


def _config_arguments(r) -> None:
    """The options of a run configuration (``run`` and ``plan``)."""
    r.add_argument("--models", nargs="*", help="model names (default: the five mini models)")
    r.add_argument("--model-file", action="append", metavar="PATH",
                   help="evaluate a saved Keras model (.keras; loaded in safe mode); repeatable")
    r.add_argument("--methods", nargs="*", help="method names (default: all)")
    r.add_argument("--images", nargs="*",
                   help="photo names and/or synthetic[:N], scenes[:N], birds[:N] (N >= 1, default 8; a scene's "
                        "objects are ground truth for models trained on benchmark v2: the clean minis); each at "
                        "most once")
    r.add_argument("--synthetic", type=int, default=None,
                   help="number of synthetic benchmark images (instead of synthetic:N in --images)")
    r.add_argument("--weights", default=None,
                   help="none (random), imagenet, or a weights file: the big models' weights (an error "
                        "when the run has no big model)")
    r.add_argument("--input-size", type=int, default=None,
                   help=_input_size_help())
    r.add_argument("--input-shape", default=None, metavar="H,W,C",
                   help="the input shape to trace the model files' subclassed models with, when a file "
                        "does not record one")
    r.add_argument("--output", default=None, metavar="NAME|INDEX",
                   help="the output to explain of model files with several outputs (the producing "
                        "layer's name, or its index)")
    r.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and stochastic methods (>= 0)")


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
