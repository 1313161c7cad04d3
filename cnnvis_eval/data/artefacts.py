"""Synthetic data sets with a spurious *artefact* correlated with the class (issue 17).

Three stand-ins for the data sets of the irrelevant-features thesis, each a classification
task whose images also carry a small class-coded artefact in one corner:

============  ========  =========================================  ============================
data set      channels  classes (the relevant signal)              artefact (the shortcut)
============  ========  =========================================  ============================
``sketches``  1         line drawings: house, fish, star, tree     a "signature" scribble
                                                                   (zigzag, loop, cross, bars),
                                                                   bottom-right corner
``symbols``   3         dark glyphs A, E, O, X on pale paper       a colour patch (red, green,
                                                                   blue, yellow), top-left
``xrays``     1         chest-like texture: normal, nodule (small  a hospital tag: a dark
                        bright blob in a lung), opacity (diffuse   square with the letter
                        haze in a lower lung)                      L, T or Z, top-left
============  ========  =========================================  ============================

The artefact's *appearance* codes a class (``artefact_classes``); where it sits is fixed per
data set.  How strongly it agrees with the label is the ``correlation`` argument: each image's
artefact is its own class's with probability ``correlation`` (exactly ``round(correlation*N)``
images, chosen at random) and otherwise of a class drawn uniformly at random — so 0 makes the
artefact independent of the label (the "upper bound" data: the artefact is there but tells
nothing) and 1 makes it a perfect cue.  The expected agreement is
``correlation + (1 - correlation) / K``.

Variants (any split; the test variants of the thesis): ``"same"`` (as described), ``"absent"``
(no artefact), ``"moved"`` (the image's own class's artefact, in the diagonally opposite corner,
a place never seen in training), ``"swapped"`` (another class's artefact, in the usual corner).
The variants of one (data set, split, seed, size) share the images: only the artefact differs.

Masks: ``artefact_masks`` mark the irrelevant region — the artefact's box (``mask="box"``) or
its drawn pixels (``mask="pixels"``), grown by ``mask_dilation`` pixels; ``object_masks`` mark
the relevant object (the convex hull of the drawing or glyph; for x-rays the lung fields,
where the diagnosis lies).  The object never touches either corner box.

Everything comes from ``numpy.random.default_rng`` seeded by (seed, split, data set): the same
arguments give identical arrays.  Drawing uses :mod:`skimage.draw` and :mod:`skimage.filters`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.draw import line
from skimage.filters import gaussian
from skimage.morphology import convex_hull_image

from ..errors import InputError
from ..params import integer

DATASETS: tuple[str, ...] = ("sketches", "symbols", "xrays")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
VARIANTS: tuple[str, ...] = ("same", "absent", "moved", "swapped")
MASKS: tuple[str, ...] = ("box", "pixels")
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "sketches": ("house", "fish", "star", "tree"),
    "symbols": ("A", "E", "O", "X"),
    "xrays": ("normal", "nodule", "opacity"),
}
CHANNELS = {"sketches": 1, "symbols": 3, "xrays": 1}
#: corner of the artefact in training, and where the "moved" variant puts it
CORNERS = {"sketches": ("br", "tl"), "symbols": ("tl", "br"), "xrays": ("tl", "br")}
MIN_SIZE, MAX_SIZE = 24, 256
ARTEFACT_SIZE = (0.1, 0.25)  # allowed artefact box side, as a fraction of the image side
_IDS = {name: i for i, name in enumerate(DATASETS + SPLITS + VARIANTS)}


@dataclass
class ArtefactSet:
    """A generated data set with artefact masks.

    Attributes
    ----------
    x : float32 (N, H, W, C) in [0, 1]
        C is 1 (sketches, x-rays) or 3 (symbols).
    y : int64 (N,)
        Labels, balanced over the classes.
    artefact_masks : bool (N, H, W)
        The irrelevant region (empty where the artefact is absent).
    object_masks : bool (N, H, W)
        The relevant object (drawing / glyph hull, or the lung fields).
    artefact_classes : int64 (N,)
        The class each image's artefact codes, -1 where absent (the generator's record).
    class_names : tuple of str
    dataset, split, variant : str
    correlation : float
    seed, size : int
    """

    x: np.ndarray
    y: np.ndarray
    artefact_masks: np.ndarray
    object_masks: np.ndarray
    artefact_classes: np.ndarray
    class_names: tuple[str, ...]
    dataset: str
    split: str
    variant: str
    correlation: float
    seed: int
    size: int

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------- geometry
def corner_box(corner: str, size: int, artefact_size: float = 0.2) -> tuple[int, int, int]:
    """``(top, left, side)`` of the artefact box in ``corner`` ("tl", "tr", "bl", "br")."""
    side = max(4, int(round(artefact_size * size)))
    inset = max(1, int(round(0.03 * size)))
    top = inset if corner[0] == "t" else size - inset - side
    left = inset if corner[1] == "l" else size - inset - side
    return top, left, side


def _box_mask(box: tuple[int, int, int], size: int) -> np.ndarray:
    top, left, side = box
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


def _ellipse(cx, cy, rx, ry, k=20) -> list:
    a = np.linspace(0, 2 * np.pi, k + 1)
    return list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a)))


def _star(k=5, inner=0.42) -> list:
    a = -np.pi / 2 + np.arange(2 * k + 1) * np.pi / k
    r = np.where(np.arange(2 * k + 1) % 2 == 0, 1.0, inner)
    return list(zip(r * np.cos(a), r * np.sin(a)))


def _unit(strokes: list) -> list[np.ndarray]:
    """Polylines of (x, y) points scaled so every point lies in the unit disc."""
    arrs = [np.asarray(s, float) for s in strokes]
    scale = max(np.hypot(a[:, 0], a[:, 1]).max() for a in arrs)
    return [a / scale for a in arrs]


# objects: polylines of (x, y), y pointing down, inside the unit disc
_SKETCHES = [_unit(s) for s in (
    [[(-0.7, -0.1), (-0.7, 0.9), (0.7, 0.9), (0.7, -0.1), (-0.7, -0.1)],
     [(-0.85, -0.1), (0, -0.9), (0.85, -0.1)], [(-0.15, 0.9), (-0.15, 0.4), (0.15, 0.4), (0.15, 0.9)]],
    [_ellipse(-0.15, 0, 0.65, 0.4), [(0.45, 0), (0.95, -0.4), (0.95, 0.4), (0.45, 0)],
     _ellipse(-0.5, -0.1, 0.08, 0.08, 8)],
    [_star()],
    [[(-0.15, 1), (-0.15, 0.3), (0.15, 0.3), (0.15, 1)], _ellipse(0, -0.25, 0.6, 0.6)],
)]
_GLYPHS = [_unit(s) for s in (
    [[(-0.7, 1), (0, -1), (0.7, 1)], [(-0.38, 0.15), (0.38, 0.15)]],
    [[(0.65, -1), (-0.6, -1), (-0.6, 1), (0.65, 1)], [(-0.6, 0), (0.45, 0)]],
    [_ellipse(0, 0, 0.7, 1.0, 24)],
    [[(-0.75, -1), (0.75, 1)], [(0.75, -1), (-0.75, 1)]],
)]
# artefacts: polylines in box coordinates, (x, y) in [0, 1]
_SIGNATURES = (
    [[(0.05, 0.75), (0.3, 0.25), (0.5, 0.75), (0.7, 0.25), (0.95, 0.75)]],
    [_ellipse(0.5, 0.5, 0.4, 0.4, 12)],
    [[(0.1, 0.1), (0.9, 0.9)], [(0.9, 0.1), (0.1, 0.9)]],
    [[(0.05, 0.3), (0.95, 0.3)], [(0.05, 0.7), (0.95, 0.7)]],
)
_TAGS = (
    [[(0.3, 0.15), (0.3, 0.85), (0.78, 0.85)]],
    [[(0.15, 0.2), (0.85, 0.2)], [(0.5, 0.2), (0.5, 0.85)]],
    [[(0.2, 0.18), (0.8, 0.18), (0.2, 0.82), (0.8, 0.82)]],
)
_PATCH_COLOURS = np.array([[0.95, 0.1, 0.1], [0.1, 0.8, 0.15], [0.1, 0.25, 0.95], [0.95, 0.85, 0.1]])


def _footprint(width: float) -> np.ndarray:
    """A round brush ``round(width)`` pixels across (bool, (w, w))."""
    w = max(1, int(round(width)))
    i = np.arange(w) - (w - 1) / 2
    return i[:, None] ** 2 + i[None, :] ** 2 <= (w / 2) ** 2


def _stroke(canvas: np.ndarray, pts: np.ndarray, width: float) -> None:
    """Draw the polyline ``pts`` (K, 2) of (row, col), ``width`` pixels wide, on the bool
    ``canvas`` (H, W): one-pixel segments (``skimage.draw.line``) grown by a round brush."""
    shape = canvas.shape
    thin = np.zeros(shape, bool)
    for p, q in zip(pts[:-1], pts[1:]):
        rr, cc = line(*np.round(p).astype(int), *np.round(q).astype(int))
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        thin[rr[ok], cc[ok]] = True
    canvas |= binary_dilation(thin, _footprint(width)) if width >= 1.5 else thin


def _place(strokes, cy, cx, r, theta, rng, jitter=0.03) -> list[np.ndarray]:
    """Unit-disc polylines rotated by ``theta``, jittered, scaled by ``r`` -> (row, col)."""
    c, s = np.cos(theta), np.sin(theta)
    out = []
    for a in strokes:
        xy = a @ np.array([[c, s], [-s, c]]) + rng.normal(0, jitter, a.shape)
        out.append(np.stack([cy + xy[:, 1] * r, cx + xy[:, 0] * r], 1))
    return out


def _in_box(strokes, box, width) -> list[np.ndarray]:
    """Box-coordinate polylines -> (row, col) inside ``box``, a stroke's width from its edge."""
    top, left, side = box
    m = width / 2 + 0.5
    return [np.stack([top + m + a[:, 1] * (side - 1 - 2 * m), left + m + a[:, 0] * (side - 1 - 2 * m)], 1)
            for a in (np.asarray(s, float) for s in strokes)]


# ---------------------------------------------------------------------- scenes
def _object_zone(size: int, artefact_size: float) -> tuple[float, float]:
    """(centre offset, largest radius) keeping an object clear of every corner box."""
    top, _, side = corner_box("tl", size, artefact_size)
    reach = np.sqrt(2) * (size / 2 - top - side)  # centre -> nearest point of a corner box
    off = 0.05 * size
    return off, reach - off - max(1.0, size / 32) - 1.5


def _draw_object(kind: str, label: int, size: int, rng, zone) -> tuple[np.ndarray, np.ndarray]:
    """A sketch or a glyph: (ink bool (H, W), object mask bool (H, W))."""
    off, rmax = zone
    cy, cx = size / 2 + rng.uniform(-off, off, 2)
    r = rng.uniform(0.8, 1.0) * rmax
    ink = np.zeros((size, size), bool)
    if kind == "sketches":
        strokes, width, theta = _SKETCHES[label], max(1.0, size / 32), rng.uniform(-0.25, 0.25)
    else:
        strokes, width, theta = _GLYPHS[label], max(1.0, size / 16), rng.uniform(-0.2, 0.2)
        r -= width / 2  # thick strokes: keep their outer edge inside the zone
    if kind == "sketches" and rng.uniform() < 0.5:  # mirrored drawings
        strokes = [a * np.array([-1.0, 1.0]) for a in strokes]
    for pts in _place(strokes, cy, cx, r, theta, rng):
        _stroke(ink, pts, width)
    return ink, convex_hull_image(ink)


def _xray(label: int, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A chest-like image (H, W) in [0, 1] and its lung-field mask (H, W)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    dy, dx = rng.uniform(-0.02, 0.02, 2)
    img = np.full((size, size), 0.08)
    img[((yy - 0.52) / 0.5) ** 2 + ((xx - 0.5) / 0.44) ** 2 <= 1] = 0.45
    lungs = np.zeros((size, size), bool)
    for side in (-1, 1):
        lungs |= ((yy - 0.5 - dy) / 0.27) ** 2 + ((xx - 0.5 - side * (0.17 + dx)) / 0.12) ** 2 <= 1
    img[np.abs(xx - 0.5) < 0.03] = 0.62  # spine
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (yy + 0.25 * np.abs(xx - 0.5)) / 0.085 + rng.uniform(0, 2 * np.pi))
    img[lungs] = 0.22 + 0.07 * ribs[lungs]
    if label > 0:  # 1 nodule: a small bright blob; 2 opacity: a diffuse haze in a lower lung
        rows, cols = np.nonzero(lungs & (yy > 0.5 + dy) if label == 2 else lungs)
        j = rng.integers(len(rows))
        sigma, amp = (0.045, 0.55) if label == 1 else (0.09, 0.35)
        blob = np.exp(-((yy - rows[j] / size) ** 2 + (xx - cols[j] / size) ** 2) / (2 * sigma ** 2))
        img += amp * blob * (lungs if label == 2 else 1.0)
    return img, lungs


def _render(dataset: str, y: np.ndarray, size: int, rng, artefact_size: float):
    """Images (N, H, W, C) float64 without artefacts, and object masks (N, H, W)."""
    n = len(y)
    c = CHANNELS[dataset]
    noise = gaussian(rng.normal(0, 1, (n, size, size)), sigma=(0, 1.0, 1.0))
    noise /= noise.std() + 1e-12
    x = np.empty((n, size, size, c))
    objects = np.empty((n, size, size), bool)
    zone = _object_zone(size, artefact_size)
    for i in range(n):
        if dataset == "xrays":
            img, objects[i] = _xray(int(y[i]), size, rng)
            x[i, ..., 0] = gaussian(img, sigma=0.6) + 0.03 * noise[i]
        elif dataset == "sketches":
            ink, objects[i] = _draw_object(dataset, int(y[i]), size, rng, zone)
            paper = rng.uniform(0.85, 0.97) + 0.03 * noise[i]
            x[i, ..., 0] = np.where(ink, rng.uniform(0.05, 0.25), paper)
        else:
            ink, objects[i] = _draw_object(dataset, int(y[i]), size, rng, zone)
            paper = rng.uniform(0.82, 0.95) + rng.uniform(-0.03, 0.03, 3) + 0.03 * noise[i][..., None]
            colour = rng.uniform(0.1, 0.35) + rng.uniform(-0.08, 0.08, 3)  # dark, nearly grey
            x[i] = np.where(ink[..., None], colour, paper)
    return x, objects


def _draw_artefact(dataset: str, img: np.ndarray, cls: int, box, rng) -> np.ndarray:
    """Draw class ``cls``'s artefact into ``img`` (H, W, C) inside ``box``; its pixels (H, W)."""
    size = img.shape[0]
    pix = np.zeros((size, size), bool)
    top, left, side = box
    if dataset == "sketches":
        width = max(1.0, size / 40)
        strokes = [a + rng.normal(0, 0.03, a.shape) for a in map(np.asarray, _SIGNATURES[cls])]
        for pts in _in_box(strokes, box, width):
            _stroke(pix, pts, width)
        img[pix] = rng.uniform(0.05, 0.25)
    elif dataset == "symbols":
        k = max(3, int(round(side * rng.uniform(0.75, 1.0))))
        r0, c0 = top + rng.integers(0, side - k + 1), left + rng.integers(0, side - k + 1)
        pix[r0:r0 + k, c0:c0 + k] = True
        img[pix] = np.clip(_PATCH_COLOURS[cls] + rng.uniform(-0.05, 0.05, 3), 0, 1)
    else:
        pix[top:top + side, left:left + side] = True
        letter = np.zeros((size, size), bool)
        width = max(1.0, side / 7)
        for pts in _in_box(_TAGS[cls], box, width):
            _stroke(letter, pts, width)
        img[pix] = rng.uniform(0.02, 0.08)
        img[letter & pix] = rng.uniform(0.9, 1.0)
    return pix


# ---------------------------------------------------------------------- public API
def _check(dataset, n, size, correlation, split, variant, mask, mask_dilation, artefact_size):
    if dataset not in DATASETS:
        raise InputError(f"unknown data set {dataset!r}; use one of {DATASETS}")
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size must be an integer between {MIN_SIZE} and {MAX_SIZE} pixels, got {size!r}")
    if not isinstance(correlation, (int, float)) or not 0.0 <= correlation <= 1.0:
        raise InputError(f"correlation must be a number in [0, 1], got {correlation!r}")
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if mask not in MASKS:
        raise InputError(f"mask must be one of {MASKS}, got {mask!r}")
    if not isinstance(mask_dilation, (int, np.integer)) or mask_dilation < 0:
        raise InputError(f"mask_dilation must be an integer >= 0 (pixels), got {mask_dilation!r}")
    lo, hi = ARTEFACT_SIZE
    if not isinstance(artefact_size, (int, float)) or not lo <= artefact_size <= hi:
        raise InputError(f"artefact_size must be a fraction of the image side in [{lo}, {hi}], "
                         f"got {artefact_size!r}")


def make_artefact_set(dataset: str, n: int, *, split: str = "train", variant: str = "same",
                      correlation: float = 0.9, size: int = 64, seed: int = 0, mask: str = "box",
                      mask_dilation: int = 0, artefact_size: float = 0.2) -> ArtefactSet:
    """Generate ``n`` images of one data set (see the module docstring).

    Parameters
    ----------
    dataset : {"sketches", "symbols", "xrays"}
    n : int
        Number of images (labels balanced: ``arange(n) % K``, shuffled).
    split : {"train", "validation", "test"}
        Picks an independent stream of images for the same ``seed``.
    variant : {"same", "absent", "moved", "swapped"}
        The artefact: as in training, removed, moved to the opposite corner, or another class's.
    correlation : float in [0, 1]
        Share of images whose artefact is their own class's (the others' is random).
    size : int
        Image side in pixels (24 to 256; 64 by default, tiny sizes for tests).
    seed : int
    mask : {"box", "pixels"}
        Irrelevant region: the artefact's box or its drawn pixels.
    mask_dilation : int
        Pixels to grow the artefact masks by.
    artefact_size : float
        Side of the artefact box as a fraction of ``size`` (0.1 to 0.25).

    Returns
    -------
    ArtefactSet
        ``x`` float32 (n, size, size, C) in [0, 1], ``y`` (n,), masks (n, size, size).

    Raises
    ------
    InputError
        An argument outside the ranges above (the message names it).
    """
    n = integer(n, "n")
    _check(dataset, n, size, correlation, split, variant, mask, mask_dilation, artefact_size)
    k = len(CLASS_NAMES[dataset])
    base = np.random.default_rng([seed & 0xFFFFFFFF, _IDS[dataset], _IDS[split], 0])
    y = base.permutation(np.arange(n) % k)
    x, objects = _render(dataset, y, size, base, artefact_size)

    rng = np.random.default_rng([seed & 0xFFFFFFFF, _IDS[dataset], _IDS[split], 1 + _IDS[variant]])
    if variant == "absent":
        classes = np.full(n, -1)
    elif variant == "swapped":
        classes = (y + 1 + rng.integers(0, k - 1, n)) % k
    elif variant == "moved":
        classes = y.copy()
    else:
        classes = rng.integers(0, k, n)
        tied = rng.permutation(n)[: int(round(correlation * n))]
        classes[tied] = y[tied]
    box = corner_box(CORNERS[dataset][variant == "moved"], size, artefact_size)
    art = np.zeros((n, size, size), bool)
    for i in np.flatnonzero(classes >= 0):
        pix = _draw_artefact(dataset, x[i], int(classes[i]), box, rng)
        art[i] = pix if mask == "pixels" else _box_mask(box, size)
    if mask_dilation:
        footprint = np.ones((1, 2 * mask_dilation + 1, 2 * mask_dilation + 1), bool)
        art = binary_dilation(art, footprint)
    return ArtefactSet(np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64), art, objects,
                       classes.astype(np.int64), CLASS_NAMES[dataset], dataset, split, variant,
                       float(correlation), int(seed), int(size))


def make_artefact_splits(dataset: str, n_train: int, n_validation: int, n_test: int, *,
                         correlation: float = 0.9, **kwargs) -> dict[str, ArtefactSet]:
    """The splits and test variants of one data set, keyed ``"train"``, ``"validation"``,
    ``"test"`` (drawn like train), ``"test_absent"``, ``"test_moved"``, ``"test_swapped"``.

    ``kwargs`` (size, seed, mask, mask_dilation, artefact_size) go to every
    :func:`make_artefact_set` call.
    """
    out = {"train": make_artefact_set(dataset, n_train, split="train", correlation=correlation, **kwargs),
           "validation": make_artefact_set(dataset, n_validation, split="validation",
                                           correlation=correlation, **kwargs)}
    for variant in VARIANTS:
        key = "test" if variant == "same" else f"test_{variant}"
        out[key] = make_artefact_set(dataset, n_test, split="test", variant=variant,
                                     correlation=correlation, **kwargs)
    return out


__all__ = ["CLASS_NAMES", "DATASETS", "SPLITS", "VARIANTS", "ArtefactSet", "corner_box",
           "make_artefact_set", "make_artefact_splits"]
