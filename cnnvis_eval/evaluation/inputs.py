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
        ``"syn000"``, ... for synthetic images, the photo's name for photos.
    masks : list of N bool (H, W) arrays or None
        Object masks (synthetic images) or None (photos).
    """

    images: np.ndarray
    ids: list
    masks: list

    @property
    def synthetic_index(self) -> np.ndarray:
        """bool (N,): which images have an object mask."""
        return np.array([m is not None for m in self.masks])


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


def image_set(spec: ModelSpec, config: RunConfig) -> ImageSet:
    """Synthetic benchmark images (first, ``syn000`` ...) and bundled photos at the model's
    input size.

    Raises
    ------
    InputError
        The model does not take RGB images.
    """
    from skimage.transform import resize

    from ..data.photos import load_photos
    from ..data.synthetic import make_synthetic

    h, w = spec.input_shape[:2]
    imgs, ids, masks = [], [], []
    if config.synthetic:
        side = int(min(max(min(h, w), 48), 128))
        syn = make_synthetic(config.synthetic, side, seed=10_000 + config.seed)
        for i in range(len(syn)):
            img, mask = syn.images[i], syn.masks[i]
            if (side, side) != (h, w):
                img = np.round(resize(img, (h, w), preserve_range=True, anti_aliasing=True)).astype(np.uint8)
                mask = resize(mask.astype(float), (h, w), order=0) > 0.5
            imgs.append(img)
            ids.append(f"syn{i:03d}")
            masks.append(mask)
    if config.photos:
        for name, img in zip(config.photos, load_photos(config.photos, (h, w))):
            imgs.append(img)
            ids.append(name)
            masks.append(None)
    if spec.input_shape[-1] != 3:
        raise InputError(f"model {spec.name!r} takes {spec.input_shape[-1]} channels; the grid's images are RGB")
    return ImageSet(np.stack(imgs), ids, masks)


def neuron_targets(spec: ModelSpec) -> dict:
    """The study's neurons of ``spec``: ``{"logit": ClassTarget("top"), "mid": ..., "high": ...}``,
    the intermediate ones the most activated channel (mean over the map) of each of the
    model's intermediate layers (fewer keys when it has fewer)."""
    out = {"logit": ClassTarget("top")}
    for kind, layer in zip(("mid", "high"), spec.intermediate_layers):
        out[kind] = NeuronTarget(layer, "top", reduce="mean")
    return out


__all__ = ["ImageSet", "content_key", "display_names", "image_set", "load_inputs", "load_spec", "neuron_targets",
           "release"]
