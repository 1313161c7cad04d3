"""Sobol attribution (Fel et al., "Look at the Variance! Efficient Black-box Explanations
with Sobol-based Sensitivity Analysis", NeurIPS 2021): total-order Sobol' indices of grid
cells under random real-valued masks, Jansen's estimator -- Xplique's
``SobolAttributionMethod``."""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..base import register
from .gsa import GsaExplainer, sobol_points

#: Xplique's floor on the variance of f(A) (``sobol_estimators.EPS``).
VARIANCE_FLOOR = 1e-12


def replicated_design(dim: int, nb_design: int, scramble: bool = False, seed: int = 0) -> np.ndarray:
    """Saltelli's replicated design as Xplique's Sobol replicated samplers build it.

    Two independent (nb_design, dim) matrices A and B are the two halves of one
    ``2 * dim``-dimensional Sobol' sequence (:func:`~.gsa.sobol_points`); for every cell i,
    C_i is A with column i taken from B.

    Returns
    -------
    array, shape (nb_design * (dim + 2), dim)
        Rows ``[A; B; C_0; ...; C_{dim-1}]`` with values in [0, 1).
    """
    ab = sobol_points(2 * dim, nb_design, scramble, seed)
    a, b = ab[:, :dim], ab[:, dim:]
    c = np.repeat(a[None], dim, axis=0)  # (dim, n, dim)
    i = np.arange(dim)
    c[i, :, i] = b.T
    return np.concatenate([a, b, c.reshape(dim * nb_design, dim)])


def jansen_total_order(outputs: np.ndarray, nb_design: int, dim: int) -> np.ndarray:
    """Jansen's estimator of the total-order Sobol' indices (Jansen 1999, as Xplique's
    ``JansenEstimator``), in float64.

    ``S_Ti = sum_j (f(A_j) - f(C_ij))^2 / (2 n Var f(A))`` with ``n = nb_design`` and the
    unbiased variance (ddof 1) of f over A, floored at :data:`VARIANCE_FLOOR`.

    Parameters
    ----------
    outputs : array, shape (nb_design * (dim + 2),)
        f over the rows of :func:`replicated_design` ``[A; B; C_0; ...]``.
    nb_design, dim : int

    Returns
    -------
    array, shape (dim,)
    """
    y = np.asarray(outputs, np.float64).reshape(-1)
    n = int(nb_design)
    if y.size != n * (dim + 2):
        raise InputError(f"outputs has {y.size} values; the design needs nb_design * (dim + 2) = "
                         f"{n * (dim + 2)}")
    a, c = y[:n], y[2 * n:].reshape(dim, n)
    var = max(float(np.var(a, ddof=1)) if n > 1 else 0.0, VARIANCE_FLOOR)
    return np.sum((a[None, :] - c) ** 2, axis=1) / (2.0 * n * var)


@register("sobol")
class Sobol(GsaExplainer):
    """Sobol attribution method (Fel et al. 2021), as Xplique's ``SobolAttributionMethod``.

    The ``d = grid_size**2`` cells of the image get independent mask values
    ``m in [0, 1)`` from a quasi-Monte Carlo replicated design (:func:`replicated_design`:
    A, B and the d matrices C_i, ``nb_design * (d + 2)`` masks); each mask is upsampled
    (nearest neighbour) and applied by the perturbation function (default inpainting,
    ``x * m + (1 - m) * baseline`` with baseline 0: Xplique's ``x * m``).  The total-order
    index of cell i (:func:`jansen_total_order`) is the share of the target's variance that
    involves cell i, interactions included; the (g, g) indices are resized to the image
    bicubically.

    Xplique's defaults: ``grid_size=8``, ``nb_design=32`` (2112 model inputs per image),
    its ``TFSobolSequenceRS`` design (the plain Sobol' sequence; reproduced with
    ``scipy.stats.qmc``), the Jansen estimator, inpainting.  Deterministic unless
    ``scramble=True``, which draws a scrambled sequence from ``seed``.

    Parameters
    ----------
    grid_size : int
        Cells per side (>= 2).
    nb_design : int
        Points of A (and B); a power of two >= 2 (the Sobol' sequence's balance needs it).
    perturbation, baseline, sigma, scramble, seed, batch_size, progress
        See :class:`~.gsa.GsaExplainer`.

    ``meta["cell_scores"]`` (N, g, g): the indices per cell; ``meta["output_variance"]``
    (N,): Var f(A).
    """

    def __init__(self, model, *, grid_size: int = 8, nb_design: int = 32,
                 perturbation: str = "inpainting", baseline=0.0, sigma: float = 1.0,
                 scramble: bool = False, seed: int = 0, batch_size: int | None = None,
                 progress: bool | None = None):
        super().__init__(model, grid_size=grid_size, nb_design=nb_design, perturbation=perturbation,
                         baseline=baseline, sigma=sigma, scramble=scramble, seed=seed,
                         batch_size=batch_size, progress=progress)
        n = self.nb_design
        if n < 2 or n & (n - 1):
            raise InputError(f"nb_design must be a power of two >= 2 (Sobol' sequence), got {nb_design!r}")
        self._check_static_shape()

    def calls_per_image(self, shape) -> int:
        return self.nb_design * (self.grid_size**2 + 2)

    def design(self) -> np.ndarray:
        return replicated_design(self.grid_size**2, self.nb_design, self.scramble, self.seed)

    def estimate(self, outputs):
        n = self.nb_design
        sti = jansen_total_order(outputs, n, self.grid_size**2)
        return sti, {"output_variance": np.array([np.var(outputs[:n], ddof=1)])}


__all__ = ["Sobol", "VARIANCE_FLOOR", "jansen_total_order", "replicated_design"]
