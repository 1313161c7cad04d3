"""Data: bundled real photos, the synthetic ground-truth benchmark, benchmark v2 (the
multi-object scenes of :mod:`.scenes`, the part-based classes of :mod:`.parts`, the
suppressor variant of :mod:`.suppressor`), and the synthetic data sets with
class-correlated artefacts (sketches, symbols, x-rays; :mod:`.artefacts`)."""

from .artefacts import ArtefactSet, make_artefact_set, make_artefact_splits
from .parts import PART_CLASSES, PARTS, PartSet, make_parts
from .photos import DEFAULT_PHOTOS, list_photos, load_photo, load_photos, photo_info
from .scenes import SceneSet, make_scenes
from .suppressor import SuppressorSet, make_suppressor
from .synthetic import SyntheticSet, make_synthetic

__all__ = ["DEFAULT_PHOTOS", "PARTS", "PART_CLASSES", "ArtefactSet", "PartSet", "SceneSet", "SuppressorSet",
           "SyntheticSet", "list_photos", "load_photo", "load_photos", "make_artefact_set",
           "make_artefact_splits", "make_parts", "make_scenes", "make_suppressor", "make_synthetic", "photo_info"]
