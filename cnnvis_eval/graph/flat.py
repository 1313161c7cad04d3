"""The flattened graph and its runner: model surgery without touching the user's model.

The central object is :class:`FlatGraph`: a Keras 3 model (Sequential, functional, or
either nested inside the other, as in ``Sequential([base_model, GlobalAveragePooling2D(),
Dense(10)])``) flattened into one topologically ordered list of layer calls.  Running the
graph calls the *original* layer objects on concrete tensors, so it adds no nodes to the
user's layers and changes none of their weights; methods that need a different behaviour
for some layer (guided ReLU, a softmax-free head, a relevance rule) pass *overrides* — a
callable per layer name — and any layer they must change is cloned with copied weights
first (:func:`~cnnvis_eval.graph.layers.clone_layer`).

Keras' graph internals (``_nodes_by_depth``, ``Node.arguments``) are read in this module
only, so a Keras upgrade that moves them breaks one file.  That is why building the graph
(from any model form: nested, traced subclassed, several outputs of which one is chosen)
and running it stay one module; tracing (``trace.py``) and the mixed-precision policy
(``precision.py``) use public Keras API and live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import keras
import numpy as np
from keras.src.models.functional import Functional as _Functional

from ..errors import InputError, TargetError, UnsupportedLayerError
from .layers import activation_name, clone_layer
from .precision import LOW_PRECISION, check_weight_dtypes, is_low_precision, to_float32
from .trace import check_input_shape, known_input_shape, trace_call

OUTPUT = "__output__"
"""Name under which :meth:`FlatGraph.run` returns the model's (softmax-free) output."""


class _Ref:
    """Placeholder for a graph tensor inside a node's argument structure."""

    __slots__ = ("key",)

    def __init__(self, key: int):
        self.key = key

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"_Ref({self.key})"


@dataclass(eq=False)
class FlatNode:
    """One layer call of a flattened model.

    Attributes
    ----------
    layer : keras.layers.Layer or keras.Operation
        The original (user's) layer object; never modified.
    name : str
        Unique name in the flat graph (the layer name, qualified by the enclosing nested
        models as ``"outer/inner"`` only where plain names collide).
    scope : tuple of str
        Names of the nested models the call sits in, outermost first.
    inputs, outputs : tuple of int
        Keys of the tensors the call reads and writes.
    """

    layer: Any
    name: str
    scope: tuple[str, ...]
    args: Any
    kwargs: dict
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def type_name(self) -> str:
        return type(self.layer).__name__

    @property
    def qualified_name(self) -> str:
        return "/".join(self.scope + (self.layer.name,))


def _functional_of(model: keras.Model):
    """The Functional graph behind a Functional or Sequential model, or None if subclassed."""
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise InputError(
                f"Sequential model {model.name!r} is not built: give it an Input layer or "
                "call model.build((None, H, W, C)) before explaining it."
            )
        return fn
    if isinstance(model, _Functional):
        return model
    return None


def is_subclassed(model) -> bool:
    """True for a keras.Model that is neither Sequential nor functional (its own ``call``)."""
    return isinstance(model, keras.Model) and not isinstance(model, (keras.Sequential, _Functional))


def _shape_of(kt) -> tuple:
    return tuple(None if d is None else int(d) for d in kt.shape)


class FlatGraph:
    """A Keras 3 model flattened into one list of layer calls (nested models inlined).

    Parameters
    ----------
    model : keras.Model
        A built Sequential, functional, or nested model with one image input.  A subclassed
        model is traced into its layer calls (:mod:`cnnvis_eval.graph.trace`) when its
        ``call`` uses only Keras layers and ``keras.ops``; otherwise it is one opaque node
        (gradient methods still work; methods that need the layers raise
        :class:`~cnnvis_eval.errors.UnsupportedLayerError`, ``opaque_reason`` says why).
    strip_softmax : bool
        If the output is produced by a softmax (Dense/Conv ``activation="softmax"``,
        ``Activation("softmax")`` or ``Softmax()``), run the graph without it so the output
        is the pre-softmax logits.  The user's model is not modified: a Dense/Conv head is
        replaced by a clone with copied weights and a linear activation.
    input_shape : tuple (H, W, C), optional
        For subclassed models only: the input shape to trace with (default: the shape
        the model was built or called with).  Ignored for Sequential/functional models.
    output : int or str, optional
        Which output of a multi-output model to explain: its index, or the name of the
        layer producing it (e.g. ``"fc6-3"``).  Required when there are several outputs.

    Mixed precision: layers with a float16/bfloat16 compute dtype (``mixed_float16``) are
    run in float32 (their ``call`` on float32 tensors, float32 variables, outputs cast to
    float32), so every method computes in float32.  Layers whose *weights* are float16
    (policy ``"float16"``) are refused with :class:`~cnnvis_eval.errors.UnsupportedLayerError`.

    Attributes
    ----------
    nodes : list of FlatNode
        Layer calls in an order where every call comes after the calls it reads from.
    input_key, output_key : int
        Keys of the image input and of the model output.
    stripped : str or None
        Description of the softmax that was stripped, if any.
    output_names : list of str
        Names of all the model's outputs (the layers producing them), in order.
    output_index : int
        Which of them this graph explains.
    traced : bool
        True for a subclassed model traced into its layers.
    opaque_reason : str or None
        Why an opaque (subclassed) model could not be traced.
    functional : keras.Model or None
        The functional model the nodes come from (the model itself, or the trace of a
        subclassed one; None when opaque).
    float32_nodes : frozenset of str
        Names of the mixed-precision layers run in float32.
    """

    def __init__(self, model: keras.Model, strip_softmax: bool = True,
                 input_shape: tuple | None = None, output: int | str | None = None):
        if not isinstance(model, keras.Model):
            raise InputError(f"expected a keras.Model or ModelSpec, got {type(model).__name__}")
        self.model = model
        self.nodes: list[FlatNode] = []
        self._shapes: dict[int, tuple] = {}
        self._key_of: dict[int, int] = {}  # id(KerasTensor) -> key
        self._keep: list = []  # keep KerasTensors alive so their ids stay unique
        self._container_out: dict[str, int] = {}
        self._next = 0
        self.opaque = False
        self.traced = False
        self.opaque_reason: str | None = None
        self.input_dtype = "float32"

        fn = _functional_of(model)
        if fn is None:
            shape = input_shape if input_shape is not None else known_input_shape(model)
            if shape is None:
                raise InputError(
                    f"subclassed model {model.name!r} has no known input shape: pass "
                    "input_shape=(H, W, C) (to as_spec, explain or load_model_file), or build it "
                    "first with model.build((None, H, W, C))"
                )
            shape = check_input_shape(shape, model.name)
            fn, self.opaque_reason = trace_call(model, shape)
            self.traced = fn is not None
        self.functional = fn
        if fn is None:
            out_keys = self._build_opaque(model, shape)
        else:
            if len(fn.inputs) != 1:
                raise InputError(
                    f"model {model.name!r} has {len(fn.inputs)} inputs; cnnvis_eval explains "
                    "models with one image input"
                )
            in_key = self._new_key(fn.inputs[0])
            self.input_dtype = str(fn.inputs[0].dtype)
            if self.input_dtype in LOW_PRECISION:
                self.input_dtype = "float32"
            out_keys = self._flatten(fn, [in_key], scope=())
            self.input_key = in_key
        self._name_nodes()
        self._producer = {k: n for n in self.nodes for k in n.outputs}
        self._plans: dict[tuple, list[FlatNode]] = {}
        self._select_output(out_keys, output)
        self.float32_nodes = frozenset(n.name for n in self.nodes if is_low_precision(n.layer))
        check_weight_dtypes(self.nodes, model.name)
        self.overrides: dict[str, Callable] = {}
        self.stripped: str | None = None
        if strip_softmax:
            self._strip_softmax()

    # ------------------------------------------------------------------ building
    def _new_key(self, kt) -> int:
        key = self._next
        self._next += 1
        self._key_of[id(kt)] = key
        self._keep.append(kt)
        self._shapes[key] = _shape_of(kt)
        return key

    def _build_opaque(self, model, shape: tuple) -> list[int]:
        self.opaque = True
        dtype = getattr(model, "variable_dtype", None) or "float32"
        inp = keras.KerasTensor((None,) + tuple(shape), dtype=dtype)
        in_key = self._new_key(inp)
        try:
            out = model.compute_output_spec(inp)
        except Exception as err:
            raise InputError(
                f"subclassed model {model.name!r} cannot be run on inputs of shape "
                f"{(None,) + tuple(shape)}: {type(err).__name__}: {err}"
            ) from err
        out_keys = tuple(self._new_key(t) for t in keras.tree.flatten(out))
        self.nodes.append(
            FlatNode(model, model.name, (), (_Ref(in_key),), {}, (in_key,), out_keys)
        )
        self.input_key = in_key
        return list(out_keys)

    def _select_output(self, out_keys: list[int], output):
        """Set ``output_key`` from ``output`` (index or producing layer's name); prune the
        nodes that do not lead to it."""
        names = []
        for i, k in enumerate(out_keys):
            node = self._producer.get(k)
            names.append(node.name if node is not None and len(node.outputs) == 1 else f"output {i}")
        self.output_names = names
        shown = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
        if output is None:
            if len(out_keys) != 1:
                raise InputError(
                    f"model {self.model.name!r} has {len(out_keys)} outputs ({shown}); choose "
                    "the one to explain with output=<index or name> (as_spec, explain, load_model_file)"
                )
            index = 0
        elif isinstance(output, (int, np.integer)) and not isinstance(output, bool):
            index = int(output)
            if not 0 <= index < len(out_keys):
                raise InputError(
                    f"output={index} is out of range: model {self.model.name!r} has "
                    f"{len(out_keys)} output(s) ({shown})"
                )
        elif isinstance(output, str) and output in names:
            index = names.index(output)
        else:
            raise InputError(
                f"model {self.model.name!r} has no output {output!r}; its outputs are {shown}"
            )
        self.output_index = index
        self.output_key = out_keys[index]
        if len(out_keys) > 1:  # keep only what the chosen output depends on
            needed = {id(n) for n in self.plan([self.output_key])}
            self.nodes = [n for n in self.nodes if id(n) in needed]
            self._producer = {k: n for n in self.nodes for k in n.outputs}
            self._plans.clear()
            self._by_name = {k: n for k, n in self._by_name.items() if id(n) in needed}
            self._container_out = {k: v for k, v in self._container_out.items()
                                   if v in self._producer}

    def _flatten(self, fn, in_keys: Sequence[int], scope: tuple[str, ...]) -> list[int]:
        for kt, key in zip(fn.inputs, in_keys):
            self._key_of[id(kt)] = key
            self._keep.append(kt)
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                if any(id(t) not in self._key_of for t in node.input_tensors):
                    continue  # not on the path from the input (Keras does the same)
                arg_keys = tuple(self._key_of[id(t)] for t in node.input_tensors)
                inner = _functional_of(op) if isinstance(op, keras.Model) else None
                if isinstance(op, keras.Model) and inner is None and len(arg_keys) == 1:
                    # a subclassed model called inside: inline its trace where possible
                    inner, _ = trace_call(op, self._shapes[arg_keys[0]][1:],
                                          dtype=str(node.input_tensors[0].dtype))
                if inner is not None:
                    if len(inner.inputs) != len(arg_keys):
                        raise UnsupportedLayerError(
                            f"nested model {op.name!r} is called with {len(arg_keys)} tensors "
                            f"but has {len(inner.inputs)} inputs"
                        )
                    outs = self._flatten(inner, arg_keys, scope + (op.name,))
                    for t, k in zip(node.outputs, outs):
                        self._key_of[id(t)] = k
                        self._keep.append(t)
                    if len(outs) == 1:
                        self._container_out.setdefault(op.name, outs[0])
                    continue
                conv = lambda x: _Ref(self._key_of[id(x)]) if isinstance(x, keras.KerasTensor) else x
                args, kwargs = node.arguments.convert(conv)
                out_keys = tuple(self._new_key(t) for t in node.outputs)
                self.nodes.append(
                    FlatNode(op, op.name, scope, args, dict(kwargs), arg_keys, out_keys)
                )
        return [self._key_of[id(t)] for t in fn.outputs]

    def _name_nodes(self):
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.layer.name] = counts.get(n.layer.name, 0) + 1
        seen: dict[str, int] = {}
        for n in self.nodes:
            base = n.layer.name if counts[n.layer.name] == 1 else n.qualified_name
            k = seen.get(base, 0)
            seen[base] = k + 1
            n.name = base if k == 0 else f"{base}@{k}"
        self._by_name = {n.name: n for n in self.nodes}
        for n in self.nodes:  # qualified names always work too
            self._by_name.setdefault(n.qualified_name, n)

    def _strip_softmax(self):
        node = self._producer.get(self.output_key)
        if node is None:
            return
        layer = node.layer
        act = activation_name(getattr(layer, "activation", None))
        if isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation) and act == "softmax"
        ):
            self.overrides[node.name] = lambda x, *a, **k: x
            self.stripped = f"{node.name} ({type(layer).__name__})"
        elif act == "softmax":
            linear = clone_layer(layer, self.input_shapes(node)[0], activation="linear")
            self.overrides[node.name] = lambda *a, **k: linear(*a, **k)
            self.stripped = f"{node.name} (activation='softmax' of {type(layer).__name__})"

    # ------------------------------------------------------------------ queries
    @property
    def layer_names(self) -> list[str]:
        """Unique names of all layer calls, input to output."""
        return [n.name for n in self.nodes]

    @property
    def input_shape(self) -> tuple:
        return self._shapes[self.input_key]

    @property
    def output_shape(self) -> tuple:
        return self._shapes[self.output_key]

    def shape(self, key: int) -> tuple:
        return self._shapes[key]

    def input_shapes(self, node: FlatNode) -> list[tuple]:
        return [self._shapes[k] for k in node.inputs]

    def output_shapes(self, node: FlatNode) -> list[tuple]:
        return [self._shapes[k] for k in node.outputs]

    def producer(self, key: int) -> FlatNode | None:
        """The node that writes tensor ``key`` (None for the input)."""
        return self._producer.get(key)

    def consumers(self, key: int) -> list[FlatNode]:
        return [n for n in self.nodes if key in n.inputs]

    def has(self, name: str) -> bool:
        return name in self._by_name or name in self._container_out

    def node(self, name: str) -> FlatNode:
        """The layer call named ``name`` (plain or ``outer/inner`` qualified)."""
        if name in self._by_name:
            return self._by_name[name]
        raise TargetError(self._unknown(name))

    def key(self, name: str | int) -> int:
        """Tensor key of a layer's (first) output; ``OUTPUT`` gives the model output."""
        if isinstance(name, (int, np.integer)):
            return int(name)
        if name == OUTPUT:
            return self.output_key
        if name in self._by_name:
            return self._by_name[name].outputs[0]
        if name in self._container_out:
            return self._container_out[name]
        raise TargetError(self._unknown(name))

    def _unknown(self, name: str) -> str:
        import difflib

        close = difflib.get_close_matches(str(name), self.layer_names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return (
            f"model {self.model.name!r} has no layer named {name!r}{hint} "
            f"({len(self.nodes)} layers; see FlatGraph.layer_names)"
        )

    # ------------------------------------------------------------------ running
    def plan(self, keys: Iterable[int], stop_at: Iterable[int] = ()) -> list[FlatNode]:
        """The nodes needed to compute tensors ``keys``, in execution order."""
        keys, stop = tuple(keys), tuple(stop_at)
        cache_key = (keys, stop)
        if cache_key not in self._plans:
            need, stack = set(), list(keys)
            while stack:
                k = stack.pop()
                node = self._producer.get(k)
                if node is None or id(node) in need or k in stop:
                    continue
                need.add(id(node))
                stack.extend(node.inputs)
            self._plans[cache_key] = [n for n in self.nodes if id(n) in need]
        return self._plans[cache_key]

    def call_node(self, node: FlatNode, values: Mapping[int, Any], override: Callable | None = None):
        """Call one node on the tensors in ``values``; returns its output tensor(s)."""
        args = keras.tree.map_structure(
            lambda a: values[a.key] if isinstance(a, _Ref) else a, node.args
        )
        kwargs = keras.tree.map_structure(
            lambda a: values[a.key] if isinstance(a, _Ref) else a, node.kwargs
        )
        fn = override if override is not None else self.overrides.get(node.name)
        if fn is not None:
            out = fn(*args, **kwargs)
            return to_float32(out) if node.name in self.float32_nodes else out
        return self.call_layer(node, *args, **kwargs)

    def call_layer(self, node: FlatNode, *args, **kwargs):
        """Call ``node``'s own layer as the graph does: inference mode (``training=False``),
        and a mixed-precision layer in float32 (its ``call`` on float32 tensors and
        weights).  Overrides that wrap the original layer call it through this."""
        if getattr(node.layer, "_call_has_training_arg", False):
            kwargs["training"] = False
        if node.name in self.float32_nodes:
            return to_float32(node.layer.call(*to_float32(args), **to_float32(kwargs)))
        return node.layer(*args, **kwargs)

    def run(
        self,
        x,
        outputs: Sequence[str | int] = (OUTPUT,),
        overrides: Mapping[str, Callable] | None = None,
        record: bool = False,
    ):
        """Run the graph on a batch.

        Parameters
        ----------
        x : tensor, shape (N, H, W, C)
        outputs : sequence of str or int
            Layer names (their first output), tensor keys, or ``OUTPUT``.
        overrides : mapping, optional
            Layer name -> callable used instead of the layer (called with the same
            arguments).  Added to the graph's own overrides (the softmax strip).
        record : bool
            Also return the dict of every computed tensor, by key.

        Returns
        -------
        list of tensors (one per requested output), and the dict if ``record``.
        """
        keys = [self.key(o) for o in outputs]
        merged = dict(self.overrides)
        if overrides:
            merged.update(overrides)
        values: dict[int, Any] = {self.input_key: x}
        for node in self.plan(keys):
            out = self.call_node(node, values, merged.get(node.name))
            outs = keras.tree.flatten(out)
            for k, v in zip(node.outputs, outs):
                values[k] = v
        result = [values[k] for k in keys]
        return (result, values) if record else result


def to_logits(model: keras.Model) -> keras.Model:
    """A new functional model (cloned layers, copied weights) returning pre-softmax logits.

    Nested models are flattened.  The user's model is not modified.
    """
    graph = FlatGraph(model, strip_softmax=True)
    if graph.opaque:
        raise UnsupportedLayerError(
            f"model {model.name!r} is subclassed; cannot rebuild it without its softmax"
        )
    inp = keras.Input(batch_shape=graph.input_shape, dtype=graph.input_dtype)
    cloned: dict[int, Any] = {}
    overrides = {}
    for node in graph.nodes:
        if node.name in graph.overrides:
            continue
        layer = node.layer
        if isinstance(layer, keras.layers.Layer):
            key = id(layer)
            if key not in cloned:
                new = type(layer).from_config(layer.get_config())
                new.build(graph.input_shapes(node)[0] if len(node.inputs) == 1 else graph.input_shapes(node))
                new.set_weights([np.array(w) for w in layer.get_weights()])
                cloned[key] = new
            overrides[node.name] = cloned[key]
    out = graph.run(inp, overrides=overrides)[0]
    return keras.Model(inp, out, name=f"{model.name}_logits")


__all__ = ["OUTPUT", "FlatGraph", "FlatNode", "is_subclassed", "to_logits"]
