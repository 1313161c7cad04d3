"""Activation maximization (Erhan et al. 2009; Simonyan et al. 2014) under Mahendran &
Vedaldi's regularizers (see the package docstring)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import params as P
from ...errors import TargetError
from ...models.spec import ModelSpec, as_spec
from ...targets import ClassTarget, NeuronTarget, bind
from .optimize import (
    display_image,
    features_function,
    hyperparams,
    image_shape,
    init_image,
    parse_settings,
    run_loop,
    step_function,
)
from .priors import DisplaySpace


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
        return display_image(self.spec, self.image)


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
    settings = parse_settings(
        steps=steps, lr=lr, alpha=alpha, tv_beta=tv_beta, lambda_alpha=lambda_alpha,
        lambda_tv=lambda_tv, jitter=jitter, seed=seed, init_scale=init_scale, lr_end=lr_end,
        optimizer=optimizer, clip=clip,
    )
    steps, lr, alpha, tv_beta = settings.steps, settings.lr, settings.alpha, settings.tv_beta
    lambda_alpha, lambda_tv = settings.lambda_alpha, settings.lambda_tv
    jitter, seed, init_scale, lr_end = settings.jitter, settings.seed, settings.init_scale, settings.lr_end
    dtype = np.float64 if graph.input_dtype == "float64" else np.float32
    shape = image_shape(graph, init, "activation_maximization")
    channels = shape[-1]
    space = DisplaySpace(spec, channels, dtype, input_range)
    rng = np.random.default_rng(seed)
    if init is None:
        u0 = rng.normal(0.0, init_scale, (1,) + shape)
    else:
        x_init = init_image(graph, init, shape, dtype, "activation_maximization")
        u0 = space.to_u(x_init)
        shape = x_init.shape[1:]
    if clip:
        u0 = np.clip(u0, -space.u_max, space.u_max)
    u0 = u0.astype(dtype)
    aux = bound.indices.astype(np.int32)
    t0 = time.perf_counter()
    step, evaluate = step_function(spec, "am", bound.key, bound, optimizer, dtype, None)
    if activation_scale is None:
        full = features_function(spec, bound.key, dtype)(space.to_x(u0).astype(dtype)).numpy()
        if bound.reduce != "none" and full.ndim > 2:
            full = getattr(np, bound.reduce)(full, axis=tuple(range(1, full.ndim - 1)))
        scale = float(np.sqrt(np.mean(np.square(full.astype(np.float64)))))
        scale = scale if scale > 1e-12 else 1.0
    else:
        scale = P.number(activation_scale, "activation_scale", strict=True)
    hp = hyperparams(dtype, lr, lambda_alpha, lambda_tv, alpha, tv_beta, scale, space, clip)
    center, k = space.center, space.k
    _, start_f, _, _ = evaluate(u0, hp, aux, center, k)
    u, objective, values = run_loop(step, u0, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end)
    _, final_f, ra, rt = evaluate(u, hp, aux, center, k)
    seconds = time.perf_counter() - t0
    params = {
        **settings.record(), "init": "noise" if init is None else "given",
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


__all__ = ["ActivationMaximizationResult", "activation_maximization"]
