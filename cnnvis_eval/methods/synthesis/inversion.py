"""Network inversion (Mahendran & Vedaldi 2015): reconstruct an image from its features
at a layer, under the same regularizers (see the package docstring)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError, TargetError
from ...models.spec import ModelSpec, as_spec
from ..base import check_input
from .optimize import display_image, features_function, hyperparams, parse_settings, run_loop, step_function
from .priors import DisplaySpace


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
        return display_image(self.spec, self.reconstruction)


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
    settings = parse_settings(
        steps=steps, lr=lr, alpha=alpha, tv_beta=tv_beta, lambda_alpha=lambda_alpha,
        lambda_tv=lambda_tv, jitter=jitter, seed=seed, init_scale=init_scale, lr_end=lr_end,
        optimizer=optimizer, clip=clip,
    )
    steps, lr, alpha, tv_beta = settings.steps, settings.lr, settings.alpha, settings.tv_beta
    lambda_alpha, lambda_tv = settings.lambda_alpha, settings.lambda_tv
    jitter, seed, init_scale, lr_end = settings.jitter, settings.seed, settings.init_scale, settings.lr_end
    channels = arr.shape[-1]
    fallback = None
    if spec.input_range is None and input_range is None:
        lo = arr.min(axis=(0, 1, 2)).astype(np.float64)
        hi = arr.max(axis=(0, 1, 2)).astype(np.float64)
        if np.all(hi > lo):
            fallback = (lo, hi)
    space = DisplaySpace(spec, channels, dtype, input_range, fallback)
    phi0 = features_function(spec, key, dtype)(arr).numpy()
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
    step, evaluate = step_function(spec, "inv", key, None, optimizer, dtype,
                              (None,) + tuple(phi0.shape[1:]))
    hp = hyperparams(dtype, lr, lambda_alpha, lambda_tv, alpha, tv_beta, 1.0, space, clip)
    aux = phi0.astype(dtype)
    center, k = space.center, space.k
    _, start_err, _, _ = evaluate(u0, hp, aux, center, k)
    u, objective, errors = run_loop(step, u0, hp, aux, space, steps, jitter, rng, dtype, lr, lr_end)
    _, err, ra, rt = evaluate(u, hp, aux, center, k)
    seconds = time.perf_counter() - t0
    recon = space.to_x(u).astype(np.float32)
    err, start_err = err.numpy().astype(np.float64), start_err.numpy().astype(np.float64)
    ra, rt = ra.numpy().astype(np.float64), rt.numpy().astype(np.float64)
    params = {
        **settings.record(), "init": "noise" if init is None else "given",
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


__all__ = ["NetworkInversionResult", "network_inversion"]
