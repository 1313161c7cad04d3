"""Axioms: conservation (completeness) and input invariance.

**Conservation / completeness** (:class:`ConservationError`): an attribution that
distributes the explained score should sum to it, ``sum_i R_i = f(x)`` (LRP-0 on bias-free
nets, deep Taylor) or to the score difference to a reference input,
``sum_i R_i = f(x) - f(x_ref)`` (integrated gradients, DeepLIFT).  The metric is the
relative error ``|sum_i R_i - (f(x) - f_ref)| / |f(x) - f_ref|``.

**Input invariance** (Kindermans et al. 2017, "The (un)reliability of saliency methods"):
shift every input by a constant ``c`` and compensate inside the first layer, so that the
shifted network computes exactly the same function on shifted inputs:
``g(x + c) = f(x)``.  A reliable method gives the same explanation for ``(g, x + c)`` as for
``(f, x)``.  :func:`shift_model` builds ``g`` on a clone: the first weighted layer's bias
absorbs ``-W c`` (Kindermans' ``b2 = b1 - W m2``).  Where zero padding makes ``W c`` vary
near the borders ('same'-padded or zero-padded first convolutions), the per-position
remainder is kept as a fixed additive map (a :class:`BiasMapConv2D`, a Conv2D subclass
with one extra non-trainable weight) so that the function stays exactly the same.
"""

from __future__ import annotations

import numpy as np
import keras
import tensorflow as tf

from ..errors import InputError, UnsupportedLayerError
from ..methods.base import Explanation, check_input
from ..graph import clone_layer
from ..models.clone import clone_with_weights
from ..models.spec import ModelSpec, as_spec, identity
from ..targets import bind, fixed_target, user_target
from .base import Metric, as_array, register_metric


# ---------------------------------------------------------------------- conservation
@register_metric
class ConservationError(Metric):
    """Relative conservation (completeness) error per image; lower is better.

    ``evaluate(attribution, score=None, reference=None) -> (N,)``

    Parameters of ``evaluate``
    --------------------------
    attribution : Explanation, or array (N, H, W, C) or (N, H, W)
        An Explanation gives its attribution (its heatmap if it has none).  Summed over
        all axes but the first.
    score : array (N,), optional
        The explained value ``f(x)``; default: the Explanation's ``scores``.
    reference : float or array (N,), optional
        ``f(x_ref)``; default: the Explanation's ``meta["baseline_score"]`` when the method
        reports one (integrated gradients), else 0 (plain conservation).

    Parameters
    ----------
    eps : float
        Floor of the denominator ``|f(x) - f_ref|``.
    """

    name = "conservation_error"
    category = "axioms"
    higher_is_better = False
    per_image = ("attribution", "score", "reference")
    attribution_args = ("attribution",)

    def __init__(self, eps: float = 1e-12):
        super().__init__(eps=eps)
        self.eps = float(eps)

    def prepare(self, data):
        exp = data["attribution"]
        if isinstance(exp, Explanation):
            if data["score"] is None:
                data["score"] = exp.scores
            if data["reference"] is None and "baseline_score" in exp.meta:
                data["reference"] = exp.meta["baseline_score"]
        elif data["score"] is None:
            raise InputError("conservation_error needs score= (N,) unless given an Explanation")
        n = len(as_array(exp, "attribution"))
        ref = data["reference"]
        if ref is None:
            ref = 0.0
        data["reference"] = np.broadcast_to(np.asarray(ref, np.float64), (n,)).copy()
        return super().prepare(data)

    def check(self, data):
        for k in ("score", "reference"):
            data[k] = np.asarray(data[k], np.float64).reshape(-1)
        return data

    def evaluate_batch(self, attribution, score=None, reference=None):
        total = np.asarray(attribution, np.float64).reshape(len(attribution), -1).sum(1)
        delta = score - reference
        return np.abs(total - delta) / np.maximum(np.abs(delta), self.eps)


# ---------------------------------------------------------------------- input shift
class BiasMapConv2D(keras.layers.Conv2D):
    """A Conv2D that adds a fixed map ``bias_map`` (h, w, filters) before its activation.

    Built by :func:`shift_model` only; the kernel, bias and activation are those of the
    original layer, so every method that calls the layer (or reads ``activation``) sees
    the same layer plus a constant.
    """

    def __init__(self, *args, bias_map_shape=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_map_shape = tuple(int(s) for s in bias_map_shape)

    def build(self, input_shape):
        super().build(input_shape)
        self.bias_map = self.add_weight(name="bias_map", shape=self.bias_map_shape, initializer="zeros",
                                        trainable=False)

    def call(self, inputs):
        out = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            out = out + keras.ops.reshape(self.bias, (1, 1, 1, self.filters))
        out = out + self.bias_map[None]
        return self.activation(out) if self.activation is not None else out

    def get_config(self):
        return {**super().get_config(), "bias_map_shape": list(self.bias_map_shape)}


_PASS_THROUGH = (keras.layers.ZeroPadding2D, keras.layers.Flatten, keras.layers.Reshape, keras.layers.InputLayer)
_LINEAR_FIRST = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _first_layers(graph) -> list:
    """The weighted layers that read the input (through padding/reshaping only)."""
    firsts, frontier, seen = [], [graph.input_key], set()
    while frontier:
        key = frontier.pop()
        for node in graph.consumers(key):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node.layer, _PASS_THROUGH):
                frontier.extend(node.outputs)
            elif isinstance(node.layer, _LINEAR_FIRST):
                firsts.append(node)
            else:
                raise UnsupportedLayerError(
                    f"input shift: the input of model {graph.model.name!r} reaches layer {node.name!r} "
                    f"({node.type_name}) before any Conv/Dense layer; only zero padding, flatten and reshape "
                    "may come first"
                )
    if not firsts:
        raise UnsupportedLayerError(f"input shift: model {graph.model.name!r} has no Conv/Dense layer reading the input")
    return firsts


def _shift_image(spec: ModelSpec, shift) -> np.ndarray:
    graph = spec.graph
    shape = tuple(graph.input_shape[1:])
    if any(s is None for s in shape):
        raise InputError(f"input shift needs a fixed input shape; model has {shape}")
    c = np.asarray(shift, np.float64)
    try:
        return np.broadcast_to(c, shape).copy()
    except ValueError:
        raise InputError(f"shift has shape {c.shape}; it must broadcast to the input shape {shape}") from None


def default_shift(model) -> np.ndarray:
    """Half the width of the model's input range per channel (``spec.input_range``), or 1.

    E.g. 1.0 for inputs in [-1, 1], 127.5 for caffe-style mean-subtracted inputs.
    """
    spec = as_spec(model)
    if spec.input_range is None:
        return np.ones(spec.graph.input_shape[-1])
    lo, hi = (np.asarray(v, np.float64) for v in spec.input_range)
    return (hi - lo) / 2.0


def shift_model(model, shift) -> ModelSpec:
    """A clone ``g`` of ``model`` with ``g(x + shift) == f(x)`` (Kindermans et al.).

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified.  Its input must reach Conv2D/Dense/DepthwiseConv2D/SeparableConv2D
        layers directly or through zero padding, flatten or reshape.
    shift : float, array (C,) or array (H, W, C)
        The constant added to every input.

    Returns
    -------
    ModelSpec
        The shifted clone; ``info["input_shift"]`` holds the shift and, per first layer,
        how it was folded (``"bias"`` or ``"bias_map"``).  Its ``preprocess``,
        ``deprocess`` and ``input_range`` are those of ``model`` moved by the shift.
    """
    spec = as_spec(model)
    graph = spec.graph
    dtype = tf.float64 if graph.input_dtype == "float64" else tf.float32
    c_img = _shift_image(spec, shift)
    folds, replace, how = {}, {}, {}
    for node in _first_layers(graph):
        layer = node.layer
        # response of the layer's linear part to the constant image (through any padding),
        # minus its response to zeros (the bias): W * c, per output position
        lin = clone_layer(layer, graph.input_shapes(node)[0], activation="linear")
        probe = tf.constant(np.stack([c_img, np.zeros_like(c_img)]), dtype)
        both = np.asarray(graph.run(probe, [node.name], overrides={node.name: lin})[0], np.float64)
        resp = both[0] - both[1]
        spatial = resp.reshape(-1, resp.shape[-1])
        constant = np.allclose(spatial, spatial[:1], rtol=1e-6, atol=1e-6 * (np.abs(spatial).max() + 1e-30))
        has_bias = bool(getattr(layer, "use_bias", False))
        if constant and has_bias:
            folds[node.name] = ("bias", spatial[0])
            how[node.name] = "bias"
        elif isinstance(layer, keras.layers.Conv2D) and type(layer) in (keras.layers.Conv2D, BiasMapConv2D) \
                and resp.ndim == 3:
            folds[node.name] = ("bias_map", resp)
            how[node.name] = "bias_map"

            def make(orig, shape=resp.shape):
                return BiasMapConv2D.from_config({**orig.get_config(), "bias_map_shape": list(shape)})

            replace[id(layer)] = make
        else:
            raise UnsupportedLayerError(
                f"input shift: cannot fold the shift into layer {node.name!r} ({node.type_name}): "
                + ("it has no bias" if constant else "its response to a constant input varies by position")
            )
    out = clone_with_weights(spec, replace=replace)
    og = out.graph
    for name, (kind, resp) in folds.items():
        layer = og.node(name).layer
        if kind == "bias":
            layer.bias.assign((np.asarray(layer.bias.numpy(), np.float64) - resp).astype(layer.bias.dtype))
        else:
            layer.bias_map.assign((np.asarray(layer.bias_map.numpy(), np.float64) - resp).astype(layer.bias_map.dtype))
    out.info = {**out.info, "input_shift": {"shift": np.asarray(shift), "folded": how}}
    return _shifted_metadata(out, spec, c_img)


def _shifted_metadata(out: ModelSpec, spec: ModelSpec, c_img: np.ndarray) -> ModelSpec:
    """Make ``g``'s spec describe ``g``'s inputs ``x + c`` (in place, returns ``out``).

    Preprocessing adds ``c`` and deprocessing removes it (a spec without preprocessing, the
    identity, keeps it: its inputs are already model inputs); the per-channel
    ``input_range`` moves by ``c`` (to None when ``c`` varies over the image, which a
    per-channel range cannot express).  Methods that read the input domain (zB bounds,
    "black" baselines, LIME's display image) then see on ``g`` the domain of ``f``, shifted.
    """
    pre, de = spec.preprocess, spec.deprocess
    if pre is not identity:
        def preprocess(images):
            x = np.asarray(pre(images))
            return (x + c_img.astype(x.dtype)).astype(x.dtype)

        out.preprocess = preprocess
    if de is not identity:
        def deprocess(x):
            x = np.asarray(x)
            return de((x - c_img.astype(x.dtype)).astype(x.dtype))

        out.deprocess = deprocess
    rng = spec.input_range
    if rng is not None:
        flat = c_img.reshape(-1, c_img.shape[-1])
        if np.all(flat == flat[:1]):
            rng = tuple(None if v is None else (np.asarray(v) + flat[0]).astype(np.asarray(v).dtype) for v in rng)
        else:
            rng = None
    out.input_range = rng
    return out


def input_shift_explanations(model, x, explainer, shift=None, target=None, batch_size: int | None = None,
                             original: Explanation | None = None,
                             **explainer_params) -> tuple[Explanation, Explanation]:
    """Explanations of ``(f, x)`` and of ``(g, x + shift)`` with ``g = shift_model(f, shift)``.

    The target is resolved on ``(f, x)`` and kept for ``g``.  ``shift`` defaults to
    :func:`default_shift`.  ``original``: the explanation of ``(f, x)`` by the same explainer
    and parameters when the caller has it (one map per image of ``x``; its ``indices`` fix
    the target); then only ``(g, x + shift)`` is explained.  Returns ``(original, shifted)``.
    """
    from .base import explainer_factory, given_or_explained

    factory = explainer_factory(explainer, **explainer_params)
    spec = as_spec(model)
    dtype = np.float64 if spec.graph.input_dtype == "float64" else np.float32
    x = check_input(x, spec.graph, dtype)
    shift = default_shift(spec) if shift is None else shift
    g = shift_model(spec, shift)
    target = user_target(target)
    e1 = given_or_explained(original, len(x),
                            lambda: factory(spec).explain(x, target=target, batch_size=batch_size, progress=False))
    fixed = fixed_target(bind(target, spec.graph, len(x)), e1.indices)
    xs = (x + _shift_image(spec, shift)[None]).astype(dtype)
    e2 = factory(g).explain(xs, target=fixed, batch_size=batch_size, progress=False)
    return e1, e2


def relative_l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum |a - b| / sum |a|`` per image (0 when both are zero; inf-safe)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    num = np.abs(a - b).sum(1)
    den = np.abs(a).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


@register_metric
class InputInvariance(Metric):
    """Input invariance error (Kindermans et al.): the relative L1 difference between the
    heatmap of ``(f, x)`` and that of ``(g, x + shift)``, per image; 0 = invariant.

    ``evaluate(model, x, explainer, target=None) -> (N,)``

    Parameters
    ----------
    shift : float or array, optional
        Default :func:`default_shift` (half the input range per channel).
    """

    name = "input_invariance_error"
    category = "axioms"
    higher_is_better = False
    per_image = ("x",)

    def __init__(self, shift=None):
        super().__init__(shift=None if shift is None else np.asarray(shift).tolist())
        self.shift = shift

    def evaluate_batch(self, model, x, explainer, target=None):
        e1, e2 = input_shift_explanations(model, x, explainer, self.shift, target)
        return relative_l1(e1.heatmap, e2.heatmap)


__all__ = [
    "BiasMapConv2D",
    "ConservationError",
    "InputInvariance",
    "default_shift",
    "input_shift_explanations",
    "relative_l1",
    "shift_model",
]
