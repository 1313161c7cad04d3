"""A check session's cases on a remote executor: ``cnnvis-eval check --executor ray``.

The driver opens the check's context as a local check does (every input read and validated
before the first check), then puts one *job* into the cluster's object store
(:func:`check_job`): the model file's bytes and how the session loads it (preprocessing,
class names, output, custom objects, input shape), the preprocessed images (N, H, W, C) and
masks (N, H, W), the seed, the name, and every method's parameters.  Workers need not share
the driver's disk.

The work units are (method, check) pairs with the check's selected variants
(:func:`check_units`), routed with the method as affinity key
(:meth:`~cnnvis_eval.evaluation.ray_executor.RayExecutor.map`), so an actor keeps working on
one method while there are units of it and the method's explanation, randomization curves
and explainer are memoized on few actors; each actor loads the model file once and keeps
its :class:`~cnnvis_eval.testing.context.CheckContext` (the controls memoized there) for the
next unit of the same job (:func:`remote_units`).  The driver assembles the verdicts in the
local case order, so the scorecard and the check folder are those of a local check: equal
verdicts for deterministic methods, and for the seeded ones (every stochastic method draws
from its own seed in each call, so the order of calls does not matter).

A unit whose worker died (:class:`~cnnvis_eval.evaluation.ray_executor.TaskLost`) gives
``inconclusive`` verdicts saying so (run again to decide them); an exception of the check
itself is raised in the driver, as in a local check.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .context import CheckContext
from .verdict import Verdict

LOAD_ARGS = ("preprocess", "classes", "output", "output_flag", "custom_objects", "input_shape")
"""The arguments of :func:`~cnnvis_eval.testing.session.load_check_model` a job carries."""


def _quiet(*args, **kwargs):
    """A progress callback that does nothing."""


def check_job(ctx: CheckContext, model_file, load: dict | None = None) -> dict:
    """What a remote worker needs to rebuild ``ctx``: ``{"key", "file_name", "model", "load",
    "x", "masks", "seed", "name", "params"}`` (``model``: the file's bytes; ``load``: the
    :data:`LOAD_ARGS` the context was opened with; ``key``: a digest of all of it and the
    library version, under which a worker keeps the context)."""
    from .. import __version__

    load = {k: v for k, v in (load or {}).items() if k in LOAD_ARGS}
    if isinstance(load.get("custom_objects"), dict):
        raise TypeError("a remote check names its custom objects as 'module:Name' strings (the workers import them)")
    data = Path(model_file).read_bytes()
    h = hashlib.sha256()
    for part in (__version__, data, repr(sorted(load.items())), repr(ctx.seed), ctx.name, repr(ctx.params),
                 str(ctx.x.dtype), repr(ctx.x.shape), np.ascontiguousarray(ctx.x).tobytes(),
                 b"" if ctx.masks is None else np.packbits(ctx.masks).tobytes()):
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return {"key": h.hexdigest()[:20], "file_name": Path(model_file).name, "model": data, "load": load,
            "x": ctx.x, "masks": ctx.masks, "seed": ctx.seed, "name": ctx.name, "params": ctx.params}


def worker_modules(load: dict) -> tuple[str, ...]:
    """The modules a worker must import to load the job's model: those of the custom objects
    (``module:Name``) and of a ``module:function`` preprocessing (the executor imports them
    at start, so a node without them fails before the first unit, naming the module)."""
    names = [str(c).partition(":")[0] for c in load.get("custom_objects") or ()]
    pre = load.get("preprocess") or ""
    if ":" in pre:
        names.append(pre.partition(":")[0])
    return tuple(dict.fromkeys(n for n in names if n))


def check_units(cases) -> list[tuple[str, str, tuple]]:
    """(method, check, variants) units of ``cases`` ((check, method, variant) in the local
    order), method by method, the checks in their local order within a method."""
    units: dict = {}
    for check, method, variant in cases:
        units.setdefault((method, check), []).append(variant)
    methods = list(dict.fromkeys(m for _, m, _ in cases))
    return [(m, c, tuple(vs)) for m in methods for (mm, c), vs in units.items() if mm == m]


_WORKER_CONTEXT: dict = {}  # the job a worker last served: key -> CheckContext


def _context(job: dict) -> tuple[CheckContext, bool]:
    """The worker's context of ``job`` and whether this call loaded the model."""
    if job["key"] in _WORKER_CONTEXT:
        return _WORKER_CONTEXT[job["key"]], False
    import tempfile

    from ..evaluation.inputs import release
    from .session import load_check_model

    for old in _WORKER_CONTEXT.values():
        release(old.spec)
    _WORKER_CONTEXT.clear()
    with tempfile.TemporaryDirectory(prefix="cnnvis-check-") as scratch:
        path = Path(scratch) / job["file_name"]
        path.write_bytes(job["model"])
        spec = load_check_model(path, **job["load"])
    ctx = CheckContext(spec, job["x"], masks=job["masks"], params=job["params"], seed=job["seed"], name=job["name"])
    _WORKER_CONTEXT[job["key"]] = ctx
    return ctx, True


def remote_units(job: dict, units, tick=_quiet) -> dict:
    """One task on a worker: the verdicts of ``units`` ((method, check, variants)) on the
    job's context (loaded on the worker's first unit of the job, then kept).  Returns
    ``{"verdicts": [[Verdict, ...] per unit], "loaded": bool, "pid": int}``; ``tick(1)``
    per case."""
    from .checks import run_check

    ctx, loaded = _context(job)
    out = []
    for method, check, variants in units:
        got = []
        for variant in variants:
            got.append(run_check(ctx, check, method, variant))
            tick(1)
        out.append(got)
    return {"verdicts": out, "loaded": loaded, "pid": os.getpid()}


def run_cases_remote(job: dict, cases, executor, progress: bool = True, log=print) -> list[Verdict]:
    """The verdict of every (check, method, variant) case of ``job`` (:func:`check_job`) on
    the workers of ``executor`` (entered; ``share`` and ``map(..., affinity=)``, e.g. a
    :class:`~cnnvis_eval.evaluation.ray_executor.RayExecutor`), in the order of ``cases``,
    as :func:`~cnnvis_eval.testing.session.run_cases` gives them.  ``progress``: a tqdm bar
    over the cases, fed by completed units; ``log`` gets one line per lost unit, and one
    with the units, the workers that ran them and how often the model was loaded."""
    from tqdm.auto import tqdm

    from ..evaluation.ray_executor import TaskLost

    units = check_units(cases)
    shared = executor.share(job)
    with tqdm(total=len(cases), desc=f"checks on {job['name']}", unit="check", disable=not progress,
              leave=False) as bar:
        results = executor.map(remote_units, [(shared, (u,)) for u in units], tick=bar.update,
                               affinity=lambda task: task[1][0][0])
    found: dict = {}
    pids, loads = set(), 0
    for (method, check, variants), res in zip(units, results):
        if isinstance(res, TaskLost):
            log(f"{method} {check}: {res.message}; its verdicts are inconclusive, run again to decide them")
            got = [Verdict(job["name"], method, check if v is None else f"{check}.{v}", "inconclusive",
                           reason=f"worker lost: {res.message}") for v in variants]
        else:
            got = res["verdicts"][0]
            pids.add(res["pid"])
            loads += bool(res["loaded"])
        for variant, v in zip(variants, got):
            found[(check, method, variant)] = v
    if pids:
        log(f"{job['name']}: {len(units)} units on {len(pids)} workers, the model loaded {loads} times")
    return [found[c] for c in cases]


__all__ = ["LOAD_ARGS", "check_job", "check_units", "remote_units", "run_cases_remote", "worker_modules"]
