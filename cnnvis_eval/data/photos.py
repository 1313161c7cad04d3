"""Real photos that installed packages ship (no download), with ImageNet classes where one applies.

Sources: scikit-image's ``skimage.data`` (files inside the package), scikit-learn's
``load_sample_image`` and matplotlib's sample data.  :data:`DEFAULT_PHOTOS` are the ten
that stand in for the study's ten images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        from skimage import data

        img = getattr(data, name)()
        return img[0] if isinstance(img, tuple) else img

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load():
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return mpimg.imread(f, format="jpg")


@dataclass(frozen=True)
class Photo:
    """A bundled photo: its loader, source, and ImageNet class ids (most likely first)."""

    name: str
    load: Callable[[], np.ndarray]
    source: str
    imagenet: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    description: str = ""


PHOTOS: dict[str, Photo] = {
    p.name: p
    for p in [
        Photo("chelsea", _skimage("chelsea"), "scikit-image", (281, 282, 285),
              ("tabby", "tiger cat", "Egyptian cat"), "a tabby cat's face"),
        Photo("coffee", _skimage("coffee"), "scikit-image", (967, 968, 504),
              ("espresso", "cup", "coffee mug"), "a cup of coffee on a saucer"),
        Photo("rocket", _skimage("rocket"), "scikit-image", (657, 744, 812),
              ("missile", "projectile", "space shuttle"), "a rocket on the launch pad"),
        Photo("grace_hopper", _grace_hopper, "matplotlib", (652, 906, 834),
              ("military uniform", "Windsor tie", "suit"), "portrait of Grace Hopper in uniform"),
        Photo("china", _sklearn("china.jpg"), "scikit-learn", (698, 663),
              ("palace", "monastery"), "a Chinese temple roof"),
        Photo("motorcycle", _skimage("stereo_motorcycle"), "scikit-image", (670, 665, 518),
              ("motor scooter", "moped", "crash helmet"), "a motorcycle in a studio (left stereo view)"),
        Photo("camera", _skimage("camera"), "scikit-image", (872, 759),
              ("tripod", "reflex camera"), "the cameraman with his tripod (grayscale)"),
        Photo("clock", _skimage("clock"), "scikit-image", (409, 892),
              ("analog clock", "wall clock"), "a motion-blurred clock (grayscale)"),
        Photo("astronaut", _skimage("astronaut"), "scikit-image", (), (), "an astronaut's portrait"),
        Photo("flower", _sklearn("flower.jpg"), "scikit-learn", (), (), "a flower"),
        Photo("hubble_deep_field", _skimage("hubble_deep_field"), "scikit-image", (), (), "galaxies"),
        Photo("coins", _skimage("coins"), "scikit-image", (), (), "coins (grayscale)"),
        Photo("immunohistochemistry", _skimage("immunohistochemistry"), "scikit-image", (), (),
              "stained tissue"),
    ]
}

DEFAULT_PHOTOS: tuple[str, ...] = (
    "chelsea", "coffee", "rocket", "grace_hopper", "china",
    "motorcycle", "camera", "clock", "astronaut", "flower",
)
"""The default image set: ten photos mirroring the study's ten."""


def list_photos() -> list[str]:
    """Names of all bundled photos."""
    return list(PHOTOS)


def photo_info(name: str) -> Photo:
    try:
        return PHOTOS[name]
    except KeyError:
        raise InputError(f"unknown photo {name!r}; available: {', '.join(PHOTOS)}") from None


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return img


def center_crop_resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Center-crop to the target aspect ratio, then resize (anti-aliased) to ``size``.

    Returns uint8 (H, W, 3).
    """
    from skimage.transform import resize

    h_out, w_out = (size, size) if np.isscalar(size) else size
    img = _rgb(img)
    h, w = img.shape[:2]
    scale = min(h / h_out, w / w_out)
    ch, cw = int(round(h_out * scale)), int(round(w_out * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top : top + ch, left : left + cw]
    out = resize(crop, (h_out, w_out), anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def load_photo(name: str, size: int | tuple[int, int] | None = 224) -> np.ndarray:
    """One photo as uint8 (H, W, 3), center-cropped and resized (``size=None``: original)."""
    img = _rgb(photo_info(name).load())
    return img.copy() if size is None else center_crop_resize(img, size)


def load_photos(names: Sequence[str] | None = None, size: int | tuple[int, int] = 224) -> np.ndarray:
    """Several photos as uint8 (N, H, W, 3); default: :data:`DEFAULT_PHOTOS`."""
    names = list(DEFAULT_PHOTOS if names is None else names)
    if not names:
        raise InputError("no photo names given")
    return np.stack([load_photo(n, size) for n in names])
