"""The shared machinery of activation maximization and network inversion: one parameter
parser, the compiled optimization step (cached per model in :mod:`cnnvis_eval.cache`), the
step loop, and display helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from ... import params as P
from ...cache import default_cache
from ...errors import InputError
from ...models.spec import ModelSpec, identity as _identity
from ..base import check_input
from .priors import alpha_norm, total_variation

_ADAM_B1, _ADAM_B2, _ADAM_EPS = 0.9, 0.999, 1e-8

OPTIMIZERS = ("adam", "sgd")


# ---------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Settings:
    """The optimization parameters both syntheses share, validated (see :func:`parse_settings`)."""

    steps: int
    lr: float
    alpha: float
    tv_beta: float
    lambda_alpha: float
    lambda_tv: float
    jitter: int
    seed: int
    init_scale: float
    lr_end: float
    optimizer: str
    clip: bool

    def record(self) -> dict:
        """The parameters as recorded in a result's ``params`` (in the documented order)."""
        return {
            "steps": self.steps, "lr": self.lr, "alpha": self.alpha, "tv_beta": self.tv_beta,
            "lambda_alpha": self.lambda_alpha, "lambda_tv": self.lambda_tv, "jitter": self.jitter,
            "seed": self.seed, "optimizer": self.optimizer, "lr_end": self.lr_end, "clip": self.clip,
        }


def parse_settings(*, steps, lr, alpha, tv_beta, lambda_alpha, lambda_tv, jitter, seed,
                   init_scale, lr_end, optimizer, clip) -> Settings:
    """Validate the shared parameters; InputError names the first bad one.

    ``steps`` >= 1; ``lr``, ``alpha``, ``tv_beta``, ``lr_end`` > 0; ``lambda_alpha``,
    ``lambda_tv``, ``init_scale`` >= 0; ``jitter``, ``seed`` integers >= 0; ``optimizer``
    in :data:`OPTIMIZERS`.
    """
    return Settings(
        steps=P.integer(steps, "steps", 1),
        lr=P.number(lr, "lr", strict=True),
        alpha=P.number(alpha, "alpha", strict=True),
        tv_beta=P.number(tv_beta, "tv_beta", strict=True),
        lambda_alpha=P.number(lambda_alpha, "lambda_alpha"),
        lambda_tv=P.number(lambda_tv, "lambda_tv"),
        jitter=P.integer(jitter, "jitter", 0),
        seed=P.integer(seed, "seed", 0),
        init_scale=P.number(init_scale, "init_scale"),
        lr_end=P.number(lr_end, "lr_end", strict=True),
        optimizer=P.choice(optimizer, "optimizer", OPTIMIZERS),
        clip=clip,
    )


# ---------------------------------------------------------------------- Adam
def adam_update(g, m, v, t, lr):
    """One Adam step (Kingma & Ba) inside a compiled function: gradient ``g``, moments
    ``m``, ``v``, step count ``t`` (from 1) and rate ``lr`` -> (the step to subtract, m, v)."""
    dt = g.dtype
    m = _ADAM_B1 * m + (1 - _ADAM_B1) * g
    v = _ADAM_B2 * v + (1 - _ADAM_B2) * tf.square(g)
    mhat = m / (1 - tf.pow(tf.constant(_ADAM_B1, dt), t))
    vhat = v / (1 - tf.pow(tf.constant(_ADAM_B2, dt), t))
    return lr * mhat / (tf.sqrt(vhat) + _ADAM_EPS), m, v


# ---------------------------------------------------------------------- display
def display_image(spec, image) -> np.ndarray:
    """Image(s) in model-input space -> uint8 for display, via the model's deprocess
    (min-max scaled per image for models without an input range or deprocess)."""
    arr = np.asarray(image)
    batch = arr if arr.ndim == 4 else arr[None]
    out = np.asarray(spec.deprocess(batch), np.float64)
    if spec.input_range is None and spec.deprocess is _identity:
        flat = out.reshape(len(out), -1)
        lo, hi = flat.min(1), flat.max(1)
        out = (out - lo[:, None, None, None]) / np.maximum(hi - lo, 1e-12)[:, None, None, None] * 255
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out if arr.ndim == 4 else out[0]


# ---------------------------------------------------------------------- compiled step
def step_function(spec: ModelSpec, kind: str, key: int, bound_target, optimizer: str, dtype, aux_shape):
    """The compiled optimization step for (kind, layer, optimizer), cached per model.

    ``step(u, m, v, t, shift, hp, aux)`` with hp = [lr, lambda_alpha, lambda_tv, alpha,
    beta, scale, B, V, clip] and ``aux`` the target index (AM) or the target features
    (inversion).  Returns updated (u, m, v) and per-image (objective, value, N_alpha, N_TV)
    measured before the update.
    """
    ckey = ("synthesis", kind, key, getattr(bound_target, "reduce", None), optimizer,
            np.dtype(dtype).name)
    return default_cache.function(
        spec, ckey, lambda: _build_step(spec, kind, key, bound_target, optimizer, dtype, aux_shape))


def _build_step(spec: ModelSpec, kind: str, key: int, bound_target, optimizer: str, dtype, aux_shape):
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
        ra = alpha_norm(u, hp[3], hp[6])
        rt = total_variation(u, hp[4], hp[7])
        return data + hp[1] * ra + hp[2] * rt, data, report, ra, rt

    @tf.function(autograph=False, input_signature=[
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
            delta, m, v = adam_update(g, m, v, t, lr)
            new_u = u - delta
        else:  # plain gradient step normalized by the mean |gradient| of each image
            norm = tf.reduce_mean(tf.abs(g), axis=[1, 2, 3], keepdims=True)
            new_u = u - lr * g / (norm + tf.constant(1e-12, dt))
        new_u = tf.cond(hp[8] > 0, lambda: tf.clip_by_value(new_u, -127.5, 127.5), lambda: new_u)
        return new_u, m, v, loss, report, ra, rt

    @tf.function(autograph=False, input_signature=[img, tf.TensorSpec((9,), dt), aux_spec,
                                  tf.TensorSpec((None,), dt), tf.TensorSpec((None,), dt)])
    def evaluate(u, hp, aux, center, k):
        loss, data, report, ra, rt = terms(u, tf.zeros((2,), tf.int32), hp, aux, center, k)
        return loss, report, ra, rt

    return step, evaluate


def features_function(spec: ModelSpec, key: int, dtype):
    """Compiled ``x -> features at layer key``, cached per model."""

    def build():
        graph = spec.graph

        @tf.function(autograph=False, input_signature=[tf.TensorSpec((None,) + tuple(graph.input_shape[1:]),
                                                    tf.as_dtype(dtype))])
        def features(x):
            return graph.run(x, [key])[0]

        return features

    return default_cache.function(spec, ("synthesis", "features", key, np.dtype(dtype).name), build)


# ---------------------------------------------------------------------- loop
def image_shape(graph, init, what: str) -> tuple:
    shape = tuple(graph.input_shape[1:])
    if init is None and any(s is None for s in shape):
        raise InputError(
            f"model {graph.model.name!r} has a variable input size {shape}; pass init= "
            f"(an image of the wanted size) to {what}"
        )
    return shape


def init_image(graph, init, shape, dtype, what: str) -> np.ndarray:
    arr = check_input(np.asarray(init)[None] if np.ndim(init) == len(shape) else init, graph, dtype)
    if len(arr) != 1:
        raise InputError(f"init must be one image of shape {shape}, got shape {np.shape(init)}")
    return arr


def hyperparams(dtype, lr, lambda_alpha, lambda_tv, alpha, beta, scale, space, clip):
    return np.array([lr, lambda_alpha, lambda_tv, alpha, beta, scale, space.bound,
                     space.vbound, 1.0 if clip else 0.0], dtype)


def run_loop(step, u, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end):
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


__all__ = [
    "OPTIMIZERS",
    "adam_update",
    "Settings",
    "display_image",
    "features_function",
    "hyperparams",
    "image_shape",
    "init_image",
    "parse_settings",
    "run_loop",
    "step_function",
]
