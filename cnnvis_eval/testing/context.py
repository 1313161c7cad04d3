"""What the checks share: one model, its images (and masks), and memoized measurements.

A :class:`CheckContext` holds a :class:`~cnnvis_eval.models.spec.ModelSpec`, the preprocessed
images and optional masks, the methods' parameters, and a cache of measurements keyed by
what produced them, so that the controls (edge detector, plain gradient, random orders) and
the randomization curves are computed once per model however many methods and checks run.
"""

from __future__ import annotations

from typing import Callable, Hashable

import numpy as np

from ..errors import InputError
from ..methods import get_method
from ..metrics import CONTROLS
from ..models.spec import ModelSpec, as_spec


class CheckContext:
    """The model and images every check of one run sees.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified (randomization and shift checks work on clones).
    x : array (N, H, W, C)
        Preprocessed model inputs.
    masks : bool array (N, H, W), optional
        Ground-truth object masks (localization runs only with them).
    params : dict, optional
        ``method name -> constructor parameters`` (e.g. ``{"lime": {"num_samples": 200}}``).
    seed : int
        Seeds randomization, random orders and noise.
    name : str, optional
        The model's name in verdicts (default ``spec.name``).
    """

    def __init__(self, model, x, masks=None, params: dict | None = None, seed: int = 0, name: str | None = None):
        self.spec: ModelSpec = as_spec(model)
        x = np.asarray(x)
        if x.ndim != 4 or len(x) == 0:
            raise InputError(f"images must be a non-empty array (N, H, W, C), got shape {x.shape}")
        self.x = x.astype(np.float64 if self.spec.graph.input_dtype == "float64" else np.float32)
        if masks is not None:
            masks = np.asarray(masks, bool)
            if masks.shape != self.x.shape[:3]:
                raise InputError(f"masks have shape {masks.shape}; expected {self.x.shape[:3]} (one per image)")
        self.masks = masks
        self.params = dict(params or {})
        self.seed = int(seed)
        self.name = name or self.spec.name
        self._memo: dict = {}

    def memo(self, key: Hashable, compute: Callable[[], object]):
        """``compute()`` once per ``key`` for this context."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def has(self, key: Hashable) -> bool:
        """Whether ``key`` has been computed (e.g. ``("explain", method)``: the method ran)."""
        return key in self._memo

    def method_class(self, method: str):
        """The explainer class of a registered method or of a control (``edge_sobel``, ...)."""
        return CONTROLS[method] if method in CONTROLS else get_method(method)

    def method_params(self, method: str, **extra) -> dict:
        return {**self.params.get(method, {}), **extra}

    def explainer(self, method: str, **extra):
        """A memoized explainer of ``method`` on the context's model."""
        key = ("explainer", method, tuple(sorted(extra.items())))
        return self.memo(key, lambda: self.method_class(method)(self.spec, **self.method_params(method, **extra)))

    def explain(self, method: str, target=None, x=None):
        """The Explanation of the context's images (memoized when ``target`` and ``x`` are default)."""
        if target is None and x is None:
            return self.memo(("explain", method), lambda: self.explainer(method).explain(self.x, progress=False))
        return self.explainer(method).explain(self.x if x is None else x, target=target, progress=False)

    def explain_seconds(self, method: str) -> float:
        """Wall seconds of :meth:`explain` of the context's images by ``method`` (run if needed;
        the explanation's own ``meta["seconds"]``: the first call, so tracing included)."""
        return float(self.explain(method).meta["seconds"])

    def logits(self) -> np.ndarray:
        """Pre-softmax outputs (N, K) of the images (float64)."""
        from ..evaluation.cost import reference_passes

        def compute():
            forward, _ = reference_passes(self.spec)
            return np.asarray(forward(self.x.astype(np.float32)), np.float64)

        return self.memo("logits", compute)

    def input_width(self) -> np.ndarray:
        """Width of the input range per channel (C,): ``spec.input_range`` or the images' own range."""
        if self.spec.input_range is not None:
            lo, hi = (np.asarray(v, np.float64) for v in self.spec.input_range)
            return np.broadcast_to(hi - lo, (self.x.shape[-1],))
        return (self.x.max(axis=(0, 1, 2)) - self.x.min(axis=(0, 1, 2))).astype(np.float64)


__all__ = ["CheckContext"]
