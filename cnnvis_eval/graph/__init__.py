"""Graph knowledge in one place: the flattened graph and its runner, layer helpers, and
every structural question asked of a model (graph in, layer names out).

- :mod:`~cnnvis_eval.graph.flat` — :class:`FlatGraph` (nested models inlined, softmax
  stripped, one output chosen, mixed precision run in float32, overrides per layer),
  :func:`to_logits`;
- :mod:`~cnnvis_eval.graph.trace` — subclassed models traced into their layer calls;
- :mod:`~cnnvis_eval.graph.precision` — mixed-precision layers run in float32;
- :mod:`~cnnvis_eval.graph.layers` — what one layer does (activation, rectifier,
  convolution) and clones of layers with copied weights;
- :mod:`~cnnvis_eval.graph.queries` — last conv layer, intermediate layers, the feature
  layer of CAM-style methods, the CAM head, the nodes between two tensors;
- :mod:`~cnnvis_eval.graph.groups` — the layer groups of randomization checks;
- :mod:`~cnnvis_eval.graph.inference` — the inference forward pass with BatchNormalizations
  folded into the kernel layer before them (:func:`~cnnvis_eval.graph.inference.run_folded`,
  for the methods and metrics that only evaluate the model).

This package imports nothing from cnnvis_eval but :mod:`cnnvis_eval.errors` (see
docs/architecture.md for the allowed arrows).
"""

from .flat import OUTPUT, FlatGraph, FlatNode, is_subclassed, to_logits
from .groups import LayerGroup, block_key, layer_groups
from .layers import (
    SMOOTH_UNITS,
    Rectifier,
    activation_name,
    clone_layer,
    is_conv,
    linear_part,
    sync_clones,
    rectifier_of,
    smooth_unit_of,
)
from .precision import is_low_precision
from .queries import CamHead, feature_layer, find_cam_head, last_conv_layer, nodes_between, pick_intermediate_layers
from .trace import known_input_shape, trace_call

__all__ = [
    "OUTPUT",
    "SMOOTH_UNITS",
    "CamHead",
    "FlatGraph",
    "FlatNode",
    "LayerGroup",
    "Rectifier",
    "activation_name",
    "block_key",
    "clone_layer",
    "feature_layer",
    "find_cam_head",
    "is_conv",
    "is_low_precision",
    "is_subclassed",
    "known_input_shape",
    "last_conv_layer",
    "layer_groups",
    "linear_part",
    "nodes_between",
    "pick_intermediate_layers",
    "sync_clones",
    "rectifier_of",
    "smooth_unit_of",
    "to_logits",
    "trace_call",
]
