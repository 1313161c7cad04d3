"""``cnnvis-eval run`` and ``cnnvis-eval plan``: the comparison grid, and its cost before it runs."""

from __future__ import annotations

import sys
from pathlib import Path

from .options import _check_writable, _images, _shape, _split, check_counts


def _check_run_options(args, config) -> Path:
    """The checks of ``cnnvis-eval run`` that RunConfig cannot make (no model is loaded, no
    file written): ``--workers``, ``--run-id``, the files named (model files, weights,
    benchmarks) and a writable run folder.  Returns the run folder."""
    from ..errors import InputError
    from ..report.benchmarks import load_benchmarks

    check_counts(args, ("workers",))
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
    from ..errors import CnnVisError
    from ..evaluation import GridRun, RunLock, inputs
    from ..models.files import ModelFile
    from ..report import build_report

    try:
        config = _run_config(args)
        out = _check_run_options(args, config)
        executor = _executor(args)
        for path in config.model_files:  # unreadable or unsafe files: fail before the run starts
            inputs.load_spec(ModelFile(path), config)
        print(f"run {out.name}: {len(config.models) + len(config.model_files)} models x "
              f"{len(config.methods)} methods x {config.n_images} images x 3 neurons -> {out}")
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
    from ..errors import InputError
    from ..evaluation import RunConfig

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
    from ..errors import InputError

    if args.executor != "ray":
        if args.ray_address is not None:
            raise InputError("--ray-address applies to --executor ray only")
        if getattr(args, "command", None) == "check" and args.workers is not None:
            raise InputError("--workers applies to --executor ray only (a local check runs in this process)")
        if getattr(args, "images_per_task", None) is not None:
            raise InputError("--images-per-task applies to --executor ray only")
        return None
    from ..evaluation.ray_executor import RayExecutor, check_address, import_ray

    check_counts(args)
    import_ray()
    check_address(args.ray_address)
    per_task = {"images_per_task": args.images_per_task} if getattr(args, "images_per_task", None) else {}
    return RayExecutor(workers=args.workers, address=args.ray_address, modules=modules, **per_task)


def cmd_plan(args) -> int:
    """``cnnvis-eval plan``: the cells, CPU-hours and wall time of a run configuration (the
    run's options; ``--study``: the study's full grid) on ``--workers`` workers of relative
    ``--speed``, from the cost table (:mod:`cnnvis_eval.evaluation.plan`); nothing runs."""
    from ..errors import CnnVisError
    from ..evaluation.plan import plan, study_config

    try:
        check_counts(args)
        config = study_config() if args.study else _run_config(args)
        p = plan(config, workers=args.workers or 1, speed=args.speed, images_per_task=args.images_per_task)
    except CnnVisError as err:
        print("cnnvis-eval: error: " + " ".join(str(err).splitlines()), file=sys.stderr)
        return 2
    print(p.text())
    return 0
