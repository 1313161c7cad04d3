"""The shared part of the global-sensitivity-analysis (GSA) methods: Sobol and HSIC.

Both follow Xplique's ``GSABaseAttributionMethod``
(``xplique/attributions/global_sensitivity_analysis/gsa_attribution_method.py``): a design of
``M`` low-resolution masks ``(grid_size, grid_size)`` is drawn once; each mask is upsampled
to the image with nearest-neighbour interpolation (``tf.image.resize(method="nearest")``),
applied to the image by a perturbation function, the target value of every perturbed image
is read, and an estimator turns (masks, outputs) into one score per grid cell, which is
resized to the image with bicubic interpolation (``tf.image.resize(method="bicubic")``).

Here the masks are built inside the compiled function from the compact ``(b, g, g)`` grid
values (a double gather by precomputed nearest-neighbour row and column indices), so the
cost per model input is the model call plus a few element-wise ops; the estimators run in
NumPy float64 on the ``M`` outputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from ... import params as P
from ...errors import InputError
from ...targets import BoundTarget
from ..base import targets_forward, targets_key
from .sampling import PerturbationExplainer

#: Xplique's perturbation functions that we provide (``blurring`` needs OpenCV's box blur).
PERTURBATIONS = ("inpainting", "amplitude")


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """(n_out,) source indices of nearest-neighbour resizing from ``n_in`` to ``n_out``
    samples with half-pixel centres: ``min(floor((i + 0.5) * n_in / n_out), n_in - 1)`` --
    what ``tf.image.resize(method="nearest")`` does along one axis."""
    idx = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1).astype(np.int32)


def upsample_masks(grids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of ``grids`` (M, g, g) to (M, H, W) (for inspection;
    the explainers do it on the device)."""
    g = np.asarray(grids)
    rows = nearest_indices(g.shape[1], int(size[0]))
    cols = nearest_indices(g.shape[2], int(size[1]))
    return g[:, rows][:, :, cols]


def sobol_points(dim: int, n: int, scramble: bool = False, seed: int = 0) -> np.ndarray:
    """(n, dim) points of the Sobol' LP-tau sequence from ``scipy.stats.qmc.Sobol``.

    Unscrambled (the default of Xplique's samplers, ``tf.math.sobol_sample``), the sequence's
    first point (all zeros) is skipped, as ``tf.math.sobol_sample`` does: the points equal
    ``tf.math.sobol_sample(dim, n)``.  Scrambled (Owen scrambling), the points depend on
    ``seed`` and none is skipped.
    """
    from scipy.stats import qmc

    sampler = qmc.Sobol(dim, scramble=scramble, seed=np.random.default_rng(seed) if scramble else None)
    if not scramble:
        sampler.fast_forward(1)
    with warnings.catch_warnings():  # the balance warning for n not a power of two
        warnings.simplefilter("ignore", UserWarning)
        return sampler.random(n)


class GsaExplainer(PerturbationExplainer):
    """Middle class of the GSA methods (Sobol, HSIC).

    Parameters
    ----------
    grid_size : int
        The image is cut into ``grid_size x grid_size`` cells, one score per cell (>= 2).
    nb_design : int
        Size of the design (see the subclasses for the number of model inputs).
    perturbation : "inpainting" or "amplitude"
        Xplique's perturbation functions: ``inpainting`` gives ``x * m + (1 - m) * baseline``
        (Xplique: baseline 0, i.e. ``x * m``); ``amplitude`` gives Xplique's
        ``x * (m - 0.5) * sigma`` (as its code computes it).
    baseline : number, (C,) or (H, W, C) array, "zeros", "black" or "mean"
        What inpainting fades masked pixels to, in model-input units (default 0, Xplique's).
    sigma : float
        Intensity of ``amplitude``.
    scramble : bool
        Scramble the Sobol' sequence (seeded by ``seed``); default False as in Xplique,
        whose samplers are the plain sequence -- the maps are then deterministic.
    seed : int
        Seed of the scrambling (only used with ``scramble=True``).
    batch_size, progress
        See :class:`PerturbationExplainer`.

    Subclasses implement :meth:`design` ((M, g*g) mask values in [0, 1], the same for every
    image), :meth:`estimate` (outputs (M,) -> scores (g*g,)) and :meth:`calls_per_image`.
    """

    signed = False  # indices and HSIC are >= 0 (the bicubic resize can undershoot a little)

    def __init__(self, model, *, grid_size: int, nb_design: int, perturbation: str = "inpainting",
                 baseline=0.0, sigma: float = 1.0, scramble: bool = False, seed: int = 0,
                 batch_size: int | None = None, progress: bool | None = None, **extra):
        super().__init__(model, batch_size=batch_size, progress=progress, grid_size=grid_size,
                         nb_design=nb_design, perturbation=perturbation,
                         baseline=baseline if np.ndim(baseline) == 0 else "array", sigma=sigma,
                         scramble=scramble, seed=seed, **extra)
        self.grid_size = P.integer(grid_size, "grid_size", minimum=2)
        self.nb_design = P.integer(nb_design, "nb_design")
        self.perturbation = P.choice(perturbation, "perturbation", PERTURBATIONS)
        self.baseline = P.check_baseline(baseline)
        self.sigma = P.number(sigma, "sigma", strict=True)
        if not isinstance(scramble, (bool, np.bool_)):
            raise InputError(f"scramble must be True or False, got {scramble!r}")
        self.scramble = bool(scramble)
        self.seed = P.integer(seed, "seed", minimum=0)
        self._design: np.ndarray | None = None

    # -- what subclasses provide -----------------------------------------------
    def design(self) -> np.ndarray:
        """(M, grid_size**2) mask values in [0, 1], row-major cells (drawn once)."""
        raise NotImplementedError

    def estimate(self, outputs: np.ndarray) -> tuple[np.ndarray, dict]:
        """Scores (grid_size**2,) float64 and diagnostics from the (M,) outputs."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------
    def _check_image_shape(self, shape):
        if self.grid_size > min(shape[0], shape[1]):
            raise InputError(
                f"grid_size {self.grid_size} is larger than the image ({shape[0]}x{shape[1]})"
            )

    def masks(self, shape) -> np.ndarray:
        """All masks upsampled to images of shape (H, W, ...): (M, H, W) (for inspection)."""
        return upsample_masks(self._grids(), shape[:2])

    def _grids(self) -> np.ndarray:
        if self._design is None:
            d = np.asarray(self.design(), self.dtype)
            self._design = d.reshape(len(d), self.grid_size, self.grid_size)
        return self._design

    def _gsa_fn(self, bounds: list[BoundTarget]):
        mode = self.perturbation

        def build():
            fwd, img = targets_forward(self.spec, bounds), self._image_spec()  # one forward of every target
            dt, i32 = img.dtype, tf.int32

            @tf.function(autograph=False, input_signature=[
                img, img, tf.TensorSpec((None, None, None), dt), tf.TensorSpec((None,), i32),
                tf.TensorSpec((None,), i32), tf.TensorSpec((), dt), tf.TensorSpec((None, len(bounds)), i32),
            ])
            def score(x, base, grids, rows, cols, sigma, indices):
                m = tf.gather(tf.gather(grids, rows, axis=1), cols, axis=2)[..., None]  # (b, H, W, 1)
                if mode == "inpainting":
                    xs = x[None] * m + (1.0 - m) * base[None]
                else:  # amplitude, as Xplique computes it
                    xs = x[None] * (m - 0.5) * sigma
                return fwd(xs, indices)[0]  # (b, T)

            return score

        return self._cached(("gsa", mode) + targets_key(bounds), build)

    def _explain_image(self, x, bounds, sampling):
        scores, bounds = self._score(x, bounds, sampling)
        image = x[0]
        h, w = image.shape[:2]
        base = self._baseline_image(self.baseline, image)
        grids = self._grids()
        g = self.grid_size
        rows, cols = nearest_indices(g, h), nearest_indices(g, w)
        fn = self._gsa_fn(bounds)
        sigma = np.asarray(self.sigma, self.dtype)
        parts = sampling.feed(
            fn, len(grids),
            lambda a, b: (grids[a:b], rows, cols, sigma, self._index_rows(bounds, b - a)),
            image, base,
        )
        outputs = np.concatenate(parts).astype(np.float64)  # (M, T)
        heats, metas = [], []
        for t in range(len(bounds)):
            cell, meta = self.estimate(outputs[:, t])
            cell = cell.reshape(g, g)
            heat = tf.image.resize(cell[..., None].astype(np.float32), (h, w), method="bicubic")
            heats.append(np.asarray(heat)[..., 0])
            metas.append({"cell_scores": cell[None].astype(np.float32), **meta})
        return self._results(heats, bounds, scores, metas)


__all__ = ["GsaExplainer", "PERTURBATIONS", "nearest_indices", "sobol_points", "upsample_masks"]
