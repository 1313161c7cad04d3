"""Clones of a model with copied weights (and a linear head), so checks that modify a
model (randomization, input shift) never touch the user's.

:func:`clone_with_weights` clones with ``keras.models.clone_model(..., recursive=True)``
(nested models too), then copies the weights layer by layer (:func:`copy_weights`).  A
Dense/Conv ``activation="softmax"`` output becomes linear in the clone, as the methods
explain logits anyway.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from ..errors import UnsupportedArchitectureError
from .spec import ModelSpec, as_spec


def _softmax_head(spec: ModelSpec):
    graph = spec.graph
    if not graph.stripped:
        return None
    node = graph.producer(graph.output_key)
    if isinstance(node.layer, (keras.layers.Softmax, keras.layers.Activation)):
        return None  # stripped by an identity override; no weights involved
    return node.layer


def _layer_pairs(a: keras.Model, b: keras.Model):
    for la, lb in zip(a.layers, b.layers):
        if isinstance(la, keras.Model) and hasattr(la, "layers") and isinstance(lb, keras.Model):
            yield from _layer_pairs(la, lb)
        else:
            yield la, lb


def copy_weights(source: keras.Model, dest: keras.Model) -> None:
    """Copy the weights of ``source`` into its clone ``dest``, layer by layer, matched by
    variable name (variables that only ``dest`` has are left alone)."""
    for la, lb in _layer_pairs(source, dest):
        src = {v.name: v for v in la.weights}
        for v in lb.weights:
            if v.name in src:
                value = np.array(src[v.name].numpy())
                if tuple(value.shape) != tuple(v.shape):
                    raise UnsupportedArchitectureError(
                        f"clone of layer {la.name!r}: variable {v.name!r} has shape {tuple(v.shape)} "
                        f"but the original has {value.shape}"
                    )
                v.assign(value)


def clone_with_weights(model, replace: dict | None = None) -> ModelSpec:
    """A clone of ``model`` with copied weights, as a ModelSpec with the same metadata.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Sequential, functional, or nested (inner models are cloned too).
    replace : dict, optional
        ``{id(original_layer): factory(original_layer) -> new_layer}`` to swap layers in
        the clone (used by the input-shift axiom); their weights are copied by name.

    Returns
    -------
    ModelSpec
        Same name, preprocessing, layer names and metadata; ``info["clone_of"]`` is set.
        A softmax Dense/Conv head becomes linear.

    Raises
    ------
    UnsupportedArchitectureError
        Subclassed models that cannot be traced into layers (Keras cannot clone them); a
        traced one is cloned through its trace (the clone is a functional model).
    """
    spec = as_spec(model)
    if spec.graph.opaque:
        why = f" that cannot be traced into layers ({spec.graph.opaque_reason})" if spec.graph.opaque_reason else ""
        raise UnsupportedArchitectureError(
            f"model {spec.model.name!r} is a subclassed model{why}: randomization and input-shift "
            "checks need a Sequential or functional model that keras.models.clone_model can copy"
        )
    source = spec.graph.functional if spec.graph.traced else spec.model
    head = _softmax_head(spec)
    replace = replace or {}

    def clone_fn(layer):
        if id(layer) in replace:
            return replace[id(layer)](layer)
        cfg = layer.get_config()
        if layer is head:
            cfg = {**cfg, "activation": "linear"}
        return type(layer).from_config(cfg)

    try:
        clone = keras.models.clone_model(source, clone_function=clone_fn, recursive=True)
    except Exception as err:
        raise UnsupportedArchitectureError(f"cannot clone model {spec.model.name!r}: {err}") from err
    copy_weights(source, clone)
    return dataclasses.replace(spec, model=clone, info={**spec.info, "clone_of": spec.name})


__all__ = ["clone_with_weights", "copy_weights"]
