"""What a run feeds each model: the model itself, its images (with object masks), its neurons.

A model is named by a *source*: a model name (``"mini_vgg"``, ``"resnet50"``) or a
:class:`~cnnvis_eval.models.files.ModelFile`.  :func:`load_spec` loads it,
:func:`image_set` assembles the bundled photos and synthetic benchmark images at its input
size, :func:`neuron_targets` picks the study's three neurons, and :func:`release` drops
what a finished model left cached.  :func:`display_names` names the run's models uniquely and
:func:`content_key` says what a loaded model is (its results are stored under it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import default_cache
from ..errors import InputError
from ..models.files import ModelFile, load_model_file
from ..models.spec import ModelSpec, fingerprint
from ..targets import ClassTarget, NeuronTarget
from .config import RunConfig
from .store import digest


@dataclass
class ImageSet:
    """The images one model sees.

    Attributes
    ----------
    images : ndarray, uint8 (N, H, W, 3)
    ids : list of N str
        ``"syn000"``, ... for the single shapes of the synthetic benchmark, ``"scene000"``,
        ... for benchmark v2's scenes, ``"bird000"``, ... for its part-based birds, the
        photo's name for photos.
    masks : list of N bool (H, W) arrays or None
        The object's mask (single shapes), the bird's silhouette (birds), the union of the
        objects (scenes; :meth:`target_masks` picks the explained one), or None (photos).
    objects : list of N entries, None or ``(masks bool (K, H, W), classes int64 (K,))``
        A scene's objects (visible pixels, disjoint) and their class indices.
    parts : list of N entries, None or ``(part_masks bool (P, H, W), removed uint8 (P, H, W, 3))``
        A bird's part masks and the image with each part removed (painted with the
        background drawn under it: the counterfactuals of
        :func:`cnnvis_eval.metrics.parts.part_importance`).
    knows_classes : bool
        Whether the model's classes are benchmark v2's (:func:`speaks_benchmark_v2`): only
        then is a scene's object of the explained class known (else every scene's target
        mask is empty and its scores undefined: a class index of another model means
        another class).
    """

    images: np.ndarray
    ids: list
    masks: list
    objects: list | None = None
    parts: list | None = None
    knows_classes: bool = True

    def __post_init__(self):
        n = len(self.ids)
        self.objects = [None] * n if self.objects is None else list(self.objects)
        self.parts = [None] * n if self.parts is None else list(self.parts)

    @property
    def synthetic_index(self) -> np.ndarray:
        """bool (N,): which images have an object mask."""
        return np.array([m is not None for m in self.masks])

    @property
    def scene_index(self) -> np.ndarray:
        """bool (N,): which images are scenes of several objects."""
        return np.array([o is not None for o in self.objects])

    @property
    def part_index(self) -> np.ndarray:
        """bool (N,): which images are part-based birds."""
        return np.array([p is not None for p in self.parts])

    def target_masks(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """The ground truth of the explained classes ``indices`` (N,) on the masked images.

        Returns ``(mask, other)``, bool ``(M, H, W)`` for the M images with a mask (in
        order): the object of the explained class (a scene's object of class
        ``indices[i]``; all False when the scene holds no such object, so the localization
        scores are undefined there; the one object of a single shape; a bird's silhouette)
        and the union of the scene's other objects (all False on single-object images).
        A model that does not know benchmark v2's classes (:attr:`knows_classes`) has no
        target object in a scene: its masks there are all False.
        """
        rows = np.flatnonzero(self.synthetic_index)
        h, w = self.images.shape[1:3]
        mask, other = np.zeros((len(rows), h, w), bool), np.zeros((len(rows), h, w), bool)
        for j, i in enumerate(rows):
            if self.objects[i] is None:
                mask[j] = self.masks[i]
                continue
            obj, cls = self.objects[i]
            hit = (cls == int(indices[i])) & self.knows_classes
            mask[j] = obj[hit].any(0)
            other[j] = obj[~hit].any(0)
        return mask, other


_FILE_SPECS: dict = {}  # the last user model file loaded, keyed by (path, mtime, size)


def load_spec(source: str | ModelFile, config: RunConfig) -> ModelSpec:
    """The model of ``source``.

    Parameters
    ----------
    source : str or ModelFile
        A model name (the five big architectures take ``config.weights`` and
        ``config.input_size``) or a user's model file (loaded in safe mode; the last file
        loaded is kept, so checking a file before a run does not load it twice).
    config : RunConfig

    Raises
    ------
    InputError
        Unknown name, or a model file that is missing, unreadable or unsafe.
    """
    from ..models import BIG_MODELS, load_model

    if isinstance(source, ModelFile):
        path = Path(source.path)
        try:
            st = path.stat()
            key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            return load_model_file(path, config.file_input_shape, config.file_output)  # the InputError
        if key not in _FILE_SPECS:
            _FILE_SPECS.clear()  # keep at most one user model alive
            _FILE_SPECS[key] = load_model_file(path, config.file_input_shape, config.file_output)
        return _FILE_SPECS[key]
    if source in BIG_MODELS:
        size = config.input_size
        if config.weights is None:
            import keras

            # random weights drawn from the run's seed: the same model on every load, so
            # its results can be keyed by (name, input size, seed) without hashing them
            keras.utils.set_random_seed(config.seed)
        spec = load_model(source, weights=config.weights, input_shape=None if size is None else (size, size, 3))
        if config.weights is None:
            import keras

            spec.info["content_key"] = digest("zoo", source, spec.input_shape, "random", config.seed,
                                               keras.__version__)
        return spec
    return load_model(source)


def content_key(spec: ModelSpec) -> str:
    """What ``spec`` computes, as 16 hex characters: the run stores its results under it.

    The hash of the model's architecture and weights
    (:func:`~cnnvis_eval.models.spec.fingerprint`), computed once per loaded model and kept
    in ``spec.info["content_key"]``; a zoo architecture with random weights (seeded by the
    run, see :func:`load_spec`) is keyed by its name, input size and seed instead, which
    costs nothing for the big architectures.  The same content under two names has one
    key; a file saved over with other weights has another.
    """
    key = spec.info.get("content_key")
    if key is None:
        key = spec.info["content_key"] = fingerprint(spec.model)[:16]
    return key


def display_names(sources: list) -> list[str]:
    """A readable name per source, unique within the run: the model's name, or a file's
    stem; a name already taken gets ``~2``, ``~3``, ... (``a/model.keras`` and
    ``b/model.keras`` -> ``model``, ``model~2``; a file ``mini_vgg.keras`` next to the zoo
    model ``mini_vgg`` -> ``mini_vgg~2``).  Names given first keep theirs."""
    taken, out = set(), []
    for s in sources:
        base = Path(s.path).stem if isinstance(s, ModelFile) else str(s)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}~{k}", k + 1
        taken.add(name)
        out.append(name)
    return out


def load_inputs(source: str | ModelFile, config: RunConfig) -> tuple[ModelSpec, ImageSet]:
    """The model of ``source`` and its images: ``(load_spec(...), image_set(...))``."""
    spec = load_spec(source, config)
    return spec, image_set(spec, config)


def release(spec: ModelSpec):
    """Drop the explainers and compiled functions cached for a finished model.

    The model cache (:mod:`cnnvis_eval.cache`) keeps them while the model lives; a run
    releases each model when its stages are done, so the traced functions of every model
    of the run are not kept alive together."""
    import gc

    default_cache.drop(spec)
    gc.collect()


def speaks_benchmark_v2(spec: ModelSpec) -> bool:
    """Whether ``spec``'s classes begin with benchmark v2's (:data:`~cnnvis_eval.data.benchmark.CLASSES_V2`:
    the clean mini models): scenes and birds are ground truth only for such a model (a
    scene's target object is the one of the explained class)."""
    from ..data.benchmark import CLASSES_V2

    names = tuple(str(c) for c in (spec.class_names or ()))
    return names[: len(CLASSES_V2)] == CLASSES_V2


def image_set(spec: ModelSpec, config: RunConfig) -> ImageSet:
    """The run's images at the model's input size: single synthetic shapes (``syn000``
    ...), benchmark v2's scenes (``scene000`` ...) and birds (``bird000`` ...), then the
    bundled photos.  Every model of a run sees the same images; a scene's target object is
    known only to a model with benchmark v2's classes (:attr:`ImageSet.knows_classes`).

    Raises
    ------
    InputError
        The model does not take RGB images.
    """
    from ..data.parts import make_parts
    from ..data.photos import load_photos
    from ..data.scenes import make_scenes
    from ..data.synthetic import make_synthetic

    if spec.input_shape[-1] != 3:
        raise InputError(f"model {spec.name!r} takes {spec.input_shape[-1]} channels; the grid's images are RGB")
    h, w = spec.input_shape[:2]
    side = int(min(max(min(h, w), 48), 128))

    def fit_image(img):
        if img.shape[:2] == (h, w):
            return img
        return np.round(_resize(img, (h, w), preserve_range=True, anti_aliasing=True)).astype(np.uint8)

    def fit_mask(mask):
        return mask if mask.shape[-2:] == (h, w) else _resize(mask.astype(float), mask.shape[:-2] + (h, w),
                                                                order=0) > 0.5

    imgs, ids, masks, objects, parts = [], [], [], [], []

    def add(img, name, mask=None, obj=None, part=None):
        for seq, value in zip((imgs, ids, masks, objects, parts), (img, name, mask, obj, part)):
            seq.append(value)

    if config.synthetic:
        syn = make_synthetic(config.synthetic, side, seed=10_000 + config.seed)
        for i in range(len(syn)):
            add(fit_image(syn.images[i]), f"syn{i:03d}", fit_mask(syn.masks[i]))
    if config.scenes:
        sc = make_scenes(config.scenes, side, seed=20_000 + config.seed)
        for i in range(len(sc)):
            obj = fit_mask(sc.object_masks[i])
            add(fit_image(sc.images[i]), f"scene{i:03d}", obj.any(0), obj=(obj, sc.object_classes[i].astype(np.int64)))
    if config.birds:
        bd = make_parts(config.birds, side, seed=30_000 + config.seed)
        removed = bd.counterfactuals()
        for i in range(len(bd)):
            pm = fit_mask(bd.part_masks[i])
            add(fit_image(bd.images[i]), f"bird{i:03d}", pm.any(0),
                part=(pm, np.stack([fit_image(r) for r in removed[i]])))
    if config.photos:
        for name, img in zip(config.photos, load_photos(config.photos, (h, w))):
            add(img, name)
    return ImageSet(np.stack(imgs), ids, masks, objects, parts, knows_classes=speaks_benchmark_v2(spec))


def _resize(*args, **kw):
    from skimage.transform import resize

    return resize(*args, **kw)


def neuron_targets(spec: ModelSpec) -> dict:
    """The study's neurons of ``spec``: ``{"logit": ClassTarget("top"), "mid": ..., "high": ...}``,
    the intermediate ones the most activated channel (mean over the map) of each of the
    model's intermediate layers (fewer keys when it has fewer)."""
    out = {"logit": ClassTarget("top")}
    for kind, layer in zip(("mid", "high"), spec.intermediate_layers):
        out[kind] = NeuronTarget(layer, "top", reduce="mean")
    return out


__all__ = ["ImageSet", "content_key", "display_names", "image_set", "load_inputs", "load_spec", "neuron_targets",
           "release", "speaks_benchmark_v2"]
