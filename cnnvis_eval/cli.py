"""Command line: ``cnnvis-eval run | check | report | list``.

``cnnvis-eval run`` evaluates every method on the embedded default — the trained mini models
of the five families, on the synthetic benchmark and bundled photos — and writes
``reports/<run-id>/index.html``.  Running the same command again resumes the same run.

``cnnvis-eval check MODEL_FILE --images PATH`` runs the sanity checks of
:mod:`cnnvis_eval.testing` on a user's model, prints the scorecard and writes the HTML report;
exit status 1 when a ``--require``-d method fails a check.
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


SYNTHETIC_DEFAULT = 8  # synthetic images of a bare ``synthetic`` in --images


def _images(entries) -> dict:
    """``--images`` entries -> ``{"photos": (...), "synthetic": N}``: photo names, and at most
    one ``synthetic`` (:data:`SYNTHETIC_DEFAULT` images) or ``synthetic:N`` (N >= 1).

    Raises
    ------
    InputError
        A malformed or repeated ``synthetic`` entry (photo names are checked by RunConfig).
    """
    from .errors import InputError

    photos, synthetic, given = [], 0, None
    for entry in entries:
        if entry != "synthetic" and not entry.startswith("synthetic:"):
            photos.append(entry)
            continue
        if given is not None:
            raise InputError(f"--images gives the synthetic images twice ({given!r} and {entry!r}); "
                             "give one synthetic:N")
        given, n = entry, entry.partition(":")[2]
        if entry == "synthetic":
            synthetic = SYNTHETIC_DEFAULT
        elif n.isdigit() and int(n) >= 1:  # isdigit: no sign, no spaces, no decimal point
            synthetic = int(n)
        else:
            raise InputError(f"--images {entry!r}: N in synthetic:N must be a whole number >= 1, got {n!r}")
    return {"photos": tuple(photos), "synthetic": synthetic}


def _shape(text):
    """``--input-shape H,W,C`` -> (H, W, C) (range checked by RunConfig)."""
    from .errors import InputError

    if text is None:
        return None
    parts = [p.strip() for p in text.replace("x", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise InputError(f"--input-shape must be H,W,C (three whole numbers), got {text!r}")
    return tuple(int(p) for p in parts)


def _check_writable(folder: Path) -> None:
    """InputError unless ``folder`` exists as a writable folder or can be created.

    Probes the folder itself, or its nearest existing parent, with an anonymous temporary
    file (removed on close): nothing is left behind, and no run folder is made before the
    run starts.  (A permission check would pass for root on a read-only mount.)
    """
    import tempfile

    from .errors import InputError

    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write the run folder {str(folder)!r}: {str(probe)!r} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise InputError(f"cannot write the run folder {str(folder)!r}: {str(probe)!r} is not writable "
                         f"({err.strerror or err})") from None


def _check_run_options(args, config) -> Path:
    """The checks of ``cnnvis-eval run`` that RunConfig cannot make (no model is loaded, no
    file written): ``--workers``, ``--run-id``, the files named (model files, weights,
    benchmarks) and a writable run folder.  Returns the run folder."""
    from .errors import InputError
    from .report.benchmarks import load_benchmarks

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.run_id is not None and (Path(args.run_id).name != args.run_id or args.run_id in ("", ".", "..")):
        raise InputError(f"--run-id must be a folder name (no path), got {args.run_id!r}")
    for path in config.model_files:
        if not Path(path).is_file():
            raise InputError(f"model file {path!r} does not exist (or is not a file)")
    if config.weights not in (None, "imagenet") and not Path(config.weights).is_file():
        raise InputError(f"weights file {config.weights!r} does not exist (or is not a file)")
    if args.benchmarks:  # an unreadable benchmark file
        load_benchmarks(args.benchmarks)
    out = Path(args.out) / (args.run_id or config.run_id())
    _check_writable(out)
    return out


def cmd_run(args) -> int:
    """``cnnvis-eval run``: every option is checked before the first model loads (names,
    sizes, ``synthetic:N``, duplicates, options that apply to none of the models, the files
    named, a writable run folder); a bad one is one ``cnnvis-eval: error: ...`` line and
    exit status 2."""
    from .errors import CnnVisError
    from .evaluation import GridRun, RunLock, inputs
    from .models.files import ModelFile
    from .report import build_report

    try:
        config = _run_config(args)
        out = _check_run_options(args, config)
        executor = _executor(args)
        for path in config.model_files:  # unreadable or unsafe files: fail before the run starts
            inputs.load_spec(ModelFile(path), config)
        print(f"run {out.name}: {len(config.models) + len(config.model_files)} models x "
              f"{len(config.methods)} methods x {len(config.photos) + config.synthetic} images x 3 neurons -> {out}")
        args.run_folder = out  # named in the message of an interrupted run (main)
        with RunLock(out):  # one run per folder, from the first write to the report
            on = {"executor": executor} if executor is not None else {}  # None: the process pool of --workers
            GridRun(config, out, progress=not args.quiet, workers=args.workers, **on).run()
            page = build_report(out, benchmarks=args.benchmarks)
    except CnnVisError as err:
        print("cnnvis-eval: error: " + " ".join(str(err).splitlines()), file=sys.stderr)
        return 2
    print(f"report: {page}")
    return 0


def _run_config(args):
    """The RunConfig of the run options of ``args`` (shared by ``run`` and ``plan``)."""
    from .errors import InputError
    from .evaluation import RunConfig

    kw = {}
    if args.models:
        kw["models"] = _split(args.models)
    if args.model_file:
        kw["model_files"] = tuple(args.model_file)
        if not args.models:
            kw["models"] = ()
    if args.images:
        kw.update(_images(_split(args.images)))
    if args.synthetic is not None:
        if kw.get("synthetic"):
            raise InputError(f"--synthetic {args.synthetic} and a synthetic entry in --images both give "
                             "the number of synthetic images; give one")
        kw["synthetic"] = args.synthetic
    config = RunConfig(
        methods=_split(args.methods),
        weights=None if args.weights in (None, "none", "None") else args.weights,
        input_size=args.input_size,
        seed=args.seed,
        file_input_shape=_shape(args.input_shape),
        file_output=args.output,
        **kw,
    )
    return config


def _executor(args, modules=()):
    """The executor of ``--executor`` (None: ``run``'s process pool of ``--workers``, or
    ``check`` in this process).  With ``ray``: RayUnavailable (one line) when Ray is not
    installed or ``--ray-address`` is unreachable; ``modules``: imported by every worker."""
    from .errors import InputError

    if args.executor != "ray":
        if args.ray_address is not None:
            raise InputError("--ray-address applies to --executor ray only")
        if getattr(args, "command", None) == "check" and args.workers is not None:
            raise InputError("--workers applies to --executor ray only (a local check runs in this process)")
        if getattr(args, "images_per_task", None) is not None:
            raise InputError("--images-per-task applies to --executor ray only")
        return None
    from .evaluation.ray_executor import RayExecutor, check_address, import_ray

    for flag in ("workers", "images_per_task"):
        if getattr(args, flag, None) is not None and getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    import_ray()
    check_address(args.ray_address)
    per_task = {"images_per_task": args.images_per_task} if getattr(args, "images_per_task", None) else {}
    return RayExecutor(workers=args.workers, address=args.ray_address, modules=modules, **per_task)


def cmd_plan(args) -> int:
    """``cnnvis-eval plan``: the cells, CPU-hours and wall time of a run configuration (the
    run's options; ``--study``: the study's full grid) on ``--workers`` workers of relative
    ``--speed``, from the cost table (:mod:`cnnvis_eval.evaluation.plan`); nothing runs."""
    from .errors import CnnVisError, InputError
    from .evaluation.plan import plan, study_config

    try:
        for flag in ("workers", "images_per_task"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise InputError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        config = study_config() if args.study else _run_config(args)
        p = plan(config, workers=args.workers or 1, speed=args.speed, images_per_task=args.images_per_task)
    except CnnVisError as err:
        print("cnnvis-eval: error: " + " ".join(str(err).splitlines()), file=sys.stderr)
        return 2
    print(p.text())
    return 0


def cmd_check(args) -> int:
    """``cnnvis-eval check``: the sanity checks on a user's model file.

    Every input is read and checked (model file, images, masks, class names, methods, checks,
    a writable output folder) before the first check runs; a bad one is one
    ``cnnvis-eval: error: ...`` line, exit status 2, and nothing is written.  Prints the
    method x check scorecard, writes ``verdicts.parquet`` and ``index.html`` to ``--out``, and
    returns 1 when a ``--require``-d method fails a check (a failure the literature predicts
    included), else 0.  ``--executor ray``: the cases run on Ray actors
    (:mod:`cnnvis_eval.testing.remote`), with the same verdicts and folder.
    """
    from contextlib import nullcontext

    from .errors import CnnVisError, InputError
    from .evaluation import RunLock
    from .testing.remote import check_job, run_cases_remote, worker_modules
    from .testing.session import (
        DEFAULT_METHODS, failed_required, open_context, parse_params, run_cases, scorecard_text, select_cases,
        validate_params, write_check_folder)

    try:
        methods = list(_split(args.methods)) or list(DEFAULT_METHODS)
        required = list(_split(args.require))
        from .methods import list_methods

        unknown = [m for m in required if m not in list_methods()]
        if unknown:
            raise InputError(f"--require: method(s) {', '.join(unknown)} are not registered; "
                             f"available: {', '.join(list_methods())}")
        methods += [m for m in required if m not in methods]  # a required method is always checked
        cases = select_cases(list(_split(args.checks)) or None, methods)
        overrides = parse_params(args.param, methods)
        model = Path(args.model_file)
        if not model.is_file():
            raise InputError(f"model file {str(model)!r} does not exist")
        out = Path(args.out) if args.out else Path("reports") / f"check-{model.stem}"
        _check_writable(out)
        load = dict(preprocess=args.preprocess, classes=list(_split(args.classes)), output=args.output,
                    output_flag="--output", custom_objects=list(args.custom_object or ()),
                    input_shape=_shape(args.input_shape))
        executor = _executor(args, modules=worker_modules(load))
        ctx = open_context(model, args.images, masks=args.masks, seed=args.seed, params=overrides, **load)
        validate_params(ctx, methods)
        print(f"check {model.name}: {len(ctx.x)} images x {len(methods)} methods, {len(cases)} checks -> {out}")
        settings = [f"{m}({', '.join(f'{k}={v!r}' for k, v in ctx.method_params(m).items())})"
                    for m in methods if ctx.method_params(m)]
        if settings:
            print(f"parameters (--param to change): {'; '.join(settings)}")
        args.run_folder = out
        with executor or nullcontext(), RunLock(out):  # Ray starts (or fails) before anything is written
            if executor is None:
                verdicts = run_cases(ctx, cases, progress=not args.quiet)
            else:  # the cases on Ray actors that load the model file once each (testing.remote)
                verdicts = run_cases_remote(check_job(ctx, model, load), cases, executor, progress=not args.quiet)
            config = {"command": "check", "models": [ctx.name], "model_file": str(model.resolve()),
                      "images": str(args.images), "masks": args.masks, "methods": methods,
                      "checks": list(_split(args.checks)) or "all", "require": required,
                      "preprocess": args.preprocess, "seed": args.seed, "n_images": int(len(ctx.x)),
                      "custom_objects": list(args.custom_object or ()), "output": args.output,
                      "params": {m: ctx.method_params(m) for m in methods},
                      **({"cluster": executor.cluster} if executor is not None else {})}
            page = write_check_folder(out, verdicts, config)
    except CnnVisError as err:
        print("cnnvis-eval: error: " + " ".join(str(err).splitlines()), file=sys.stderr)
        return 2
    print(scorecard_text(verdicts))
    print(f"report: {page}")
    failed = failed_required(verdicts, required)
    for v in failed:
        print(f"required method failed: {v.message()}", file=sys.stderr)
    return 1 if failed else 0


def _grid_verdicts_if_missing(root: Path) -> None:
    """A grid run's folder written before grid runs stored their verdicts: derive them
    (:func:`cnnvis_eval.testing.grid.grid_verdicts`) so the report's scorecard is not empty.
    Suite and check folders (a ``suite`` column, or their own ``verdicts.parquet``) are left alone."""
    import pandas as pd

    results = root / "results.parquet"
    if (root / "verdicts.parquet").exists() or not results.is_file():
        return
    from .evaluation.store import atomic_write
    from .testing.grid import grid_verdicts
    from .testing.verdict import verdict_frame

    frame = pd.read_parquet(results)
    if "suite" in frame.columns:
        return
    table = verdict_frame(grid_verdicts(frame))
    atomic_write(root / "verdicts.parquet", lambda p: table.to_parquet(p, index=False))


def cmd_report(args) -> int:
    from .errors import CnnVisError
    from .report import build_report

    try:
        _grid_verdicts_if_missing(Path(args.results_dir))
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
    from .testing.session import check_names

    print("checks: ", ", ".join(check_names()), "(cnnvis-eval check)")
    return 0


def _input_size_help() -> str:
    from .evaluation.config import MAX_INPUT_SIZE
    from .models import ARCHS

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
                   help="photo names and/or synthetic[:N] (N >= 1, default 8); each at most once")
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
