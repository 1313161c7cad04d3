"""``cnnvis-eval check``: the sanity checks of saliency maps on a user's model file."""

from __future__ import annotations

import sys
from pathlib import Path

from .options import _check_writable, _shape, _split
from .run import _executor


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

    from ..errors import CnnVisError, InputError
    from ..evaluation import RunLock
    from ..testing.remote import check_job, run_cases_remote, worker_modules
    from ..testing.session import (
        DEFAULT_METHODS, failed_required, open_context, parse_params, run_cases, scorecard_text, select_cases,
        validate_params, write_check_folder)

    try:
        methods = list(_split(args.methods)) or list(DEFAULT_METHODS)
        required = list(_split(args.require))
        from ..methods import list_methods

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
