"""Detecting irrelevant features: which filters and which explanations sit on the artefact.

Given images and masks of their irrelevant region (:mod:`cnnvis_eval.remedy.masks`):

- :func:`filter_analysis` — per channel of the last convolutional layer (the map a CAM head
  pools), the share of its activation that lies inside the irrelevant region over the data
  set, the channels ranked by it, the *irrelevant filters* (share >= ``threshold``) and their
  CAM weight per class, and per class the share of its positive score contributions coming
  from those filters (the thesis' questions 7.1: do such filters exist, does CAM point at them);
- :func:`explanation_mass` — per image, the share of an explanation's positive mass on the
  irrelevant region (CAM by default, any registered method), and its mean: the model-level
  score.

Formulas, with ``A`` the (rectified) activations (N, h, w, K) and ``m`` the masks downsampled
to the feature map as the share of each cell they cover (:func:`~.features.downsample_masks`)::

    share_k  = sum_{n,i,j} A[n,i,j,k] m[n,i,j] / sum_{n,i,j} A[n,i,j,k]
    chance   = mean_{n,i,j} m[n,i,j]      (the share of a channel active everywhere alike)
    mass_n   = sum(H+_n * M_n) / sum(H+_n)   (relevance mass accuracy, Arras et al. 2022)

The model is only read, never changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..api import explain
from ..errors import InputError
from ..metrics.localization import RelevanceMassAccuracy
from ..models.spec import as_spec
from .features import (
    analysis_layer,
    check_inputs,
    class_weights,
    downsample_masks,
    feature_maps,
)
from .masks import as_masks


@dataclass
class FilterReport:
    """Per-channel analysis of one feature map (see :func:`filter_analysis`).

    Attributes
    ----------
    layer : str
    shares : float64 (K,)
        Share of each channel's activation inside the irrelevant region (NaN: never active).
    mean_activation : float64 (K,)
        Mean activation per cell (the GAP value averaged over the images).
    chance : float
        Mean downsampled mask value: the share of a uniformly active channel.
    ranking : int64 (K,)
        Channels by decreasing share (never-active channels last).
    irrelevant : int64 (M,)
        Channels with share >= ``threshold``, in ranking order.
    threshold : float
    weights : float64 (K, classes) or None
        CAM weights (None when the layer is not the one a GAP + linear head pools).
    class_names : tuple of str
    irrelevant_contribution : float64 (classes,) or None
        Per class ``c``, over the images predicted as ``c``: the share of the positive channel
        terms of the class's lead over the others, ``mean(A_k) * (W[k, c] - mean_{c' != c}
        W[k, c'])``, that comes from the irrelevant channels (NaN for a class nothing is
        predicted as).  Channels that raise every class alike cancel out.  Near 1: the
        decision rests on the irrelevant filters.
    """

    layer: str
    shares: np.ndarray
    mean_activation: np.ndarray
    chance: float
    ranking: np.ndarray
    irrelevant: np.ndarray
    threshold: float
    weights: np.ndarray | None
    class_names: tuple[str, ...]
    irrelevant_contribution: np.ndarray | None

    def top(self, k: int) -> np.ndarray:
        """The ``k`` channels with the largest share (int64 (k,))."""
        return self.ranking[:k]

    def frame(self) -> pd.DataFrame:
        """One row per channel in ranking order: channel, rank, share, enrichment (share /
        chance), mean activation, irrelevant, and one ``weight[<class>]`` column per class."""
        k = len(self.shares)
        df = pd.DataFrame({
            "channel": np.arange(k),
            "share": self.shares,
            "enrichment": self.shares / self.chance if self.chance > 0 else np.nan,
            "mean_activation": self.mean_activation,
            "irrelevant": np.isin(np.arange(k), self.irrelevant),
        })
        df["rank"] = np.argsort(self.ranking)
        if self.weights is not None:
            for c, name in enumerate(self.class_names):
                df[f"weight[{name}]"] = self.weights[:, c]
        return df.iloc[self.ranking].reset_index(drop=True)


def filter_analysis(model, x, masks, *, layer: str | None = None, threshold: float = 0.3,
                    class_names=None, batch_size: int = 64) -> FilterReport:
    """Rank the channels of ``layer`` by how much of their activation lies on the masks.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
        Model inputs (preprocessed).
    masks : bool array (N, H, W), or (H, W) for all images
        Irrelevant regions (empty masks allowed: those images count as outside).
    layer : str, optional
        Default: the map the CAM head pools, else the last convolutional feature map.
    threshold : float in (0, 1]
        A channel is irrelevant when at least this share of its activation is inside.  The
        default 0.3 is calibrated on the tiny shortcut models of the tests: a channel whose
        activation the artefact causes almost entirely (removing the artefact removes
        >= 90 % of it) puts only 0.4-0.55 of it inside the mask, because its receptive field
        overhangs the mask; there the channels the artefact does not drive stayed below 0.25.
    class_names : sequence of str, optional
        Default: the model spec's, else "0", "1", ...
    batch_size : int

    Returns
    -------
    FilterReport

    Raises
    ------
    InputError
        Masks of the wrong shape; a layer that is not a 4-D feature map; a bad threshold.
    """
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be a share in (0, 1], got {threshold!r}")
    spec = as_spec(model)
    names = class_names if class_names is not None else spec.class_names
    names = tuple(str(c) for c in names) if names else tuple(str(i) for i in range(spec.num_classes))
    if len(names) != spec.num_classes:
        raise InputError(f"class_names has {len(names)} names; the model has {spec.num_classes} classes")
    x = check_inputs(spec, x)
    m = as_masks(masks, len(x), x.shape[1:3])
    name = analysis_layer(spec, layer)
    a, logits = feature_maps(spec, x, name, batch_size, logits=True)
    a = np.maximum(a.astype(np.float64), 0.0)
    low = downsample_masks(m, a.shape[1:3]).astype(np.float64)
    total = a.sum((0, 1, 2))
    inside = np.einsum("nhwk,nhw->k", a, low)
    alive = total > 1e-12 * max(total.max(), 1e-30)
    shares = np.where(alive, inside / np.where(alive, total, 1.0), np.nan)
    ranking = np.argsort(np.where(alive, -shares, np.inf), kind="stable").astype(np.int64)
    irrelevant = ranking[np.nan_to_num(shares[ranking], nan=-1.0) >= threshold]
    mean_act = a.mean((0, 1, 2))
    weights = class_weights(spec, name)
    contribution = None
    if weights is not None:
        pooled = a.mean((1, 2))  # (N, K): what the head's global average pooling sees
        pred = logits.argmax(1)
        contribution = np.full(weights.shape[1], np.nan)
        k = weights.shape[1]
        for c in np.unique(pred):
            margin = weights[:, c] - (weights.sum(1) - weights[:, c]) / max(k - 1, 1)  # (K,)
            pos = np.maximum(pooled[pred == c].mean(0) * margin, 0.0)
            if pos.sum() > 0:
                contribution[c] = pos[irrelevant].sum() / pos.sum()
    return FilterReport(name, shares, mean_act, float(low.mean()), ranking, irrelevant, float(threshold),
                        weights, names, contribution)


@dataclass
class MassReport:
    """Explanation mass on the irrelevant region (see :func:`explanation_mass`).

    Attributes
    ----------
    method : str
    per_image : float64 (N,)
        Share of each heatmap's positive mass inside the mask (NaN where the mask is empty).
    score : float
        The model-level score: the mean over images with a non-empty mask.
    chance : float
        Mean mask area share over those images: what a uniform heatmap scores.
    """

    method: str
    per_image: np.ndarray
    score: float
    chance: float


def explanation_mass(model, x, masks, *, method: str = "cam", target=None,
                     batch_size: int | None = None, **params) -> MassReport:
    """Share of an explanation's positive mass that falls on the irrelevant region.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array (N, H, W, C)
    masks : bool array (N, H, W), or (H, W) for all images
    method : str
        Any registered method (default ``"cam"``).
    target : optional
        As :func:`cnnvis_eval.explain` takes it (default: each image's top class; pass the
        labels as ``ClassTarget(list(y))`` to explain the true class).
    **params
        The method's parameters.

    Returns
    -------
    MassReport
    """
    spec = as_spec(model)
    x = check_inputs(spec, x)
    m = as_masks(masks, len(x), x.shape[1:3])
    heat = explain(method, spec, x, target=target, batch_size=batch_size, progress=False,
                   **params).heatmap
    per_image = RelevanceMassAccuracy().evaluate(heatmap=heat, mask=m)
    some = m.reshape(len(m), -1).any(1)
    score = float(np.nanmean(per_image)) if some.any() else float("nan")
    chance = float(m[some].mean()) if some.any() else float("nan")
    return MassReport(method, per_image, score, chance)


__all__ = ["FilterReport", "MassReport", "explanation_mass", "filter_analysis"]
