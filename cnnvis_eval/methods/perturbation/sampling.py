"""The shared part of the perturbation methods: one sampling/batching loop.

:class:`PerturbationExplainer` explains one image at a time; all perturbed copies of an
image go through one compiled function in chunks of ``batch_size`` model inputs, by
:meth:`Sampling.feed`.  The state of one explain call (its batch size and progress bar)
lives in a :class:`Sampling` object passed down the call, never on the explainer, so one
explainer can serve several callers at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ... import params as P
from ...errors import InputError
from ...targets import BoundTarget, bind
from ..base import BatchResult, Explainer, Explanation, check_input, targets_forward

#: More model inputs than this (per explain call) show a progress bar by default.
PROGRESS_THRESHOLD = 300


@dataclass
class Sampling:
    """Per-call state of one explain call.

    Attributes
    ----------
    batch_size : int
        Model inputs per compiled call.
    bar : tqdm or None
        Progress bar over model inputs (None: no bar).
    """

    batch_size: int
    bar: Any = None

    def tick(self, n: int) -> None:
        """Advance the progress bar by ``n`` model inputs."""
        if self.bar is not None:
            self.bar.update(n)

    def feed(self, fn: Callable, total: int, chunk_args: Callable, *fixed, into: Callable | None = None) -> list:
        """Call compiled ``fn(*fixed, *chunk_args(a, b))`` for chunks ``[a, b)`` of ``total``
        model inputs, at most ``batch_size`` each.

        Returns the list of per-chunk results (as NumPy); with ``into``, each chunk's result
        is handed to ``into(result)`` instead and the list is empty (a sum over the chunks
        then holds one map, not one per chunk).  The progress bar advances by chunk.
        """
        out = []
        for a, b in P.chunks(total, self.batch_size):
            res = tf.nest.map_structure(lambda t: t.numpy(), fn(*fixed, *chunk_args(a, b)))
            if into is None:
                out.append(res)
            else:
                into(res)
            self.tick(b - a)
        return out


class PerturbationExplainer(Explainer):
    """Middle class of the perturbation methods.

    Parameters
    ----------
    batch_size : int or None
        Model inputs per compiled forward call (``explain(batch_size=...)`` overrides it
        for one call); None (default): as many as 16 images at 224 px hold pixels, at most 32
        (:func:`~cnnvis_eval.params.call_inputs`; the 64 px minis: 32; 32 at 224 px held 2x
        the memory of a forward+backward pass of 8 images on MobileNetV2).
    progress : bool or None
        Progress bar over model inputs: None shows it when an explain call makes more than
        :data:`PROGRESS_THRESHOLD` model calls; False never; True always.

    Subclasses implement :meth:`calls_per_image` and :meth:`_explain_image` (called with
    one image at a time, the targets and the call's :class:`Sampling`) and run their chunks
    through :meth:`Sampling.feed`, scoring every target of a chunk in one forward pass.
    """

    signed = True
    default_batch_size = 1  # images per _explain_image; their perturbations are batched
    reads_weights_once = False  # only calls the model, through compiled functions
    joint_targets = True  # the perturbed inputs do not depend on the target

    def __init__(self, model, *, batch_size: int | None = None, progress: bool | None = None, **params):
        super().__init__(model, batch_size=batch_size, progress=progress, **params)
        self.batch_size = P.internal_batch(batch_size, "batch_size")
        self.progress = progress

    def calls_per_image(self, shape: tuple) -> int:
        """Number of perturbed model inputs per image of shape (H, W, C)."""
        raise NotImplementedError

    def _check_image_shape(self, shape: tuple) -> None:
        """Raise InputError when the method's parameters do not fit images of ``shape``."""

    def _check_static_shape(self) -> None:
        h, w = self.graph.input_shape[1:3]
        if h is not None and w is not None:
            self._check_image_shape((h, w))

    def explain(self, x, target=None, batch_size: int | None = None,
                progress: bool | None = None) -> Explanation:
        """Explain a batch of preprocessed images.

        Parameters
        ----------
        x : array, shape (N, H, W, C), float
            Model inputs (already preprocessed). Not modified.
        target : ClassTarget, NeuronTarget, int or None
            Default ``ClassTarget("top")``; "top" is resolved once per image, on the
            unperturbed image.
        batch_size : int, optional
            Model inputs per compiled call for this call (default: the constructor's, see
            the class).
        progress : bool, optional
            Overrides the constructor's ``progress`` for this call.

        Returns
        -------
        Explanation
            ``heatmap`` float32 (N, H, W); ``meta["batch_size"]`` is the number of model
            inputs per call, ``meta["model_calls"]`` the number of model inputs evaluated.
        """
        return self.explain_targets(x, [target], batch_size=batch_size, progress=progress)[0]

    __call__ = explain

    def explain_targets(self, x, targets, batch_size: int | None = None,
                        progress: bool | None = None) -> list[Explanation]:
        """Explain the same images for several targets on **one** set of perturbed inputs.

        The perturbed inputs of an image do not depend on the target (the masks, samples and
        windows are drawn from the method's parameters and seed), so each is evaluated once
        and every target is read from that pass (:func:`~cnnvis_eval.methods.base.targets_forward`:
        the deepest target's forward pass).  Explanation ``t`` equals ``explain(x, targets[t])``
        up to float32 rounding (the same inputs, read from a graph that also computes the
        other targets).

        Parameters
        ----------
        x : array, shape (N, H, W, C), float
            Model inputs (already preprocessed). Not modified.
        targets : sequence of ClassTarget, NeuronTarget, int or None
            At least one; "top" is resolved per target and image on the unperturbed image.
        batch_size, progress
            As in :meth:`explain`.

        Returns
        -------
        list of Explanation
            One per target, in order; ``meta["model_calls"]`` counts the model inputs of the
            joint pass (each perturbed input once, the unperturbed image once per image), and
            ``meta["seconds"]`` is the joint pass's time.
        """
        targets = list(targets)
        if not targets:
            raise InputError("explain_targets needs at least one target")
        arr = check_input(x, self.graph, self.dtype)
        self._check_image_shape(arr.shape[1:])
        bs = self._call_inputs(arr.shape[1:3], None if batch_size is None else P.integer(batch_size, "batch_size"))
        bounds = [bind(t, self.graph, len(arr)) for t in targets]
        total = len(arr) * (self.calls_per_image(arr.shape[1:]) + 1)
        show = progress if progress is not None else self.progress
        if show is None:
            show = total > PROGRESS_THRESHOLD
        bar = tqdm(total=total, desc=self.name, unit="input", disable=not show, leave=False)
        sampling = Sampling(bs, bar)
        parts: list[list[BatchResult]] = []
        t0 = time.perf_counter()
        try:
            for i in range(len(arr)):
                sl = slice(i, i + 1)
                parts.append(self._explain_image(arr[sl], [b.batch(sl) for b in bounds], sampling))
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        out = []
        for t, bound in enumerate(bounds):
            exp = self._assemble([p[t] for p in parts], bound, len(arr), seconds, 1)
            exp.meta["batch_size"] = bs
            exp.meta["model_calls"] = total
            out.append(exp)
        return out

    def _explain_batch(self, x: np.ndarray, bound: BoundTarget) -> BatchResult:
        # one image, no progress bar, the constructor's batch size
        return self._explain_image(x, [bound], Sampling(self._call_inputs(x.shape[1:3])))[0]

    def _call_inputs(self, image_shape, batch_size: int | None = None) -> int:
        """Model inputs per compiled call for images of ``image_shape`` (H, W): ``batch_size``,
        else the constructor's, else the forward-only default of :func:`~cnnvis_eval.params.call_inputs`."""
        return P.call_inputs(self.batch_size if batch_size is None else batch_size, image_shape, forward_only=True)

    def _explain_image(self, x: np.ndarray, bounds: list[BoundTarget],
                       sampling: Sampling) -> list[BatchResult]:
        """Explain one image ``x`` (1, H, W, C) for each of ``bounds`` (one BatchResult per
        target, from one evaluation of each perturbed input); the call's state is ``sampling``."""
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------
    def _score(self, x: np.ndarray, bounds: list[BoundTarget],
               sampling: Sampling) -> tuple[np.ndarray, list[BoundTarget]]:
        """Scores (1, T) of the unperturbed image for the T targets (one forward pass) and
        the targets with "top" resolved."""
        scores, idx = self._forward_targets(x, bounds)
        sampling.tick(len(x))
        return scores, [b.fixed(idx[:, t]) for t, b in enumerate(bounds)]

    def _forward_targets(self, x: np.ndarray, bounds: list[BoundTarget]) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) scores and indices of ``x`` (N, H, W, C) for the T targets in one pass."""
        idx = np.stack([b.indices for b in bounds], axis=1).astype(np.int32)
        scores, picked = targets_forward(self.spec, bounds)(x, idx)
        return scores.numpy(), picked.numpy()

    @staticmethod
    def _index_rows(bounds: list[BoundTarget], n: int) -> np.ndarray:
        """(n, T) int32: the targets' indices of the image, one row per perturbed input."""
        return np.tile(np.array([b.indices[0] for b in bounds], np.int32), (n, 1))

    @staticmethod
    def _results(heats, bounds: list[BoundTarget], scores: np.ndarray, metas) -> list[BatchResult]:
        """One BatchResult per target from per-target heatmaps (H, W) and metas."""
        return [BatchResult(np.asarray(h, np.float32)[None], None, b.indices, scores[:, t], m)
                for t, (h, b, m) in enumerate(zip(heats, bounds, metas))]

    def _image_spec(self):
        return tf.TensorSpec(tuple(self.graph.input_shape[1:]), tf.as_dtype(self.dtype))

    def _baseline_image(self, baseline, x: np.ndarray) -> np.ndarray:
        """Baseline as an (H, W, C) array for image ``x`` of shape (H, W, C) (see
        :func:`cnnvis_eval.params.resolve_baseline`)."""
        return P.resolve_baseline(baseline, x, self.spec)


__all__ = ["PROGRESS_THRESHOLD", "PerturbationExplainer", "Sampling"]
