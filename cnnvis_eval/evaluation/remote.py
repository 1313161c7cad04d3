"""The runner's phases on workers that do not share the driver's disk (a Ray cluster).

:meth:`GridRun.run <cnnvis_eval.evaluation.runner.GridRun.run>` hands executors with
``remote = True`` (:class:`~cnnvis_eval.evaluation.ray_executor.RayExecutor`) the same two
phases of tasks as the process pool, but the files travel: each task receives the stored
files of its model (a *bundle*: ``config.json``, the model's images, heatmaps and rows, put
once per model in the cluster's object store), works in a scratch copy of the run folder on
its worker (made afresh for every task), and returns its cell rows, its log lines and the files it wrote; the driver
writes those files into the run folder (atomically) as each task completes.  So the run
folder holds exactly the files of a local run, a driver killed mid-run keeps every finished
task, and a rerun skips what is stored.  A task whose worker died
(:class:`~cnnvis_eval.evaluation.ray_executor.TaskLost`) becomes error cells (explain phase)
or a log line (scoring phase); a rerun computes them.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from .config import NEURONS
from .store import CORRUPT, atomic_write

SKIPPED = ("config.json", "models.json")  # the driver's own files: never returned by a task
TASKS_PER_WORKER = 4
"""Tasks per worker below which a phase's tasks are split finer (explain: by images,
randomization: by method), so that the longest one does not hold the run up: the (model,
method group) tasks of the study's grid differ 20-fold in cost (VGG16's group with LIME-1000
against MobileNetV2's groups)."""


def _quiet(*args, **kwargs):
    """A progress callback that does nothing."""


def bundle(root: Path, key: str | None) -> dict[str, bytes]:
    """The stored files of the model with content ``key`` under run folder ``root`` (and
    ``config.json``): ``{relative posix path: bytes}``; damaged copies and temporary files
    are left out."""
    root = Path(root)
    paths = [root / "config.json"]
    if key:
        paths.append(root / "images" / f"{key}.npz")
        paths += [p for p in (root / "heatmaps" / key).rglob("*") if p.is_file()]
        paths += list((root / "rows").glob(f"*/{key}.*"))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".corrupt")}


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def remote_model_worker(config, files: dict, source, methods, parts, shard=None, tick=_quiet) -> dict:
    """One task on a remote worker: ``parts`` of the work on model ``source`` for
    ``methods`` (``shard=(lo, hi)``: the explain part on images ``lo:hi`` only, see
    :meth:`~cnnvis_eval.evaluation.runner.GridRun.model_stage`), in a fresh scratch copy of
    the run folder made of ``files`` (a :func:`bundle`: exactly what the driver has stored
    for the model, so a file the driver lost or moved aside is computed again).  Returns
    ``{"rows": cell rows, "files": {path: bytes} written by the task, "log": [lines]}``.
    The worker keeps its loaded model between tasks, not the files."""
    from .runner import _model_worker

    with tempfile.TemporaryDirectory(prefix="cnnvis-run-") as scratch:
        root = Path(scratch)
        for rel, data in files.items():
            atomic_write(root / rel, lambda p, d=data: p.write_bytes(d))
        before = _snapshot(root)
        lines: list[str] = []
        rows = _model_worker(config, str(root), source, methods, parts, tick, log=lines.append, shard=shard)
        after = _snapshot(root)
        # new and rewritten files; a damaged file moved aside comes back as <name>.corrupt
        changed = {rel: (root / rel).read_bytes() for rel, sig in after.items()
                   if before.get(rel) != sig and rel not in SKIPPED}
    return {"rows": rows, "files": changed, "log": lines, "scratch": str(root)}


def write_back(root: Path, result: dict, log) -> list[dict]:
    """Write the files a remote task returned under ``root`` (atomically), pass its log
    lines to ``log``; its cell rows.  A returned ``<name>.corrupt`` means the worker found
    the shipped ``<name>`` damaged: the driver's copy is moved aside first, as a local run
    does, then the recomputed file written."""
    root = Path(root)
    targets = {}
    for rel in result["files"]:
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
            raise ValueError(f"a remote task returned a file outside the run folder: {rel!r}")
        targets[rel] = root.joinpath(*parts)
    for rel, target in targets.items():
        damaged = target.with_name(target.name[:-len(CORRUPT)])
        if target.name.endswith(CORRUPT) and damaged.is_file():
            damaged.replace(target)
    for rel, target in targets.items():
        if not target.name.endswith(CORRUPT):
            atomic_write(target, lambda p, d=result["files"][rel]: p.write_bytes(d))
    for line in result["log"]:  # naming the run folder, not the worker's scratch copy
        log(line.replace(result["scratch"], str(root)))
    return result["rows"]


def remote_phases(run, executor, sources: list, tick, between=_quiet) -> list[dict]:
    """:meth:`GridRun._run_phases <cnnvis_eval.evaluation.runner.GridRun._run_phases>` for a
    remote ``executor`` (``share``, ``map(..., affinity=, collect=)``); the cell rows."""
    from .ray_executor import TaskLost

    methods = list(run.config.methods)
    groups = run.method_groups()
    root = run.store.root
    collect = lambda result: write_back(root, result, run.log)  # noqa: E731
    by_model = lambda task: str(task[2])  # noqa: E731

    shared = {}
    for s in sources:  # what a previous run stored for this model, if the folder knows its key
        rec = run.recorded.get(run.names[str(s)])
        key = rec.get("key") if isinstance(rec, dict) and rec.get("source") == str(s) else None
        shared[str(s)] = executor.share(bundle(root, key))
    per_task, params = getattr(executor, "images_per_task", None), run.config.method_params
    n_images = run.config.n_images
    plan = explain_plan(groups, n_images, per_task, len(sources) * len(groups), executor.workers, params)
    note = rounded_note(per_task, [g for g, _ in plan], params)
    if note:
        run.log(note)
    tasks = [(run.config, shared[str(s)], s, g, ("explain",), h) for s in sources for g, hs in plan for h in hs]
    explained = executor.map(remote_model_worker, tasks, tick=tick, affinity=by_model, collect=collect)
    rows, loaded, keys = [], [], {}
    order = {m: i for i, m in enumerate(methods)}
    ends = np.cumsum([0] + [len(hs) for _ in sources for _, hs in plan])  # task range of each (model, group)
    for k, source in enumerate(sources):
        results = [merge_cells(run, explained[ends[k * len(plan) + j]:ends[k * len(plan) + j + 1]])
                   for j in range(len(plan))]
        ok = [r for res in results if not isinstance(res, TaskLost) for r in res]
        if ok and ok[0]["method"] == "*":  # the model could not be loaded
            rows.append(ok[0])
            continue
        name = run.names[str(source)]
        lost = [(g, res) for (g, _), res in zip(plan, results) if isinstance(res, TaskLost)]
        if not ok:  # every task of the model lost
            rows.append(_failed(source, "; ".join(sorted({res.message for _, res in lost}))))
            continue
        for g, res in lost:
            run.log(f"model {name}, methods {', '.join(g)}: {res.message}; run again to compute them")
            tick(len(g) * len(NEURONS))
            ok += [_lost_cell(name, m, n, ok[0]["model_key"], res.message) for m in g for n in NEURONS]
        loaded.append(source)
        keys[str(source)] = ok[0]["model_key"]
        rows += sorted(ok, key=lambda r: order[r["method"]])
    between()
    for s in loaded:
        shared[str(s)] = executor.share(bundle(root, keys[str(s)]))
    units = randomization_units(groups, len(loaded), executor.workers)
    scoring = [(run.config, shared[str(s)], s, (), ("score",)) for s in loaded] + [
        (run.config, shared[str(s)], s, g, ("randomization",)) for s in loaded for g in units]
    from tqdm.auto import tqdm

    with tqdm(total=len(scoring), desc="scores", unit="task", disable=not run.progress) as bar:
        done = executor.map(remote_model_worker, scoring, tick=tick, on_done=bar.update, affinity=by_model,
                            collect=collect)
    for task, res in zip(scoring, done):
        if isinstance(res, TaskLost):
            run.log(f"model {run.names[str(task[2])]}: {task[4][0]} of {', '.join(task[3]) or 'all methods'} "
                    f"lost: {res.message}; run again to compute it")
    return rows


def explain_batch(method: str, params: dict | None = None) -> int:
    """Images per explain batch of ``method`` in a grid run with the run's ``params`` of it:
    their ``batch_size``, else the method's ``default_batch_size``; 1 for the perturbation
    methods (LIME, occlusion, RISE: one image at a time, whatever the batch, their
    ``batch_size`` counts perturbed model inputs).  A heatmap's last float32 bits depend on
    the batch its image was explained in (oneDNN picks its kernels by batch size)."""
    from ..methods import get_method
    from ..methods.perturbation.sampling import PerturbationExplainer

    cls = get_method(method)
    if issubclass(cls, PerturbationExplainer):
        return 1
    size = (params or {}).get("batch_size")
    return int(cls.default_batch_size if size is None else size)


def shard_unit(methods, method_params: dict) -> int:
    """The alignment unit of an explain task of ``methods``: the least common multiple of
    their :func:`explain_batch` (``method_params``: the run's, per method)."""
    return math.lcm(*(explain_batch(m, method_params.get(m)) for m in methods)) if methods else 1


def image_shards(n: int, per_task: int | None, tasks: int, workers: int, unit: int = 1) -> list:
    """The image ranges ``(lo, hi)`` of the explain tasks of one (model, group of methods)
    (``[None]``: one task with every image).  ``per_task``: at most that many of the ``n``
    images per task; None: automatic, as many shards (up to ``n``) as make the explain
    phase's ``tasks`` unsharded tasks at least :data:`TASKS_PER_WORKER` per worker (of
    several), so that a run of few models on many workers balances (a run with enough tasks
    is not split: every task re-reads its model's stored files).

    The shards hold whole explain batches of the local run, so that their cells are the
    local run's bit for bit: the runner explains image 0 alone (it times the rest warm), then
    images 1.. in batches of each method's :func:`explain_batch`; with ``unit`` the group's
    :func:`shard_unit`, shards end at 1 + a multiple of ``unit`` (or at ``n``), and hold at
    most ``per_task`` rounded up to a multiple of ``unit`` images.  ``n <= unit``: unsplit."""
    if per_task is None:
        k = min(n, -(-TASKS_PER_WORKER * workers // max(1, tasks))) if workers > 1 else 1
        per_task = -(-n // max(1, k))
    if per_task < 1:
        raise ValueError(f"images per task must be >= 1, got {per_task}")
    size = -(-per_task // unit) * unit
    if size >= n:
        return [None]
    cuts = [0]
    while cuts[-1] < n:
        hi = cuts[-1] + size
        cuts.append(n if hi >= n else 1 + (hi - 1) // unit * unit)  # the last batch boundary <= hi
    return list(itertools.pairwise(cuts))


def explain_plan(groups: list, n: int, per_task: int | None, tasks: int, workers: int,
                 method_params: dict) -> list:
    """The explain tasks of one model: ``[(methods, image shards)]``.  Unsplit (``tasks``
    (model, group) tasks enough for the workers, see :func:`image_shards`): each of ``groups``
    with ``[None]``.  Split: the methods of a group that explain one image at a time (LIME,
    occlusion, RISE: the costly ones) apart from the others, each part in shards of whole
    explain batches of its :func:`shard_unit`, so that batches of 16 do not keep them unsplit."""
    if image_shards(n, per_task, tasks, workers) == [None]:
        return [(tuple(g), [None]) for g in groups]
    out = []
    for g in groups:
        ones = tuple(m for m in g if explain_batch(m, method_params.get(m)) == 1)
        for part in (tuple(m for m in g if m not in ones), ones):
            if part:
                out.append((part, image_shards(n, per_task, tasks, workers, shard_unit(part, method_params))))
    return out


def rounded_note(per_task: int | None, groups: list, method_params: dict) -> str | None:
    """The line saying that ``--images-per-task`` ``per_task`` was rounded up for some of
    ``groups`` (None when it was not, or is automatic)."""
    if per_task is None:
        return None
    up = [(-(-per_task // u) * u, g) for g in groups for u in [shard_unit(g, method_params)] if per_task % u]
    if not up:
        return None
    return (f"images per task {per_task} rounded up to whole explain batches: "
            + "; ".join(f"{k} for {', '.join(g)}" for k, g in up)
            + " (so that a split run stores a local run's heatmaps bit for bit)")


def randomization_units(groups: list, models: int, workers: int) -> list:
    """The methods of each randomization task of one model: the explain phase's ``groups``,
    or one method per task when ``models`` x groups gives fewer than :data:`TASKS_PER_WORKER`
    tasks per worker (the curves are stored per (model, method): the same rows either way)."""
    if workers <= 1 or models * len(groups) >= TASKS_PER_WORKER * workers:
        return list(groups)
    return [(m,) for g in groups for m in g]


def merge_cells(run, results: list):
    """The cell rows of one (model, group of methods) from its shard tasks' results (in
    image order; one unsharded result is returned as it is).  A cell stored in parts
    (:func:`~cnnvis_eval.evaluation.runner.shard_path`) is assembled here, in the driver:
    the parts concatenated in image order into the cell's file, timings summed, the parts
    removed; a cell that failed or does not apply on any shard takes that shard's row
    (the parts that finished stay for the rerun).  A lost shard makes the group lost
    (:class:`~cnnvis_eval.evaluation.ray_executor.TaskLost`); a model that could not be loaded
    gives its one row."""
    from .ray_executor import TaskLost

    if len(results) == 1:
        return results[0]
    lost = [r for r in results if isinstance(r, TaskLost)]
    done = [r for r in results if not isinstance(r, TaskLost)]
    if done and done[0] and done[0][0]["method"] == "*":  # the model could not be loaded
        return done[0]
    if lost:
        return lost[0]
    root = run.store.root
    out = []
    for parts in zip(*results):  # one cell: its row from every shard, in image order
        bad = [r for r in parts if r["status"] != "ok"]
        if bad:
            out.append(next((r for r in bad if r["status"] == "error"), bad[0]))
            continue
        files = [r["file"] for r in parts]
        if len(set(files)) == 1:  # stored whole before this run
            out.append(parts[0])
            continue
        arrays = [run.store.load_cell(root / f) for f in files]
        n = [len(a["heatmap"]) for a in arrays]
        merged = {k: np.concatenate([a[k] for a in arrays]) for k in ("heatmap", "indices", "scores")}
        merged["seconds"] = np.float64(sum(float(a["seconds"]) for a in arrays))
        merged["seconds_per_image"] = np.float64(sum(float(a["seconds_per_image"]) * k for a, k in zip(arrays, n))
                                                 / sum(n))
        whole = files[0].rsplit(".images", 1)[0] + ".npz"
        run.store.save_cell(root / whole, **merged)
        for f in files:
            (root / f).unlink(missing_ok=True)
        out.append({**parts[0], "file": whole, "seconds": float(merged["seconds"]),
                    "seconds_per_image": float(merged["seconds_per_image"]),
                    "indices": " ".join(map(str, merged["indices"].tolist()))})
    return out


def _failed(source, message: str) -> dict:
    """The row of a model none of whose tasks finished."""
    return {"model": str(source), "method": "*", "neuron": "*", "status": "error", "message": message,
            "seconds": np.nan, "seconds_per_image": np.nan, "layer": "", "indices": "", "model_key": "",
            "file": ""}


def _lost_cell(model: str, method: str, neuron: str, key: str, message: str) -> dict:
    """The row of a cell whose task was lost (an error cell: a rerun computes it)."""
    return {"model": model, "method": method, "neuron": neuron, "layer": "", "status": "error",
            "message": f"worker lost: {message}", "seconds": np.nan, "seconds_per_image": np.nan, "indices": "",
            "model_key": key, "file": ""}


__all__ = ["bundle", "explain_batch", "explain_plan", "image_shards", "merge_cells", "randomization_units", "remote_model_worker",
           "remote_phases", "rounded_note", "shard_unit", "write_back"]
