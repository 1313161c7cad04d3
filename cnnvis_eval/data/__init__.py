"""Data: bundled real photos and the synthetic ground-truth benchmark."""

from .photos import DEFAULT_PHOTOS, list_photos, load_photo, load_photos, photo_info
from .synthetic import SyntheticSet, make_synthetic

__all__ = ["DEFAULT_PHOTOS", "SyntheticSet", "list_photos", "load_photo", "load_photos",
           "make_synthetic", "photo_info"]
