"""Similarity of two batches of heatmaps, image by image.

Each metric compares ``a[i]`` with ``b[i]`` and returns one value per image, shape (N,).
Inputs are heatmaps (N, H, W) — or Explanations, whose heatmaps are used — and, for the
metrics that follow Adebayo et al. (2018), attributions (N, H, W, C) are accepted too and
reduced over channels as they do.

(One module, a little over 450 lines: the seven similarity metrics share the normalization,
the row-wise correlations and the per-map ``embed``/``compare`` split that
:func:`pairwise_similarity` and :func:`agreement_matrix` use; split apart they would each
import most of the rest.)

Normalization of Adebayo et al. ("Sanity checks for saliency maps", their released code,
after ``VisualizeImageGrayscale`` of PAIR's saliency library):

- **absolute** (:func:`normalize_abs`): ``m = sum_c |a|`` (a map is taken as is, in
  absolute value), then ``(m - min m) / (p99(m) - min m)`` clipped to [0, 1];
- **signed** (:func:`normalize_signed`): ``m = sum_c a``, divided by ``max |m|``
  (range [-1, 1]; rank statistics do not depend on the scale).

(The display scaling of :func:`cnnvis_eval.viz.scale_by_percentile` is a different
function: ``|h| / p99(|h|)`` without the shift by the minimum.)

Degenerate maps: correlation-type metrics are undefined for a constant map.  By the
convention used here, two constant maps are *identical* (similarity 1) and a constant map
against a non-constant one is *uncorrelated* (0), so that a constant explainer scores
similarity 1 under randomization instead of NaN.

Also :func:`pairwise_similarity` and :func:`agreement_matrix` compare several methods'
heatmaps (the pairwise agreement of a set of methods).
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ..errors import InputError
from .base import Metric, as_array, check_maps, make_metric, register_metric

# ---------------------------------------------------------------------- normalization


def _to_2d(maps: np.ndarray, signed: bool) -> np.ndarray:
    if maps.ndim == 4:
        return maps.sum(-1) if signed else np.abs(maps).sum(-1)
    return maps if signed else np.abs(maps)


def normalize_abs(maps, percentile: float = 99.0) -> np.ndarray:
    """Adebayo et al.'s absolute normalization.

    Parameters
    ----------
    maps : array (N, H, W) or attributions (N, H, W, C)
    percentile : float
        Upper clipping percentile (99).

    Returns
    -------
    ndarray float64 (N, H, W) in [0, 1]: ``clip((m - min) / (p99 - min), 0, 1)`` with
    ``m = sum_c |a|``.  A map whose 99th percentile equals its minimum becomes
    ``m > min`` (0/1).
    """
    m = _to_2d(check_maps(as_array(maps, "maps"), "maps", channels=True), signed=False)
    flat = m.reshape(len(m), -1)
    lo = flat.min(1)[:, None, None]
    hi = np.percentile(flat, percentile, axis=1)[:, None, None]
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1.0), (m > lo).astype(np.float64))
    return np.clip(out, 0.0, 1.0)


def normalize_signed(maps) -> np.ndarray:
    """Adebayo et al.'s signed normalization: ``m = sum_c a`` scaled by ``max |m|``.

    Returns ndarray float64 (N, H, W) in [-1, 1] (an all-zero map stays zero).
    """
    m = _to_2d(check_maps(as_array(maps, "maps"), "maps", channels=True), signed=True)
    scale = np.abs(m).reshape(len(m), -1).max(1)[:, None, None]
    return m / np.where(scale > 0, scale, 1.0)


_NORMALIZERS = {"abs": normalize_abs, "signed": normalize_signed, None: None, "none": None}


def _normalize(maps: np.ndarray, mode) -> np.ndarray:
    if mode not in _NORMALIZERS:
        raise InputError(f"normalize must be 'abs', 'signed' or None, got {mode!r}")
    fn = _NORMALIZERS[mode]
    if fn is None:
        return maps.sum(-1) if maps.ndim == 4 else maps
    return fn(maps)


# ---------------------------------------------------------------------- row-wise stats
def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64, copy=False)


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``a[i].ravel()`` with ``b[i].ravel()``, shape (N,).

    Constant rows follow the module's convention (both constant: 1; one constant: 0).
    """
    a, b = _rows(a), _rows(b)
    # a row is constant when its spread is at the rounding level of its values
    tol_a = 1e-12 * np.sqrt(a.shape[1]) * np.abs(a).max(1, initial=0.0)
    tol_b = 1e-12 * np.sqrt(b.shape[1]) * np.abs(b).max(1, initial=0.0)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
    ca, cb = na <= tol_a, nb <= tol_b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / (na * nb)
    r = np.where(ca & cb, 1.0, np.where(ca | cb, 0.0, r))
    return np.clip(r, -1.0, 1.0)


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per row (average ranks for ties), shape (N,)."""
    return rowwise_pearson(rankdata(_rows(a), axis=1), rankdata(_rows(b), axis=1))


# ---------------------------------------------------------------------- metrics
class Similarity(Metric):
    """Base of the pairwise similarity metrics: ``evaluate(a, b) -> (N,)``.

    ``a`` and ``b`` are heatmaps (N, H, W) (Explanations give their heatmaps); metrics
    with ``channels = True`` also accept attributions (N, H, W, C).
    """

    category = "similarity"
    higher_is_better = True
    per_image = ("a", "b")
    channels = False

    def embed(self, maps: np.ndarray) -> np.ndarray | None:
        """The part of the metric that depends on one map only (e.g. its ranks), or None.

        Metrics that define it (with :meth:`compare`) have ``evaluate_batch(a, b) ==
        compare(embed(a), embed(b))``; :func:`pairwise_similarity` then computes it once per
        method instead of once per pair.
        """
        return None

    def compare(self, ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
        """Per-image similarity (N,) of two :meth:`embed` results."""
        raise NotImplementedError

    def embeddings(self, maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """:meth:`embed` of every method's maps, checked as :meth:`evaluate` checks them
        (None when the metric has no per-map part)."""
        if type(self).embed is Similarity.embed:
            return None
        return {k: self.embed(self.prepare({"a": v, "b": v})["a"]) for k, v in maps.items()}

    def check(self, data):
        a = check_maps(data["a"], "a", channels=self.channels)
        b = check_maps(data["b"], "b", channels=self.channels)
        if a.shape != b.shape:
            raise InputError(f"metric {self.name!r}: a has shape {a.shape} but b has shape {b.shape}")
        data["a"], data["b"] = a, b
        return data


@register_metric
class SpearmanAbs(Similarity):
    """Spearman rank correlation of absolute, Adebayo-normalized maps (:func:`normalize_abs`)."""

    name = "spearman_abs"
    channels = True

    def __init__(self, percentile: float = 99.0):
        super().__init__(percentile=percentile)
        self.percentile = float(percentile)

    def embed(self, maps):
        """Average ranks of the normalized absolute map's pixels, (N, H * W)."""
        return rankdata(_rows(normalize_abs(maps, self.percentile)), axis=1)

    def compare(self, ea, eb):
        return rowwise_pearson(ea, eb)

    def evaluate_batch(self, a, b):
        return self.compare(self.embed(a), self.embed(b))


@register_metric
class SpearmanSigned(Similarity):
    """Spearman rank correlation of signed maps (channel sum; :func:`normalize_signed`)."""

    name = "spearman_signed"
    channels = True

    def evaluate_batch(self, a, b):
        return rowwise_spearman(normalize_signed(a), normalize_signed(b))


@register_metric
class Pearson(Similarity):
    """Pearson correlation of the maps (raw values by default).

    Parameters
    ----------
    normalize : None, "abs" or "signed"
        Optional Adebayo normalization before correlating.
    """

    name = "pearson"

    def __init__(self, normalize: str | None = None):
        super().__init__(normalize=normalize)
        _normalize(np.zeros((1, 1, 1)), normalize)
        self.normalize = normalize

    def evaluate_batch(self, a, b):
        return rowwise_pearson(_normalize(a, self.normalize), _normalize(b, self.normalize))


@register_metric
class Cosine(Similarity):
    """Cosine similarity of the flattened maps (two all-zero maps: 1; one: 0)."""

    name = "cosine"

    def evaluate_batch(self, a, b):
        a, b = _rows(a), _rows(b)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = (a * b).sum(1) / (na * nb)
        za, zb = na == 0, nb == 0
        return np.clip(np.where(za & zb, 1.0, np.where(za | zb, 0.0, c)), -1.0, 1.0)


@register_metric
class TopKIoU(Similarity):
    """Intersection over union of the ``k`` highest-valued pixels of each map.

    Parameters
    ----------
    k : float in (0, 1] or int >= 1
        Fraction of the pixels (float) or number of pixels (int); default 0.1.
    absolute : bool
        Rank pixels by ``|value|`` (default) or by signed value.

    Ties at the cut are broken by raster order (stable sort).  Two maps with independent
    random values score about ``q / (2 - q)`` for a fraction ``q``.
    """

    name = "topk_iou"

    def __init__(self, k: float | int = 0.1, absolute: bool = True):
        super().__init__(k=k, absolute=absolute)
        if isinstance(k, (bool, np.bool_)) or not (
            (isinstance(k, (int, np.integer)) and k >= 1) or (isinstance(k, float) and 0 < k <= 1)
        ):
            raise InputError(f"k must be a fraction in (0, 1] or a pixel count >= 1, got {k!r}")
        self.k, self.absolute = k, bool(absolute)

    def _k(self, pixels: int) -> int:
        k = self.k if isinstance(self.k, (int, np.integer)) else int(round(self.k * pixels))
        return int(min(max(k, 1), pixels))

    def evaluate_batch(self, a, b):
        a, b = _rows(a), _rows(b)
        if self.absolute:
            a, b = np.abs(a), np.abs(b)
        n, p = a.shape
        k = self._k(p)
        top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
        top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
        ma = np.zeros((n, p), bool)
        mb = np.zeros((n, p), bool)
        np.put_along_axis(ma, top_a, True, axis=1)
        np.put_along_axis(mb, top_b, True, axis=1)
        return (ma & mb).sum(1) / (ma | mb).sum(1)


def _odd_window(h: int, w: int, win: int) -> int:
    win = min(int(win), h, w)
    if win % 2 == 0:
        win -= 1
    if win < 3:
        raise InputError(f"maps of {h}x{w} pixels are too small for SSIM (need at least 3x3)")
    return win


@register_metric
class SSIM(Similarity):
    """Structural similarity (scikit-image ``structural_similarity``), per image.

    Parameters
    ----------
    normalize : "abs" (default), "signed" or None
        Adebayo normalization first.  ``data_range`` is set explicitly: 1 for "abs",
        2 for "signed", and for raw maps the joint value range of the pair (1 if both
        maps are constant and equal).
    win_size : int
        Side of the (uniform) window, 7 as in scikit-image; reduced to the largest odd
        size that fits small maps.
    """

    name = "ssim"
    channels = True

    def __init__(self, normalize: str | None = "abs", win_size: int = 7):
        super().__init__(normalize=normalize, win_size=win_size)
        _normalize(np.zeros((1, 1, 1)), normalize)
        self.normalize, self.win_size = normalize, int(win_size)

    def evaluate_batch(self, a, b):
        from skimage.metrics import structural_similarity

        a, b = _normalize(a, self.normalize), _normalize(b, self.normalize)
        win = _odd_window(a.shape[1], a.shape[2], self.win_size)
        out = np.empty(len(a))
        for i in range(len(a)):  # per image: scikit-image takes one 2-D pair at a time
            if self.normalize == "abs":
                rng = 1.0
            elif self.normalize == "signed":
                rng = 2.0
            else:
                rng = float(max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min())) or 1.0
            out[i] = structural_similarity(a[i], b[i], data_range=rng, win_size=win)
        return out


@register_metric
class HOGSimilarity(Similarity):
    """Pearson correlation of the HOG features of the two maps (Adebayo et al.).

    Parameters
    ----------
    normalize : "abs" (default), "signed" or None
    pixels_per_cell : int, optional
        HOG cell size; default ``max(2, min(H, W) // 14)`` (16 at 224 px, as Adebayo et al.).
    orientations : int
    cells_per_block : int
        3 as in scikit-image (reduced when the map has fewer cells).
    """

    name = "hog"
    channels = True

    def __init__(self, normalize: str | None = "abs", pixels_per_cell: int | None = None,
                 orientations: int = 9, cells_per_block: int = 3):
        super().__init__(normalize=normalize, pixels_per_cell=pixels_per_cell,
                         orientations=orientations, cells_per_block=cells_per_block)
        _normalize(np.zeros((1, 1, 1)), normalize)
        self.normalize = normalize
        self.ppc = pixels_per_cell
        self.orientations = int(orientations)
        self.cpb = int(cells_per_block)

    def features(self, maps: np.ndarray) -> np.ndarray:
        """HOG feature vectors of maps (N, H, W) -> (N, F)."""
        from skimage.feature import hog

        h, w = maps.shape[1:3]
        ppc = int(self.ppc) if self.ppc is not None else max(2, min(h, w) // 14)
        cells = min(h, w) // ppc
        if cells < 1:
            raise InputError(f"pixels_per_cell={ppc} is larger than the {h}x{w} maps")
        cpb = max(1, min(self.cpb, cells))
        return np.stack([
            hog(m, orientations=self.orientations, pixels_per_cell=(ppc, ppc),
                cells_per_block=(cpb, cpb), feature_vector=True)
            for m in maps
        ])

    def evaluate_batch(self, a, b):
        return rowwise_pearson(self.features(_normalize(a, self.normalize)),
                               self.features(_normalize(b, self.normalize)))


# ---------------------------------------------------------------------- several methods
def _maps_of(heatmaps: Mapping[str, object]) -> dict[str, np.ndarray]:
    if not isinstance(heatmaps, Mapping) or len(heatmaps) == 0:
        raise InputError("heatmaps must be a non-empty mapping method name -> heatmaps (N, H, W)")
    maps = {str(k): as_array(v, f"heatmaps[{k!r}]") for k, v in heatmaps.items()}
    shapes = {k: v.shape for k, v in maps.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"heatmaps of different shapes: {shapes}")
    return maps


def pairwise_similarity(
    heatmaps: Mapping[str, object],
    metrics: Sequence[str] | str = ("spearman_abs",),
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Similarity of every pair of methods' heatmaps, per image.

    Parameters
    ----------
    heatmaps : mapping method name -> heatmaps (N, H, W) or Explanation
        All of one shape (same images, same order).
    metrics : metric name(s) or Similarity instances
    batch_size : int, optional
        Images per metric call.  Without it, a metric with a per-map part
        (:meth:`Similarity.embed`, e.g. ranks) computes that part once per method.

    Returns
    -------
    DataFrame with columns ``method_a, method_b, image, metric, value``: every unordered
    pair (a <= b in the given order, diagonal included) — the metrics are symmetric.
    """
    maps = _maps_of(heatmaps)
    metrics = [metrics] if isinstance(metrics, (str, Metric)) else list(metrics)
    names = list(maps)
    cols: dict[str, list] = {"method_a": [], "method_b": [], "image": [], "metric": [], "value": []}
    for m in metrics:
        metric = make_metric(m)
        if metric.category != "similarity":
            raise InputError(f"{metric.name!r} is not a similarity metric")
        emb = metric.embeddings(maps) if batch_size is None else None
        for a, b in combinations_with_replacement(names, 2):
            if emb is not None:
                vals = np.asarray(metric.compare(emb[a], emb[b]), dtype=np.float64).reshape(-1)
            else:
                vals = metric.evaluate(maps[a], maps[b], batch_size=batch_size)
            n = len(vals)
            for key, col in (("method_a", [a] * n), ("method_b", [b] * n), ("image", np.arange(n)),
                             ("metric", [metric.name] * n), ("value", vals)):
                cols[key].append(col)
    return pd.DataFrame({k: np.concatenate(v) if k in ("image", "value") else sum(v, [])
                         for k, v in cols.items()})


def agreement_matrix(heatmaps: Mapping[str, object], metric: str = "spearman_abs", **params) -> pd.DataFrame:
    """Pairwise agreement of M methods: an M x M DataFrame of the similarity averaged over
    images (NaN-aware), symmetric, index and columns the method names in the given order.

    ``params`` go to the metric (e.g. ``agreement_matrix(h, "topk_iou", k=0.05)``).
    """
    maps = _maps_of(heatmaps)
    m = make_metric(metric, **params)
    long = pairwise_similarity(maps, [m])
    means = long.groupby(["method_a", "method_b"])["value"].mean()
    names = list(maps)
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    for (a, b), v in means.items():
        mat.loc[a, b] = v
        mat.loc[b, a] = v
    mat.index.name = mat.columns.name = m.name
    return mat


__all__ = [
    "Cosine",
    "HOGSimilarity",
    "Pearson",
    "SSIM",
    "Similarity",
    "SpearmanAbs",
    "SpearmanSigned",
    "TopKIoU",
    "agreement_matrix",
    "normalize_abs",
    "normalize_signed",
    "pairwise_similarity",
    "rowwise_pearson",
    "rowwise_spearman",
]
