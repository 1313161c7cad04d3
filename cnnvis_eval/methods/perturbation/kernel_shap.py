"""KernelSHAP on superpixels (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
Predictions", NeurIPS), with LIME's machinery (:mod:`.superpixels`).

The game: ``v(z) = f(x with the superpixels where z = 0 hidden)`` for coalitions ``z`` in
{0, 1}^M of the M superpixels, ``f`` the explained value (pre-softmax logit or reduced
channel).  KernelSHAP fits ``g(z) = phi_0 + sum_i phi_i z_i`` to sampled coalitions by
weighted least squares with the Shapley kernel

    pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|)),

infinite for the empty and the full coalition: ``phi_0 = v(0)`` and ``sum_i phi_i = v(1) -
v(0)`` (efficiency) hold exactly; as the paper advises, the two constraints eliminate the
intercept and one coefficient analytically instead of using large weights.  With every
coalition evaluated the solution is exactly the Shapley values of the game (the paper's
Theorem 2).

Sampling of coalitions (:func:`kernel_shap_coalitions`) follows shap's ``KernelExplainer``
(not Xplique's ``KernelShap``, which draws every coalition from the kernel's size
distribution with unit weight, never enforces the two constraints and fits an intercept):
coalition sizes are taken in pairs ``(k, M - k)`` from the smallest; a size whose share of
the kernel mass would give each of its coalitions at least one sample is enumerated
completely with exact kernel weights; the remaining budget draws sizes from the remaining
kernel mass and coalitions uniformly within a size, each with its complement, duplicates
counted into their weight; those weights are rescaled to the remaining kernel mass.  With
``num_samples >= 2^M - 2`` every coalition is enumerated.
"""

from __future__ import annotations

from math import comb

import numpy as np

from ... import params as P
from ..base import Explanation, register
from .superpixels import SuperpixelExplainer, _object_array


def shapley_kernel(m: int, k) -> np.ndarray:
    """The Shapley kernel weight of one coalition of size ``k`` among ``m`` players,
    ``(m - 1) / (C(m, k) k (m - k))`` (Lundberg & Lee 2017, Theorem 2); inf at 0 and m."""
    k = np.asarray(k)
    out = np.full(k.shape, np.inf)
    inner = (k > 0) & (k < m)
    kk = k[inner].astype(np.int64)
    out[inner] = (m - 1) / (np.array([comb(m, int(j)) for j in kk], np.float64) * kk * (m - kk))
    return out


def kernel_shap_coalitions(m: int, num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions and their regression weights, shap ``KernelExplainer``'s strategy.

    Parameters
    ----------
    m : int
        Number of players (superpixels), >= 1.
    num_samples : int
        Budget of coalitions besides the empty and the full one; capped at ``2^m - 2``.
    rng : numpy.random.Generator
        Source of the random draws (sizes, members).

    Returns
    -------
    rows : ndarray, uint8, shape (S, m)
        Distinct coalitions (1 = present), neither empty nor full; ``S = min(num_samples,
        2^m - 2)`` (fewer only if ``4 S`` random draws found fewer distinct coalitions).
    weights : ndarray, float64, shape (S,)
        Their weights, summing to 1: the Shapley kernel (normalized) for enumerated sizes;
        for sampled sizes the draw counts scaled to the sizes' remaining kernel mass.
    """
    budget = int(min(num_samples, 2 ** m - 2)) if m < 63 else int(num_samples)
    if m < 2 or budget <= 0:
        return np.zeros((0, m), np.uint8), np.zeros(0)
    n_sizes = m // 2  # sizes 1 .. ceil((m - 1) / 2), each with its complement m - k
    n_paired = (m - 1) // 2  # sizes whose complement has another size
    sizes = np.arange(1, n_sizes + 1)
    size_mass = (m - 1.0) / (sizes * (m - sizes))  # kernel mass of all coalitions of size k
    size_mass[:n_paired] *= 2  # ... and of size m - k
    size_mass /= size_mass.sum()

    rows, weights = [], []
    left = budget
    remaining = size_mass.copy()
    n_full = 0
    for k in sizes:
        count = comb(m, int(k)) * (2 if k <= n_paired else 1)
        if left * remaining[k - 1] / count < 1.0 - 1e-8:
            break
        n_full += 1
        left -= count
        if remaining[k - 1] < 1.0:
            remaining /= 1.0 - remaining[k - 1]
        w = size_mass[k - 1] / count
        members = _combinations(m, int(k))
        block = np.zeros((len(members), m), np.uint8)
        block[np.arange(len(members))[:, None], members] = 1
        if k <= n_paired:  # each coalition followed by its complement
            block = np.stack([block, 1 - block], axis=1).reshape(-1, m)
        rows.append(block)
        weights.append(np.full(len(block), w))

    if n_full < n_sizes and left > 0:
        p = size_mass[n_full:].copy()
        p[: max(0, n_paired - n_full)] /= 2  # a paired draw yields two coalitions
        p /= p.sum()
        seen: dict[bytes, int] = {}
        sampled: list[np.ndarray] = []
        counts: list[float] = []
        draws = 4 * left  # shap's limit on draws
        while left > 0 and draws > 0:
            block = min(draws, 4096)
            draws -= block
            ks = n_full + 1 + rng.choice(len(p), size=block, p=p)
            ranks = np.argsort(rng.random((block, m)), axis=1).argsort(axis=1)
            cand = (ranks < ks[:, None]).astype(np.uint8)  # a uniform coalition of size k
            for row, k in zip(cand, ks):
                if left <= 0:
                    break
                key = row.tobytes()
                pos = seen.get(key)
                if pos is None:
                    seen[key] = pos = len(sampled)
                    sampled.append(row)
                    counts.append(1.0)
                    left -= 1
                    if left > 0 and k <= n_paired:  # and its complement (a size never drawn)
                        sampled.append(1 - row)
                        counts.append(1.0)
                        left -= 1
                else:  # drawn again: one more count for it (and for its complement)
                    counts[pos] += 1.0
                    if k <= n_paired and pos + 1 < len(counts):
                        counts[pos + 1] += 1.0
        if sampled:
            c = np.asarray(counts)
            rows.append(np.stack(sampled))
            weights.append(c * size_mass[n_full:].sum() / c.sum())
    if not rows:
        return np.zeros((0, m), np.uint8), np.zeros(0)
    return np.concatenate(rows), np.concatenate(weights)


def _combinations(m: int, k: int) -> np.ndarray:
    """All k-subsets of range(m) as a (C(m, k), k) int array, in lexicographic order."""
    from itertools import combinations

    return np.array(list(combinations(range(m), k)), dtype=np.int64).reshape(-1, k)


def solve_kernel_shap(rows: np.ndarray, weights: np.ndarray, values: np.ndarray,
                      f_full: float, f_empty: float) -> np.ndarray:
    """Shapley values (m,) float64 from the weighted regression under the two constraints.

    Minimizes ``sum_s w_s (v_s - f_empty - rows_s . phi)^2`` subject to ``sum(phi) = f_full
    - f_empty``, by eliminating the last coefficient (Lundberg & Lee 2017, section 4.1;
    shap does the same); least squares on ``sqrt(w)``-scaled rows (minimum norm when the
    coalitions do not determine every coefficient).

    Parameters
    ----------
    rows : (S, m) 0/1; weights : (S,); values : (S,) ``v`` of each coalition.
    f_full, f_empty : the values of the full and the empty coalition.
    """
    rows = np.asarray(rows, np.float64)
    m = rows.shape[1]
    total = float(f_full) - float(f_empty)
    if m == 1 or not len(rows):
        return np.full(m, total / m)
    y = np.asarray(values, np.float64) - float(f_empty) - rows[:, -1] * total
    a = rows[:, :-1] - rows[:, -1:]
    sw = np.sqrt(np.asarray(weights, np.float64))
    head, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
    return np.concatenate([head, [total - head.sum()]])


@register("kernel_shap")
class KernelShap(SuperpixelExplainer):
    """KernelSHAP on superpixels (Lundberg & Lee 2017), batched on LIME's machinery.

    The display image is cut into superpixels exactly as :class:`~.lime.Lime` does (same
    segmentation, parameters and cache); a coalition ``z`` keeps the superpixels where
    ``z = 1`` and hides the others with the hide colour; all of an image's coalitions go
    through one compiled function in chunks of ``batch_size`` model inputs.  The Shapley
    values ``phi`` (M,) of the superpixels are fitted by the Shapley-kernel-weighted linear
    regression of :func:`solve_kernel_shap` (unregularized; the empty and the full
    coalition enforced exactly, so ``sum(phi) = f(x) - f(all hidden)``) on the coalitions
    of :func:`kernel_shap_coalitions` (shap's ``KernelExplainer`` sampling, see the module
    docstring); with ``num_samples >= 2^M - 2`` they are the exact Shapley values.

    Parameters
    ----------
    num_samples : int
        Coalitions evaluated per image besides the empty and the full one (800, Xplique's
        default); capped at ``2^M - 2`` (then every coalition is enumerated).  Model inputs
        per image: the coalitions + 2.
    seed : int
        Seeds the coalition draws (a fresh ``numpy.random.default_rng(seed)`` per image: a
        batch equals its images one by one) and quickshift.
    segmentation, segmentation_params
        As :class:`~.lime.Lime` (quickshift with lime's defaults scaled to the image size).
    hide_color : "grey", "mean", None, number or (C,) array
        The fill of hidden superpixels, as :class:`~.lime.Lime`: ``"grey"`` (default) the
        middle of ``spec.input_range`` (else of each image's range); ``"mean"`` (or None)
        each superpixel's mean colour (blind to flat superpixels); a value in model-input
        units.  The empty coalition is the image filled with it, the "baseline" of ``phi``.
    batch_size, progress
        See :class:`~.sampling.PerturbationExplainer`.

    ``heatmap`` (N, H, W): every pixel carries its superpixel's Shapley value (signed).
    ``meta``: ``"segments"`` (N, H, W) int32 labels 0..M-1, ``"num_segments"`` (N,),
    ``"shapley_values"`` (list of per-image (M,) float64), ``"base_value"`` (N,) the value
    of the empty coalition, ``"coalitions"`` (N,) coalitions evaluated (empty and full
    excluded), ``"exact"`` (N,) bool, every coalition enumerated.
    """

    stochastic = True

    def __init__(self, model, *, num_samples: int = 800, seed: int = 0,
                 segmentation="quickshift", segmentation_params: dict | None = None,
                 hide_color="grey", batch_size: int | None = None, progress: bool | None = None):
        super().__init__(
            model, seed=seed, segmentation=segmentation, segmentation_params=segmentation_params,
            hide_color=hide_color, batch_size=batch_size, progress=progress, num_samples=num_samples,
        )
        self.num_samples = P.integer(num_samples, "num_samples")

    def calls_per_image(self, shape) -> int:
        # at most: the coalitions and the empty one (explain adds the unperturbed image)
        return self.num_samples + 1

    def explain_targets(self, x, targets, batch_size: int | None = None,
                        progress: bool | None = None) -> list[Explanation]:
        exps = super().explain_targets(x, targets, batch_size=batch_size, progress=progress)
        for exp in exps:
            # fewer when 2^M - 2 < num_samples: the count actually evaluated
            exp.meta["model_calls"] = int(np.sum(exp.meta["coalitions"]) + 2 * len(exp.heatmap))
        return exps

    explain_targets.__doc__ = SuperpixelExplainer.explain_targets.__doc__

    def _explain_image(self, x, bounds, sampling):
        scores, bounds = self._score(x, bounds, sampling)
        segments, m, scorer = self._scorer(x, bounds, sampling)
        rows, weights = kernel_shap_coalitions(m, self.num_samples, np.random.default_rng(self.seed))
        values = scorer.score_all(np.concatenate([np.zeros((1, m), np.uint8), rows]))  # (1 + S, T)
        heats, metas = [], []
        for t in range(len(bounds)):
            f_empty, f_full = float(values[0, t]), float(scores[0, t])
            phi = solve_kernel_shap(rows, weights, values[1:, t], f_full, f_empty)
            heats.append(phi[segments])
            metas.append({
                "segments": segments[None],
                "num_segments": np.array([m]),
                "shapley_values": _object_array(phi),
                "base_value": np.array([f_empty]),
                "coalitions": np.array([len(rows)]),
                "exact": np.array([m < 63 and len(rows) == 2 ** m - 2]),
            })
        return self._results(heats, bounds, scores, metas)


__all__ = ["KernelShap", "kernel_shap_coalitions", "shapley_kernel", "solve_kernel_shap"]
