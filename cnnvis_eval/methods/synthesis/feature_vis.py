"""Feature visualization with a decorrelated Fourier parameterization and transformation
robustness (Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017; Lucid's
``render_vis`` with ``param.image(fft=True, decorrelate=True)`` and
``transform.standard_transforms``).

The image is ``rgb = sigmoid(C_n irfft2d(S * scale) / 4)`` in RGB [0, 1] (:mod:`.fourier`),
transformed by seeded random transforms before every forward pass (:mod:`.transforms`), and
mapped to the model's input range per channel (``ModelSpec.input_range``; the channel order
of the spec's ``preprocess`` is detected, so a BGR model gets its colours right).  Adam (Lucid:
rate 0.05, 512 steps) maximizes the raw target value (a class logit, or a channel reduced over
its map).  No other prior: the parameterization is the prior.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from ... import params as P
from ...cache import default_cache
from ...errors import TargetError
from ...models.spec import ModelSpec, as_spec, identity as _identity
from ...targets import ClassTarget, NeuronTarget, bind
from .fourier import color_matrix, fft_image_tf, logits_of_rgb, spectrum_of, spectrum_scale, to_valid_rgb_tf
from .optimize import adam_update, display_image, image_shape, init_image
from .priors import DisplaySpace
from .transforms import apply_all, resolve_transforms, sample_params

PARAMETERIZATIONS = ("fourier", "pixel")


@dataclass
class FeatureVisualizationResult:
    """What :func:`feature_visualization` returns.

    Attributes
    ----------
    image : ndarray, shape (H, W, C)
        The visualization in model-input space.
    rgb : ndarray, shape (H, W, C)
        The same in RGB order (when the spec's channel order is known), values in (0, 1).
    activation_history : ndarray, shape (steps,)
        Target value per step, on the transformed image the step optimized.
    activation : float
        Target value of the final (untransformed) image.
    start_activation : float
    target : ClassTarget or NeuronTarget
    params : dict
    seconds : float
    """

    image: np.ndarray
    rgb: np.ndarray
    activation_history: np.ndarray
    activation: float
    start_activation: float
    target: Any
    params: dict
    seconds: float
    spec: ModelSpec | None = field(default=None, repr=False)

    @property
    def display(self) -> np.ndarray:
        """(H, W, 3) uint8 via the model's deprocess."""
        return display_image(self.spec, self.image)


class InputMap:
    """RGB [0, 1] -> model input: ``x_c = low_c + rgb[perm_c] * (high_c - low_c)``.

    ``perm`` is the colour each model channel carries, read off the spec's ``preprocess``
    (pure red, green, blue through it); the identity when that is not a channel permutation.
    """

    def __init__(self, spec: ModelSpec, channels: int, dtype, input_range=None):
        space = DisplaySpace(spec, channels, dtype, input_range)
        self.low, self.span, self.source = space.low, space.high - space.low, space.source
        self.perm = np.arange(channels)
        if channels == 3 and spec.preprocess is not _identity:
            try:
                probe = 255.0 * np.eye(3)[:, None, None, :]
                d = np.asarray(spec.preprocess(probe), np.float64) - np.asarray(
                    spec.preprocess(np.zeros((1, 1, 1, 3))), np.float64)
                d = d.reshape(3, 3)  # d[colour, model channel]
                perm = np.argmax(np.abs(d), axis=0)
                off = np.abs(d).sum() - np.abs(d[perm, np.arange(3)]).sum()
                if sorted(perm) == [0, 1, 2] and off < 1e-6 * np.abs(d).sum():
                    self.perm = perm
            except Exception:  # a preprocess that cannot take the probe: keep the identity
                pass

    def to_x(self, rgb):
        rgb = np.asarray(rgb, np.float64)
        return self.low + rgb[..., self.perm] * self.span

    def to_rgb(self, x):
        inv = np.argsort(self.perm)
        return ((np.asarray(x, np.float64) - self.low) / self.span)[..., inv]


def _build(spec: ModelSpec, key: int, bound, parameterization: str, decorrelate: bool,
           transforms, dtype, h: int, w: int, channels: int):
    graph = spec.graph
    dt = tf.as_dtype(dtype)
    if parameterization == "fourier":
        pspec = tf.TensorSpec((2, 1, channels, h, w // 2 + 1), dt)
    else:
        pspec = tf.TensorSpec((1, h, w, channels), dt)
    n_t = sum(t.n_params for t in transforms)

    def rgb_of(p, scale, cmat):
        t = fft_image_tf(p, scale, h, w) if parameterization == "fourier" else p
        return to_valid_rgb_tf(t, cmat, decorrelate)

    def value_of(rgb, aux, low, span, perm):
        x = low + tf.gather(rgb, perm, axis=-1) * span
        f, _ = bound.select(graph.run(x, [key])[0], aux)
        return f

    consts = [tf.TensorSpec((h, w // 2 + 1), dt), tf.TensorSpec((channels, channels), dt),
              tf.TensorSpec((None,), tf.int32), tf.TensorSpec((channels,), dt),
              tf.TensorSpec((channels,), dt), tf.TensorSpec((channels,), tf.int32)]

    @tf.function(autograph=False, input_signature=[pspec, pspec, pspec, tf.TensorSpec((), dt), tf.TensorSpec((), dt),
                                  tf.TensorSpec((n_t,), dt)] + consts)
    def step(p, m, v, t, lr, tparams, scale, cmat, aux, low, span, perm):
        with tf.GradientTape() as tape:
            tape.watch(p)
            rgb = apply_all(transforms, rgb_of(p, scale, cmat), tparams)
            f = value_of(rgb, aux, low, span, perm)
            objective = tf.reduce_sum(f)
        g = tape.gradient(objective, p, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        delta, m, v = adam_update(g, m, v, t, lr)
        return p + delta, m, v, f  # gradient ascent

    @tf.function(autograph=False, input_signature=[pspec] + consts)
    def evaluate(p, scale, cmat, aux, low, span, perm):
        rgb = rgb_of(p, scale, cmat)
        return rgb, value_of(rgb, aux, low, span, perm)

    return step, evaluate


def feature_visualization(
    model,
    target,
    steps: int = 512,
    lr: float = 0.05,
    parameterization: str = "fourier",
    decorrelate: bool = True,
    transforms="standard",
    decay_power: float = 1.0,
    sd: float = 0.01,
    seed: int = 0,
    init=None,
    input_range=None,
) -> FeatureVisualizationResult:
    """Visualize a class logit or a channel (Olah et al., Distill 2017; Lucid's defaults).

    Parameters
    ----------
    model : ModelSpec or keras.Model
    target : ClassTarget, NeuronTarget or int
        A concrete class (pre-softmax logit) or channel (reduced over its map with the
        target's ``reduce``; Lucid's ``channel`` objective is the mean); not ``"top"``.
    steps : int
        Adam steps, one compiled forward+backward each (Lucid: 512).
    lr : float
        Adam's rate on the parameters (Lucid: 0.05).
    parameterization : {"fourier", "pixel"}
        The scaled spectrum of :mod:`.fourier`, or Lucid's ``pixel_image`` (the pre-sigmoid
        image itself).
    decorrelate : bool
        Mix the colours with Lucid's decorrelation matrix (3-channel models only).
    transforms : "standard", "none" or list of Transform
        Random transforms before each forward pass (:mod:`.transforms`); a centred crop or
        pad to the model's input size is always appended.
    decay_power : float
        The spectrum's decay exponent (Lucid: 1).
    sd : float
        Standard deviation of the seeded starting parameters (Lucid: 0.01).
    seed : int
        Seeds the start and the transforms; identical seeds give identical images.
    init : array (H, W, C) or (1, H, W, C), optional
        Start from this model-input image (mapped exactly into the parameterization,
        its colours clipped to (1e-4, 1 - 1e-4) of the input range).
    input_range : (low, high), optional
        Overrides the spec's input range (plain Keras models otherwise assume [0, 1]).

    Returns
    -------
    FeatureVisualizationResult
        ``image`` (H, W, C) in model-input space, ``activation`` of it,
        ``activation_history`` (steps,).

    Raises
    ------
    TargetError
        Unknown layer, index out of range, or ``"top"``.
    InputError
        Bad parameters.
    """
    spec = as_spec(model)
    graph = spec.graph
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        target = ClassTarget(int(target))
    if not isinstance(target, (ClassTarget, NeuronTarget)):
        raise TargetError(f"target must be a ClassTarget, a NeuronTarget or a class index, got {target!r}")
    if isinstance(target.index, str) or np.ndim(target.index) != 0:
        what = "class" if isinstance(target, ClassTarget) else f"channel of layer {target.layer!r}"
        raise TargetError(f"feature visualization needs a concrete {what} index (an int), got "
                          f"{target.index!r}: 'top' picks the most active unit of an image, and there is no image here")
    bound = bind(target, graph, 1)
    steps = P.integer(steps, "steps", 1)
    lr = P.number(lr, "lr", strict=True)
    parameterization = P.choice(parameterization, "parameterization", PARAMETERIZATIONS)
    decay_power = P.number(decay_power, "decay_power")
    sd = P.number(sd, "sd")
    seed = P.integer(seed, "seed", 0)
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    shape = image_shape(graph, init, "feature_visualization")
    if init is not None:
        x_init = init_image(graph, init, shape, dtype, "feature_visualization")
        shape = x_init.shape[1:]
    h, w, channels = shape
    decorrelate = bool(decorrelate) and channels == 3
    chain = resolve_transforms(transforms, h, w)
    imap = InputMap(spec, channels, dtype, input_range)
    rng = np.random.default_rng(seed)
    if init is None:
        pshape = (2, 1, channels, h, w // 2 + 1) if parameterization == "fourier" else (1, h, w, channels)
        p0 = rng.normal(0.0, sd, pshape) if sd > 0 else np.zeros(pshape)
    else:
        t0_img = logits_of_rgb(imap.to_rgb(x_init), decorrelate)
        p0 = spectrum_of(t0_img, decay_power) if parameterization == "fourier" else t0_img
    tparams = sample_params(chain, rng, steps).astype(dtype)

    t0 = time.perf_counter()
    ckey = ("synthesis", "feature_vis", bound.key, bound.reduce, parameterization, decorrelate,
            repr(chain), np.dtype(dtype).name, h, w)
    step, evaluate = default_cache.function(
        spec, ckey, lambda: _build(spec, bound.key, bound, parameterization, decorrelate, chain,
                                   dtype, h, w, channels))
    tdt = tf.as_dtype(dtype)
    consts = [tf.constant(spectrum_scale(h, w, decay_power), tdt),
              tf.constant(color_matrix() if decorrelate else np.eye(channels), tdt),
              tf.constant(bound.indices.astype(np.int32)), tf.constant(imap.low, tdt),
              tf.constant(imap.span, tdt), tf.constant(imap.perm.astype(np.int32))]
    p = tf.constant(p0, tdt)
    _, start_f = evaluate(p, *consts)
    m, v = tf.zeros_like(p), tf.zeros_like(p)
    lr_t = tf.constant(lr, tdt)
    values = []
    for i in range(steps):
        p, m, v, f = step(p, m, v, tf.constant(i + 1, tdt), lr_t, tf.constant(tparams[i]), *consts)
        values.append(f)
    rgb, final_f = evaluate(p, *consts)
    seconds = time.perf_counter() - t0
    rgb = rgb.numpy()[0].astype(np.float64)
    params = {
        "steps": steps, "lr": lr, "parameterization": parameterization, "decorrelate": decorrelate,
        "transforms": [repr(t) for t in chain], "decay_power": decay_power, "sd": sd, "seed": seed,
        "init": "noise" if init is None else "given", "channel_order": imap.perm.tolist(),
        "input_range": (imap.low.tolist(), (imap.low + imap.span).tolist()),
        "input_range_source": imap.source,
    }
    return FeatureVisualizationResult(
        image=imap.to_x(rgb).astype(np.float32),
        rgb=rgb.astype(np.float32),
        activation_history=np.array([float(f.numpy()[0]) for f in values]),
        activation=float(final_f.numpy()[0]),
        start_activation=float(start_f.numpy()[0]),
        target=target,
        params=params,
        seconds=seconds,
        spec=spec,
    )


__all__ = ["FeatureVisualizationResult", "InputMap", "PARAMETERIZATIONS", "feature_visualization"]
