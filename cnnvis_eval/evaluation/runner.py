"""The comparison grid: methods x models x images x neurons, as in the study.

For every model the grid explains, with every method, every image for three neurons (the
top class logit and the most activated channel of two intermediate layers, see
:mod:`~cnnvis_eval.evaluation.config`), then scores the heatmaps with the stages of
:mod:`~cnnvis_eval.evaluation.stages` (localization, faithfulness, complexity, agreement,
randomization, cost) and collects the long results frame.

A *cell group* is (model, method, neuron) over all images; each is stored with its status
and timings, and each stage's rows as small parquet files, under keys of what produced them
(the model's content, the method's parameters, the images, the library version: see
:class:`~cnnvis_eval.evaluation.store.RunStore`), so an interrupted run continues from what
is stored and a changed model is evaluated anew.  The run's models get unique display names
(:func:`~cnnvis_eval.evaluation.inputs.display_names`), recorded with their keys in
``models.json``.  Stored files are verified when read; a damaged one is moved aside
(``*.corrupt``), logged and computed again.  Cells that do not apply (e.g. CAM without a GAP
head) are recorded as ``n/a`` (and remembered as ``<neuron>.<tag>.na.txt``); a failing cell,
or one whose heatmap is not finite, is recorded with its error message, the run goes on, and
running again retries it.  The perturbation methods explain a model's neurons in one pass of
their perturbed inputs (:func:`joint_targets`); those cells share the pass's seconds.

One job, in one module (about 560 lines): running one configuration's grid -- :class:`GridRun`
(phases, worker dispatch, collection) and the worker-side entry points it sends tasks to, which
share its cell and store conventions.  The declared stages live in :mod:`.stages`, the
executors in :mod:`.executors`; planning the phases is the next piece to move out.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..content_cache import reused_seconds
from ..errors import CnnVisError, InputError, TargetError
from ..frame import COLUMNS
from ..models.spec import ModelSpec
from .config import NEURONS, RunConfig, method_params
from .executors import Executor, make_executor
from .inputs import ImageSet, content_key, display_names, load_inputs, neuron_targets, release
from .lock import RunLock
from .stages import NOT_APPLICABLE, randomization_rows, randomize_model, score_model
from .store import ModelKey, RunStore, atomic_write, digest, versions

PARTS = ("explain", "score", "randomization")  # the work on one model, in order


def _quiet(*args, **kwargs):
    """A log / progress callback that does nothing."""


class GridRun:
    """Runs (or resumes) one comparison grid into ``out``.

    Parameters
    ----------
    config : RunConfig
    out : str or Path
        Folder of this run (created; reused to resume).  A folder holding a run of another
        configuration is refused (InputError); a damaged ``config.json`` is moved aside and
        written again (results are keyed by content, so none of another run is reused).
    progress : bool
        Show progress bars (cells, with time left).
    log : callable or None
        Receives messages (a model skipped or changed, a damaged file moved aside, a
        randomization that failed); None: silent.
    workers : int or None
        Models evaluated at once in worker processes (None: one per CPU core, at most 4;
        1: in this process).  Results do not depend on it.
    executor : Executor, optional
        Runs the tasks instead of the one ``workers`` picks.
    load : callable, optional
        ``load(source) -> (ModelSpec, ImageSet)`` for a model name or a ModelFile
        (default: :func:`~cnnvis_eval.evaluation.inputs.load_inputs` with ``config``).
    release_models : bool
        Drop a model's compiled functions when its work is done (default).
    lock : bool
        Hold the folder's :class:`~cnnvis_eval.evaluation.lock.RunLock` while writing its
        configuration and during :meth:`run` (default); a second run into ``out`` is refused
        (InputError naming the folder and the holder's pid).  Worker processes of a run pass
        False: their parent holds the lock.
    """

    def __init__(self, config: RunConfig, out: str | Path, progress: bool = True, log=print,
                 workers: int | None = 1, executor: Executor | None = None,
                 load: Callable | None = None, release_models: bool = True, lock: bool = True):
        self.config = config
        self.progress = progress
        self.log = log or _quiet
        self.store = RunStore(out, warn=lambda msg: self.log(f"warning: {msg}"))
        self.workers = workers
        self.executor = executor
        self.load = load if load is not None else (lambda source: load_inputs(source, config))
        self.release_models = release_models
        self.lock = lock
        cfg_path = self.store.root / "config.json"
        new = {"config": config.to_dict(), "versions": versions()}
        with self._locked():
            old = self.store.read_json(cfg_path, keys=("config",))
            if old is not None:
                if old["config"] != json.loads(json.dumps(new["config"], default=str)):
                    raise InputError(
                        f"{str(self.store.root)!r} holds a run with another configuration; "
                        "choose another --out folder to start a new run"
                    )
            else:
                self.store.save_json(cfg_path, new)
            # the folder's record of its models (name -> source, key; a changed one is announced) and this run's
            self.recorded = self.store.read_json(self.store.root / "models.json") or {}
        sources = config.sources()
        self.names = {str(s): n for s, n in zip(sources, display_names(sources))}
        self.current: dict = {}
        self.records_models = True  # this process writes models.json (a worker's GridRun does not)
        # its stage rows depend on the library version and the whole configuration but the
        # model list (the model is in the key)
        self.rows_tag = digest(versions()["cnnvis_eval"],
                               {k: v for k, v in config.to_dict().items() if k not in ("models", "model_files")})

    def _locked(self):
        """The folder's lock (a context manager), or a no-op without ``lock``."""
        return RunLock(self.store.root) if self.lock else nullcontext()

    # -- the run -----------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        """Explain and score every model (resuming from what is stored), then assemble the
        long results frame (:meth:`collect`).

        In this process (one worker) each model is one task with all its work.  With
        worker processes the work is split into tasks in two phases: the cells of (model,
        group of methods) and that group's randomization curves (with the explainers the
        cells traced), then per model its scores; a remote executor (``executor.remote``, e.g. Ray) runs the same
        phases with the files shipped to its workers and written back here
        (:mod:`~cnnvis_eval.evaluation.remote`).  Results do not depend on the executor.  The
        folder's lock is held throughout (see ``lock``).
        """
        with self._locked():
            return self._run()

    def _run(self) -> pd.DataFrame:
        sources = self.config.sources()
        n_cells = len(sources) * len(self.config.methods) * len(NEURONS)
        bar = tqdm(total=n_cells, desc="cells", unit="cell", disable=not self.progress, smoothing=0.1)
        executor = self.executor or make_executor(self.workers, len(sources))
        try:
            with executor:
                self._record_executor(executor)
                if executor.in_process:
                    cell_rows = [r for rs in executor.map(self.model_cells, [(s,) for s in sources], tick=bar.update)
                                 for r in rs]
                elif getattr(executor, "remote", False):  # workers without the driver's disk
                    from .remote import remote_phases

                    cell_rows = remote_phases(self, executor, sources, bar.update, between=bar.close)
                else:
                    cell_rows = self._run_phases(executor, sources, bar.update, between=bar.close)
        finally:
            bar.close()
        cells = pd.DataFrame(cell_rows)
        failed = cells[cells["method"] == "*"]
        if len(failed) == len(sources):
            raise InputError("no model of the run could be loaded: " + "; ".join(
                f"{m}: {msg}" for m, msg in zip(failed["model"], failed["message"])))
        self._record_models(sources, cells)
        self.store.save_rows(self.store.root / "cells.parquet", cells)
        return self.collect()

    def _record_executor(self, executor: Executor):
        """Record the cluster a distributed executor runs on (its ``cluster`` summary: nodes,
        CPUs, GPUs, ...) as ``"cluster"`` in ``config.json`` (shown in the report's
        configuration section); a run on this machine removes a previous run's entry."""
        path = self.store.root / "config.json"
        cluster = getattr(executor, "cluster", None) or None
        stored = self.store.read_json(path, keys=("config",)) or {}
        if stored.get("cluster") != cluster and (cluster or "cluster" in stored):
            self.store.save_json(path, {**{k: v for k, v in stored.items() if k != "cluster"},
                                        **({"cluster": cluster} if cluster else {})})

    def _record_models(self, sources: list, cells: pd.DataFrame):
        """Record the loaded models (see :meth:`_note_model`), write ``models.json`` with
        exactly this run's models and bind their keys for :meth:`collect`."""
        loaded = cells[cells["method"] != "*"].drop_duplicates("model").set_index("model")["model_key"]
        for source in sources:
            name = self.names[str(source)]
            if name in loaded.index:
                self._note_model(name, source, str(loaded[name]))
                self.store.bind(name, ModelKey(str(loaded[name]), rows=self.rows_tag))
        record = {n: r for n, r in self.current.items() if n in loaded.index}
        self.store.save_json(self.store.root / "models.json", record)

    def _note_model(self, name: str, source, key: str):
        """Record model ``name`` of ``source`` with content ``key`` in ``models.json`` (once),
        saying so when the folder recorded other content for it: then nothing stored for the
        old content is used (its files stay under ``heatmaps/<old key>/``)."""
        if self.current.get(name, {}).get("key") == key:
            return
        self.current[name] = {"source": str(source), "key": key}
        old = self.recorded.get(name)
        if isinstance(old, dict) and old.get("source") == str(source) and old.get("key") not in (None, key):
            self.log(f"model {name} ({source}) changed since the results stored in this folder (content key "
                     f"{old['key']} -> {key}): it is evaluated anew, the old results are not used")
        self.store.save_json(self.store.root / "models.json",
                             {**{n: r for n, r in self.recorded.items() if n not in self.current}, **self.current})

    def _run_phases(self, executor: Executor, sources: list, tick, between=_quiet) -> list[dict]:
        """The work as tasks for ``executor``, in two phases (see :meth:`run`); ``between()``
        is called between the phases.  Returns the cell rows."""
        methods = list(self.config.methods)
        groups = self.method_groups()
        n_groups = len(groups)
        root = str(self.store.root)
        # a group's randomization curves in the task that explained it: its explainers are
        # traced there (stages.randomize_model reuses them)
        explained = executor.map(_model_worker, [(self.config, root, s, g, ("explain", "randomization"))
                                                 for s in sources for g in groups], tick=tick)
        rows, loaded = [], []
        order = {m: i for i, m in enumerate(methods)}
        for k, source in enumerate(sources):
            parts = [r for g in range(n_groups) for r in explained[k * n_groups + g]]
            if parts and parts[0]["method"] == "*":  # the model could not be loaded
                rows.append(parts[0])
                continue
            loaded.append(source)
            rows += sorted(parts, key=lambda r: order[r["method"]])
        between()
        scoring = [(self.config, root, s, (), ("score",)) for s in heaviest_first(loaded, rows, self.names)]
        with tqdm(total=len(scoring), desc="scores", unit="task", disable=not self.progress) as bar:
            executor.map(_model_worker, scoring, tick=tick, on_done=bar.update)
        return rows

    def method_groups(self) -> list[tuple]:
        """The run's methods in at most 4 groups, one task each per model (interleaved, so
        the groups' costs balance)."""
        methods = list(self.config.methods)
        n_groups = max(1, min(len(methods), 4))
        return [tuple(methods[i::n_groups]) for i in range(n_groups)]

    def model_cells(self, source, tick=_quiet, methods=None, parts=PARTS, shard=None) -> list[dict]:
        """Load model ``source`` (a name or a ModelFile) and run ``parts`` of its work (see
        :meth:`model_stage`, ``shard`` too); its cell rows (``tick(k)`` after every k cells).
        A model that cannot be loaded gives one row with method ``"*"`` and the error."""
        methods = tuple(self.config.methods if methods is None else methods)
        try:
            spec, images = self.load(source)
        except CnnVisError as err:
            self.log(f"model {source}: skipped ({err})")
            if "explain" in parts:
                tick(len(methods) * len(NEURONS))
            return [{"model": str(source), "method": "*", "neuron": "*", "status": "error", "message": str(err),
                     "seconds": np.nan, "seconds_per_image": np.nan, "layer": "", "indices": "",
                     "model_key": "", "file": ""}]
        spec.name = self.names.get(str(source), spec.name)  # unique within the run
        if self.records_models:
            self._note_model(spec.name, source, content_key(spec))
        rows = self.model_stage(spec, images, tick, methods, parts, shard)
        if self.release_models:
            release(spec)
        return rows

    def model_stage(self, spec: ModelSpec, images: ImageSet, tick=None, methods=None,
                    parts=PARTS, shard: tuple[int, int] | None = None) -> list[dict]:
        """The work on one model.

        ``parts``: ``"explain"`` (the cells of ``methods`` that are not stored yet),
        ``"score"`` (localization, faithfulness, complexity, agreement and cost rows of all
        the run's methods, from the stored heatmaps), ``"randomization"`` (curves of
        ``methods``).  Returns the cell rows of ``methods``.  ``shard=(lo, hi)`` (explain
        only): images ``lo:hi`` of the cells not stored whole, each stored as a part
        (:func:`shard_path`, its row's ``file``) for :func:`~cnnvis_eval.evaluation.remote.merge_cells`.
        """
        cfg = self.config
        methods = tuple(cfg.methods if methods is None else methods)
        self._bind(spec, images)
        img_path = self.store.images_path(spec.name)
        arrays = dict(images=images.images, ids=np.array(images.ids),
                      masks=np.stack([m if m is not None else np.zeros(images.images.shape[1:3], bool)
                                      for m in images.masks]),
                      synthetic=images.synthetic_index,
                      class_names=np.array([str(c) for c in (spec.class_names or ())], dtype=str))
        if not self.store.read_images(img_path, arrays):  # missing, damaged or other images
            self.store.save_cell(img_path, **arrays)
        x = spec.preprocess(images.images)
        if shard is not None:
            return self._cells(spec, x, methods, tick, ids=images.ids, shard=shard)[0]
        cells, heat = self._cells(spec, x, methods, tick, explain="explain" in parts, ids=images.ids)
        if "score" in parts:
            if methods != tuple(cfg.methods):
                all_cells, all_heat = self._cells(spec, x, tuple(cfg.methods), None, explain=False)
            else:
                all_cells, all_heat = cells, heat
            # a damaged file of the score stage: its rows are computed again, all of them
            if sum(self.store.check_rows(stage, spec.name) for stage in ("scores", "agreement", "reference")):
                self.store.rows_path("scores", spec.name).unlink(missing_ok=True)
            score_model(self.store, cfg, spec, images, x, all_heat, all_cells)
        if "randomization" in parts and "randomization" in cfg.stages:
            self.store.check_rows("randomization", spec.name)
            randomize_model(self.store, cfg, spec, images, x, heat, methods, self.log)
        return cells

    def _bind(self, spec: ModelSpec, images: ImageSet) -> ModelKey:
        """The storage key of ``spec`` (displayed as ``spec.name``) in this run, bound in the
        store: its content key, per method a tag of the library version, the method's
        parameters on this model and the images, and the run's rows tag."""
        cfg = self.config
        version = versions()["cnnvis_eval"]
        seen = digest(images.ids, [bool(m is not None) for m in images.masks],
                      hashlib.sha256(np.ascontiguousarray(images.images).tobytes()).hexdigest())
        tags = {m: digest(version, m, method_params(m, spec, cfg.method_params.get(m, {})), seen)
                for m in cfg.methods}
        key = ModelKey(content_key(spec), tags, self.rows_tag)
        self.store.bind(spec.name, key)
        return key

    # -- the explain stage -------------------------------------------------------
    def _cells(self, spec: ModelSpec, x, methods, tick, explain: bool = True,
               ids=None, shard: tuple[int, int] | None = None) -> tuple[list[dict], dict]:
        """Cell rows of ``methods`` x neurons and their heatmaps ``{(method, neuron): (N, H, W)}``
        for ``x`` (N, H, W, C) (images named ``ids``); cells not stored yet (or whose stored
        file is damaged: moved aside) are explained (``explain``) or reported as ``"missing"``.
        ``shard=(lo, hi)``: a cell not stored whole is read from, or explained on images
        ``lo:hi`` into, its part :func:`shard_path` (heatmaps (hi - lo, H, W)), in the
        explain batches of an unsplit run when the shard is one of
        :func:`~cnnvis_eval.evaluation.remote.image_shards` (then its heatmaps are the whole
        cell's bit for bit); ``tick`` gets (hi - lo) / N per cell."""
        from .remote import explain_batch

        cfg = self.config
        targets = neuron_targets(spec)
        shape = tuple(np.shape(x)[:3])
        lo, hi = shard or (0, shape[0])
        step = 1 if shard is None else (hi - lo) / shape[0]
        key = self.store.key(spec.name).key
        cells = []
        heat: dict = {}
        for method in methods:
            params = method_params(method, spec, cfg.method_params.get(method, {}))
            found: dict = {}  # neuron -> (target, path, info, stored); info None: to explain
            for neuron in NEURONS:
                target = targets.get(neuron)
                path = whole = self.store.heatmap_path(spec.name, method, neuron)
                stored = None if target is None else self.store.read_cell(path, shape)
                if shard is not None and stored is None and target is not None:  # this shard's part
                    path = shard_path(whole, shard)
                    stored = self.store.read_cell(path, (hi - lo,) + shape[1:])
                info = None
                if target is None:
                    info = {"status": "n/a", "message": f"{spec.name} has no {neuron} intermediate layer"}
                elif stored is not None:
                    info = self._stored_info(stored)
                elif self.store.na_path(whole).is_file():  # known not to apply: not tried again
                    info = {"status": "n/a", "message": self.store.na_path(whole).read_text(encoding="utf-8")}
                elif not explain:
                    info = {"status": "missing", "message": "not explained yet"}
                found[neuron] = (target, path, info, stored)
            todo = [n for n in NEURONS if n in found and found[n][2] is None]
            if todo:
                # a shard after the first starts at a batch boundary of the local run (see
                # remote.image_shards): its first call is one whole explain batch
                first = 1 if lo == 0 else explain_batch(method, params)
                groups = [todo] if joint_targets(method) else [[n] for n in todo]
                for group in groups:
                    done = self._explain_cells(spec, method, params, x[lo:hi], [found[n][0] for n in group],
                                               [found[n][1] for n in group],
                                               None if ids is None else ids[lo:hi], first)
                    for n, (info, stored) in zip(group, done):
                        if info["status"] == "n/a":
                            self.store.save_text(self.store.na_path(self.store.heatmap_path(spec.name, method, n)),
                                                 info["message"])
                        found[n] = found[n][:2] + (info, stored)
            for neuron, (target, path, info, stored) in found.items():
                cells.append({"model": spec.name, "method": method, "neuron": neuron,
                              "layer": "" if target is None else getattr(target, "layer", "__output__"),
                              **{k: info.get(k) for k in ("status", "message", "seconds", "seconds_per_image",
                                                          "indices")},
                              "model_key": key,
                              "file": path.relative_to(self.store.root).as_posix() if info["status"] == "ok" else ""})
                if info["status"] == "ok":
                    heat[(method, neuron)] = stored["heatmap"].astype(np.float32)
                if tick is not None and explain:
                    tick(step)
        return cells, heat

    @staticmethod
    def _stored_info(z: dict) -> dict:
        return {"status": "ok", "message": "", "seconds": float(z["seconds"]),
                "seconds_per_image": float(z["seconds_per_image"]),
                "indices": " ".join(map(str, z["indices"].tolist()))}

    def _explain_cells(self, spec, method, params, x, targets: list, paths: list, ids=None,
                       first: int = 1) -> list[tuple[dict, dict | None]]:
        """Explain the cells of ``targets`` (one per neuron) on ``x`` (N, H, W, C) and store
        each at its ``paths`` entry: ``[(info, stored arrays)]`` in order (arrays None unless
        ok).  Two calls: images ``:first`` warm up (trace) the method, the rest is timed warm
        (the seconds per image; the first call's when N <= ``first``); per-image work reused
        from a content cache (XRAI's segments, superpixels) is counted at the seconds it took
        (:func:`~cnnvis_eval.content_cache.reused_seconds`), so the timings do not depend on
        which cell came first.

        Several targets are explained in one pass of the method's perturbed inputs
        (:func:`cnnvis_eval.explain_targets`, for the ``joint_targets`` methods only): the
        cells carry that pass's seconds, which the logit's read-out dominates (the cost
        stage reads the logit cells).  If the joint call fails, each target is explained
        alone, so every cell gets its own status and message.
        A heatmap that is not finite, or not (N, H, W), is an error cell, not stored."""
        import cnnvis_eval as cv

        def run(xs):
            if len(targets) == 1:
                return [cv.explain(method, spec, xs, target=targets[0], progress=False, **params)]
            return cv.explain_targets(method, spec, xs, targets, progress=False, **params)

        t0 = time.perf_counter()
        try:
            with reused_seconds() as cold:
                parts = [run(x[:first])]
            t1 = time.perf_counter()
            with reused_seconds() as warm_reuse:
                if len(x) > first:
                    parts.append(run(x[first:]))
            t2 = time.perf_counter()
            # per-image work another cell left in a content cache counts as if done here
            t1 += cold.seconds
            t2 += cold.seconds + warm_reuse.seconds
        except Exception as err:  # recorded, the run goes on
            if len(targets) > 1:  # each alone: every cell gets its own status and message
                return [self._explain_cells(spec, method, params, x, [t], [p], ids, first)[0]
                        for t, p in zip(targets, paths)]
            if isinstance(err, (NOT_APPLICABLE, TargetError)):
                return [({"status": "n/a", "message": str(err)}, None)]
            return [({"status": "error", "message": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()}, None)]
        warm = (t2 - t1) / (len(x) - first) if len(x) > first else (t1 - t0) / len(x)
        return [self._store_cell(method, path, [p[i] for p in parts], t2 - t0, warm, ids, np.shape(x))
                for i, path in enumerate(paths)]

    def _store_cell(self, method: str, path: Path, parts: list, seconds: float, warm: float, ids,
                    shape: tuple) -> tuple[dict, dict | None]:
        """Check and store one cell from its Explanations ``parts`` (the warm-up call's and
        the timed call's): ``(info, stored arrays)``."""
        heat = np.concatenate([p.heatmap for p in parts])
        indices = np.concatenate([p.indices for p in parts])
        scores = np.concatenate([p.scores for p in parts])
        expected = tuple(shape[:3])
        if heat.shape != expected:
            return {"status": "error", "message": f"{method} returned heatmaps of shape {heat.shape}, "
                                                  f"expected {expected}"}, None
        finite = np.isfinite(heat).reshape(len(heat), -1).all(axis=1)
        if not finite.all():
            bad = [f"{i}" + (f" ({ids[i]})" if ids is not None else "") for i in np.flatnonzero(~finite)]
            return {"status": "error", "message": f"{method} gave a non-finite heatmap (NaN or inf) for image "
                                                  f"{', '.join(bad)}"}, None
        arrays = dict(heatmap=heat.astype(np.float32), indices=indices, scores=scores,
                      seconds=np.float64(seconds), seconds_per_image=np.float64(warm))
        self.store.save_cell(path, **arrays)
        return {"status": "ok", "message": "", "seconds": seconds, "seconds_per_image": warm,
                "indices": " ".join(map(str, indices.tolist()))}, arrays

    # -- results -----------------------------------------------------------------
    def collect(self) -> pd.DataFrame:
        """Assemble the long results frame from the stored rows of the run's models (those
        of ``models.json`` unless :meth:`run` bound them), each shown under its display
        name, and write parquet + CSV (and the run's curves, agreement matrices, reference
        timings and the verdicts its numbers decide, :func:`cnnvis_eval.testing.grid.grid_verdicts`)."""
        if not self.store.models:
            for name, rec in self.recorded.items():
                if isinstance(rec, dict) and rec.get("key"):
                    self.store.bind(name, ModelKey(str(rec["key"]), rows=self.rows_tag))
        frames = [self.store.load_rows("scores")]
        curves = self.store.load_rows("randomization")
        if not curves.empty:
            frames.append(randomization_rows(curves))
            _write(self.store.root / "curves.parquet", curves)
        frames = [f for f in frames if not f.empty]
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
        _write(self.store.root / "results.parquet", results)
        atomic_write(self.store.root / "results.csv", lambda tmp: results.to_csv(tmp, index=False))
        for name in ("reference", "agreement"):
            stored = self.store.load_rows(name)
            if not stored.empty:
                _write(self.store.root / f"{name}.parquet", stored)
        from ..testing.grid import grid_verdicts  # the report's scorecard (testing holds the thresholds)
        from ..testing.verdict import verdict_frame

        _write(self.store.root / "verdicts.parquet", verdict_frame(grid_verdicts(results)))
        return results


def joint_targets(method: str) -> bool:
    """Whether the grid explains ``method``'s neurons of a model in one call (the methods
    with ``joint_targets``, whose perturbed inputs do not depend on the target: one forward
    pass of each reads the logit and the layer neurons)."""
    from ..methods import get_method

    return bool(get_method(method).joint_targets)


def heaviest_first(sources: list, rows: list[dict], names: dict) -> list:
    """``sources`` ordered by the seconds their ok cells took (``rows``; ``names``: source ->
    model name), longest first: the order of the score phase's tasks, so that no long task
    starts last while the other workers have nothing left (the phase ends the run's
    parallel part).  Ties keep their order."""
    spent: dict = {}
    for r in rows:
        sec = r.get("seconds")
        if r.get("status") == "ok" and sec is not None and np.isfinite(sec):
            spent[r["model"]] = spent.get(r["model"], 0.0) + float(sec)
    return sorted(sources, key=lambda s: -spent.get(names[str(s)], 0.0))


def _write(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as parquet at ``path``, atomically: a killed run leaves the previous file or
    the new one, never half a file."""
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def shard_path(cell_path: Path, shard: tuple[int, int]) -> Path:
    """Where images ``lo:hi`` of a cell are kept until the cell is assembled:
    ``<neuron>.<tag>.images<lo>-<hi>.npz`` beside the cell's file."""
    lo, hi = shard
    return cell_path.with_name(f"{cell_path.name[:-len('.npz')]}.images{lo}-{hi}.npz")


_WORKER_MODEL: dict = {}  # the model a worker process last loaded: (source, run id) -> (spec, images)


def _model_worker(config: RunConfig, root: str, source, methods, parts, tick=_quiet, log=print,
                  shard=None) -> list[dict]:
    """One task of a worker process (:meth:`GridRun._run_phases`): ``parts`` of the work on
    model ``source`` for ``methods`` (all if empty; ``shard``: see :meth:`GridRun.model_stage`);
    messages go to ``log``.  The worker keeps its last model loaded for the next task."""

    def load(s):
        # a warm worker may serve several runs: another configuration, or a model file saved over
        path = Path(getattr(s, "path", ""))
        stamp = (path.stat().st_mtime_ns, path.stat().st_size) if getattr(s, "path", None) and path.is_file() else None
        key = (str(s), config.run_id(), stamp)
        if key not in _WORKER_MODEL:
            for spec, _ in _WORKER_MODEL.values():
                release(spec)
            _WORKER_MODEL.clear()
            _WORKER_MODEL[key] = load_inputs(s, config)
        return _WORKER_MODEL[key]

    run = GridRun(config, root, progress=False, log=log, workers=1, load=load, release_models=False, lock=False)
    run.records_models = False  # the parent writes models.json from the cell rows
    return run.model_cells(source, tick, methods or None, parts, shard)


def run_grid(config: RunConfig, out: str | Path, progress: bool = True, workers: int | None = 1) -> pd.DataFrame:
    """Run (or resume) the grid of ``config`` into ``out``; returns the long results frame."""
    return GridRun(config, out, progress=progress, workers=workers).run()


__all__ = ["GridRun", "PARTS", "joint_targets", "run_grid", "shard_path"]
