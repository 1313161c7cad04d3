"""Mixed precision: which layers the graph runs in float32, and the casts it needs.

A model built under ``keras.mixed_precision.set_global_policy("mixed_float16")`` keeps its
weights in float32 but computes in float16: its activations, gradients and relevances would
be float16, mixing with the float32 tensors of the methods (a raw ``TypeError``) or losing
precision.  cnnvis_eval computes in float32 on such models: :class:`~cnnvis_eval.graph.FlatGraph`
calls a low-precision layer's ``call`` (not ``__call__``, which would cast to float16) on
float32 tensors, so its float32 weights are read as they are, and casts what it returns to
float32.  Layers whose *weights* are float16 (policy ``"float16"``) cannot be run so and are
refused by name.
"""

from __future__ import annotations

import keras

from ..errors import UnsupportedLayerError

LOW_PRECISION = ("float16", "bfloat16")


def is_low_precision(layer) -> bool:
    """True when ``layer`` computes in float16/bfloat16 (a mixed-precision policy)."""
    return str(getattr(layer, "compute_dtype", None) or "float32") in LOW_PRECISION


def to_float32(value):
    """Cast the float16/bfloat16 tensors in a structure to float32 (others unchanged)."""
    def cast(t):
        dt = getattr(t, "dtype", None)
        if dt is not None and keras.backend.standardize_dtype(dt) in LOW_PRECISION:
            return keras.ops.cast(t, "float32")
        return t

    return keras.tree.map_structure(cast, value)


def check_weight_dtypes(nodes, model_name: str) -> None:
    """Raise UnsupportedLayerError naming the first layer of ``nodes`` (FlatNodes) whose
    weights are float16/bfloat16."""
    for n in nodes:
        for w in getattr(n.layer, "weights", ()) or ():
            dtype = keras.backend.standardize_dtype(w.dtype)
            if dtype in LOW_PRECISION:
                raise UnsupportedLayerError(
                    f"layer {n.name!r} ({n.type_name}) of model {model_name!r} keeps its weights "
                    f"in {dtype}; cnnvis_eval computes in float32: use dtype='float32' or the "
                    "'mixed_float16' policy (float32 weights)"
                )


__all__ = ["LOW_PRECISION", "check_weight_dtypes", "is_low_precision", "to_float32"]
