"""The study's Table 2, objectively: hits per method and architecture by a stated rule.

The study scored every (architecture, image, neuron) cell of seven methods 1 or 0 by eye and
summed the hits per method and architecture (:data:`STUDY_TABLE2`).  Here every cell is
scored by an objective rule on the run's long frame (:func:`cell_hits`):

- **logit neuron** (the top class), on the images with ground truth (single shapes,
  scenes, birds): a hit when the map **localizes the target object** — its maximum lies on
  the object of the explained class (``pointing_game`` > 0.5; ties count by their expected
  value) — and, on a scene of several objects, is **class-discriminative**: more positive
  relevance per pixel on that object than on the others (``class_contrast_mass`` > 0).
  Photos have no object mask and are not scored for the logit neuron.
- **intermediate neurons** (``mid``, ``high``), on every image: a hit when the map
  **concentrates on a compact region** — at least half of the positive mass of its top 5 %
  pixels lies in one 8-connected blob (``compactness`` >= 0.5, see
  :class:`cnnvis_eval.metrics.complexity.Compactness`).

Hits are counted per method x architecture over images x 3 neurons, as the study did, and
shown beside the study's numbers with the Spearman rank correlation between the two sets of
method totals (:func:`compare`).  The study's five ImageNet architectures are matched to
the run's models by family (``mini_vgg`` and ``vgg16`` are VGG16, ...); a model of another
family (a user's file) is left out of this table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

STUDY_METHODS: tuple[str, ...] = ("deconvnet", "saliency", "guided_backprop", "grad_cam", "guided_grad_cam",
                                  "deep_taylor", "lime")
STUDY_ARCHS: tuple[str, ...] = ("VGG16", "InceptionV3", "Xception", "ResNet50", "MobileNetV2")
#: The study's Table 2: hits per architecture (rows) in the order of :data:`STUDY_METHODS`.
STUDY_TABLE2 = pd.DataFrame(
    [[4, 6, 3, 12, 13, 5, 7],
     [0, 4, 7, 9, 11, 4, 8],
     [0, 3, 6, 9, 10, 6, 7],
     [0, 2, 6, 13, 12, 4, 7],
     [0, 2, 0, 7, 3, 6, 7]],
    index=pd.Index(STUDY_ARCHS, name="architecture"), columns=list(STUDY_METHODS)).T
STUDY_TABLE2.index.name = "method"

#: Model name -> the study's architecture (the minis by family, the zoo models by name).
ARCH_OF: dict[str, str] = {
    "mini_vgg": "VGG16", "vgg16": "VGG16",
    "mini_inception": "InceptionV3", "inception_v3": "InceptionV3",
    "mini_xception": "Xception", "xception": "Xception",
    "mini_resnet": "ResNet50", "resnet50": "ResNet50",
    "mini_mobilenet": "MobileNetV2", "mobilenet_v2": "MobileNetV2",
}
COMPACT = 0.5  # compactness threshold of an intermediate neuron's hit
RULE = ("logit neuron, on images with ground truth: the map's maximum lies on the object of the explained "
        "class (pointing game > 0.5) and, on a scene of several objects, the map puts more positive relevance "
        "per pixel on that object than on the others (class contrast mass > 0); photos have no mask and are "
        f"not scored. Intermediate neurons, on every image: at least {COMPACT:.0%} of the positive mass of the "
        "map's top 5% pixels lies in one connected region (compactness).")


def cell_hits(results: pd.DataFrame) -> pd.DataFrame:
    """One row per scored (method, model, image, neuron) of the study's methods: ``hit``
    (0 or 1) by the rule of the module docstring, and ``architecture``.

    ``results``: the run's long frame (``method, model, image, neuron, metric, value``).
    """
    df = results[results["method"].isin(STUDY_METHODS) & results["model"].isin(ARCH_OF)]
    keys = ["method", "model", "image", "neuron"]
    wide = df.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    out = []
    if "pointing_game" in wide.columns:
        logit = wide.xs("logit", level="neuron", drop_level=False)
        logit = logit[logit["pointing_game"].notna()]
        hit = logit["pointing_game"] > 0.5
        if "class_contrast_mass" in logit.columns:
            contrast = logit["class_contrast_mass"]
            hit &= contrast.isna() | (contrast > 0)
        out.append(hit)
    if "compactness" in wide.columns:
        inter = wide[wide.index.get_level_values("neuron") != "logit"]["compactness"].dropna()
        out.append(inter >= COMPACT)
    if not out:
        return pd.DataFrame(columns=keys + ["hit", "architecture"])
    hits = pd.concat(out).astype(int).rename("hit").reset_index()
    hits["architecture"] = hits["model"].map(ARCH_OF)
    return hits


def table2(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(hits, cells)``: method x architecture tables (study order, plus ``total``) of the
    hits by :func:`cell_hits` and of the cells scored (models of one architecture add up)."""
    hits = cell_hits(results)
    if hits.empty:
        return pd.DataFrame(), pd.DataFrame()
    archs = [a for a in STUDY_ARCHS if a in set(hits["architecture"])]
    table = hits.pivot_table(index="method", columns="architecture", values="hit", aggfunc="sum")
    cells = hits.pivot_table(index="method", columns="architecture", values="hit", aggfunc="count")
    order = [m for m in STUDY_METHODS if m in table.index]
    table, cells = table.reindex(index=order, columns=archs), cells.reindex(index=order, columns=archs)
    table["total"], cells["total"] = table.sum(axis=1), cells.sum(axis=1)
    for t in (table, cells):
        t.columns.name = None
        t.index.name = "method"
    return table.fillna(0).astype(int), cells.fillna(0).astype(int)


def compare(ours: pd.DataFrame) -> dict:
    """How the objective totals rank the methods against the study's totals.

    Returns ``rho`` (Spearman between the two totals over the methods both have; NaN
    with fewer than 3), ``methods``, the ranks (``study_rank``, ``our_rank``: 1 = most hits,
    ties share the average) and ``sentence``: where they disagree most.
    """
    study = STUDY_TABLE2.sum(axis=1)
    common = [m for m in STUDY_METHODS if m in ours.index]
    if len(common) < 3:
        return {"rho": float("nan"), "methods": common, "sentence": "fewer than three of the study's methods ran"}
    a = study[common].to_numpy(float)
    b = ours.loc[common, "total"].to_numpy(float)
    rho = float(spearmanr(a, b).statistic) if np.ptp(b) > 0 else float("nan")
    ra, rb = rankdata(-a), rankdata(-b)
    diff = rb - ra
    worst = np.argsort(-np.abs(diff), kind="stable")
    parts = []
    for i in worst[:2]:
        if abs(diff[i]) < 1:
            break
        parts.append(f"{common[i]} ranks {_ordinal(rb[i])} here and {_ordinal(ra[i])} in the study "
                     f"({int(b[i])} vs {int(a[i])} hits)")
    if parts:
        sentence = "They disagree most on " + "; ".join(parts) + "."
    else:
        sentence = "Both rank the methods alike."
    return {"rho": rho, "methods": common, "study_rank": dict(zip(common, ra)), "our_rank": dict(zip(common, rb)),
            "sentence": sentence}


def _ordinal(rank: float) -> str:
    if rank != int(rank):
        return f"{rank:g}th (tied)"
    r = int(rank)
    suffix = "th" if 10 <= r % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(r % 10, "th")
    return f"{r}{suffix}"


__all__ = ["ARCH_OF", "COMPACT", "RULE", "STUDY_ARCHS", "STUDY_METHODS", "STUDY_TABLE2", "cell_hits", "compare",
           "table2"]
