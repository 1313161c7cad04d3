"""The comparison grid: methods x models x images x neurons, as in the study.

For every model the grid explains, with every method, every image for three neurons: the
top class logit (``"logit"``) and the most activated channel (mean over the map) of each of
the model's two intermediate layers (``"mid"`` and ``"high"``).  Then it scores:

- **localization** (pointing game, relevance mass/rank, energy pointing game) on the
  synthetic images, whose object masks are known (logit neuron);
- **faithfulness** (deletion and insertion AUC) for the logit neuron;
- **complexity** (sparseness, entropy) for every heatmap;
- **agreement**: Spearman rank correlation with every other method's heatmap of the same
  image and neuron;
- **randomization**: similarity of the logit heatmap after cascading re-initialization of
  the model (coarse steps: top group, half, all), curve and final value;
- **cost**: seconds per image of a warm explanation divided by a plain forward+backward
  pass of the same model in the same run.

A *cell group* is (model, method, neuron) over all images; each is stored as
``heatmaps/<model>/<method>/<neuron>.npz`` with its status and timings, and each stage's
rows as small parquet files, so an interrupted run continues from what is stored.  Cells
that do not apply (e.g. CAM without a GAP head) are recorded as ``n/a`` (and remembered as
``<neuron>.na.txt``); a failing cell is recorded with its error message, the run goes on,
and running again retries it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import (
    CnnVisError,
    InputError,
    TargetError,
    UnsupportedArchitectureError,
    UnsupportedLayerError,
)
from ..methods.base import get_method, list_methods
from ..models.spec import ModelSpec
from ..targets import ClassTarget, NeuronTarget
from .cost import reference_passes

NOT_APPLICABLE = (UnsupportedArchitectureError, UnsupportedLayerError)
NEURONS = ("logit", "mid", "high")
PARTS = ("explain", "score", "randomization")  # the work on one model, in order


def _quiet(*args, **kwargs):
    """A log / progress callback that does nothing."""

GRID_PARAMS: dict[str, dict] = {
    # fast settings for the grid (the methods' own defaults are the papers'); occlusion's
    # window is set per model from its input size (see :func:`method_params`)
    "lime": {"num_samples": 200},
    "rise": {"n_masks": 250},
    "smoothgrad": {"n": 8},
    "vargrad": {"n": 8},
    "integrated_gradients": {"steps": 16},
}
OCCLUSION_WINDOW_FRACTION = 6  # occlusion window = input side / 6 (11 px at 64, 37 px at 224), stride half


def method_params(method: str, spec: ModelSpec, params: dict | None = None) -> dict:
    """The parameters the grid passes to ``method`` on ``spec``: ``params`` (default
    :data:`GRID_PARAMS`), plus an occlusion window scaled to the input size when none is given."""
    params = dict(GRID_PARAMS.get(method, {}) if params is None else params)
    if method == "occlusion" and "window" not in params:
        side = int(min(spec.input_shape[:2]))
        params["window"] = max(2, round(side / OCCLUSION_WINDOW_FRACTION))
        params.setdefault("stride", max(1, params["window"] // 2))
    return params


@dataclass
class RunConfig:
    """What one comparison run covers.

    Attributes
    ----------
    models : model names (:func:`cnnvis_eval.list_models`)
    model_files : paths of saved Keras models to evaluate too (loaded in safe mode)
    methods : method names (default: all registered)
    photos : bundled photo names (:func:`cnnvis_eval.data.list_photos`)
    synthetic : number of synthetic benchmark images (with object masks)
    weights : weights for the five big architectures (None, "imagenet" or a path)
    input_size : input size for the big architectures (None: native)
    seed : seed of the synthetic images, stochastic methods and randomization
    randomization_images : images per (model, method) in the randomization stage
    randomization_steps : coarse cascading steps (top group, ..., all)
    faithfulness_steps : points of the deletion and insertion curves (pixels revealed or
        removed per step = H * W / steps)
    stages : which scoring stages to run
    method_params : per-method parameters (default :data:`GRID_PARAMS`)
    """

    models: tuple = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
    model_files: tuple = ()
    methods: tuple = ()
    photos: tuple = ("chelsea", "coffee", "rocket", "grace_hopper")
    synthetic: int = 8
    weights: str | None = None
    input_size: int | None = None
    seed: int = 0
    randomization_images: int = 2
    randomization_steps: int = 2
    faithfulness_steps: int = 32
    stages: tuple = ("localization", "faithfulness", "complexity", "agreement", "randomization", "cost")
    method_params: dict = field(default_factory=lambda: {k: dict(v) for k, v in GRID_PARAMS.items()})

    def __post_init__(self):
        self.models = tuple(self.models)
        self.model_files = tuple(str(p) for p in self.model_files)
        self.methods = tuple(self.methods) or tuple(list_methods())
        self.photos = tuple(self.photos)
        for m in self.methods:
            get_method(m)  # InputError naming the unknown method
        if not self.models and not self.model_files:
            raise InputError("a run needs at least one model (models or model_files)")
        if self.synthetic < 0:
            raise InputError(f"synthetic must be >= 0, got {self.synthetic}")
        if not self.photos and not self.synthetic:
            raise InputError("a run needs images: photos and/or synthetic > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """A stable id from the configuration, so the same command resumes the same run."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return "run-" + hashlib.sha1(blob).hexdigest()[:10]


# ---------------------------------------------------------------------- inputs
@dataclass
class ImageSet:
    """The images one model sees: uint8 (N, H, W, 3), ids, and object masks (or None)."""

    images: np.ndarray
    ids: list
    masks: list  # per image: bool (H, W) or None

    @property
    def synthetic_index(self) -> np.ndarray:
        return np.array([m is not None for m in self.masks])


_FILE_SPECS: dict = {}  # the last user model file loaded, keyed by (path, mtime, size)


def load_spec(name: str, config: RunConfig) -> ModelSpec:
    from ..models import BIG_MODELS, load_model

    if name.startswith("file:"):
        path = Path(name[5:])
        try:
            st = path.stat()
            key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            return load_model_file(path)  # raises the InputError naming the problem
        if key not in _FILE_SPECS:
            _FILE_SPECS.clear()  # keep at most one user model alive
            _FILE_SPECS[key] = load_model_file(path)
        return _FILE_SPECS[key]
    if name in BIG_MODELS:
        size = config.input_size
        return load_model(name, weights=config.weights,
                          input_shape=None if size is None else (size, size, 3))
    return load_model(name)


def load_model_file(path: str | Path) -> ModelSpec:
    """A user's saved Keras model, loaded with Keras safe mode (no arbitrary code).

    Raises
    ------
    InputError
        The file is missing, unreadable, or not safe to load (e.g. it has Lambda layers).
    """
    import keras

    from ..models.spec import as_spec

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist (or is not a file)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise InputError(f"model file {str(path)!r} cannot be read: {err.strerror or err}") from err
    suffix = path.suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: "
                         "it is not a .keras zip archive (save models with model.save('name.keras'))")
    if suffix in (".h5", ".hdf5") and head != b"\x89HDF\r\n\x1a\n":
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: it is not an HDF5 file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower() or "lambda" in str(err).lower():
            raise InputError(
                f"model file {str(path)!r} is not safe to load (it would run code): {err} "
                "cnnvis-eval loads model files in Keras safe mode only; save the model without "
                "Lambda layers (use registered layer classes) to evaluate it"
            ) from err
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: {err}") from err
    except Exception as err:
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: "
                         f"{type(err).__name__}: {err}") from err
    spec = as_spec(model)
    spec.name = path.stem
    if not spec.input_range:
        spec.input_range = None
    return spec


def image_set(spec: ModelSpec, config: RunConfig) -> ImageSet:
    """Bundled photos and synthetic benchmark images at the model's input size."""
    from skimage.transform import resize

    from ..data.photos import load_photos
    from ..data.synthetic import make_synthetic

    h, w = spec.input_shape[:2]
    imgs, ids, masks = [], [], []
    if config.synthetic:
        side = int(min(max(min(h, w), 48), 128))
        syn = make_synthetic(config.synthetic, side, seed=10_000 + config.seed)
        for i in range(len(syn)):
            img, mask = syn.images[i], syn.masks[i]
            if (side, side) != (h, w):
                img = np.round(resize(img, (h, w), preserve_range=True, anti_aliasing=True)).astype(np.uint8)
                mask = resize(mask.astype(float), (h, w), order=0) > 0.5
            imgs.append(img)
            ids.append(f"syn{i:03d}")
            masks.append(mask)
    if config.photos:
        for name, img in zip(config.photos, load_photos(config.photos, (h, w))):
            imgs.append(img)
            ids.append(name)
            masks.append(None)
    if spec.input_shape[-1] != 3:
        raise InputError(f"model {spec.name!r} takes {spec.input_shape[-1]} channels; the grid's images are RGB")
    return ImageSet(np.stack(imgs), ids, masks)


def neuron_targets(spec: ModelSpec) -> dict:
    """The study's three neurons: top logit, most activated channel of two layers."""
    out = {"logit": ClassTarget("top")}
    for kind, layer in zip(("mid", "high"), spec.intermediate_layers):
        out[kind] = NeuronTarget(layer, "top", reduce="mean")
    return out


# ---------------------------------------------------------------------- storage
class RunStore:
    """Files of one run under ``root``; every write is atomic (tmp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def heatmap_path(self, model: str, method: str, neuron: str) -> Path:
        return self.root / "heatmaps" / model / method / f"{neuron}.npz"

    @staticmethod
    def na_path(cell_path: Path) -> Path:
        """Where a cell that does not apply keeps its reason (``<neuron>.na.txt``)."""
        return cell_path.with_suffix(".na.txt")

    def save_text(self, path: Path, text: str):
        self._atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def rows_path(self, stage: str, *parts: str) -> Path:
        return self.root / "rows" / stage / ("__".join(parts) + ".parquet")

    @staticmethod
    def _atomic(path: Path, write):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)

    def save_cell(self, path: Path, **arrays):
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        self._atomic(path, write)

    def load_cell(self, path: Path) -> dict:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_rows(self, path: Path, df: pd.DataFrame):
        self._atomic(path, lambda tmp: df.to_parquet(tmp, index=False))

    def load_rows(self, stage: str) -> pd.DataFrame:
        files = sorted((self.root / "rows" / stage).glob("*.parquet"))
        if not files:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _rows(method, model, images, neuron, metric, values) -> pd.DataFrame:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return pd.DataFrame({"method": method, "model": model, "image": list(images), "neuron": neuron,
                         "metric": metric, "value": values})


# ---------------------------------------------------------------------- the run
class GridRun:
    """Runs (or resumes) one comparison grid into ``out``.

    Parameters
    ----------
    config : RunConfig
    out : folder of this run (created; reused to resume)
    progress : show progress bars (cells, with time left)
    """

    def __init__(self, config: RunConfig, out: str | Path, progress: bool = True, log=print,
                 workers: int | None = 1):
        self.config = config
        self.store = RunStore(out)
        self.progress = progress
        self.log = log or _quiet
        self.workers = workers
        cfg_path = self.store.root / "config.json"
        new = {"config": config.to_dict(), "versions": versions()}
        if cfg_path.is_file():
            old = json.loads(cfg_path.read_text())
            if old.get("config") != json.loads(json.dumps(new["config"], default=str)):
                raise InputError(
                    f"{str(self.store.root)!r} holds a run with another configuration; "
                    "choose another --out folder to start a new run"
                )
        else:
            cfg_path.write_text(json.dumps(new, indent=2, sort_keys=True, default=str))

    # -- stages ------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        """Explain and score every model (resuming from what is stored), then assemble the
        long results frame (:meth:`collect`).  With ``workers`` > 1, models run in that many
        worker processes at once; results do not depend on it."""
        names = list(self.config.models) + [f"file:{p}" for p in self.config.model_files]
        n_cells = len(names) * len(self.config.methods) * len(NEURONS)
        bar = tqdm(total=n_cells, desc="cells", unit="cell", disable=not self.progress, smoothing=0.1)
        workers = resolve_workers(self.workers, len(names))
        try:
            if workers > 1:
                cell_rows = self._run_parallel(names, workers, bar.update, between=bar.close)
            else:
                from ..quiet import quiet_retracing

                with quiet_retracing():  # fresh explainers per cell trace on purpose
                    cell_rows = [row for name in names for row in self.model_cells(name, bar.update)]
        finally:
            bar.close()
        cells = pd.DataFrame(cell_rows)
        failed = cells[cells["method"] == "*"]
        if len(failed) == len(names):
            raise InputError("no model of the run could be loaded: " + "; ".join(
                f"{m}: {msg}" for m, msg in zip(failed["model"], failed["message"])))
        self.store.save_rows(self.store.root / "cells.parquet", cells)
        results = self.collect()
        return results

    def model_cells(self, name: str, tick=_quiet, methods=None, parts=PARTS) -> list[dict]:
        """Load model ``name`` and run ``parts`` of its work (see :meth:`model_stage`); its
        cell rows (``tick(k)`` after every k cells)."""
        methods = tuple(self.config.methods if methods is None else methods)
        try:
            spec, images = self._load(name)
        except CnnVisError as err:
            self.log(f"model {name}: skipped ({err})")
            if "explain" in parts:
                tick(len(methods) * len(NEURONS))
            return [{"model": name, "method": "*", "neuron": "*", "status": "error", "message": str(err),
                     "seconds": np.nan, "seconds_per_image": np.nan, "layer": "", "indices": ""}]
        rows = self.model_stage(spec, images, tick, methods, parts)
        if self.release_models:
            _release(spec)
        return rows

    release_models = True  # drop a model's compiled functions when its work is done

    def _load(self, name: str) -> tuple[ModelSpec, ImageSet]:
        spec = load_spec(name, self.config)
        return spec, image_set(spec, self.config)

    def _run_parallel(self, names: list[str], workers: int, tick, between=_quiet) -> list[dict]:
        """Work split into tasks run by ``workers`` spawned processes, in two phases: the
        cells of (model, group of methods), then per model its scores and, per group of
        methods, its randomization curves.  Progress comes back through a queue (``tick``);
        ``between()`` is called between the phases."""
        import multiprocessing as mp
        import queue as queue_mod
        from concurrent.futures import ProcessPoolExecutor, wait

        methods = list(self.config.methods)
        n_groups = max(1, min(len(methods), 4))
        groups = [tuple(methods[i::n_groups]) for i in range(n_groups)]  # interleaved: balanced costs
        ctx = mp.get_context("spawn")  # TensorFlow does not survive fork
        threads = max(1, (os.cpu_count() or 1) // workers)
        root = str(self.store.root)
        with ctx.Manager() as manager:
            progress = manager.Queue()
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,))

            def run_all(tasks, done=_quiet):
                futures = [pool.submit(_model_worker, self.config, root, name, ms, parts, progress)
                           for name, ms, parts in tasks]
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.25)
                    if finished:
                        done(len(finished))
                    while True:
                        try:
                            tick(progress.get_nowait())
                        except queue_mod.Empty:
                            break
                return [f.result() for f in futures]

            try:
                explained = run_all([(name, g, ("explain",)) for name in names for g in groups])
                rows, loaded = [], []
                for k, name in enumerate(names):
                    parts = [r for g in range(n_groups) for r in explained[k * n_groups + g]]
                    if parts and parts[0]["method"] == "*":  # the model could not be loaded
                        rows.append(parts[0])
                        continue
                    loaded.append(name)
                    order = {m: i for i, m in enumerate(methods)}
                    rows += sorted(parts, key=lambda r: order[r["method"]])
                between()
                scoring = [(name, (), ("score",)) for name in loaded] + [
                    (name, g, ("randomization",)) for name in loaded for g in groups]
                with tqdm(total=len(scoring), desc="scores", unit="task", disable=not self.progress) as bar:
                    run_all(scoring, bar.update)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown()
        return rows

    def model_stage(self, spec: ModelSpec, images: ImageSet, tick=None, methods=None,
                    parts=PARTS) -> list[dict]:
        """The work on one model.

        ``parts``: ``"explain"`` (the cells of ``methods`` that are not stored yet),
        ``"score"`` (localization, faithfulness, complexity, agreement and cost rows of all
        the run's methods, from the stored heatmaps), ``"randomization"`` (curves of
        ``methods``).  Returns the cell rows of ``methods``.
        """
        cfg = self.config
        methods = tuple(cfg.methods if methods is None else methods)
        img_path = self.store.root / "images" / f"{spec.name}.npz"
        if not img_path.is_file():
            self.store.save_cell(img_path, images=images.images, ids=np.array(images.ids),
                                 masks=np.stack([m if m is not None else np.zeros(images.images.shape[1:3], bool)
                                                 for m in images.masks]),
                                 synthetic=images.synthetic_index,
                                 class_names=np.array([str(c) for c in (spec.class_names or ())], dtype=str))
        x = spec.preprocess(images.images)
        cells, heat = self._cells(spec, x, methods, tick, explain="explain" in parts)
        if "score" in parts:
            if methods != tuple(cfg.methods):
                all_cells, all_heat = self._cells(spec, x, tuple(cfg.methods), None, explain=False)
            else:
                all_cells, all_heat = cells, heat
            self._score_stage(spec, images, x, all_heat, all_cells)
        if "randomization" in parts and "randomization" in cfg.stages:
            self._randomization_stage(spec, images, x, heat, methods)
        return cells

    def _cells(self, spec: ModelSpec, x, methods, tick, explain: bool = True) -> tuple[list[dict], dict]:
        """Cell rows of ``methods`` x neurons and their heatmaps ``{(method, neuron): (N, H, W)}``;
        cells not stored yet are explained (``explain``) or reported as ``"missing"``."""
        cfg = self.config
        targets = neuron_targets(spec)
        cells = []
        heat: dict = {}
        for method in methods:
            params = method_params(method, spec, cfg.method_params.get(method, {}))
            for neuron in NEURONS:
                target = targets.get(neuron)
                path = self.store.heatmap_path(spec.name, method, neuron)
                if target is None:
                    info = {"status": "n/a", "message": f"{spec.name} has no {neuron} intermediate layer"}
                elif path.is_file():
                    info = self._stored_info(path)
                elif self.store.na_path(path).is_file():  # known not to apply: not tried again
                    info = {"status": "n/a", "message": self.store.na_path(path).read_text(encoding="utf-8")}
                elif not explain:
                    info = {"status": "missing", "message": "not explained yet"}
                else:
                    info = self._explain_cell(spec, method, params, x, target, path)
                    if info["status"] == "n/a":
                        self.store.save_text(self.store.na_path(path), info["message"])
                cells.append({"model": spec.name, "method": method, "neuron": neuron,
                              "layer": "" if target is None else getattr(target, "layer", "__output__"),
                              **{k: info.get(k) for k in ("status", "message", "seconds", "seconds_per_image",
                                                          "indices")}})
                if info["status"] == "ok":
                    heat[(method, neuron)] = self.store.load_cell(path)["heatmap"].astype(np.float32)
                if tick is not None and explain:
                    tick(1)
        return cells, heat

    def _reference_seconds(self, spec, x) -> float:
        from .cost import median_seconds

        _, fwd_bwd = reference_passes(spec)
        xb = x[: min(len(x), 8)]
        return median_seconds(lambda: fwd_bwd(xb), rounds=3, warmup=1) / len(xb)

    def _stored_info(self, path: Path) -> dict:
        z = self.store.load_cell(path)
        return {"status": "ok", "message": "", "seconds": float(z["seconds"]),
                "seconds_per_image": float(z["seconds_per_image"]),
                "indices": " ".join(map(str, z["indices"].tolist()))}

    def _explain_cell(self, spec, method, params, x, target, path) -> dict:
        import cnnvis_eval as cv

        t0 = time.perf_counter()
        try:
            # the first image warms up (traces) the method; the rest is timed warm
            first = cv.explain(method, spec, x[:1], target=target, progress=False, **params)
            t1 = time.perf_counter()
            parts = [first]
            if len(x) > 1:
                parts.append(cv.explain(method, spec, x[1:], target=target, progress=False, **params))
            t2 = time.perf_counter()
        except NOT_APPLICABLE as err:
            return {"status": "n/a", "message": str(err)}
        except TargetError as err:
            return {"status": "n/a", "message": str(err)}
        except Exception as err:  # recorded, the run goes on
            return {"status": "error", "message": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc()}
        heat = np.concatenate([p.heatmap for p in parts])
        indices = np.concatenate([p.indices for p in parts])
        scores = np.concatenate([p.scores for p in parts])
        warm = (t2 - t1) / max(1, len(x) - 1) if len(x) > 1 else (t1 - t0)
        self.store.save_cell(path, heatmap=heat.astype(np.float32), indices=indices, scores=scores,
                             seconds=np.float64(t2 - t0), seconds_per_image=np.float64(warm))
        return {"status": "ok", "message": "", "seconds": t2 - t0, "seconds_per_image": warm,
                "indices": " ".join(map(str, indices.tolist()))}

    def _score_stage(self, spec, images: ImageSet, x, heat: dict, cells: list):
        from ..metrics import get_metric

        cfg, store, model = self.config, self.store, spec.name
        path = store.rows_path("scores", model)
        if path.is_file():
            return
        frames = []
        syn = images.synthetic_index
        ids = np.array(images.ids)
        for (method, neuron), h in heat.items():
            if "complexity" in cfg.stages:
                for m in ("sparseness", "entropy"):
                    frames.append(_rows(method, model, ids, neuron, m, get_metric(m)().evaluate(h)))
            if neuron == "logit" and "localization" in cfg.stages and syn.any():
                masks = np.stack([images.masks[i] for i in np.flatnonzero(syn)])
                for m in ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
                          "energy_pointing_game"):
                    frames.append(_rows(method, model, ids[syn], neuron, m, get_metric(m)().evaluate(h[syn], masks)))
            if neuron == "logit" and "faithfulness" in cfg.stages:
                idx = store.load_cell(store.heatmap_path(model, method, neuron))["indices"]
                t = ClassTarget(idx.astype(np.int64))
                per_step = max(1, -(-int(np.prod(h.shape[1:])) // max(1, cfg.faithfulness_steps)))
                for m in ("deletion_auc", "insertion_auc"):
                    vals = get_metric(m)(pixels_per_step=per_step).evaluate(spec, x, h, target=t)
                    frames.append(_rows(method, model, ids, neuron, m, vals))
        if "agreement" in cfg.stages:
            for neuron in NEURONS:
                maps = {m: h for (m, n), h in heat.items() if n == neuron}
                if len(maps) < 2:
                    continue
                pairs = _spearman_abs_pairs(maps)
                names = list(maps)
                for m in names:
                    others = np.stack([pairs[m, o] for o in names if o != m])
                    frames.append(_rows(m, model, ids, neuron, "agreement", _nanmean(others, axis=0)))
                mat = pd.DataFrame([[float(_nanmean(pairs[a, b])) for b in names] for a in names], index=names,
                                   columns=names)
                mat.index.name = mat.columns.name = "spearman_abs"
                store.save_rows(store.rows_path("agreement", model, neuron),
                                mat.reset_index(names="method_a").melt(id_vars="method_a", var_name="method_b",
                                                                       value_name="value")
                                .assign(model=model, neuron=neuron))
        if "cost" in cfg.stages:
            ref_per_image = self._reference_seconds(spec, x)
            for c in cells:
                if c["status"] == "ok" and c["neuron"] == "logit":
                    frames.append(_rows(c["method"], model, ["*"], "logit", "cost_ratio",
                                        [c["seconds_per_image"] / ref_per_image]))
                    frames.append(_rows(c["method"], model, ["*"], "logit", "seconds_per_image",
                                        [c["seconds_per_image"]]))
            store.save_rows(store.rows_path("reference", model),
                            pd.DataFrame({"model": [model], "forward_backward_seconds_per_image": [ref_per_image]}))
        if frames:
            store.save_rows(path, pd.concat(frames, ignore_index=True))

    def _randomization_stage(self, spec, images: ImageSet, x, heat: dict, methods=None):
        from ..metrics import layer_groups, randomization_curve

        cfg, store, model = self.config, self.store, spec.name
        k = min(cfg.randomization_images, len(x))
        order = np.argsort(~images.synthetic_index, kind="stable")[:k]  # synthetic images first
        xs = x[order]
        groups = layer_groups(spec, "block")
        n = max(1, cfg.randomization_steps)
        # coarse cascading steps: the top 1/n of the groups, then 2/n, ..., then all
        cuts = sorted({max(1, int(round(len(groups) * (i + 1) / n))) for i in range(n)})
        coarse, start = [], 0
        for c in cuts:
            layers = [l for g in groups[start:c] for l in g.layers]
            coarse.append((f"top {c}/{len(groups)}", layers))
            start = c
        for method in cfg.methods if methods is None else methods:
            path = store.rows_path("randomization", model, method)
            if path.is_file() or (method, "logit") not in heat:
                continue
            cls = get_method(method)
            params = method_params(method, spec, cfg.method_params.get(method, {}))
            if getattr(cls, "positive_top", False) and "positive_top" not in params:
                # z+ presets: with the top relevance clipped to >= 0 a randomized model whose
                # logit turns negative gives an all-zero map, which scores "dissimilar" for
                # that reason alone; start from the signed logit instead (as the sanity suite
                # does; Sixt et al. 2020 find these maps insensitive to the upper layers)
                params["positive_top"] = False
            # the top classes the stored logit cell explained: the same target as "top" on the
            # trained model, and fixed indices let explainers that read the weights at call
            # time reuse their trained-model trace at every randomization step
            top = store.load_cell(store.heatmap_path(model, method, "logit"))["indices"][order]
            try:
                curve = randomization_curve(spec, xs, method, ClassTarget(top.astype(np.int64)), mode="cascading",
                                            granularity=coarse, similarity=("spearman_abs", "ssim"),
                                            seed=cfg.seed, reuse_explainer=not getattr(cls, "reads_weights_once", True),
                                            **params)
            except NOT_APPLICABLE:
                continue
            except Exception as err:  # recorded, the run goes on
                self.log(f"randomization {model}/{method} failed: {type(err).__name__}: {err}")
                continue
            curve["image"] = np.array(images.ids)[order][curve["image"].to_numpy()]
            store.save_rows(path, curve)

    # -- results -----------------------------------------------------------------
    def collect(self) -> pd.DataFrame:
        """Assemble the long results frame from the stored rows and write parquet + CSV."""
        frames = [self.store.load_rows("scores")]
        curves = self.store.load_rows("randomization")
        if not curves.empty:
            last = curves[curves["metric"] == "spearman_abs"]
            last = last[last["step"] == last.groupby(["method", "model"])["step"].transform("max")]
            frames.append(pd.DataFrame({"method": last["method"], "model": last["model"], "image": last["image"],
                                        "neuron": "logit", "metric": "randomization_similarity",
                                        "value": last["value"]}))
            curves.to_parquet(self.store.root / "curves.parquet", index=False)
        results = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(
            not f.empty for f in frames) else pd.DataFrame(columns=["method", "model", "image", "neuron", "metric", "value"])
        results.to_parquet(self.store.root / "results.parquet", index=False)
        results.to_csv(self.store.root / "results.csv", index=False)
        reference = self.store.load_rows("reference")
        if not reference.empty:
            reference.to_parquet(self.store.root / "reference.parquet", index=False)
        agreement = self.store.load_rows("agreement")
        if not agreement.empty:
            agreement.to_parquet(self.store.root / "agreement.parquet", index=False)
        return results


def resolve_workers(workers: int | None, n_models: int) -> int:
    """Worker processes for ``n_models``: ``workers``, or (None) one per CPU core, at most 4."""
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    return max(1, min(int(workers), n_models))


def _worker_init(threads: int):
    """Worker process start: share the cores between the workers."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    # every cell builds fresh explainers, whose functions trace once each: TensorFlow's
    # "N out of the last M calls triggered tf.function retracing" warning is expected here
    tf.get_logger().setLevel("ERROR")


_WORKER_MODEL: dict = {}  # the model a worker process last loaded: name -> (spec, images)


def _model_worker(config: RunConfig, root: str, name: str, methods, parts, progress) -> list[dict]:
    """One task of a worker process; keeps its last model loaded for the next task."""
    run = GridRun(config, root, progress=False, log=print, workers=1)
    run.release_models = False
    if name not in _WORKER_MODEL:
        for spec, _ in _WORKER_MODEL.values():
            _release(spec)
        _WORKER_MODEL.clear()
        try:
            _WORKER_MODEL[name] = run._load(name)
        except CnnVisError:
            return run.model_cells(name, progress.put, methods or None, parts)  # reports the error
    run._load = lambda n: _WORKER_MODEL[n]
    return run.model_cells(name, progress.put, methods or None, parts)


def _release(spec: ModelSpec):
    """Drop the explainers (and their compiled functions) cached for a finished model.

    ``cnnvis_eval.explain`` caches explainers per model; they refer to the model, so the
    weak cache would keep every model of the run, and its traced functions, alive."""
    import gc

    from .. import _explain

    _explain._CACHE.pop(spec, None)
    gc.collect()


def _spearman_abs_pairs(maps: dict) -> dict:
    """Per-image ``spearman_abs`` of every pair of methods' heatmaps, (N,) per pair.

    The same values as :class:`~cnnvis_eval.metrics.similarity.SpearmanAbs` (rank
    correlation of Adebayo-normalized absolute maps), with each method's ranks computed once.
    """
    from scipy.stats import rankdata

    from ..metrics.similarity import normalize_abs, rowwise_pearson

    ranks = {m: rankdata(normalize_abs(h).reshape(len(h), -1), axis=1) for m, h in maps.items()}
    names = list(maps)
    out = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            out[a, b] = out[b, a] = rowwise_pearson(ranks[a], ranks[b])
    return out


def _nanmean(values, axis=None):
    """Mean ignoring NaN (NaN when all are NaN), without the all-NaN warning."""
    values = np.asarray(values, dtype=np.float64)
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def versions() -> dict:
    import keras
    import tensorflow as tf

    import cnnvis_eval

    return {"cnnvis_eval": cnnvis_eval.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def run_grid(config: RunConfig, out: str | Path, progress: bool = True, workers: int | None = 1) -> pd.DataFrame:
    """Run (or resume) the grid of ``config`` into ``out``; returns the long results frame."""
    return GridRun(config, out, progress=progress, workers=workers).run()
