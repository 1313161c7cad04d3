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
that do not apply (e.g. CAM without a GAP head) are recorded as ``n/a``; a failing cell is
recorded with its error message and the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
import traceback
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

GRID_PARAMS: dict[str, dict] = {
    # fast settings for the grid (the methods' own defaults are the papers')
    "lime": {"num_samples": 300},
    "rise": {"n_masks": 1000},
    "smoothgrad": {"n": 16},
    "vargrad": {"n": 16},
    "integrated_gradients": {"steps": 32},
}


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


def load_spec(name: str, config: RunConfig) -> ModelSpec:
    from ..models import BIG_MODELS, load_model

    if name.startswith("file:"):
        return load_model_file(name[5:])
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
        raise InputError(f"model file {str(path)!r} does not exist")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower() or "lambda" in str(err).lower():
            raise InputError(f"model file {str(path)!r} is not safe to load (it would run code): {err}") from err
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: {err}") from err
    except Exception as err:
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: {err}") from err
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

    def __init__(self, config: RunConfig, out: str | Path, progress: bool = True, log=print):
        self.config = config
        self.store = RunStore(out)
        self.progress = progress
        self.log = log or (lambda *a, **k: None)
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
        names = list(self.config.models) + [f"file:{p}" for p in self.config.model_files]
        n_cells = len(names) * len(self.config.methods) * len(NEURONS)
        bar = tqdm(total=n_cells, desc="cells", unit="cell", disable=not self.progress, smoothing=0.1)
        cell_rows = []
        for name in names:
            try:
                spec = load_spec(name, self.config)
                images = image_set(spec, self.config)
            except CnnVisError as err:
                self.log(f"model {name}: skipped ({err})")
                cell_rows.append({"model": name, "method": "*", "neuron": "*", "status": "error",
                                  "message": str(err), "seconds": np.nan, "seconds_per_image": np.nan,
                                  "layer": "", "indices": ""})
                bar.update(len(self.config.methods) * len(NEURONS))
                continue
            cell_rows += self.model_stage(spec, images, bar)
        bar.close()
        cells = pd.DataFrame(cell_rows)
        self.store.save_rows(self.store.root / "cells.parquet", cells)
        results = self.collect()
        return results

    def model_stage(self, spec: ModelSpec, images: ImageSet, bar) -> list[dict]:
        from ..metrics import get_metric

        cfg = self.config
        img_path = self.store.root / "images" / f"{spec.name}.npz"
        if not img_path.is_file():
            self.store.save_cell(img_path, images=images.images, ids=np.array(images.ids),
                                 masks=np.stack([m if m is not None else np.zeros(images.images.shape[1:3], bool)
                                                 for m in images.masks]),
                                 synthetic=images.synthetic_index)
        x = spec.preprocess(images.images)
        targets = neuron_targets(spec)
        ref_per_image = self._reference_seconds(spec, x)
        cells = []
        heat: dict = {}
        for method in cfg.methods:
            params = cfg.method_params.get(method, {})
            for neuron in NEURONS:
                target = targets.get(neuron)
                path = self.store.heatmap_path(spec.name, method, neuron)
                if target is None:
                    info = {"status": "n/a", "message": f"{spec.name} has no {neuron} intermediate layer"}
                elif path.is_file():
                    info = self._stored_info(path)
                else:
                    info = self._explain_cell(spec, method, params, x, target, path)
                cells.append({"model": spec.name, "method": method, "neuron": neuron,
                              "layer": "" if target is None else getattr(target, "layer", "__output__"),
                              **{k: info.get(k) for k in ("status", "message", "seconds", "seconds_per_image",
                                                          "indices")}})
                if info["status"] == "ok":
                    heat[(method, neuron)] = self.store.load_cell(path)["heatmap"].astype(np.float32)
                bar.update(1)
        self._score_stage(spec, images, x, heat, ref_per_image, cells)
        if "randomization" in cfg.stages:
            self._randomization_stage(spec, images, x, heat)
        return cells

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

    def _score_stage(self, spec, images: ImageSet, x, heat: dict, ref_per_image: float, cells: list):
        from ..metrics import agreement_matrix, get_metric
        from ..metrics.similarity import rowwise_spearman, normalize_abs

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
                for m in ("deletion_auc", "insertion_auc"):
                    vals = get_metric(m)().evaluate(spec, x, h, target=t)
                    frames.append(_rows(method, model, ids, neuron, m, vals))
        if "agreement" in cfg.stages:
            for neuron in NEURONS:
                maps = {m: h for (m, n), h in heat.items() if n == neuron}
                if len(maps) < 2:
                    continue
                norm = {m: normalize_abs(h).reshape(len(h), -1) for m, h in maps.items()}
                for m in maps:
                    others = [rowwise_spearman(norm[m], norm[o]) for o in maps if o != m]
                    frames.append(_rows(m, model, ids, neuron, "agreement", np.nanmean(others, axis=0)))
                mat = agreement_matrix(maps, metric="spearman_abs")
                store.save_rows(store.rows_path("agreement", model, neuron),
                                mat.reset_index(names="method_a").melt(id_vars="method_a", var_name="method_b",
                                                                       value_name="value")
                                .assign(model=model, neuron=neuron))
        if "cost" in cfg.stages:
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

    def _randomization_stage(self, spec, images: ImageSet, x, heat: dict):
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
        for method in cfg.methods:
            path = store.rows_path("randomization", model, method)
            if path.is_file() or (method, "logit") not in heat:
                continue
            cls = get_method(method)
            params = cfg.method_params.get(method, {})
            try:
                curve = randomization_curve(spec, xs, method, ClassTarget("top"), mode="cascading",
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


def versions() -> dict:
    import keras
    import tensorflow as tf

    import cnnvis_eval

    return {"cnnvis_eval": cnnvis_eval.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def run_grid(config: RunConfig, out: str | Path, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the grid of ``config`` into ``out``; returns the long results frame."""
    return GridRun(config, out, progress=progress).run()
