"""RISE: randomized input sampling for explanation (Petsiuk et al. 2018): random smooth
masks, score-weighted average."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ... import params as P
from ...errors import InputError
from ...targets import BoundTarget
from ..base import register, targets_forward, targets_key
from .sampling import PerturbationExplainer

def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation with half-pixel centres, mirrored at
    the edges (about the first and last pixel centres) -- what
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` does along
    one axis, as used by Petsiuk et al.'s mask generator."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    if n_in == 1:
        return np.ones((n_out, 1))
    src = np.where(src < 0, -src, src)
    src = np.where(src > n_in - 1, 2 * (n_in - 1) - src, src)
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


@register("rise")
class Rise(PerturbationExplainer):
    """RISE: randomized input sampling for explanation (Petsiuk et al. 2018).

    ``n_masks`` binary grids of ``grid_size x grid_size`` cells, each cell kept with
    probability ``p_keep``, are upsampled bilinearly to ``(grid_size + 1) * cell`` pixels
    (``cell = ceil(H / grid_size)``) and cropped at a random shift in ``[0, cell)`` -- the
    paper's generator.  Sample i is ``baseline + M_i * (x - baseline)``; the heatmap is
    ``sum_i f(sample_i) * M_i / (n_masks * p_keep)``, the expected target value when a pixel
    is kept.  The grids and shifts are drawn once from ``numpy.random.default_rng(seed)``
    and reused for every image, so identical seeds give identical maps and a batch equals
    its images one by one.  The masks are built on the device, chunk by chunk.

    Parameters
    ----------
    n_masks : int
        Number of masks N (the paper used 4000 for ResNet50).
    grid_size : int
        Grid resolution s (paper: 7).
    p_keep : float
        Probability p that a grid cell is kept (paper: 0.5).
    seed : int
    baseline : number, (C,) or (H, W, C) array, "zeros", "black" or "mean"
        What masked-out pixels fade to, in model-input units (0: the paper multiplied the
        preprocessed image by the mask).
    batch_size, progress
        See :class:`PerturbationExplainer`.
    """

    stochastic = True

    def __init__(self, model, *, n_masks: int = 4000, grid_size: int = 7, p_keep: float = 0.5,
                 seed: int = 0, baseline=0.0, batch_size: int | None = None, progress: bool | None = None):
        super().__init__(model, batch_size=batch_size, progress=progress, n_masks=n_masks,
                         grid_size=grid_size, p_keep=p_keep, seed=seed,
                         baseline=baseline if np.ndim(baseline) == 0 else "array")
        self.n_masks = P.integer(n_masks, "n_masks")
        self.grid_size = P.integer(grid_size, "grid_size")
        self.p_keep = P.fraction(p_keep, "p_keep")
        self.seed = P.integer(seed, "seed", minimum=0)
        self.baseline = P.check_baseline(baseline)
        self._check_static_shape()
        self._draws: dict = {}  # seeded mask draws per image size (the same for every call)

    def _check_image_shape(self, shape):
        if self.grid_size > min(shape[0], shape[1]):
            raise InputError(
                f"grid_size {self.grid_size} is larger than the image ({shape[0]}x{shape[1]})"
            )

    def calls_per_image(self, shape) -> int:
        return self.n_masks

    def draws(self, shape) -> dict:
        """The seeded mask description for images of shape (H, W, ...).

        Returns a dict with ``grids`` (N, s, s) 0/1, ``shifts`` (N, 2) int (dy, dx),
        ``cell`` (ch, cw), and the interpolation matrices ``rows`` ((s+1)*ch, s) and
        ``cols`` ((s+1)*cw, s).
        """
        h, w = int(shape[0]), int(shape[1])
        key = (h, w)
        d = self._draws.get(key)
        if d is None:
            s = self.grid_size
            ch, cw = -(-h // s), -(-w // s)
            rng = np.random.default_rng(self.seed)
            grids = (rng.random((self.n_masks, s, s)) < self.p_keep).astype(self.dtype)
            shifts = np.stack(
                [rng.integers(0, ch, self.n_masks), rng.integers(0, cw, self.n_masks)], axis=1
            ).astype(np.int32)
            d = {
                "grids": grids, "shifts": shifts, "cell": (ch, cw),
                "rows": linear_resize_matrix(s, (s + 1) * ch).astype(self.dtype),
                "cols": linear_resize_matrix(s, (s + 1) * cw).astype(self.dtype),
            }
            d = self._draws.setdefault(key, d)
        return d

    def masks(self, shape, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Masks ``start:stop`` for images of shape (H, W, ...), (n, H, W) floats in [0, 1]
        (for inspection; :meth:`explain` builds them on the device)."""
        d = self.draws(shape)
        h, w = int(shape[0]), int(shape[1])
        sl = slice(start, stop)
        r = d["rows"][d["shifts"][sl, 0][:, None] + np.arange(h)]  # (n, H, s)
        c = d["cols"][d["shifts"][sl, 1][:, None] + np.arange(w)]  # (n, W, s)
        return np.einsum("nhs,nst,nwt->nhw", r, d["grids"][sl], c)

    def _rise_fn(self, bounds: list[BoundTarget]):
        def build():
            fwd, img = targets_forward(self.spec, bounds), self._image_spec()  # one forward of every target
            dt, i32 = img.dtype, tf.int32

            @tf.function(autograph=False, input_signature=[
                img, img, tf.TensorSpec((None, None, None), dt), tf.TensorSpec((None, 2), i32),
                tf.TensorSpec((None, None), dt), tf.TensorSpec((None, None), dt),
                tf.TensorSpec((None, len(bounds)), i32),
            ])
            def score(x, base, grids, shifts, rows, cols, indices):
                shape = tf.shape(x)
                r = tf.gather(rows, shifts[:, :1] + tf.range(shape[0])[None, :])  # (b, H, s)
                c = tf.gather(cols, shifts[:, 1:] + tf.range(shape[1])[None, :])  # (b, W, s)
                masks = tf.einsum("bhs,bst,bwt->bhw", r, grids, c)
                xs = base[None] + masks[..., None] * (x - base)[None]
                scores = fwd(xs, indices)[0]  # (b, T)
                return scores, tf.einsum("bt,bhw->thw", scores, masks)

            return score

        return self._cached(("rise",) + targets_key(bounds), build)

    def _explain_image(self, x, bounds, sampling):
        scores, bounds = self._score(x, bounds, sampling)
        image = x[0]
        base = self._baseline_image(self.baseline, image)
        d = self.draws(image.shape)
        fn = self._rise_fn(bounds)
        total = np.zeros((len(bounds),) + image.shape[:2], np.float64)  # (T, H, W), summed chunk by chunk
        chunk_scores = []

        def add(part):
            nonlocal total
            total += part[1]
            chunk_scores.append(part[0])

        sampling.feed(
            fn, self.n_masks,
            lambda a, b: (d["grids"][a:b], d["shifts"][a:b], d["rows"], d["cols"],
                          self._index_rows(bounds, b - a)),
            image, base, into=add,
        )
        heats = total / (self.n_masks * self.p_keep)
        mask_scores = np.concatenate(chunk_scores).astype(np.float32)  # (M, T)
        metas = [{"mask_score_mean": np.array([mask_scores[:, t].mean()]), "cell": d["cell"]}
                 for t in range(len(bounds))]
        return self._results(heats, bounds, scores, metas)


__all__ = ["Rise", "linear_resize_matrix"]
