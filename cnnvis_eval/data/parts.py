"""Benchmark v2 part-based classes: a class is a combination of parts (FunnyBirds-style).

In the spirit of FunnyBirds (Hesse et al., ICCV 2023), each image holds one "bird" made of
four parts (:data:`PARTS`): a **body** (``oval`` or ``box``), a **wing** above it
(``round``: an ellipse, or ``pointed``: a triangle swept back), a **tail** behind it
(``fan``: one triangle, or ``fork``: a swallow tail, a triangle with a V notch) and a **head** in front (``round``, or
``crest``: with a triangle on top).  As in FunnyBirds, the variants of a part differ by
**shape** only.  A class (:data:`PART_CLASSES`) is one combination of part variants
(:data:`CLASS_PARTS`); every part type varies across the classes, so every part carries
class information and no single part decides the class.  Position, scale, facing direction,
the colours of every part and its **texture** are random and drawn independently of the
class: each part is plain, striped (random angle and period) or checked (random cell), in
two random colours.  Neither colour nor texture (hence neither edge density) carries class
information, so a model-blind edge map cannot predict which part the model needs.  The
background is the textured one of :mod:`cnnvis_eval.data.scenes`.

``part_masks[i, p]`` holds the pixels of part p that are visible in image i (the masks of
one image are disjoint).  :meth:`PartSet.remove` gives the counterfactual images in which
one part is painted with the background that was drawn under it, so the ground-truth
importance of a part for a model is the drop of the model's logit when the part is removed
(:func:`cnnvis_eval.metrics.parts.part_importance`, computed on the model itself), and an
explanation is scored by how well its mass per part ranks the parts
(``part_importance_correlation``).

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give
identical arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.draw import disk, ellipse, polygon

from ..errors import InputError
from ..params import integer
from .scenes import _background
from .synthetic import _hsv

PARTS: tuple[str, ...] = ("body", "wing", "tail", "head")
VARIANTS: dict[str, tuple[str, str]] = {
    "body": ("oval", "box"), "wing": ("round", "pointed"), "tail": ("fan", "fork"), "head": ("round", "crest"),
}
PART_CLASSES: tuple[str, ...] = ("finch", "jay", "wren", "heron")
CLASS_PARTS: dict[str, dict[str, str]] = {
    # each pair of classes differs in 2 or 3 of the 4 parts; each part type has both variants
    # in two classes, so a part alone halves the candidates but never decides the class
    "finch": {"body": "oval", "wing": "round", "tail": "fan", "head": "round"},
    "jay": {"body": "oval", "wing": "pointed", "tail": "fork", "head": "crest"},
    "wren": {"body": "box", "wing": "round", "tail": "fork", "head": "round"},
    "heron": {"body": "box", "wing": "pointed", "tail": "fan", "head": "crest"},
}


@dataclass
class PartSet:
    """Generated part-based images.

    Attributes
    ----------
    images : uint8 (N, H, W, 3)
    labels : int64 (N,)
        Class index into ``classes`` (:data:`PART_CLASSES`).
    part_masks : bool (N, P, H, W)
        Visible pixels of each part, in the order of ``parts`` (:data:`PARTS`); disjoint.
    backgrounds : uint8 (N, H, W, 3)
        The image before the bird was drawn (what a removed part is painted with).
    birds : list of N dict
        Per image: centre ``cy, cx``, scale ``r``, facing ``direction`` (+1 right, -1 left),
        and per part its ``variant``, ``texture`` ("plain", "stripes" or "checks") and
        colours ``colour`` and ``colour2`` (for plots and tests).
    """

    images: np.ndarray
    labels: np.ndarray
    part_masks: np.ndarray
    backgrounds: np.ndarray
    birds: list
    seed: int
    size: int
    parts: tuple[str, ...] = PARTS
    classes: tuple[str, ...] = PART_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def _part_index(self, part) -> int:
        if isinstance(part, str):
            if part not in self.parts:
                raise InputError(f"unknown part {part!r}; use one of {self.parts}")
            return self.parts.index(part)
        if isinstance(part, (int, np.integer)) and not isinstance(part, bool) and 0 <= part < len(self.parts):
            return int(part)
        raise InputError(f"part must be a name in {self.parts} or an index 0..{len(self.parts) - 1}, got {part!r}")

    def remove(self, part) -> np.ndarray:
        """The images (N, H, W, 3) uint8 with ``part`` (name or index) painted with the background."""
        mask = self.part_masks[:, self._part_index(part), :, :, None]
        return np.where(mask, self.backgrounds, self.images)

    def counterfactuals(self) -> np.ndarray:
        """Every single-part removal: uint8 (N, P, H, W, 3), ``[:, p]`` = :meth:`remove` (p)."""
        return np.stack([self.remove(p) for p in range(len(self.parts))], axis=1)


def _draw(size: int, rr, cc) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[rr, cc] = True
    return m


# Part sizes are chosen so that the four parts have about the same visible area (each about
# r^2): with unequal areas, a map that is uniform over the bird ranks the parts by area.
def _body(variant, cy, cx, r, size):
    if variant == "oval":
        return _draw(size, *ellipse(cy, cx, 0.45 * r, 0.75 * r, shape=(size, size)))
    return _draw(size, *polygon([cy - 0.42 * r, cy - 0.42 * r, cy + 0.42 * r, cy + 0.42 * r],
                                [cx - 0.65 * r, cx + 0.65 * r, cx + 0.65 * r, cx - 0.65 * r], (size, size)))


def _tail(variant, cy, cx, r, d, size):
    root = cx - d * 0.6 * r
    if variant == "fan":
        end = cx - d * 1.75 * r
        return _draw(size, *polygon([cy, cy - 0.78 * r, cy + 0.78 * r], [root, end, end], (size, size)))
    # fork: a swallow tail, a longer fan with a V notch cut from the middle of its end (of the
    # fan's area; a notch rather than two thin prongs, which an edge detector found 20% more
    # edge-dense per pixel than the fan: 357 vs 297 mean Sobel magnitude, now 309 vs 297)
    end = cx - d * 1.9 * r
    fan = _draw(size, *polygon([cy, cy - 0.78 * r, cy + 0.78 * r], [root, end, end], (size, size)))
    notch = _draw(size, *polygon([cy - 0.3 * r, cy, cy + 0.3 * r], [end, cx - d * 1.5 * r, end], (size, size)))
    return fan & ~notch


def _head(variant, cy, cx, r, d, size):
    hy, hx, hr = cy - 0.35 * r, cx + d * 1.15 * r, 0.5 * r
    m = _draw(size, *disk((hy, hx), hr, shape=(size, size)))
    if variant == "crest":
        m |= _draw(size, *polygon([hy - 0.3 * r, hy - 1.12 * r, hy - 0.3 * r],
                                  [hx - d * 0.35 * r, hx - d * 0.1 * r, hx + d * 0.15 * r], (size, size)))
    return m


def _wing(variant, cy, cx, r, d, size):
    if variant == "round":
        return _draw(size, *ellipse(cy - 0.82 * r, cx - d * 0.1 * r, 0.42 * r, 0.72 * r, shape=(size, size)))
    # a triangle swept back: root along the back, tip up and behind
    return _draw(size, *polygon([cy - 0.42 * r, cy - 0.42 * r, cy - 1.5 * r],
                                [cx + d * 0.6 * r, cx - d * 0.85 * r, cx - d * 1.05 * r], (size, size)))


TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks")


def _texture(rng, size) -> tuple[str, np.ndarray]:
    """A class-independent texture: its name and the (size, size) bool pixels of the second colour."""
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    if kind == "plain":
        return kind, np.zeros((size, size), bool)
    if kind == "stripes":
        theta, period = rng.uniform(0, np.pi), rng.uniform(3.0, 6.0)
        return kind, (xx * np.cos(theta) + yy * np.sin(theta) + rng.uniform(0, period)) % period < period / 2
    cell = int(rng.integers(2, 4))
    return kind, ((xx // cell + yy // cell) % 2).astype(bool)


def make_parts(n: int, size: int = 64, seed: int = 0) -> PartSet:
    """Generate ``n`` part-based images (balanced classes) with per-part masks.

    Parameters
    ----------
    n : int
    size : int
        Image side in pixels (48 to 128).
    seed : int
    """
    n = integer(n, "n")
    if not 48 <= size <= 128:
        raise InputError(f"size must be between 48 and 128 pixels, got {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(PART_CLASSES)).astype(np.int64)
    images = _background(rng, n, size)
    backgrounds = np.clip(np.round(images), 0, 255).astype(np.uint8)
    images = backgrounds.astype(np.float64)
    masks = np.zeros((n, len(PARTS), size, size), bool)
    birds = []
    for i, label in enumerate(labels):
        combo = CLASS_PARTS[PART_CLASSES[label]]
        r = rng.uniform(0.15, 0.19) * size
        d = int(rng.choice([-1, 1]))
        cx = rng.uniform(1.85 * r + 1, size - 1.85 * r - 1)
        cy = rng.uniform(1.55 * r + 1, size - 0.85 * r - 1)
        hues = (rng.uniform() + np.arange(8) / 8) % 1.0
        rng.shuffle(hues)
        colours = [np.round(_hsv(h, rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))) for h in hues]
        shapes = {"tail": _tail(combo["tail"], cy, cx, r, d, size), "body": _body(combo["body"], cy, cx, r, size),
                  "wing": _wing(combo["wing"], cy, cx, r, d, size), "head": _head(combo["head"], cy, cx, r, d, size)}
        bird = {"cy": cy, "cx": cx, "r": r, "direction": d}
        drawn = np.zeros((size, size), bool)
        for k, part in enumerate(("head", "wing", "body", "tail")):  # front to back: visible = not yet drawn
            visible = shapes[part] & ~drawn
            drawn |= visible
            masks[i, PARTS.index(part)] = visible
            texture, second = _texture(rng, size)  # drawn whatever the class
            images[i][visible] = colours[2 * k]
            images[i][visible & second] = colours[2 * k + 1]
            bird[part] = {"variant": combo[part], "texture": texture, "colour": colours[2 * k].astype(int),
                          "colour2": colours[2 * k + 1].astype(int)}
        birds.append(bird)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return PartSet(images, labels, masks, backgrounds, birds, seed, size)


__all__ = ["CLASS_PARTS", "PARTS", "PART_CLASSES", "TEXTURES", "PartSet", "VARIANTS", "make_parts"]
