"""Metric base class, the metric registry, and helpers shared by the metric modules.

Every metric is a small :class:`Metric` subclass that implements **one** method,
:meth:`Metric.evaluate_batch`, which scores a batch of images and returns one value per
image.  The base class owns the fixed skeleton (the Quantus ``metrics/base.py`` pattern,
without per-metric ``__call__`` copies)::

    evaluate(*args, batch_size=None, **kwargs)
      1. bind the arguments to evaluate_batch's signature     (InputError on a mismatch)
      2. prepare(): Explanations -> arrays, tensors -> NumPy, per-image arrays checked to
         agree on N and to be finite, model -> ModelSpec, target -> BoundTarget,
         explainer -> factory; then the metric's own check()
      3. split the per-image arguments into batches of ``batch_size`` images
      4. evaluate_batch(**batch) -> (n,) per batch; concatenated to float64 (N,)

Registering::

    @register_metric
    class Gini(Metric):
        name = "sparseness"; higher_is_better = True; category = "complexity"
        per_image = ("heatmap",)
        def evaluate_batch(self, heatmap): ...

Metrics never import concrete methods; a metric that needs explanations takes an
``explainer`` argument (see :func:`explainer_factory`).
"""

from __future__ import annotations

import inspect
import zlib
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from ..errors import CnnVisError, InputError, TargetError
from ..frame import rows
from ..methods.base import Explainer, Explanation, get_method
from ..models.spec import ModelSpec, as_spec
from ..params import chunks
from ..registry import Registry
from ..targets import BoundTarget, bind

CATEGORIES = ("similarity", "randomization", "faithfulness", "localization", "complexity", "axioms")

# ---------------------------------------------------------------------- registry
#: The metrics by name (see :class:`cnnvis_eval.registry.Registry`).
METRICS: "Registry[type[Metric]]" = Registry("metric")


def register_metric(cls: type["Metric"]) -> type["Metric"]:
    """Class decorator registering a :class:`Metric` subclass under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "metric":
        raise ValueError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if cls.category not in CATEGORIES:
        raise ValueError(f"metric {name!r} has category {cls.category!r}; use one of {CATEGORIES}")
    return METRICS.add(name, cls)


def get_metric(name: str) -> type["Metric"]:
    """The Metric class registered as ``name`` (InputError listing the names if unknown)."""
    return METRICS.get(name)


def list_metrics(category: str | None = None) -> list[str]:
    """Names of the registered metrics (of one ``category`` if given), sorted."""
    if category is not None and category not in CATEGORIES:
        raise InputError(f"unknown metric category {category!r}; use one of {CATEGORIES}")
    return [n for n, c in METRICS.items() if category is None or c.category == category]


def make_metric(metric: "str | Metric | type[Metric]", **params) -> "Metric":
    """A Metric instance from a name, a class, or an instance (returned as is)."""
    if isinstance(metric, Metric):
        if params:
            raise InputError(f"parameters {sorted(params)} given with a ready metric instance {metric!r}")
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        return metric(**params)
    return get_metric(metric)(**params)


# ---------------------------------------------------------------------- helpers
def as_array(value: Any, what: str, attribution: bool = False) -> np.ndarray:
    """An Explanation (its heatmap, or its attribution if ``attribution`` and present),
    a tensor or an array-like as a NumPy array (not copied when already one)."""
    if isinstance(value, Explanation):
        if attribution and value.attribution is not None:
            return value.attribution
        return value.heatmap
    if isinstance(value, tf.Tensor):
        return value.numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # keras/torch-like tensors
        value = value.numpy()
    try:
        return np.asarray(value)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise InputError(f"{what} cannot be read as an array: {err}") from err


def check_maps(arr: np.ndarray, what: str, channels: bool = False) -> np.ndarray:
    """Check a batch of maps (N, H, W) (or (N, H, W, C) if ``channels``); float64 copy."""
    ok = (3, 4) if channels else (3,)
    if arr.ndim not in ok:
        shape = "(N, H, W) or (N, H, W, C)" if channels else "(N, H, W)"
        hint = " (for one map pass m[None])" if arr.ndim == 2 else ""
        raise InputError(f"{what} must have shape {shape}; got {arr.shape}{hint}")
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{what} has dtype {arr.dtype}; expected numbers")
    return arr.astype(np.float64, copy=True)


def check_masks(arr: np.ndarray, what: str, shape: tuple) -> np.ndarray:
    """Ground-truth masks: bool (or 0/1 integers) of ``shape`` (N, H, W)."""
    if arr.shape != tuple(shape):
        raise InputError(f"{what} has shape {arr.shape}; expected {tuple(shape)} (one mask per heatmap)")
    if arr.dtype == bool:
        return arr.copy()
    if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise InputError(f"{what} must be boolean masks (or 0/1 values); got dtype {arr.dtype}")


def image_rng(seed: int, image: np.ndarray) -> np.random.Generator:
    """A generator seeded by ``seed`` and the bytes of one image.

    Randomness drawn per image this way is identical for identical (seed, image), and
    independent of how a batch is split or ordered.
    """
    digest = zlib.crc32(np.ascontiguousarray(image).tobytes())
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, digest])


def explainer_factory(explainer: Any, **params) -> Callable[[ModelSpec], Explainer]:
    """Normalize an explainer argument to a factory ``spec -> Explainer``.

    Metrics that run a method on modified clones of a model (randomization, input shift)
    need to build the method anew on each clone.  Accepted:

    - a registered method name (``"saliency"``), with ``params`` passed to its constructor;
    - an :class:`Explainer` subclass (called as ``cls(spec, **params)``);
    - a callable ``spec -> Explainer`` (returned as is; the most general form);
    - an Explainer instance: on its own model it is reused; on another model it is
      rebuilt as ``type(e)(spec, **e.params)`` (fine for methods whose ``params`` are
      their constructor's keyword arguments; pass a factory otherwise).
    """
    if isinstance(explainer, str):
        cls = get_method(explainer)
        return lambda spec: cls(spec, **params)
    if isinstance(explainer, type) and issubclass(explainer, Explainer):
        return lambda spec: explainer(spec, **params)
    if isinstance(explainer, Explainer):
        if params:
            raise InputError(f"parameters {sorted(params)} given with a ready explainer {explainer.name!r}")
        inst = explainer

        def rebuild(spec):
            if spec is inst.spec:
                return inst
            return type(inst)(spec, **inst.params)

        return rebuild
    if callable(explainer):
        if params:
            raise InputError(f"parameters {sorted(params)} given with an explainer factory")
        return explainer
    raise InputError(
        f"explainer must be a method name, an Explainer class or instance, or a factory "
        f"spec -> Explainer; got {type(explainer).__name__}"
    )


def given_or_explained(original: Explanation | None, n: int, explain: Callable[[], Explanation]) -> Explanation:
    """The caller's ``original`` explanation of ``n`` images (checked: one map per image),
    or ``explain()`` when there is none; metrics that compare a reference explanation with
    explanations of a changed model or input take the reference from the caller this way."""
    if original is None:
        return explain()
    if len(original) != n:
        raise InputError(f"original holds {len(original)} explanations; x has {n} images")
    return original


def method_name(explainer: Any) -> str:
    """A readable name for an explainer argument (for result tables)."""
    if isinstance(explainer, str):
        return explainer
    if isinstance(explainer, Explainer) or (isinstance(explainer, type) and issubclass(explainer, Explainer)):
        return explainer.name
    return getattr(explainer, "__name__", type(explainer).__name__)


def long_frame(values: Mapping[str, np.ndarray], **labels) -> pd.DataFrame:
    """Long-format results: one row per (metric, image), built by :func:`cnnvis_eval.frame.rows`.

    Parameters
    ----------
    values : mapping metric name -> array (N,)
    **labels
        Constant columns (e.g. ``method="saliency", model="mini_vgg"``).

    Returns
    -------
    DataFrame with columns ``*labels, image, metric, value`` (images ``0 .. N-1``; labels
    that are long-frame columns in its order, ``neuron`` after ``image``).
    """
    frames = [rows(metric, vals, **labels) for metric, vals in values.items()]
    return pd.concat(frames, ignore_index=True) if frames else rows("", [], **labels)


# ---------------------------------------------------------------------- Metric
class Metric:
    """Base class of all metrics.

    Class attributes
    ----------------
    name : str
        Registry name.
    higher_is_better : bool
        Direction of the score (``True`` for similarity, insertion AUC, pointing game ...;
        ``False`` for errors, deletion AUC, entropy, and for the randomization metrics,
        whose value is a similarity that a model-sensitive method should *lose*).
    category : str
        One of ``"similarity"``, ``"randomization"``, ``"faithfulness"``,
        ``"localization"``, ``"complexity"``, ``"axioms"``.
    per_image : tuple of str
        Arguments of :meth:`evaluate_batch` that hold one entry per image (split into
        batches); all other arguments are passed whole to every batch.  A ``target``
        argument is bound to the model and split along with them.
    attribution_args : tuple of str
        Per-image arguments for which an Explanation gives its ``attribution``
        (N, H, W, C) when it has one, instead of its heatmap.
    default_batch_size : int or None
        Images per :meth:`evaluate_batch` call when ``evaluate`` gets none (None: all).

    Parameters
    ----------
    **params
        Metric parameters (each subclass names its own keyword arguments).
    """

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    category: ClassVar[str] = ""
    per_image: ClassVar[tuple[str, ...]] = ()
    attribution_args: ClassVar[tuple[str, ...]] = ()
    default_batch_size: ClassVar[int | None] = None

    def __init__(self, **params):
        self.params: dict = dict(params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def info(self) -> dict:
        """Name, category, direction and parameters (for report tables)."""
        return {
            "metric": self.name,
            "category": self.category,
            "higher_is_better": self.higher_is_better,
            "params": dict(self.params),
        }

    # -- public -----------------------------------------------------------------
    def evaluate(self, *args, batch_size: int | None = None, **kwargs) -> np.ndarray:
        """Score every image.

        Parameters
        ----------
        *args, **kwargs
            The arguments of :meth:`evaluate_batch` (see each metric).
        batch_size : int, optional
            Images per :meth:`evaluate_batch` call (default ``default_batch_size``;
            None = all images in one call).

        Returns
        -------
        ndarray, float64, shape (N,)
            One value per image (NaN where the metric is undefined, as each metric says).
        """
        data = self._bind(args, kwargs)
        data = self.prepare(data)
        n = self._count(data)
        bs = batch_size if batch_size is not None else self.default_batch_size
        if bs is None:
            bs = n
        bs = int(bs)
        if bs < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        for start, stop in chunks(n, bs):
            sl = slice(start, stop)
            batch = {k: self._take(k, v, sl) for k, v in data.items()}
            out = np.asarray(self.evaluate_batch(**batch), dtype=np.float64).reshape(-1)
            if out.shape != (sl.stop - sl.start,):
                raise CnnVisError(
                    f"metric {self.name!r} returned {out.shape} values for a batch of "
                    f"{sl.stop - sl.start} images (internal error)"
                )
            parts.append(out)
        return np.concatenate(parts)

    __call__ = evaluate

    def evaluate_batch(self, *args, **kwargs) -> np.ndarray:
        """Score one batch; returns an array (n,). Implemented by every metric."""
        raise NotImplementedError

    # -- skeleton pieces ----------------------------------------------------------
    def _bind(self, args, kwargs) -> dict:
        sig = inspect.signature(self.evaluate_batch)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as err:
            raise InputError(f"metric {self.name!r}: {err}; call it as evaluate{sig}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def prepare(self, data: dict) -> dict:
        """Convert and validate the arguments once for all images (then :meth:`check`)."""
        for key in self.per_image:
            value = data.get(key)
            if value is None:
                continue
            arr = as_array(value, key, attribution=key in self.attribution_args)
            if arr.ndim == 0:
                raise InputError(f"{key} must have one entry per image (leading axis N); got a scalar")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = np.argwhere(~np.isfinite(arr))[0]
                raise InputError(f"{key} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
            data[key] = arr
        n = self._count(data)
        if "model" in data:
            data["model"] = as_spec(data["model"])
            if "target" in data:
                data["target"] = bind(data["target"], data["model"].graph, n)
        if "explainer" in data:
            data["explainer"] = explainer_factory(data["explainer"])
        return self.check(data)

    def check(self, data: dict) -> dict:
        """Metric-specific validation and conversion of the prepared arguments."""
        return data

    def _count(self, data: dict) -> int:
        sizes = {k: len(data[k]) for k in self.per_image if data.get(k) is not None}
        if not sizes:
            raise InputError(f"metric {self.name!r} got no per-image input ({', '.join(self.per_image)})")
        if len(set(sizes.values())) != 1:
            raise InputError(
                f"metric {self.name!r}: per-image inputs disagree on the number of images: "
                + ", ".join(f"{k} has {v}" for k, v in sizes.items())
            )
        n = next(iter(sizes.values()))
        if n == 0:
            raise InputError(f"metric {self.name!r} got an empty batch (N = 0)")
        return n

    def _take(self, key: str, value, sl: slice):
        if key in self.per_image and value is not None:
            return value[sl]
        if key == "target" and isinstance(value, BoundTarget):
            return value.batch(sl)
        return value


def check_target_is_class(bound: BoundTarget, what: str):
    if not bound.is_class:
        raise TargetError(f"{what} needs a ClassTarget; got {bound.target!r}")


__all__ = [
    "given_or_explained",
    "CATEGORIES",
    "METRICS",
    "Metric",
    "as_array",
    "check_maps",
    "check_masks",
    "explainer_factory",
    "get_metric",
    "image_rng",
    "list_metrics",
    "long_frame",
    "make_metric",
    "method_name",
    "register_metric",
]
