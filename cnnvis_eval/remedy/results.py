"""The results of the remedies (issue 17, section 4): one table per data set x remedy.

:func:`evaluate` generates a data set (:func:`~cnnvis_eval.data.artefacts.make_artefact_splits`,
the artefact agreeing with the label at ``correlation``), trains the *shortcut* model on it
(:func:`~cnnvis_eval.remedy.train.train_classifier`), retrains a copy with each remedy
(:func:`~cnnvis_eval.remedy.retrain.retrain`), trains the *upper bound* (the same
architecture on the same images with an uninformative artefact, ``correlation=0``) and
measures, before (the shortcut model) and after:

- ``clean_accuracy``, ``moved_accuracy``, ``swapped_accuracy``, ``absent_accuracy`` — on
  the test split as in training, with the artefact in the other corner, of another class, or
  removed;
- ``cam_mass`` — mean share of the CAM's positive mass on the artefact (test split);
- ``irrelevant_filters`` — number of channels of the last convolutional layer with at least
  30 % of their activation on the artefact (:func:`~cnnvis_eval.remedy.detect.filter_analysis`);
- ``train_seconds`` — wall time of the (re)training.

The result is a long frame (``dataset, remedy, stage, lam, metric, value``; ``stage`` is
``"before"``, ``"after"`` or, with ``sweep``, ``"sweep"``: the lambda curve);
:func:`results_html` renders it as the report's section; with ``cams`` it also keeps the CAM
of the true class before and after on a few test images, which :func:`cam_grid` draws.
Everything is seeded: the same arguments give the same numbers (wall times aside).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..api import explain
from ..data.artefacts import DATASETS, make_artefact_set, make_artefact_splits
from ..errors import InputError
from ..report.figures import before_after_grid
from ..report.remedies import METRICS, results_table, section, sweep_table
from ..targets import ClassTarget
from .detect import explanation_mass, filter_analysis
from .features import feature_maps
from .retrain import LOSS_REMEDIES, REMEDIES, lambda_sweep, retrain
from .train import train_classifier

#: lambda per loss remedy: picked by hand from runs at 64 px (symbols, x-rays; 10 epochs,
#: masks dilated by 8 px): PAS 10 -> swapped accuracy 0.47 on symbols (5 epochs), 30 -> 1.0; PASA (share
#: form) 10 keeps clean accuracy; RRR 0.1-10 never removed the shortcut (10 cost clean accuracy).
#: :func:`~cnnvis_eval.remedy.retrain.lambda_sweep` chooses one on validation data instead.
DEFAULT_LAMS = {"pas": 30.0, "pasa": 10.0, "pasa_contrast": 10.0, "rrr": 1.0}
#: mask dilation (pixels) of the activation penalties: the last conv layer's receptive field
#: overhangs the mask, so cells next to it see the artefact too (thesis 5.1.2); measured on
#: symbols, PAS at lambda 10 for 5 epochs: swapped accuracy 0.16 without dilation, 0.47 with 8 px
DEFAULT_DILATION = {"pas": 8, "pasa": 8, "pasa_contrast": 8}
COLUMNS = ["dataset", "remedy", "stage", "lam", "metric", "value"]
ALIASES = {"xray": "xrays", "sketch": "sketches", "symbol": "symbols"}
SHORTCUT_TRAINING = {"lr": 0.005, "widths": (16, 32, 64), "convs_per_block": 1}


def measure(model, tests: dict) -> dict[str, float]:
    """The metrics of :data:`METRICS` (but the time) of ``model`` on the test splits of
    :func:`make_artefact_splits` (keys ``test``, ``test_moved``, ``test_swapped``, ``test_absent``)."""
    t = tests["test"]
    out = {f"{k}_accuracy": float((feature_maps(model, tests[key].x, logits=True)[1].argmax(1) == tests[key].y).mean())
           for k, key in (("clean", "test"), ("moved", "test_moved"), ("swapped", "test_swapped"),
                          ("absent", "test_absent"))}
    out["cam_mass"] = explanation_mass(model, t.x, t.artefact_masks).score
    out["irrelevant_filters"] = float(len(filter_analysis(model, t.x, t.artefact_masks).irrelevant))
    return out


def evaluate(dataset: str = "xrays", remedies=("pas", "pasa_contrast", "rrr", "random_crop"), *, size: int = 64,
             n_train: int = 800, n_test: int = 160, correlation: float = 1.0, train_epochs: int = 10, epochs: int = 10,
             lr: float = 3e-3, lams: dict | None = None, sweep=None, seed: int = 0, upper_bound: bool = True,
             progress=None, cams: dict | None = None, cam_images: int = 3) -> pd.DataFrame:
    """Train the shortcut model, retrain it with each remedy, measure before and after.

    Parameters
    ----------
    dataset : {"sketches", "symbols", "xrays"} (also "xray", "sketch", "symbol")
    remedies : sequence of str
        From :data:`~cnnvis_eval.remedy.retrain.REMEDIES`.
    size, n_train, n_test : data (images of ``size`` px; every test variant has ``n_test``)
    correlation : float
        Of the training data (the shortcut).
    train_epochs : int
        Epochs of the shortcut model and the upper bound (trained from scratch).
    epochs, lr : fine-tuning settings of every remedy
    lams : dict, optional
        lambda per loss remedy (default :data:`DEFAULT_LAMS`).
    sweep : sequence of float, optional
        Choose each loss remedy's lambda among these instead
        (:func:`~cnnvis_eval.remedy.retrain.lambda_sweep`, on ``n_test`` validation images
        with the artefact swapped — images where the shortcut misleads; the test images stay
        unseen); the curve is added as rows of stage ``"sweep"``.
    seed : int
    upper_bound : bool
        Also train the upper bound (remedy ``"upper_bound"``, stage ``"after"``).
    progress : callable, optional
        Called with a line of text after each model.
    cams : dict, optional
        If given, filled with the CAM of the true class, before and after, on the first
        ``cam_images`` test images with the artefact swapped (for :func:`cam_grid`; the models
        themselves are not kept): ``dataset``, ``class_names``, ``images`` (n, H, W, C),
        ``masks`` bool (n, H, W), ``labels`` (n,), ``maps`` {``"before"``, each remedy,
        ``"upper_bound"``: float32 (n, H, W)}.
    cam_images : int

    Returns
    -------
    pandas.DataFrame
        Long: ``dataset, remedy, stage, lam, metric, value`` (``lam``: the loss remedies'
        lambda, NaN for the others).
    """
    dataset = ALIASES.get(dataset, dataset)
    if dataset not in DATASETS:
        raise InputError(f"unknown data set {dataset!r}; use one of {DATASETS}")
    remedies = list(remedies)
    bad = [r for r in remedies if r not in REMEDIES]
    if bad or not remedies:
        raise InputError(f"unknown remedies {bad}; use some of {REMEDIES}")
    lams = DEFAULT_LAMS | dict(lams or {})
    say = progress or (lambda line: None)
    splits = make_artefact_splits(dataset, n_train, n_test, n_test, correlation=correlation, size=size, seed=seed)
    train = splits["train"]
    rows = []

    def add(remedy, stage, values, lam=float("nan")):
        rows.extend({"dataset": dataset, "remedy": remedy, "stage": stage, "lam": float(lam), "metric": k,
                     "value": float(v)} for k, v in values.items())

    validation = None
    if sweep is not None:
        validation = make_artefact_set(dataset, n_test, split="validation", variant="swapped",
                                       correlation=correlation, size=size, seed=seed)

    t0 = time.perf_counter()
    short = train_classifier(train.x, train.y, seed=seed, epochs=train_epochs, **SHORTCUT_TRAINING)
    before = measure(short, splits) | {"train_seconds": time.perf_counter() - t0}
    say(f"{dataset} shortcut: {_line(before)}")
    keep = None
    if cams is not None:
        sw = splits["test_swapped"]
        keep = (sw.x[:cam_images], sw.y[:cam_images])
        cams.update(dataset=dataset, class_names=tuple(sw.class_names), images=keep[0],
                    masks=sw.artefact_masks[:cam_images], labels=keep[1], maps={"before": true_class_cams(short, *keep)})
    for remedy in remedies:
        t0 = time.perf_counter()
        settings = dict(epochs=epochs, lr=lr, seed=seed, mask_dilation=DEFAULT_DILATION.get(remedy, 0))
        lam = lams.get(remedy, 0.0) if remedy in LOSS_REMEDIES else float("nan")
        if validation is not None and remedy in LOSS_REMEDIES:
            found = lambda_sweep(short, train, validation, remedy=remedy, lams=sweep, **settings)
            model, lam = found.model, found.lam
            for _, row in found.curve.iterrows():
                add(remedy, "sweep", {"val_accuracy": row["val_accuracy"], "val_share": row["val_share"],
                                      "train_seconds": row["train_seconds"]}, row["lam"])
        else:
            model = retrain(short, train, remedy=remedy, lam=0.0 if np.isnan(lam) else lam, **settings)
        after = measure(model, splits) | {"train_seconds": time.perf_counter() - t0}
        if keep is not None:
            cams["maps"][remedy] = true_class_cams(model, *keep)
        add(remedy, "before", before)
        add(remedy, "after", after, lam)
        say(f"{dataset} {remedy}: {_line(after)}")
    if upper_bound:
        t0 = time.perf_counter()
        free = make_artefact_set(dataset, n_train, correlation=0.0, size=size, seed=seed)
        model = train_classifier(free.x, free.y, seed=seed, epochs=train_epochs, **SHORTCUT_TRAINING)
        after = measure(model, splits) | {"train_seconds": time.perf_counter() - t0}
        if keep is not None:
            cams["maps"]["upper_bound"] = true_class_cams(model, *keep)
        add("upper_bound", "before", before)
        add("upper_bound", "after", after)
        say(f"{dataset} upper_bound: {_line(after)}")
    return pd.DataFrame(rows, columns=COLUMNS)


def _line(values: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in values.items())


def results_html(frame: pd.DataFrame, grids=()) -> str:
    """An HTML section (``<section id="remedies">``): the table of :func:`results_table`,
    the lambda curves of :func:`sweep_table`, if any, and the PNG files ``grids`` (e.g. of
    :func:`cam_grid`) embedded (:func:`cnnvis_eval.report.remedies.section`)."""
    return section(frame, grids)


def true_class_cams(model, x, y) -> np.ndarray:
    """CAM of each image's true class: float32 (N, H, W) for images ``x`` (N, H, W, C) and
    labels ``y`` (N,)."""
    return explain("cam", model, x, target=ClassTarget([int(v) for v in y]), progress=False).heatmap


def cam_grid(path, cams: dict) -> Path:
    """Draw the maps :func:`evaluate` kept in ``cams`` as a PNG at ``path``: one row per image,
    columns the image, the shortcut model (``before``), then each remedied model, the artefact
    outlined (:func:`cnnvis_eval.report.figures.before_after_grid`)."""
    names = cams["class_names"]
    return before_after_grid(path, cams["images"], cams["masks"], cams["maps"],
                             row_labels=[f"true: {names[int(v)]}" for v in cams["labels"]],
                             title=f"{cams['dataset']}: CAM of the true class, artefact swapped")


__all__ = ["COLUMNS", "DEFAULT_LAMS", "METRICS", "cam_grid", "evaluate", "measure", "results_html", "results_table",
           "sweep_table", "true_class_cams"]

