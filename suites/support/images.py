"""Deterministic test images."""

from __future__ import annotations

import numpy as np


def smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic smooth uint8 RGB images (blurred noise plus a bright blob), (n, size, size, 3)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    imgs = rng.normal(0, 1, (n, size, size, 3))
    imgs = gaussian_filter(imgs, sigma=(0, size / 16, size / 16, 0))
    imgs = (imgs - imgs.min()) / (np.ptp(imgs) + 1e-9)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        imgs[i] += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))[..., None]
    imgs = imgs / imgs.max()
    return (imgs * 255).astype(np.uint8)
