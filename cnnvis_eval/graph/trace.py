"""Subclassed Keras models as layer graphs: a functional trace of ``call``.

A subclassed model (``class Net(keras.Model)`` with its own ``call``) has no graph of layer
calls Keras keeps: calling it on a symbolic input gives one opaque node.  But when ``call``
uses only Keras layers and ``keras.ops`` (as the MTCNN networks and most Keras 3 examples
do), calling ``model.call`` itself on a ``keras.Input`` of the input shape records every
inner layer call, and ``keras.Model(inp, outputs)`` is a functional model over the *same*
layer objects (the same weights, read live).  :class:`~cnnvis_eval.graph.FlatGraph` flattens
that trace like any functional model.

The trace needs the input shape (a subclassed model does not record one unless it was
built with ``model.build(shape)`` or called on data); and it fails when ``call`` uses
TensorFlow functions directly (``tf.nn.relu``) or Python control flow on tensor values --
then the model stays one opaque node, and the reason is kept for the error messages of
methods that need the layers.

Tracing adds inbound nodes to the model's inner layers (Keras' record that they were
called symbolically); their weights and the model's behaviour are unchanged.  Only public
Keras API is used here.
"""

from __future__ import annotations

import inspect

import keras

from ..errors import InputError


def known_input_shape(model) -> tuple | None:
    """The input shape ``(H, W, C)`` a subclassed model was built or called with, or None.

    Read from ``model.get_build_config()`` (set by ``model.build((N, H, W, C))`` or the
    first call on data); for a built model whose own ``build`` takes no argument (such as
    MTCNN's networks: ``def build(self, input_shape=(None, 48, 48, 3))``), the default of
    that argument.
    """
    try:
        config = model.get_build_config() or {}
    except Exception:  # pragma: no cover - exotic build configs
        config = {}
    if "input_shape" in config:  # one argument (Keras' form for a single shape)
        return _batched_shape(config["input_shape"])
    shapes = config.get("shapes_dict") or {}
    if len(shapes) == 1:
        return _batched_shape(next(iter(shapes.values())))
    if getattr(model, "built", False):
        try:
            params = list(inspect.signature(model.build).parameters.values())
        except (TypeError, ValueError):  # pragma: no cover - builtins
            return None
        if params and params[0].default is not inspect.Parameter.empty:
            return _batched_shape(params[0].default)
    return None


def _batched_shape(shape) -> tuple | None:
    """``(N, H, W, C)`` -> ``(H, W, C)``; None unless a tuple of ints/None of rank >= 2."""
    if not isinstance(shape, (tuple, list)) or len(shape) < 2 or \
            not all(d is None or isinstance(d, int) for d in shape):
        return None
    return tuple(shape[1:])


def check_input_shape(input_shape, model_name: str) -> tuple:
    """``input_shape`` as a tuple of positive ints (or None) without the batch axis."""
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape for model {model_name!r} must be a tuple like (H, W, C); "
                         f"got {input_shape!r}") from None
    if not shape or any(d is not None and d <= 0 for d in shape):
        raise InputError(f"input_shape for model {model_name!r} must be a tuple of positive sizes "
                         f"like (H, W, C); got {input_shape!r}")
    return shape


def trace_call(model: keras.Model, input_shape: tuple, dtype=None):
    """A functional model over ``model``'s own layers, traced from ``model.call``.

    Parameters
    ----------
    model : keras.Model
        A subclassed model with one image input.
    input_shape : tuple (H, W, C)
        Without the batch axis.
    dtype : str, optional
        Input dtype (default: the model's variable dtype, float32 for mixed precision).

    Returns
    -------
    (keras.Model or None, str or None)
        The traced functional model (same layers and weights, possibly several outputs)
        and None; or None and the reason the trace failed (one line).
    """
    if dtype is None:
        dtype = getattr(model, "variable_dtype", None) or "float32"
    inp = keras.Input(shape=tuple(input_shape), dtype=dtype, name=f"{model.name}_input")
    try:
        out = model.call(inp)
    except Exception as err:  # any failure of the user's call on a symbolic tensor
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, f"its call() fails on a symbolic keras.Input ({type(err).__name__}: {first[:200]})"
    flat = keras.tree.flatten(out)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        kinds = sorted({type(t).__name__ for t in flat})
        return None, f"its call() returns {', '.join(kinds) or 'nothing'}, not Keras tensors"
    try:
        fn = keras.Model(inp, flat if len(flat) > 1 else flat[0], name=model.name)
    except Exception as err:
        return None, f"its traced outputs do not form a functional model ({type(err).__name__}: {err})"
    return fn, None


__all__ = ["check_input_shape", "known_input_shape", "trace_call"]
