"""Image synthesis: activation maximization and network inversion.

Both find an image by gradient-based optimization under the two natural-image regularizers
of Mahendran & Vedaldi ("Understanding deep image representations by inverting them",
CVPR 2015; "Visualizing deep convolutional neural networks using natural pre-images",
IJCV 2016):

* a bounded-range prior, the alpha-norm ``N_alpha(x) = mean_ij (||x_ij|| / B) ** alpha``,
* a bounded-variation prior, the total variation with exponent beta,
  ``N_TV(x) = mean_ij ((||x_i,j+1 - x_ij||^2 + ||x_i+1,j - x_ij||^2) / V^2) ** (beta / 2)``,

where ``||x_ij||`` is the Euclidean norm of pixel (i, j) over the colour channels.

Normalization (Mahendran & Vedaldi, IJCV 2016, Sec. 3.3)
---------------------------------------------------------
The regularizers act on the image in *centred display units*: ``u = (x - c) * 255 / (high
- low)`` per channel, where ``(low, high)`` is the model's preprocessed input range
(``ModelSpec.input_range``) and ``c`` its midpoint.  For every zoo model this is the RGB
image in [0, 255] minus mid-grey (127.5), whatever the preprocessing (caffe BGR mean
subtraction or [-1, 1] scaling), so the same weights mean the same thing for every
architecture.  ``B = 80`` is the typical norm of a mean-subtracted RGB pixel in [0, 255]
units and ``V = B / 6.5`` the typical norm of a pixel difference of natural images (the
paper's constants; for C channels B is scaled by sqrt(C / 3)), so both regularizers are
about 1 on natural images and the weights ``lambda_alpha``, ``lambda_tv`` are scale free.
The paper's exponents are the defaults: ``alpha = 6``, ``beta = 2``.  The means run over
the H*W pixels (N_alpha) and the (H-1)*(W-1) pixels with both neighbours (N_TV).

Data terms: inversion uses the paper's normalized loss ``||phi(x') - phi(x)||^2 /
||phi(x)||^2``; activation maximization maximizes ``f(x') / s``, the target value divided
by ``s``, the root-mean-square over all units of the target's layer (all logits, or all
channels of the layer reduced over the map like the target) on the starting image -- a
scale that makes the weights independent of the model's activation magnitudes.

Defaults (``alpha = 6``, ``beta = 2``, B and V are the paper's; the weights are ours,
chosen on small CNNs so that activation maximization gives smooth images with a high
activation and inversion reaches a relative feature error below 0.1):

* activation maximization: ``lambda_alpha = 1e-2``, ``lambda_tv = 0.05``, 256 Adam steps,
  ``lr = 4`` decaying exponentially to ``0.4``;
* inversion: ``lambda_alpha = 1e-5``, ``lambda_tv = 5e-4`` (the data term is a relative
  squared error, ~0.01 at a 10 % feature error, so its priors must be weaker), 300 Adam
  steps, ``lr = 16`` decaying to ``1.6``.

Learning rates are in display units per step (out of 255).  Both clip the image to the
model's input range after every step and start from seeded noise around mid-grey
(``init`` overrides the start).  Optional jitter rolls the image by a random offset of up to ``jitter`` pixels
before each forward pass (Mahendran & Vedaldi; Mordvintsev et al.).

All gradients are taken inside one compiled step function (``tf.function``), called once
per step; the user's model is only read.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import InputError, TargetError
from ..models.spec import ModelSpec, as_spec
from ..targets import ClassTarget, NeuronTarget, bind
from .base import check_input

#: Typical norm of a mean-subtracted RGB pixel in [0, 255] units (Mahendran & Vedaldi).
B_RANGE = 80.0
#: Typical norm of the difference of neighbouring pixels, B / 6.5 (Mahendran & Vedaldi).
V_RANGE = B_RANGE / 6.5

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8


# ---------------------------------------------------------------------- results
@dataclass
class ActivationMaximizationResult:
    """What :func:`activation_maximization` returns.

    Attributes
    ----------
    image : ndarray, shape (H, W, C)
        The synthesized image in model-input space (preprocessed).
    history : ndarray, shape (steps,)
        Regularized objective per step (maximized): ``f / s - lambda_alpha * N_alpha -
        lambda_tv * N_TV``.
    activation_history : ndarray, shape (steps,)
        Target value ``f`` per step (on the jittered image when jitter is on).
    activation : float
        Target value of the final image.
    start_activation : float
        Target value of the starting image.
    start_image : ndarray, shape (H, W, C)
    target : ClassTarget or NeuronTarget
    regularizers : dict
        Final ``"alpha_norm"`` (N_alpha) and ``"tv"`` (N_TV) of the image.
    params : dict
        The parameters used, with ``"activation_scale"`` (s).
    seconds : float
    """

    image: np.ndarray
    history: np.ndarray
    activation_history: np.ndarray
    activation: float
    start_activation: float
    start_image: np.ndarray
    target: Any
    regularizers: dict
    params: dict
    seconds: float
    spec: ModelSpec | None = field(default=None, repr=False)

    @property
    def display(self) -> np.ndarray:
        """The image for display: (H, W, 3) uint8 via the model's deprocess."""
        return _display(self.spec, self.image)


@dataclass
class NetworkInversionResult:
    """What :func:`network_inversion` returns.

    Attributes
    ----------
    reconstruction : ndarray, shape (H, W, C) or (N, H, W, C) (as ``x`` was given)
        Images in model-input space whose features at ``layer`` match those of ``x``.
    history : ndarray, shape (steps,) or (steps, N)
        Regularized loss per step (minimized).
    feature_error : float or ndarray (N,)
        Relative feature error ``||phi(x') - phi(x)|| / ||phi(x)||`` of the result.
    feature_error_history : ndarray, shape (steps,) or (steps, N)
    start_feature_error : float or ndarray (N,)
    layer : str
    regularizers : dict
        Final ``"alpha_norm"`` and ``"tv"`` (per image).
    params : dict
    seconds : float
    """

    reconstruction: np.ndarray
    history: np.ndarray
    feature_error: Any
    feature_error_history: np.ndarray
    start_feature_error: Any
    layer: str
    regularizers: dict
    params: dict
    seconds: float
    spec: ModelSpec | None = field(default=None, repr=False)

    @property
    def display(self) -> np.ndarray:
        """The reconstruction(s) for display, uint8 via the model's deprocess."""
        return _display(self.spec, self.reconstruction)


def _display(spec, image) -> np.ndarray:
    arr = np.asarray(image)
    batch = arr if arr.ndim == 4 else arr[None]
    out = np.asarray(spec.deprocess(batch), np.float64)
    if spec.input_range is None and spec.deprocess is _identity_fn():
        flat = out.reshape(len(out), -1)
        lo, hi = flat.min(1), flat.max(1)
        out = (out - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None] * 255
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out if arr.ndim == 4 else out[0]


def _identity_fn():
    from ..models.spec import identity as _identity

    return _identity


# ---------------------------------------------------------------------- regularizers
def regularizers(model, images, alpha: float = 6.0, tv_beta: float = 2.0, input_range=None) -> dict:
    """N_alpha and N_TV of images in model-input space, as the optimizations measure them.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Supplies the input range that defines the centred display units.
    images : array, shape (N, H, W, C) or (H, W, C)

    Returns
    -------
    dict with ``"alpha_norm"`` and ``"tv"``, each (N,) float64 (or floats for one image).
    """
    spec = as_spec(model)
    arr = np.asarray(images, np.float64)
    single = arr.ndim == 3
    arr = arr[None] if single else arr
    space = _Space(spec, arr.shape[-1], np.float64, input_range)
    u = tf.constant(space.to_u(arr))
    a = _alpha_norm(u, tf.constant(float(alpha), tf.float64), space.bound).numpy()
    t = _total_variation(u, tf.constant(float(tv_beta), tf.float64), space.vbound).numpy()
    return {"alpha_norm": float(a[0]), "tv": float(t[0])} if single else {"alpha_norm": a, "tv": t}


def _alpha_norm(u, alpha, bound):
    """Bounded-range prior per image: ``mean_ij (||u_ij|| / bound) ** alpha``; u (N, H, W, C)
    in centred display units -> (N,)."""
    sq = tf.reduce_sum(tf.square(u / bound), axis=-1)
    eps = tf.where(alpha >= 2, tf.zeros_like(alpha), tf.constant(1e-8, u.dtype))
    return tf.reduce_mean(tf.pow(sq + eps, alpha / 2), axis=[1, 2])


def _total_variation(u, beta, scale):
    """Bounded-variation prior per image: ``mean_ij ((||u_i,j+1 - u_ij||^2 +
    ||u_i+1,j - u_ij||^2) / scale^2) ** (beta / 2)`` over the (H-1)(W-1) pixels with a right
    and a lower neighbour; u (N, H, W, C) -> (N,)."""
    dx = u[:, :-1, 1:, :] - u[:, :-1, :-1, :]
    dy = u[:, 1:, :-1, :] - u[:, :-1, :-1, :]
    sq = tf.reduce_sum(tf.square(dx) + tf.square(dy), axis=-1) / (scale * scale)
    eps = tf.where(beta >= 2, tf.zeros_like(beta), tf.constant(1e-8, u.dtype))
    return tf.reduce_mean(tf.pow(sq + eps, beta / 2), axis=[1, 2])


# ---------------------------------------------------------------------- machinery
_STEP_CACHE: "weakref.WeakKeyDictionary[ModelSpec, dict]" = weakref.WeakKeyDictionary()


def _number(value, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise InputError(f"{name} must be {op} {minimum}, got {value!r}")
    return v


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _Space:
    """Map between model inputs x and centred display units u = (x - c) * k."""

    def __init__(self, spec: ModelSpec, channels: int, dtype, input_range=None, fallback=None):
        rng = input_range if input_range is not None else spec.input_range
        source = "input_range" if input_range is not None else "spec.input_range"
        if rng is None and fallback is not None:
            rng, source = fallback, "image range"
        if rng is None:
            rng, source = (np.zeros(channels), np.ones(channels)), "assumed [0, 1]"
        lo = np.broadcast_to(np.asarray(rng[0], np.float64), (channels,))
        hi = np.broadcast_to(np.asarray(rng[1], np.float64), (channels,))
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
            raise InputError(f"input range must have low < high per channel, got {rng!r}")
        self.low, self.high, self.source = lo, hi, source
        self.center = ((lo + hi) / 2).astype(dtype)
        self.k = (255.0 / (hi - lo)).astype(dtype)
        self.u_max = 127.5
        self.bound = B_RANGE * np.sqrt(channels / 3.0)
        self.vbound = V_RANGE * np.sqrt(channels / 3.0)

    def to_u(self, x):
        return (np.asarray(x, np.float64) - self.center) * self.k

    def to_x(self, u):
        return np.asarray(u) / self.k + self.center


def _step_fn(spec: ModelSpec, kind: str, key: int, bound_target, optimizer: str, dtype, aux_shape):
    """The compiled optimization step for (kind, layer, optimizer), cached per model.

    ``step(u, m, v, t, shift, hp, aux)`` with hp = [lr, lambda_alpha, lambda_tv, alpha,
    beta, scale, B, V, clip] and ``aux`` the target index (AM) or the target features
    (inversion).  Returns updated (u, m, v) and per-image (objective, value, N_alpha, N_TV)
    measured before the update.
    """
    cache = _STEP_CACHE.setdefault(spec, {})
    ckey = (kind, key, getattr(bound_target, "reduce", None), optimizer, np.dtype(dtype).name)
    if ckey in cache:
        return cache[ckey]
    graph = spec.graph
    dt = tf.as_dtype(dtype)
    img = tf.TensorSpec((None,) + tuple(graph.input_shape[1:]), dt)
    aux_spec = tf.TensorSpec((None,), tf.int32) if kind == "am" else tf.TensorSpec(aux_shape, dt)

    def terms(u, shift, hp, aux, center, k):
        x = center + u / k
        x = tf.roll(x, shift, axis=[1, 2])
        value = graph.run(x, [key])[0]
        if kind == "am":
            f, _ = bound_target.select(value, aux)
            data = -f / hp[5]
            report = f
        else:
            diff = tf.reshape(value - aux, (tf.shape(value)[0], -1))
            ref = tf.reshape(aux, (tf.shape(aux)[0], -1))
            ref_sq = tf.maximum(tf.reduce_sum(tf.square(ref), axis=1), tf.constant(1e-30, dt))
            data = tf.reduce_sum(tf.square(diff), axis=1) / ref_sq
            report = tf.sqrt(data)
        ra = _alpha_norm(u, hp[3], hp[6])
        rt = _total_variation(u, hp[4], hp[7])
        return data + hp[1] * ra + hp[2] * rt, data, report, ra, rt

    @tf.function(input_signature=[
        img, img, img, tf.TensorSpec((), dt), tf.TensorSpec((), dt), tf.TensorSpec((2,), tf.int32),
        tf.TensorSpec((9,), dt), aux_spec, tf.TensorSpec((None,), dt), tf.TensorSpec((None,), dt),
    ])
    def step(u, m, v, t, lr, shift, hp, aux, center, k):
        with tf.GradientTape() as tape:
            tape.watch(u)
            loss, data, report, ra, rt = terms(u, shift, hp, aux, center, k)
            total = tf.reduce_sum(loss)
        g = tape.gradient(total, u, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if optimizer == "adam":
            m = _ADAM_B1 * m + (1 - _ADAM_B1) * g
            v = _ADAM_B2 * v + (1 - _ADAM_B2) * tf.square(g)
            mhat = m / (1 - tf.pow(tf.constant(_ADAM_B1, dt), t))
            vhat = v / (1 - tf.pow(tf.constant(_ADAM_B2, dt), t))
            new_u = u - lr * mhat / (tf.sqrt(vhat) + _ADAM_EPS)
        else:  # plain gradient step normalized by the mean |gradient| of each image
            norm = tf.reduce_mean(tf.abs(g), axis=[1, 2, 3], keepdims=True)
            new_u = u - lr * g / (norm + tf.constant(1e-12, dt))
        new_u = tf.cond(hp[8] > 0, lambda: tf.clip_by_value(new_u, -127.5, 127.5), lambda: new_u)
        return new_u, m, v, loss, report, ra, rt

    @tf.function(input_signature=[img, tf.TensorSpec((9,), dt), aux_spec,
                                  tf.TensorSpec((None,), dt), tf.TensorSpec((None,), dt)])
    def evaluate(u, hp, aux, center, k):
        loss, data, report, ra, rt = terms(u, tf.zeros((2,), tf.int32), hp, aux, center, k)
        return loss, report, ra, rt

    cache[ckey] = (step, evaluate)
    return cache[ckey]


def _features_fn(spec: ModelSpec, key: int, dtype):
    cache = _STEP_CACHE.setdefault(spec, {})
    ckey = ("features", key, np.dtype(dtype).name)
    if ckey not in cache:
        graph = spec.graph

        @tf.function(input_signature=[tf.TensorSpec((None,) + tuple(graph.input_shape[1:]),
                                                    tf.as_dtype(dtype))])
        def features(x):
            return graph.run(x, [key])[0]

        cache[ckey] = features
    return cache[ckey]


def _image_shape(graph, init, what: str) -> tuple:
    shape = tuple(graph.input_shape[1:])
    if init is None and any(s is None for s in shape):
        raise InputError(
            f"model {graph.model.name!r} has a variable input size {shape}; pass init= "
            f"(an image of the wanted size) to {what}"
        )
    return shape


def _init_image(graph, init, shape, dtype, what: str) -> np.ndarray:
    arr = check_input(np.asarray(init)[None] if np.ndim(init) == len(shape) else init, graph, dtype)
    if len(arr) != 1:
        raise InputError(f"init must be one image of shape {shape}, got shape {np.shape(init)}")
    return arr


def _hp(dtype, lr, lambda_alpha, lambda_tv, alpha, beta, scale, space, clip):
    return np.array([lr, lambda_alpha, lambda_tv, alpha, beta, scale, space.bound,
                     space.vbound, 1.0 if clip else 0.0], dtype)


def _run_loop(step, u, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end):
    m = np.zeros_like(u)
    v = np.zeros_like(u)
    u_t, m_t, v_t = tf.constant(u), tf.constant(m), tf.constant(v)
    center, k = space.center.astype(dtype), space.k.astype(dtype)
    if jitter > 0:
        shifts = rng.integers(-jitter, jitter + 1, size=(steps, 2)).astype(np.int32)
    else:
        shifts = np.zeros((steps, 2), np.int32)
    # exponential decay from lr to lr * lr_end over the steps
    rates = lr * np.power(lr_end, np.arange(steps) / max(1, steps - 1))
    tdt = tf.as_dtype(dtype)
    rates = [tf.constant(r, tdt) for r in rates]
    counts = [tf.constant(i + 1, tdt) for i in range(steps)]
    shifts = [tf.constant(sh) for sh in shifts]
    hp, aux = tf.constant(hp), tf.constant(aux)
    center, k = tf.constant(center), tf.constant(k)
    objective, values = [], []
    for i in range(steps):
        u_t, m_t, v_t, loss, report, _, _ = step(
            u_t, m_t, v_t, counts[i], rates[i], shifts[i], hp, aux, center, k
        )
        objective.append(loss)
        values.append(report)
    objective = np.stack([o.numpy() for o in objective])
    values = np.stack([r.numpy() for r in values])
    return u_t.numpy(), objective, values


# ---------------------------------------------------------------------- public API
def activation_maximization(
    model,
    target,
    steps: int = 256,
    lr: float = 4.0,
    alpha: float = 6.0,
    tv_beta: float = 2.0,
    lambda_alpha: float = 1e-2,
    lambda_tv: float = 0.05,
    jitter: int = 0,
    seed: int = 0,
    init=None,
    optimizer: str = "adam",
    lr_end: float = 0.1,
    clip: bool = True,
    init_scale: float = 10.0,
    activation_scale: float | None = None,
    input_range=None,
) -> ActivationMaximizationResult:
    """Synthesize an image that maximizes a class logit or a channel (Erhan et al. 2009;
    Simonyan et al. 2014) under Mahendran & Vedaldi's regularizers (module docstring).

    Parameters
    ----------
    model : ModelSpec or keras.Model
    target : ClassTarget, NeuronTarget or int
        A concrete class (pre-softmax logit) or channel (reduced over its map with the
        target's ``reduce``); ``"top"`` is rejected (it needs an image).
    steps : int
        Optimization steps (one compiled forward+backward each).
    lr : float
        Initial step size in display units (out of 255).
    lr_end : float
        The step size decays exponentially to ``lr * lr_end`` at the last step.
    alpha, tv_beta : float
        Exponents of the range and variation priors (paper: 6 and 2).
    lambda_alpha, lambda_tv : float
        Weights of N_alpha and N_TV (0 switches a prior off).
    jitter : int
        Roll the image by up to this many pixels (seeded) before each forward pass.
    seed : int
        Seeds the starting noise and the jitter; identical seeds give identical images.
    init : array (H, W, C) or (1, H, W, C), optional
        Starting image in model-input space instead of seeded noise.
    optimizer : {"adam", "sgd"}
        Adam, or plain gradient steps normalized by the mean absolute gradient.
    clip : bool
        Keep the image inside the model's input range after each step.
    init_scale : float
        Standard deviation of the starting noise around mid-grey, in display units.
    activation_scale : float, optional
        The scale s dividing the activation; default the RMS over all units of the
        target's layer (reduced like the target) on the starting image.
    input_range : (low, high), optional
        Overrides the spec's input range (needed for plain Keras models whose inputs are
        not in [0, 1]).

    Returns
    -------
    ActivationMaximizationResult
        ``image`` (H, W, C), ``history`` (steps,), ``activation``, ``start_activation``.

    Raises
    ------
    TargetError
        Unknown layer, index out of range, or ``"top"``.
    InputError
        Bad parameters or ``init``.
    """
    spec = as_spec(model)
    graph = spec.graph
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        target = ClassTarget(int(target))
    if not isinstance(target, (ClassTarget, NeuronTarget)):
        raise TargetError(f"target must be a ClassTarget, a NeuronTarget or a class index, got {target!r}")
    index = target.index
    if isinstance(index, str) or np.ndim(index) != 0:
        what = "class" if isinstance(target, ClassTarget) else f"channel of layer {target.layer!r}"
        raise TargetError(
            f"activation maximization needs a concrete {what} index (an int), got {index!r}: "
            "'top' picks the most active unit of an image, and there is no image here"
        )
    bound = bind(target, graph, 1)
    steps = _int(steps, "steps", 1)
    lr = _number(lr, "lr", strict=True)
    alpha = _number(alpha, "alpha", strict=True)
    tv_beta = _number(tv_beta, "tv_beta", strict=True)
    lambda_alpha = _number(lambda_alpha, "lambda_alpha")
    lambda_tv = _number(lambda_tv, "lambda_tv")
    jitter = _int(jitter, "jitter", 0)
    seed = _int(seed, "seed", 0)
    init_scale = _number(init_scale, "init_scale")
    lr_end = _number(lr_end, "lr_end", strict=True)
    if optimizer not in ("adam", "sgd"):
        raise InputError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    shape = _image_shape(graph, init, "activation_maximization")
    channels = shape[-1]
    space = _Space(spec, channels, dtype, input_range)
    rng = np.random.default_rng(seed)
    if init is None:
        u0 = rng.normal(0.0, init_scale, (1,) + shape)
    else:
        x_init = _init_image(graph, init, shape, dtype, "activation_maximization")
        u0 = space.to_u(x_init)
        shape = x_init.shape[1:]
    if clip:
        u0 = np.clip(u0, -space.u_max, space.u_max)
    u0 = u0.astype(dtype)
    aux = bound.indices.astype(np.int32)
    t0 = time.perf_counter()
    step, evaluate = _step_fn(spec, "am", bound.key, bound, optimizer, dtype, None)
    if activation_scale is None:
        full = _features_fn(spec, bound.key, dtype)(space.to_x(u0).astype(dtype)).numpy()
        if bound.reduce != "none" and full.ndim > 2:
            full = getattr(np, bound.reduce)(full, axis=tuple(range(1, full.ndim - 1)))
        scale = float(np.sqrt(np.mean(np.square(full.astype(np.float64)))))
        scale = scale if scale > 1e-12 else 1.0
    else:
        scale = _number(activation_scale, "activation_scale", strict=True)
    hp = _hp(dtype, lr, lambda_alpha, lambda_tv, alpha, tv_beta, scale, space, clip)
    center, k = space.center, space.k
    _, start_f, _, _ = evaluate(u0, hp, aux, center, k)
    u, objective, values = _run_loop(step, u0, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end)
    _, final_f, ra, rt = evaluate(u, hp, aux, center, k)
    seconds = time.perf_counter() - t0
    params = {
        "steps": steps, "lr": lr, "alpha": alpha, "tv_beta": tv_beta,
        "lambda_alpha": lambda_alpha, "lambda_tv": lambda_tv, "jitter": jitter, "seed": seed,
        "optimizer": optimizer, "lr_end": lr_end, "clip": clip, "init": "noise" if init is None else "given",
        "init_scale": init_scale, "activation_scale": scale, "B": space.bound, "V": space.vbound,
        "input_range": (space.low.tolist(), space.high.tolist()), "input_range_source": space.source,
    }
    return ActivationMaximizationResult(
        image=space.to_x(u)[0].astype(np.float32),
        history=-objective[:, 0],
        activation_history=values[:, 0].astype(np.float64),
        activation=float(final_f.numpy()[0]),
        start_activation=float(start_f.numpy()[0]),
        start_image=space.to_x(u0)[0].astype(np.float32),
        target=target,
        regularizers={"alpha_norm": float(ra.numpy()[0]), "tv": float(rt.numpy()[0])},
        params=params,
        seconds=seconds,
        spec=spec,
    )


def network_inversion(
    model,
    x,
    layer: str,
    steps: int = 300,
    lr: float = 16.0,
    alpha: float = 6.0,
    tv_beta: float = 2.0,
    lambda_alpha: float = 1e-5,
    lambda_tv: float = 5e-4,
    jitter: int = 0,
    seed: int = 0,
    init=None,
    optimizer: str = "adam",
    lr_end: float = 0.1,
    clip: bool = True,
    init_scale: float = 10.0,
    input_range=None,
) -> NetworkInversionResult:
    """Reconstruct an image from its features at ``layer`` (Mahendran & Vedaldi 2015).

    Minimizes ``||phi(x') - phi(x)||^2 / ||phi(x)||^2 + lambda_alpha * N_alpha(x') +
    lambda_tv * N_TV(x')`` over x' (module docstring), from seeded noise.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    x : array, shape (H, W, C) or (N, H, W, C)
        Preprocessed image(s) whose features are inverted (not modified).  A batch is
        inverted image by image in one optimization (the losses are independent).
    layer : str
        Layer name (``"outer/inner"`` for nested models).
    steps, lr, alpha, tv_beta, lambda_alpha, lambda_tv, jitter, seed, optimizer, lr_end,
    clip, init_scale, input_range
        As in :func:`activation_maximization`.  Models without an input range use the
        per-channel range of ``x``.
    init : array like x, optional
        Starting image(s) instead of seeded noise.

    Returns
    -------
    NetworkInversionResult
        ``reconstruction`` shaped like ``x``; ``feature_error`` the final relative feature
        error (float, or (N,) for a batch).

    Raises
    ------
    TargetError
        Unknown layer.
    InputError
        Bad image or parameters.
    """
    spec = as_spec(model)
    graph = spec.graph
    if not isinstance(layer, str) or not layer:
        raise TargetError(f"layer must be a layer name, got {layer!r}")
    key = graph.key(layer)
    single = np.ndim(x) == len(graph.input_shape) - 1
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    arr = check_input(np.asarray(x)[None] if single else x, graph, dtype)
    steps = _int(steps, "steps", 1)
    lr = _number(lr, "lr", strict=True)
    alpha = _number(alpha, "alpha", strict=True)
    tv_beta = _number(tv_beta, "tv_beta", strict=True)
    lambda_alpha = _number(lambda_alpha, "lambda_alpha")
    lambda_tv = _number(lambda_tv, "lambda_tv")
    jitter = _int(jitter, "jitter", 0)
    seed = _int(seed, "seed", 0)
    init_scale = _number(init_scale, "init_scale")
    lr_end = _number(lr_end, "lr_end", strict=True)
    if optimizer not in ("adam", "sgd"):
        raise InputError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    channels = arr.shape[-1]
    fallback = None
    if spec.input_range is None and input_range is None:
        lo = arr.min(axis=(0, 1, 2)).astype(np.float64)
        hi = arr.max(axis=(0, 1, 2)).astype(np.float64)
        if np.all(hi > lo):
            fallback = (lo, hi)
    space = _Space(spec, channels, dtype, input_range, fallback)
    phi0 = _features_fn(spec, key, dtype)(arr).numpy()
    norms = np.sqrt(np.square(phi0.reshape(len(arr), -1).astype(np.float64)).sum(1))
    if np.any(norms == 0):
        bad = int(np.argmin(norms))
        raise InputError(
            f"the features of image {bad} at layer {layer!r} are all zero; the relative "
            "feature error is undefined (choose another layer or image)"
        )
    rng = np.random.default_rng(seed)
    if init is None:
        u0 = rng.normal(0.0, init_scale, arr.shape)
    else:
        x_init = check_input(np.asarray(init)[None] if np.ndim(init) == arr.ndim - 1 else init,
                             graph, dtype)
        if x_init.shape != arr.shape:
            raise InputError(f"init has shape {np.shape(init)}; expected the shape of x, {np.shape(x)}")
        u0 = space.to_u(x_init)
    if clip:
        u0 = np.clip(u0, -space.u_max, space.u_max)
    u0 = u0.astype(dtype)
    t0 = time.perf_counter()
    step, evaluate = _step_fn(spec, "inv", key, None, optimizer, dtype,
                              (None,) + tuple(phi0.shape[1:]))
    hp = _hp(dtype, lr, lambda_alpha, lambda_tv, alpha, tv_beta, 1.0, space, clip)
    aux = phi0.astype(dtype)
    center, k = space.center, space.k
    _, start_err, _, _ = evaluate(u0, hp, aux, center, k)
    u, objective, errors = _run_loop(step, u0, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end)
    _, err, ra, rt = evaluate(u, hp, aux, center, k)
    seconds = time.perf_counter() - t0
    recon = space.to_x(u).astype(np.float32)
    err, start_err = err.numpy().astype(np.float64), start_err.numpy().astype(np.float64)
    ra, rt = ra.numpy().astype(np.float64), rt.numpy().astype(np.float64)
    params = {
        "steps": steps, "lr": lr, "alpha": alpha, "tv_beta": tv_beta,
        "lambda_alpha": lambda_alpha, "lambda_tv": lambda_tv, "jitter": jitter, "seed": seed,
        "optimizer": optimizer, "lr_end": lr_end, "clip": clip, "init": "noise" if init is None else "given",
        "init_scale": init_scale, "B": space.bound, "V": space.vbound,
        "input_range": (space.low.tolist(), space.high.tolist()), "input_range_source": space.source,
    }
    pick = (lambda a: float(a[0])) if single else (lambda a: a)
    return NetworkInversionResult(
        reconstruction=recon[0] if single else recon,
        history=objective[:, 0] if single else objective,
        feature_error=pick(err),
        feature_error_history=(errors[:, 0] if single else errors).astype(np.float64),
        start_feature_error=pick(start_err),
        layer=layer,
        regularizers={"alpha_norm": pick(ra), "tv": pick(rt)},
        params=params,
        seconds=seconds,
        spec=spec,
    )


__all__ = [
    "ActivationMaximizationResult",
    "B_RANGE",
    "NetworkInversionResult",
    "V_RANGE",
    "activation_maximization",
    "network_inversion",
    "regularizers",
]
