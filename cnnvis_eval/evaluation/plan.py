"""What a run will cost before it runs: ``cnnvis-eval plan`` (:func:`plan`).

The cost table ``costs.csv`` (package data, built by ``python -m suites.benchmarks.build_costs``
from the committed benchmark baseline) gives per architecture and method the seconds per
image of a warm explanation at the grid's parameters on the measuring machine (2 shared
cores, one worker), labelled ``measured`` (the baseline), ``estimated`` (what the baseline
lacks: model inputs x a measured forward pass for the perturbation methods, the minis'
median ratio x a measured forward+backward pass for the others) or ``n/a`` (the method
does not apply: no cost), and per architecture a measured ``forward`` and
``forward_backward`` pass.

The model of one run (per model, with ``n`` images and method cost ``s`` seconds per image):

- explain: ``3 neurons x n x s`` per method;
- randomization stage: ``min(randomization_images, n) x (randomization_steps + 1) x s``
  (the trained model's map and one per cascading step);
- faithfulness stage: ``2 curves x n x (faithfulness_steps + 1)`` forward passes per method,
  and once per model the random orders the gains are measured against (``2 x 3`` curves);
- cost stage: ``4 x min(n, 8)`` forward+backward passes per model (warm-up + 3 rounds);
- sample-count parameters scale ``s`` linearly (LIME and KernelSHAP ``num_samples``, RISE ``n_masks``,
  SmoothGrad/VarGrad ``n``, Integrated Gradients ``steps``, occlusion's window count); a big
  architecture at another input size scales with the area.  A row scaled away from its
  measured parameters is labelled ``estimated``.
- not modelled: loading and tracing a model once per worker, the complexity, agreement and
  localization scores (NumPy on the heatmaps, seconds for a whole run).

A user's model file (``--model-file``) has no row in the table: :func:`probe_costs` loads it
and measures its compiled forward and forward+backward passes on this machine (a few
seconds), and estimates its methods as ``build_costs`` estimates what the baseline lacks:
perturbation methods as model inputs per image x the forward pass, the others as their
median ratio to forward+backward on the five minis (from the table) x the measured pass;
methods that do not apply to it are ``n/a``.  Its rows are labelled ``estimated`` and are in
this machine's seconds (``--speed`` relates the table's machine to the workers).

Wall time on ``W`` workers of relative ``speed``: the run's tasks (per model, one per group of
methods and image shard in the explain phase; then its scores and one randomization task per
group, or per method when the groups are too few for the workers) placed longest first on the least loaded worker, phase after phase, divided by
``speed``.  The image shards are those of ``run --executor ray``
(:func:`~cnnvis_eval.evaluation.remote.image_shards`: automatic, or ``images_per_task``,
rounded up to whole explain batches of the group's methods); a shard costs its share of the
group's images.  The floor (no number of workers beats it) is the longest task of each phase
as many workers get them: the smallest shards (one image, rounded up to the group's
:func:`~cnnvis_eval.evaluation.remote.shard_unit`, or ``images_per_task``) per explain task,
one method per randomization task.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..metrics.faithfulness.normalized import RANDOM_ORDERS
from ..models import ARCHS, BIG_MODELS
from .config import NEURONS, RunConfig, method_params

COSTS = Path(__file__).with_name("costs.csv")
MEASURING_CORES = 2  # cores of the machine the cost table was measured on (one worker)
SAMPLES = {"lime": "num_samples", "kernel_shap": "num_samples", "rise": "n_masks", "smoothgrad": "n", "vargrad": "n",
           "integrated_gradients": "steps"}


def load_costs() -> pd.DataFrame:
    """The cost table: columns ``arch, method, seconds_per_image, source, basis, params``."""
    with resources.files(__package__).joinpath("costs.csv").open("r", encoding="utf-8") as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""])


def model_inputs(method: str, side: int, params: dict, channels: int = 0) -> int:
    """Model inputs per image of a perturbation method at ``params`` on ``side`` px inputs
    (the unperturbed image included); Score-CAM: ``channels`` + 1."""
    if method in ("lime", "rise"):
        return int(params[SAMPLES[method]]) + 1
    if method == "kernel_shap":  # the coalitions, the empty one and the image
        return int(params[SAMPLES[method]]) + 2
    if method == "occlusion":
        from ..methods.perturbation.occlusion import window_positions

        n = len(window_positions(side, int(params["window"]), int(params.get("stride", params["window"]))))
        return n * n + 1
    if method == "score_cam":
        return int(channels) + 1
    if method in ("sobol", "hsic"):  # unset parameters: the method's own defaults (Xplique's)
        from ..methods import get_method

        sig = inspect.signature(get_method(method)).parameters
        n = int(params.get("nb_design", sig["nb_design"].default))
        grid = int(params.get("grid_size", sig["grid_size"].default))
        return (n * (grid**2 + 2) if method == "sobol" else n) + 1
    raise InputError(f"{method} is not a perturbation method")


def _scale(method: str, side: int, params: dict) -> float:
    """How ``method``'s cost grows with its parameters (a relative count)."""
    if method in ("occlusion", "sobol", "hsic"):
        return float(model_inputs(method, side, params))
    if method in SAMPLES:
        return float(params.get(SAMPLES[method], 1))
    return 1.0


def arch_of(source, config: RunConfig) -> tuple[str, str, int, float]:
    """``(display name, cost table arch, input side, area factor)`` of one of the run's models."""
    name = str(source)
    if name in BIG_MODELS:
        native = ARCHS[name].default_size
        side = int(config.input_size or native)
        return name, f"{name}@{native}", side, (side / native) ** 2
    if name.startswith("mini_"):
        return name, name, 64, 1.0
    if hasattr(source, "path"):  # a ModelFile: rows from probe_costs
        return name, f"file:{name}", 0, 1.0
    raise InputError(f"cnnvis-eval plan has no costs for model {name!r}")


PERTURBATION = ("lime", "kernel_shap", "rise", "occlusion", "score_cam", "sobol", "hsic")
PROBE_BATCH = 4  # images per probed pass


def probe_costs(source, config: RunConfig, table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Cost rows (the table's columns, arch ``file:<name>``) of a model file, and its input
    side: its forward and forward+backward passes measured now (compiled, batch
    :data:`PROBE_BATCH`, median of 3), its methods estimated from them (see the module
    docstring).  InputError when the file cannot be loaded."""
    from ..errors import UnsupportedArchitectureError, UnsupportedLayerError
    from ..methods import get_method
    from .cost import median_seconds, reference_passes
    from .inputs import load_spec

    spec = load_spec(source, config)
    arch = f"file:{source}"
    x = np.random.default_rng(0).uniform(0, 1, (PROBE_BATCH,) + tuple(spec.input_shape)).astype(np.float32)
    fwd, fb = reference_passes(spec)
    f_s, fb_s = (median_seconds(lambda f=f: f(x), rounds=3) / PROBE_BATCH for f in (fwd, fb))
    minis = table[table["arch"].str.startswith("mini_") & (table["source"] == "measured")]
    fb_mini = minis[minis["method"] == "forward_backward"].set_index("arch")["seconds_per_image"]
    ratio = (minis.assign(r=minis["seconds_per_image"] / minis["arch"].map(fb_mini))
             .groupby("method")["r"].median())
    side = int(spec.input_shape[0])
    rows = [{"arch": arch, "method": "forward", "seconds_per_image": f_s, "source": "measured"},
            {"arch": arch, "method": "forward_backward", "seconds_per_image": fb_s, "source": "measured"}]
    for method in config.methods:
        params = method_params(method, spec, config.method_params.get(method, {}))
        try:
            get_method(method)(spec, **params)
        except (UnsupportedArchitectureError, UnsupportedLayerError):
            rows.append({"arch": arch, "method": method, "seconds_per_image": 0.0, "source": "n/a"})
            continue
        if method in PERTURBATION:
            channels = int(spec.model.get_layer(spec.last_conv_layer).output.shape[-1]) if method == "score_cam" else 0
            s = model_inputs(method, side, params, channels) * f_s
        else:
            s = float(ratio.get(method, np.nan)) * fb_s
            if not np.isfinite(s):
                raise InputError(f"the cost table has no ratio of {method} on the minis to estimate it on {source}")
        rows.append({"arch": arch, "method": method, "seconds_per_image": s, "source": "estimated"})
    return pd.DataFrame(rows).assign(basis="probed on this machine", params="{}"), side


@dataclass
class Plan:
    """The cost of one run configuration.

    Attributes
    ----------
    rows : DataFrame
        One row per (model, method): ``cells``, ``images``, ``explain_s``, ``randomization_s``,
        ``faithfulness_s``, ``seconds`` (their sum) and the cost's ``source``.
    reference_s : dict
        Seconds of the cost stage's reference passes per model.
    tasks : list of list of float
        Task seconds per phase (explain, scoring) as the runner splits them on ``workers``.
    workers, speed : the workers the wall time is for, and their speed relative to the
        measuring machine.
    floor_tasks : list of list of float
        The same with the image shards of unlimited workers (see :attr:`floor_seconds`).
    probed : dict
        Model file -> its measured ``(forward, forward_backward)`` seconds per image
        (:func:`probe_costs`).
    note : str or None
        That ``images_per_task`` was rounded up to whole explain batches for some groups
        (:func:`~cnnvis_eval.evaluation.remote.rounded_note`), printed by :meth:`text`.
    """

    rows: pd.DataFrame
    reference_s: dict
    tasks: list
    workers: int
    speed: float
    floor_tasks: list | None = None
    probed: dict | None = None
    note: str | None = None

    @property
    def cells(self) -> int:
        return int(self.rows["cells"].sum())

    @property
    def seconds(self) -> float:
        """Worker-seconds at the measuring machine's speed."""
        return float(self.rows["seconds"].sum() + sum(self.reference_s.values()))

    @property
    def cpu_hours(self) -> float:
        """CPU-hours at the measuring machine's speed (a worker used its 2 cores)."""
        return self.seconds * MEASURING_CORES / 3600

    @property
    def wall_seconds(self) -> float:
        return sum(makespan(phase, self.workers) for phase in self.tasks) / self.speed

    @property
    def floor_seconds(self) -> float:
        """The wall time no number of workers beats: the longest task of each phase, its
        explain tasks split into the image shards of unlimited workers."""
        return sum(max(phase, default=0.0) for phase in self.floor_tasks or self.tasks) / self.speed

    def text(self) -> str:
        r = self.rows
        by_model = r.groupby("model", sort=False)["seconds"].sum()
        by_method = r.groupby("method")["seconds"].sum().sort_values(ascending=False)
        share = r.groupby("source")["seconds"].sum() / max(r["seconds"].sum(), 1e-12)
        lines = [f"{r['model'].nunique()} models x {r['method'].nunique()} methods x {int(r['images'].max())} "
                 f"images x {len(NEURONS)} neurons: {self.cells} cells",
                 "seconds per model: " + ", ".join(f"{m} {_dur(s)}" for m, s in by_model.items()),
                 "costliest methods: " + ", ".join(f"{m} {_dur(s)}" for m, s in by_method.head(6).items()),
                 "cost source: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()),
                 f"compute: {self.seconds / 3600:.2f} worker-hours = {self.cpu_hours:.2f} CPU-hours "
                 f"(measuring machine: {MEASURING_CORES} cores per worker)",
                 f"wall time on {self.workers} worker{'s' * (self.workers > 1)} of speed {self.speed:g}: "
                 f"{_dur(self.wall_seconds)} (at least {_dur(self.floor_seconds)} on any number of workers: "
                 "the longest task of each phase, explain tasks split by images as --executor ray does)"]
        for name, (f, fb) in (self.probed or {}).items():
            lines.insert(3, f"{name}: costs estimated from its passes probed on this machine (forward "
                            f"{f * 1e3:.3g} ms, forward+backward {fb * 1e3:.3g} ms per image)")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def plan(config: RunConfig, workers: int = 1, speed: float = 1.0, costs: pd.DataFrame | None = None,
         images_per_task: int | None = None) -> Plan:
    """The :class:`Plan` of ``config`` on ``workers`` workers of relative ``speed``
    (``images_per_task``: as ``run --executor ray --images-per-task``; None: automatic)."""
    from .remote import explain_plan, randomization_units, rounded_note

    if int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if not speed > 0:
        raise InputError(f"speed must be > 0, got {speed}")
    table = load_costs() if costs is None else costs
    files = [s for s in config.sources() if hasattr(s, "path")]
    probed = {str(s): probe_costs(s, config, table) for s in files}
    if probed:
        table = pd.concat([table] + [rows for rows, _ in probed.values()], ignore_index=True)
    n = config.n_images
    k_rand = min(config.randomization_images, n)
    methods = list(config.methods)
    groups = [tuple(methods[i::max(1, min(len(methods), 4))]) for i in range(max(1, min(len(methods), 4)))]
    rows, reference, explain_s, score_tasks, rand = [], {}, [], [], []
    for source in config.sources():
        name, arch, side, area = arch_of(source, config)
        if str(source) in probed:
            side = probed[str(source)][1]
        mine = table[table["arch"] == arch].set_index("method")
        if mine.empty:
            raise InputError(f"the cost table has no rows for {arch}")
        fwd, fb = (float(mine.loc[m, "seconds_per_image"]) * area for m in ("forward", "forward_backward"))
        per = {}
        for method in methods:
            if method not in mine.index:
                raise InputError(f"the cost table has no cost of {method} on {arch}")
            row = mine.loc[method]
            if row["source"] == "n/a":
                per[method] = dict(model=name, method=method, cells=0, images=n, explain_s=0.0,
                                   randomization_s=0.0, faithfulness_s=0.0, source="n/a")
                continue
            params = method_params(method, _Sized(side), config.method_params.get(method, {}))
            measured_at = json.loads(row["params"] or "{}")
            factor = _scale(method, side, params) / _scale(method, ARCHS[name].default_size if name in ARCHS
                                                          else side, measured_at) if measured_at else 1.0
            s = float(row["seconds_per_image"]) * area * factor
            source_label = row["source"] if np.isclose(factor * area, 1.0) else "estimated"
            per[method] = dict(model=name, method=method, cells=len(NEURONS), images=n,
                               explain_s=len(NEURONS) * n * s,
                               randomization_s=k_rand * (config.randomization_steps + 1) * s
                               if "randomization" in config.stages else 0.0,
                               faithfulness_s=2 * n * (config.faithfulness_steps + 1) * fwd
                               if "faithfulness" in config.stages else 0.0,
                               source=source_label)
        rows += per.values()
        reference[name] = 4 * min(n, 8) * fb if "cost" in config.stages else 0.0
        explain_s.append({m: p["explain_s"] for m, p in per.items()})
        random_orders_s = (2 * RANDOM_ORDERS * n * (config.faithfulness_steps + 1) * fwd
                           if "faithfulness" in config.stages and per else 0.0)
        score_tasks.append(reference[name] + random_orders_s + sum(p["faithfulness_s"] for p in per.values()))
        rand.append({m: p["randomization_s"] for m, p in per.items()})
    frame = pd.DataFrame(rows)
    frame["seconds"] = frame[["explain_s", "randomization_s", "faithfulness_s"]].sum(axis=1)

    def split(per_task):  # the explain tasks as the Ray run makes them: a group's seconds by image shard
        return [sum(e[m] for m in g) * (1.0 if h is None else (h[1] - h[0]) / n)
                for e in explain_s for g, hs in tasks(per_task) for h in hs]

    def tasks(per_task):  # one model's (methods, image shards)
        return explain_plan(groups, n, per_task, len(groups) * len(explain_s), int(workers), config.method_params)

    def scoring(units):  # per model its score task, then one randomization task per unit
        return score_tasks + [sum(r[m] for m in u) for r in rand for u in units]

    note = rounded_note(images_per_task, [g for g, _ in tasks(images_per_task)], config.method_params)
    explain, floor = split(images_per_task), split(images_per_task or 1)
    models = len(rand)
    passes = {name: tuple(rows.set_index("method").loc[["forward", "forward_backward"], "seconds_per_image"])
              for name, (rows, _) in probed.items()}
    return Plan(frame, reference, [explain, scoring(randomization_units(groups, models, int(workers)))],
                int(workers), float(speed), [floor, scoring(randomization_units(groups, models, 10**9))], passes,
                note)


def makespan(tasks, workers: int) -> float:
    """Seconds until ``tasks`` (seconds each) finish on ``workers`` workers, each task placed,
    longest first, on the least loaded worker."""
    load = [0.0] * max(1, int(workers))
    for t in sorted(tasks, reverse=True):
        load[int(np.argmin(load))] += t
    return max(load)


def study_config() -> RunConfig:
    """The study's full grid: the five ImageNet architectures at native size, the ten
    default photos, three neurons, every method, LIME with 1,000 samples."""
    from ..data.photos import DEFAULT_PHOTOS
    from .config import GRID_PARAMS

    params = {k: dict(v) for k, v in GRID_PARAMS.items()}
    params["lime"] = {"num_samples": 1000}
    return RunConfig(models=tuple(BIG_MODELS), photos=tuple(DEFAULT_PHOTOS), synthetic=0, scenes=0, birds=0,
                     method_params=params)


class _Sized:
    """The one thing :func:`method_params` reads of a model: its input shape."""

    def __init__(self, side: int):
        self.input_shape = (side, side, 3)


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["COSTS", "MEASURING_CORES", "Plan", "load_costs", "makespan", "model_inputs", "plan", "study_config"]
