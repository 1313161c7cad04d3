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
:func:`results_html` renders it as the report's section.
Everything is seeded: the same arguments give the same numbers (wall times aside).
"""

from __future__ import annotations

import html
import time

import numpy as np
import pandas as pd

from ..data.artefacts import DATASETS, make_artefact_set, make_artefact_splits
from ..errors import InputError
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
METRICS = ("clean_accuracy", "moved_accuracy", "swapped_accuracy", "absent_accuracy", "cam_mass",
           "irrelevant_filters", "train_seconds")
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
             progress=None) -> pd.DataFrame:
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
        add(remedy, "before", before)
        add(remedy, "after", after, lam)
        say(f"{dataset} {remedy}: {_line(after)}")
    if upper_bound:
        t0 = time.perf_counter()
        free = make_artefact_set(dataset, n_train, correlation=0.0, size=size, seed=seed)
        model = train_classifier(free.x, free.y, seed=seed, epochs=train_epochs, **SHORTCUT_TRAINING)
        after = measure(model, splits) | {"train_seconds": time.perf_counter() - t0}
        add("upper_bound", "before", before)
        add("upper_bound", "after", after)
        say(f"{dataset} upper_bound: {_line(after)}")
    return pd.DataFrame(rows, columns=COLUMNS)


def _line(values: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in values.items())


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The long frame as one row per (dataset, remedy) — the shortcut model first, as remedy
    ``"(before)"`` — and one column per metric."""
    before = frame[frame["stage"] == "before"].drop_duplicates(["dataset", "metric"]).assign(remedy="(before)")
    after = frame[frame["stage"] == "after"]
    wide = pd.concat([before, after]).pivot_table(index=["dataset", "remedy"], columns="metric", values="value",
                                                  sort=False)
    return wide[[m for m in METRICS if m in wide.columns]]


def sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The lambda curves: one row per (dataset, remedy, lam) of the ``"sweep"`` rows, one
    column per metric (empty when no sweep ran)."""
    rows = frame[frame["stage"] == "sweep"]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index=["dataset", "remedy", "lam"], columns="metric", values="value", sort=False)


def results_html(frame: pd.DataFrame) -> str:
    """An HTML section (``<section id="remedies">``): the table of :func:`results_table` and
    the lambda curves of :func:`sweep_table`, if any."""
    table = results_table(frame).round(3).to_html(border=0, classes="remedies")
    curves = sweep_table(frame)
    if not curves.empty:
        table += ("\n<h3>Lambda curves (validation images with a swapped artefact)</h3>\n"
                  + curves.round(3).to_html(border=0, classes="remedy-sweep"))
    sets = ", ".join(html.escape(d) for d in frame["dataset"].unique())
    return ("<section id=\"remedies\"><h2>Irrelevant features: remedies</h2>\n"
            f"<p>Data sets: {sets}. Row <code>(before)</code>: the shortcut model; the others: a copy retrained "
            "with the remedy, and the upper bound (trained where the artefact tells nothing). Accuracies on the "
            "test split as in training (clean), with the artefact moved, swapped to another class, and absent; "
            "CAM mass: share of the class map on the artefact.</p>\n" + table + "\n</section>\n")


__all__ = ["COLUMNS", "DEFAULT_LAMS", "METRICS", "evaluate", "measure", "results_html", "results_table",
           "sweep_table"]

