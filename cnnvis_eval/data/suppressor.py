"""Benchmark v2 suppressor variant: a pattern without class information that a model must use.

In the spirit of XAI-TRIS (Clark et al. 2023) and of the two-feature suppressor of Haufe et
al. (NeuroImage 2014): each grey image holds the same binary pattern ``P`` (a T-tetromino of
``block``-px squares) in two fixed squares, the **signal** region on the left and the
**suppressor** region on the right::

    signal region      0.5 + (s * signal + a) * P + noise      s = +1 (class 1) or -1 (class 0)
    suppressor region  0.5 + a * P + noise                     a ~ Normal(0, distractor), per image
    elsewhere          0.5 + noise                             noise: i.i.d. Normal(0, noise)

The distractor amplitude ``a`` is drawn independently of the label, so the suppressor region
alone carries no class information; but with ``distractor`` well above ``signal`` the signal
region alone is ambiguous, and the best linear read-out subtracts the suppressor's pattern
from the signal's: ``w = P_signal - P_suppressor`` gives ``(s * signal) * |P|^2`` whatever
``a`` is.  A model therefore gives the suppressor weight although it carries no class
information: a map that shows *where the class information is* should give it little mass
(``suppressor_mass``), while an edge detector gives it about as much as the signal.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give
identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..params import integer

# the T-tetromino on a 3 x 2 grid of blocks (row, col)
_TETROMINO = ((0, 0), (0, 1), (0, 2), (1, 1))


@dataclass
class SuppressorSet:
    """Generated suppressor images.

    Attributes
    ----------
    images : uint8 (N, H, W, 3)
        Grey (the three channels are equal).
    labels : int64 (N,)
        1 where the signal is added (s = +1), 0 where it is subtracted.
    signal_mask, suppressor_mask : bool (N, H, W)
        The two squares that hold the pattern (the same for every image).
    pattern : bool (H, W)
        The pattern's pixels in the signal square (``signal_mask`` holds it with a margin).
    distractor : float64 (N,)
        The shared amplitude ``a`` of each image (for tests and plots).
    """

    images: np.ndarray
    labels: np.ndarray
    signal_mask: np.ndarray
    suppressor_mask: np.ndarray
    pattern: np.ndarray
    distractor: np.ndarray
    seed: int
    size: int

    def __len__(self) -> int:
        return len(self.images)


def _squares(size: int, block: int):
    """(pattern in the signal square, signal square, suppressor square) as bool (H, W)."""
    margin = block // 2 + 1
    side = 3 * block + 2 * margin
    top = (size - side) // 2
    gap = (size - 2 * side) // 3
    squares = []
    for left in (gap, size - gap - side):
        sq = np.zeros((size, size), bool)
        sq[top:top + side, left:left + side] = True
        squares.append((sq, top + margin, left + margin))
    (sig, r0, c0), (sup, _, _) = squares
    pattern = np.zeros((size, size), bool)
    r0 += block // 2  # two block rows centred in the three-block square
    for r, c in _TETROMINO:
        pattern[r0 + r * block: r0 + (r + 1) * block, c0 + c * block: c0 + (c + 1) * block] = True
    return pattern, sig, sup


def make_suppressor(n: int, size: int = 64, seed: int = 0, *, signal: float = 0.08, distractor: float = 0.15,
                    noise: float = 0.03, block: int = 5) -> SuppressorSet:
    """Generate ``n`` suppressor images (balanced classes); see the module docstring.

    Parameters
    ----------
    n : int
    size : int
        Image side in pixels (48 to 128).
    seed : int
    signal, distractor, noise : float
        Signal amplitude, standard deviation of the shared distractor amplitude, and of the
        i.i.d. pixel noise, in units of the [0, 1] intensity range (values are clipped to it).
    block : int
        Side of the pattern's squares in pixels (2 to ``size // 10``).
    """
    n = integer(n, "n")
    if not 48 <= size <= 128:
        raise InputError(f"size must be between 48 and 128 pixels, got {size}")
    if not 2 <= block <= size // 10:
        raise InputError(f"block must be between 2 and {size // 10} pixels for size {size}, got {block}")
    for name, value in (("signal", signal), ("distractor", distractor), ("noise", noise)):
        if not (np.isfinite(value) and 0 <= value <= 0.5):
            raise InputError(f"{name} must be in [0, 0.5] (intensity units), got {value!r}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
    a = rng.normal(0.0, distractor, n)
    pattern, sig, sup = _squares(size, block)
    shift = np.argwhere(sup)[0] - np.argwhere(sig)[0]
    moved = np.roll(pattern, tuple(shift), axis=(0, 1))  # the pattern's pixels in the suppressor square
    s = 2.0 * labels - 1.0
    img = 0.5 + rng.normal(0.0, noise, (n, size, size))
    img += (s * signal + a)[:, None, None] * pattern + a[:, None, None] * moved
    grey = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=-1)
    return SuppressorSet(images, labels, np.broadcast_to(sig, (n, size, size)).copy(),
                         np.broadcast_to(sup, (n, size, size)).copy(), pattern, a, seed, size)


__all__ = ["SuppressorSet", "make_suppressor"]
