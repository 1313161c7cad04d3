"""Data: bundled real photos, the synthetic ground-truth benchmark, the multi-object scenes of
benchmark v2 (:mod:`.scenes`), and the synthetic data sets with class-correlated artefacts
(sketches, symbols, x-rays; :mod:`.artefacts`)."""

from .artefacts import ArtefactSet, make_artefact_set, make_artefact_splits
from .photos import DEFAULT_PHOTOS, list_photos, load_photo, load_photos, photo_info
from .scenes import SceneSet, make_scenes
from .synthetic import SyntheticSet, make_synthetic

__all__ = ["DEFAULT_PHOTOS", "ArtefactSet", "SceneSet", "SyntheticSet", "list_photos", "load_photo", "load_photos",
           "make_artefact_set", "make_artefact_splits", "make_scenes", "make_synthetic", "photo_info"]
