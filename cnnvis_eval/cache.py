"""The per-model cache: compiled TensorFlow functions and explainers, in one object.

Tracing a ``tf.function`` costs far more than calling it, so every compiled function of a
model (forward passes, gradients, perturbation scorers, synthesis steps, metric curves) is
kept per model and shared by everything that works on that model; :func:`cnnvis_eval.explain`
keeps its explainers per model the same way.  :class:`ModelCache` owns both:

* ``functions(spec)`` -- the dict of compiled functions of a model (keys name everything a
  function depends on: target tensor, reduction, mode, overrides tag, ...);
* ``explainer(spec, method, params, build)`` -- the explainer built for a model, method and
  parameters;
* ``drop(model)`` releases one model's entries; ``clear()`` releases all of them.

:data:`default_cache` is the instance the library uses.  A model's entries are stored with
its :class:`~cnnvis_eval.models.spec.ModelSpec` (in a slot only this object touches), so they
live exactly as long as the model: a ``WeakKeyDictionary`` would not do, because its values
(explainers, compiled functions) refer to the spec and would keep their own key alive.
Plain Keras models are cached under the spec :func:`~cnnvis_eval.models.spec.as_spec` gives
them (one per model object).  That model -> spec map stays in ``models/spec.py``: it is not
a cache of compiled work but the identity that makes one plain model mean one spec (and so
one set of entries here); ``drop(keras_model)`` finds the spec through this object without
building a new one.  See docs/architecture.md.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from .models.spec import ModelSpec, as_spec


class _Entry:
    """One model's cached objects."""

    __slots__ = ("functions", "explainers")

    def __init__(self):
        self.functions: dict = {}
        self.explainers: dict = {}


def params_key(params: dict) -> tuple:
    """A hashable key for method parameters (unhashable values by identity)."""
    items = []
    for k, v in sorted(params.items()):
        try:
            hash(v)
            items.append((k, v))
        except TypeError:
            items.append((k, ("id", id(v))))
    return tuple(items)


class ModelCache:
    """Compiled functions and explainers per model.

    Thread-safe for lookups and insertions; a function or explainer built concurrently by
    two threads for the same key is built twice and one of them is kept.
    """

    def __init__(self):
        self._slot = f"_model_cache_{id(self):x}"
        self._models: "weakref.WeakSet[ModelSpec]" = weakref.WeakSet()
        self._lock = threading.RLock()

    # -- lookup -----------------------------------------------------------------
    def _entry(self, spec: ModelSpec) -> _Entry:
        entry = spec.__dict__.get(self._slot)
        if entry is None:
            with self._lock:
                entry = spec.__dict__.get(self._slot)
                if entry is None:
                    entry = _Entry()
                    spec.__dict__[self._slot] = entry
                    self._models.add(spec)
        return entry

    def functions(self, model) -> dict:
        """The dict of compiled functions of ``model`` (ModelSpec or keras.Model).

        Callers look up and insert their own keys; see :meth:`function` for the usual
        get-or-build."""
        return self._entry(as_spec(model)).functions

    def function(self, model, key, build: Callable[[], Callable]) -> Callable:
        """The compiled function cached as ``key`` for ``model``, built on first use."""
        fns = self.functions(model)
        fn = fns.get(key)
        if fn is None:
            fn = fns.setdefault(key, build())
        return fn

    def explainer(self, model, method: str, params: dict, build: Callable[[], Any]) -> Any:
        """The explainer cached for (model, method, params), built by ``build()`` on first use."""
        explainers = self._entry(as_spec(model)).explainers
        key = (method, params_key(params))
        explainer = explainers.get(key)
        if explainer is None:
            explainer = explainers.setdefault(key, build())
        return explainer

    # -- release ----------------------------------------------------------------
    def _specs_of(self, model) -> list[ModelSpec]:
        if isinstance(model, ModelSpec):
            return [model]
        # a plain Keras model: the spec(s) cached for it, without building a new one
        return [s for s in list(self._models) if s.model is model]

    def drop(self, model) -> None:
        """Release the compiled functions and explainers cached for ``model`` (a ModelSpec
        or the Keras model of one).  Explainers already handed out keep working."""
        with self._lock:
            for spec in self._specs_of(model):
                spec.__dict__.pop(self._slot, None)
                self._models.discard(spec)

    def clear(self) -> None:
        """Release every model's entries."""
        with self._lock:
            for spec in list(self._models):
                spec.__dict__.pop(self._slot, None)
            self._models.clear()

    def __contains__(self, model) -> bool:
        return any(self._slot in s.__dict__ for s in self._specs_of(model))

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"ModelCache({len(self)} models)"


#: The cache the library uses (explainers' compiled functions, ``cnnvis_eval.explain``,
#: synthesis steps, faithfulness curves).
default_cache = ModelCache()

__all__ = ["ModelCache", "default_cache", "params_key"]
