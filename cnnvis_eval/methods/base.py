"""Explainer base class, Explanation, and the method registry.

Every visualization method is a small :class:`Explainer` subclass registered by name::

    @register("saliency")
    class Saliency(Explainer):
        def _explain_batch(self, x, bound): ...

The base class does what all methods share: it accepts a ModelSpec or any Keras model
(flattened, softmax stripped), validates and copies the input, binds the target, splits the
input into batches (with a progress bar on long runs), and assembles the
:class:`Explanation`.  Gradients are always taken inside ``tf.function`` (see docs/architecture.md:
eager gradients of strided 1x1 convolutions crash TensorFlow 2.21 with oneDNN).

One job, in one module (about 535 lines): the contract every method implements and the
compiled passes they all share (:func:`target_forward`, :func:`targets_forward`, the
gradient functions), which are cached per model and keyed alike; splitting them from the
class that calls them would split one cache convention in two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..cache import default_cache
from ..errors import InputError, NonFiniteError
from ..graph.inference import run_folded
from ..models.spec import ModelSpec, as_spec
from ..params import call_inputs, integer
from ..registry import Registry
from ..targets import BoundTarget, Target, bind

# ---------------------------------------------------------------------- registry
#: The heatmap methods by name (see :class:`cnnvis_eval.registry.Registry`).
METHODS: "Registry[type[Explainer]]" = Registry("method")


def register(name: str) -> Callable[[type], type]:
    """Class decorator registering an Explainer under ``name`` (sets ``cls.name``)."""
    return METHODS.register(name)


def get_method(name: str) -> type["Explainer"]:
    """The Explainer class registered as ``name`` (InputError listing the names if unknown)."""
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Names of all registered heatmap methods, sorted."""
    return METHODS.names()


# ---------------------------------------------------------------------- results
@dataclass
class Explanation:
    """The result of explaining a batch.

    Attributes
    ----------
    heatmap : ndarray, float32, shape (N, H, W)
        One map per image at input resolution; signed where the method is signed.
    attribution : ndarray, shape (N, H, W, C), or None
        Per-channel attribution for methods that produce one; float32 (float64 for a
        float64 model).
    method : str
    target : ClassTarget or NeuronTarget
        The target as requested.
    indices : ndarray, int32, shape (N,)
        The class or channel actually explained per image ("top" resolved).
    scores : ndarray, float32, shape (N,)
        The explained value per image (logit, or reduced channel activation).
    meta : dict
        Parameters, timing (``"seconds"``), and method diagnostics; per-image arrays have
        the batch as first axis.
    """

    heatmap: np.ndarray
    attribution: np.ndarray | None
    method: str
    target: Target
    indices: np.ndarray
    scores: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.heatmap)


@dataclass
class BatchResult:
    """What :meth:`Explainer._explain_batch` returns for one batch (see Explanation)."""

    heatmap: np.ndarray
    attribution: np.ndarray | None
    indices: np.ndarray
    scores: np.ndarray
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------- helpers
def _over_channels(attr: np.ndarray, op, each=None) -> np.ndarray:
    """``op``-reduce (N, H, W, C) over C one channel at a time: NumPy's reduction along a
    short last axis runs an inner loop of C per pixel (an (8, 224, 224, 3) max of |x| took
    12.7 ms; channel by channel 0.4 ms).  Same values: a max in any order, and a sum in
    channel order, which is NumPy's own order below 8 summands."""
    out = np.array(attr[..., 0]) if each is None else each(attr[..., 0])
    for c in range(1, attr.shape[-1]):
        op(out, attr[..., c] if each is None else each(attr[..., c]), out=out)
    return out


def reduce_channels(attr: np.ndarray, mode: str) -> np.ndarray:
    """(N, H, W, C) attribution -> (N, H, W) heatmap.

    ``"max_abs"`` (Simonyan et al.), ``"sum"`` (signed), ``"sum_abs"``, ``"l2"``, ``"max"``.
    """
    if mode == "max_abs":
        return _over_channels(attr, np.maximum, np.abs)
    if mode == "sum":
        return _over_channels(attr, np.add) if attr.shape[-1] < 8 else attr.sum(axis=-1)
    if mode == "sum_abs":
        return _over_channels(attr, np.add, np.abs) if attr.shape[-1] < 8 else np.abs(attr).sum(axis=-1)
    if mode == "l2":
        return np.sqrt((attr.astype(np.float64) ** 2).sum(axis=-1))
    if mode == "max":
        return _over_channels(attr, np.maximum)
    raise InputError(f"unknown channel reduction {mode!r}; use max_abs, sum, sum_abs, l2 or max")


def check_input(x: Any, graph, dtype=np.float32) -> np.ndarray:
    """Validate a batch of model inputs and return a private float copy.

    Raises
    ------
    InputError
        Wrong rank, wrong channels or size for the model, integer dtype, NaN or inf, empty.
    """
    if isinstance(x, tf.Tensor):
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise InputError(f"x cannot be read as an array: {err}") from err
    expected = graph.input_shape
    if arr.ndim != len(expected):
        hint = " (for one image pass x[None])" if arr.ndim == len(expected) - 1 else ""
        raise InputError(
            f"x must have shape (N, {', '.join('?' if d is None else str(d) for d in expected[1:])})"
            f" for model {graph.model.name!r}; got shape {arr.shape}{hint}"
        )
    if arr.dtype.kind not in "f":
        if arr.dtype.kind in "iub":
            raise InputError(
                f"x has dtype {arr.dtype}: pass preprocessed float images "
                "(e.g. spec.preprocess(images_uint8))"
            )
        raise InputError(f"x has dtype {arr.dtype}; expected floating point images")
    if arr.shape[0] == 0:
        raise InputError("x is an empty batch (N = 0)")
    for axis, (got, want) in enumerate(zip(arr.shape[1:], expected[1:]), start=1):
        if want is not None and got != want:
            what = "channels" if axis == arr.ndim - 1 else f"size along axis {axis}"
            raise InputError(
                f"x has {got} {what} but model {graph.model.name!r} expects {want} "
                f"(input shape {expected[1:]}); got x.shape = {arr.shape}"
            )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InputError(f"x contains {int(bad.sum())} NaN or inf values (first at index {tuple(int(i) for i in np.argwhere(bad)[0])})")
    return np.array(arr, dtype=dtype, copy=True)


def target_forward(spec: ModelSpec, bound: BoundTarget) -> Callable:
    """The compiled forward pass ``(x (N, H, W, C), indices (N,) int32) -> (scores (N,),
    indices (N,))`` of ``bound``'s tensor on ``spec`` (a negative index picks the image's top
    unit, see :meth:`~cnnvis_eval.targets.BoundTarget.select`).

    It depends on the model's graph, the target tensor and the reduction only, so it is
    cached once per model (:data:`~cnnvis_eval.cache.default_cache`) for every explainer
    that resolves "top" or scores its inputs and for the faithfulness curves' "top" (which
    traced a second copy)."""
    def build():
        graph = spec.graph

        @tf.function(autograph=False, input_signature=[_input_batch(graph), tf.TensorSpec((None,), tf.int32)])
        def fwd(x, indices):
            return bound.select(run_folded(graph, x, [bound.key])[0], indices)

        return fwd

    return default_cache.function(spec, ("target_forward", bound.key, bound.reduce), build)


def targets_forward(spec: ModelSpec, bounds: Sequence[BoundTarget]) -> Callable:
    """The compiled forward pass ``(x (N, H, W, C), indices (N, T) int32) -> (scores (N, T),
    indices (N, T))`` of the ``T`` targets ``bounds`` (column ``t`` is ``bounds[t]``'s, as
    :func:`target_forward` gives it) in **one** pass of ``x``: a layer target below the
    logits is read on the way, so explaining the logit and two layer neurons of the same
    inputs costs the deepest target's forward pass, not three.

    One target calls :func:`target_forward` (its trace is the model's one forward trace);
    several are one trace per model and tuple of target tensors."""
    bounds = tuple(bounds)
    if not bounds:
        raise ValueError("targets_forward needs at least one target")
    if len(bounds) == 1:
        one = target_forward(spec, bounds[0])

        def single(x, indices):
            scores, idx = one(x, indices[:, 0])
            return scores[:, None], idx[:, None]

        return single

    def build():
        graph = spec.graph

        @tf.function(autograph=False, input_signature=[_input_batch(graph),
                                                       tf.TensorSpec((None, len(bounds)), tf.int32)])
        def fwd(x, indices):
            values = run_folded(graph, x, [b.key for b in bounds])
            picked = [b.select(v, indices[:, t]) for t, (b, v) in enumerate(zip(bounds, values))]
            return tf.stack([s for s, _ in picked], axis=1), tf.stack([i for _, i in picked], axis=1)

        return fwd

    return default_cache.function(spec, ("targets_forward",) + targets_key(bounds), build)


def targets_key(bounds: Sequence[BoundTarget]) -> tuple:
    """What a compiled function of ``bounds`` depends on: each target's tensor and reduction
    (not its indices, which the functions read), for the cache keys."""
    return tuple((b.key, b.reduce) for b in bounds)


def _input_batch(graph) -> tf.TensorSpec:
    """The TensorSpec of a batch of ``graph``'s inputs (any batch size; float64 models in float64)."""
    dtype = tf.float64 if graph.input_dtype == "float64" else tf.float32
    return tf.TensorSpec((None,) + tuple(graph.input_shape[1:]), dtype)


def check_finite(heatmap: np.ndarray, scores: np.ndarray, method: str, model: str) -> None:
    """Raise :class:`NonFiniteError` if a heatmap (N, H, W) of finite input has NaN or inf.

    The message names the method, the first bad image (index in the batch) and, when the
    model's own output for it is not finite (``scores`` (N,)), says so: the input is beyond
    what the model's float32 arithmetic can represent.
    """
    bad = ~np.isfinite(heatmap.reshape(len(heatmap), -1))
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    i = int(rows[0])
    more = f" (and {len(rows) - 1} more image(s))" if len(rows) > 1 else ""
    why = ""
    if i < len(scores) and not np.isfinite(scores[i]):
        why = (f"; the model's own output for it is {scores[i]} in float32: the input is too "
               "large for the model's arithmetic (rescale it)")
    raise NonFiniteError(
        f"{method}: the heatmap of image {i}{more} has {int(bad[i].sum())} NaN or inf values "
        f"although the input is finite (model {model!r}){why}"
    )


def _same(a, b) -> bool:
    try:
        return bool(np.all(a == b)) and np.shape(a) == np.shape(b)
    except Exception:  # pragma: no cover - incomparable values
        return False


def _concat_meta(parts: list[dict], n: int) -> dict:
    out: dict = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        first = vals[0]
        if isinstance(first, np.ndarray) and first.ndim >= 1 and all(
            isinstance(v, np.ndarray) for v in vals
        ) and sum(len(v) for v in vals) == n:
            out[key] = np.concatenate(vals, axis=0)
        elif len(vals) == 1 or all(_same(v, first) for v in vals):
            out[key] = first
        else:
            out[key] = vals
    return out


# ---------------------------------------------------------------------- Explainer
class Explainer:
    """Base class of all heatmap methods.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Sequential, functional or nested; a softmax at the end is stripped (on a clone).
    **params
        Method parameters (each subclass names its own keyword arguments).

    Subclasses implement :meth:`_explain_batch`.  Class attributes: ``name`` (set by
    :func:`register`), ``signed`` (heatmap may be negative), ``stochastic`` (takes a
    ``seed``), ``default_batch_size``, ``inputs_per_image``, ``reads_weights_once``,
    ``joint_targets``.
    """

    name: ClassVar[str] = "explainer"
    signed: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    default_batch_size: ClassVar[int] = 16
    #: Model inputs' worth of activations one image holds in a call (DeepLIFT: the input's and
    #: the reference's).  Above 1, large images are explained fewer at a time
    #: (:meth:`batch_images`).
    inputs_per_image: ClassVar[int] = 1
    #: True when the explainer copies or derives state from the weights when it is built
    #: (clones, folded layers), so it must be rebuilt after the weights change; False when
    #: its compiled functions read the model's variables at call time.
    reads_weights_once: ClassVar[bool] = True
    #: True when :meth:`explain_targets` explains several targets on one set of model
    #: evaluations (its cost then hardly grows with the number of targets).
    joint_targets: ClassVar[bool] = False

    def sync_weights(self) -> None:
        """Re-read what this explainer derived from the model's weights when it was built
        (folded or cloned copies) after the model's variables changed in place, as the
        randomization check does to one clone.  The default does nothing: most methods'
        compiled functions read the variables at call time (``reads_weights_once = False``);
        methods with copies override it (relevance presets, DeconvNet, DeepLIFT, FullGrad)."""

    @classmethod
    def follows_weights(cls) -> bool:
        """Whether one explainer can follow in-place weight changes: its compiled functions
        read the variables at call time, or :meth:`sync_weights` refreshes its copies."""
        return not cls.reads_weights_once or cls.sync_weights is not Explainer.sync_weights

    def __init__(self, model: ModelSpec | Any, **params):
        self.spec = as_spec(model)
        self.graph = self.spec.graph
        self.params: dict = dict(params)
        self.dtype = np.float64 if self.graph.input_dtype == "float64" else np.float32
        # compiled functions are cached per model (cnnvis_eval.cache), so explainers of one
        # model share traces (a key names everything the function depends on: target
        # tensor, mode, overrides tag)
        self._fns: dict = default_cache.functions(self.spec)

    # -- public -----------------------------------------------------------------
    def explain(
        self,
        x,
        target: Target | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> Explanation:
        """Explain a batch of preprocessed images.

        Parameters
        ----------
        x : array, shape (N, H, W, C), float
            Model inputs (already preprocessed). Not modified.
        target : ClassTarget, NeuronTarget, int or None
            What to explain; default ``ClassTarget("top")``.
        batch_size : int, optional
            Images per batch (default :meth:`batch_images`: ``default_batch_size``, fewer
            at large sizes for methods holding several inputs' activations per image).
        progress : bool, optional
            Show a progress bar; default: only when there are several batches.

        Returns
        -------
        Explanation
            ``heatmap`` float32 (N, H, W), ``attribution`` (N, H, W, C) or None.
        """
        arr = check_input(x, self.graph, self.dtype)
        return self._explain_batches(arr, target, batch_size, progress, self._explain_batch)

    __call__ = explain

    def explain_targets(self, x, targets: Sequence, batch_size: int | None = None,
                        progress: bool | None = None) -> list[Explanation]:
        """Explain the same images for several targets: one :class:`Explanation` per target,
        in order, each equal to ``explain(x, target)``.

        Here one :meth:`explain` call per target; methods whose model evaluations do not
        depend on the target (``joint_targets``: the perturbation methods) evaluate each
        perturbed input once for all targets (:func:`targets_forward`)."""
        targets = list(targets)
        if not targets:
            raise InputError("explain_targets needs at least one target")
        return [self.explain(x, target=t, batch_size=batch_size, progress=progress) for t in targets]

    def batch_images(self, image_shape) -> int:
        """Images per batch when the caller gives no ``batch_size``: ``default_batch_size``;
        for a method holding several inputs' activations per image (``inputs_per_image``) at
        most ``call_inputs(None, image_shape) // inputs_per_image`` (at 224 px: 4 for 2, so
        its working memory stays near one forward+backward pass of 8 images; the 64 px minis
        are unaffected)."""
        if self.inputs_per_image <= 1:
            return self.default_batch_size
        return max(1, min(self.default_batch_size, call_inputs(None, image_shape) // self.inputs_per_image))

    def _explain_batches(self, arr: np.ndarray, target, batch_size: int | None,
                         progress: bool | None, explain_batch) -> Explanation:
        """Bind ``target``, run ``explain_batch(x, bound) -> BatchResult`` batch by batch
        over the checked input ``arr`` and assemble the Explanation.

        Subclasses that need per-call state (a progress bar, a batch size for one call) pass
        a closure over it as ``explain_batch`` instead of storing it on ``self``, so one
        explainer can serve several callers at once."""
        bound = bind(target, self.graph, len(arr))
        bs = self.batch_images(arr.shape[1:3]) if batch_size is None else integer(batch_size, "batch_size")
        starts = range(0, len(arr), bs)
        show = progress if progress is not None else len(starts) > 4
        parts: list[BatchResult] = []
        t0 = time.perf_counter()
        for s in tqdm(starts, desc=self.name, unit="batch", disable=not show, leave=False):
            sl = slice(s, s + bs)
            parts.append(explain_batch(arr[sl], bound.batch(sl)))
        return self._assemble(parts, bound, len(arr), time.perf_counter() - t0, bs)

    def _assemble(self, parts: list[BatchResult], bound: BoundTarget, n: int, seconds: float,
                  bs: int) -> Explanation:
        """The Explanation of ``n`` images from their batches' results ``parts``."""
        heat = np.concatenate([p.heatmap for p in parts]).astype(np.float32, copy=False)
        scores = np.concatenate([p.scores for p in parts]).astype(np.float32)
        check_finite(heat, scores, self.name, self.graph.model.name)
        attr = None
        if parts[0].attribution is not None:
            # float32, or float64 for float64 models (reference tests run in float64)
            attr = np.concatenate([p.attribution for p in parts]).astype(self.dtype, copy=False)
        meta = {"params": dict(self.params), "seconds": seconds, "batch_size": bs}
        if self.graph.stripped:
            meta["stripped_softmax"] = self.graph.stripped
        meta.update(_concat_meta([p.meta for p in parts], n) if parts[0].meta else {})
        return Explanation(
            heatmap=heat,
            attribution=attr,
            method=self.name,
            target=bound.target,
            indices=np.concatenate([p.indices for p in parts]).astype(np.int32),
            scores=scores,
            meta=meta,
        )

    def _explain_batch(self, x: np.ndarray, bound: BoundTarget) -> BatchResult:
        raise NotImplementedError

    # -- shared compiled pieces -----------------------------------------------
    def _signature(self):
        return _input_batch(self.graph)

    def _cached(self, key, build: Callable[[], Callable]) -> Callable:
        if key not in self._fns:
            self._fns[key] = build()
        return self._fns[key]

    def forward(self, x: np.ndarray, bound: BoundTarget) -> tuple[np.ndarray, np.ndarray]:
        """Target scores and indices, shape (N,) each, from one compiled forward pass
        (:func:`target_forward`: one trace per model and target tensor, shared by every
        explainer and metric of the model)."""
        scores, idx = target_forward(self.spec, bound)(x, bound.indices)
        return scores.numpy(), idx.numpy()

    def resolve_top(self, x: np.ndarray, bound: BoundTarget) -> BoundTarget:
        """Replace "top" by the indices picked on ``x`` (one forward pass), else unchanged."""
        if not bound.top:
            return bound
        _, idx = self.forward(x, bound)
        return bound.fixed(idx)

    def gradients(
        self, x, bound: BoundTarget, overrides: dict | None = None, tag: str = "plain"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradient of the target w.r.t. the input, in one compiled forward+backward pass.

        Parameters
        ----------
        x : array or tensor, shape (N, H, W, C)
        overrides : dict, optional
            Layer overrides (e.g. guided ReLUs); ``tag`` names them in the cache key.

        Returns
        -------
        grads : (N, H, W, C), scores : (N,), indices : (N,)
        """
        fn = self._grad_fn(bound, overrides, tag)
        g, s, i = fn(x, bound.indices)
        return g.numpy(), s.numpy(), i.numpy()

    def input_gradient(self, bound: BoundTarget) -> Callable:
        """The compiled ``(x (N, H, W, C), indices (N,) int32) -> (gradient (N, H, W, C),
        scores (N,), indices (N,))`` of the target through the model's own layers: one
        trace per model and target tensor, shared by every explainer of the model (the
        plain :meth:`gradients`, and the multi-sample methods, whose compiled functions call
        it rather than trace the model's forward and backward pass again)."""
        return self._grad_fn(bound, None, "plain")

    def _grad_fn(self, bound: BoundTarget, overrides: dict | None, tag: str):
        key = ("grad", bound.key, bound.reduce, tag)

        def build():
            graph = self.graph

            @tf.function(autograph=False, input_signature=[self._signature(), tf.TensorSpec((None,), tf.int32)])
            def grad(x, indices):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = graph.run(x, [bound.key], overrides)[0]
                    scores, idx = bound.select(value, indices)
                g = tape.gradient(scores, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return g, scores, idx

            return grad

        return self._cached(key, build)


__all__ = [
    "METHODS",
    "BatchResult",
    "Explainer",
    "Explanation",
    "check_finite",
    "check_input",
    "get_method",
    "list_methods",
    "reduce_channels",
    "register",
    "target_forward",
    "targets_forward",
    "targets_key",
]
