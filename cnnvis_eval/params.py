"""Shared parameter handling: validators, baselines, chunking.

One place for what methods and metrics used to check each on their own:

* validators (:func:`integer`, :func:`number`, :func:`fraction`, :func:`pair`,
  :func:`choice`) return the cleaned value or raise :class:`~cnnvis_eval.errors.InputError`
  naming the parameter;
* baselines (:func:`check_baseline`, :func:`resolve_baseline`): "zeros", "black", "mean",
  a number or an array, resolved against the images they replace;
* chunking (:func:`chunks`): ``(start, stop)`` ranges of at most ``size`` items; how many
  model inputs one compiled call of a multi-sample method evaluates (:func:`internal_batch`,
  :func:`samples_per_call`, :data:`CALL_PIXELS`).

Depends only on :mod:`cnnvis_eval.errors` and NumPy (see docs/architecture.md).
"""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import InputError

# ---------------------------------------------------------------------- validators


def integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``.

    Accepts Python and NumPy integers and integral floats (``4.0``); rejects bools,
    strings, non-integral numbers and values below ``minimum``.

    Raises
    ------
    InputError
        ``"{name} must be >= {minimum}, got {value!r}"`` for an integer below ``minimum``,
        ``"{name} must be an integer >= {minimum}, got {value!r}"`` for anything else.
    """
    ok = False
    if not isinstance(value, (bool, np.bool_)):
        if isinstance(value, numbers.Integral):
            ok = True
        elif isinstance(value, numbers.Real):
            ok = bool(np.isfinite(float(value))) and float(value).is_integer()
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            return integer(value.item(), name, minimum)
    if not ok:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def number(value: Any, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> ``minimum`` when ``strict``).

    Raises
    ------
    InputError
        ``"{name} must be a number, got ..."`` or ``"{name} must be >= {minimum}, got ..."``
        (``>`` when strict).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise InputError(f"{name} must be {op} {minimum}, got {value!r}")
    return v


def fraction(value: Any, name: str, allow_zero: bool = False) -> float:
    """``value`` as a float in (0, 1] (or [0, 1] with ``allow_zero``).

    Raises
    ------
    InputError
        ``"{name} must be in (0, 1], got ..."``.
    """
    ok = isinstance(value, (numbers.Real, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = (0 <= v if allow_zero else 0 < v) and v <= 1
    if not ok:
        raise InputError(f"{name} must be in {'[' if allow_zero else '('}0, 1], got {value!r}")
    return float(value)


def pair(value: Any, name: str) -> tuple[int, int]:
    """An integer or a pair (height, width) of integers >= 1, as a pair."""
    if np.ndim(value) == 0:
        v = integer(value, name)
        return v, v
    vals = list(np.asarray(value).reshape(-1))
    if len(vals) != 2:
        raise InputError(f"{name} must be an integer or a pair (height, width), got {value!r}")
    return integer(vals[0], name), integer(vals[1], name)


def choice(value: Any, name: str, options: Sequence) -> Any:
    """``value`` if it is one of ``options``, else InputError listing them."""
    if value not in options:
        raise InputError(f"{name} must be {' or '.join(map(repr, options))}, got {value!r}")
    return value


# ---------------------------------------------------------------------- chunking


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` out of ``total`` items."""
    for start in range(0, total, size):
        yield start, min(total, start + size)


#: Model-input pixels one compiled call of a multi-sample method (integrated gradients,
#: SmoothGrad, GradientSHAP, Blur IG) evaluates by default: a batch of 8 images at 224 x 224,
#: so that a call's working memory stays near that of one forward+backward pass of such a
#: batch (issue 20: <= 1.5x at batch 8; 32 inputs per call at 224 px held 4.1-4.6x on
#: MobileNetV2, and ran 7-15% faster per step, since a batch of 32 is more efficient than one
#: of 8: integrated gradients per step 0.88 -> 1.02 of the batch-8 pass on MobileNetV2, 0.96
#: -> 1.08 on ResNet50; pass ``internal_batch_size`` to trade memory for that).  A call that
#: only runs the model forward (the perturbation methods, Score-CAM) frees each activation
#: once the next layer has read it and takes twice as many
#: (32 forward inputs held 1.9-2.0x; 16 run 2-8% slower than 32 on MobileNetV2 and ResNet50,
#: 8 up to 25%).  Small images are batched up to :data:`MAX_CALL_INPUTS` inputs (the 64 px
#: minis: 32, as before).
CALL_PIXELS = 8 * 224 * 224
MAX_CALL_INPUTS = 32


def internal_batch(value: Any, name: str = "internal_batch_size") -> int | None:
    """``None`` (the default: :func:`call_inputs`) or an integer >= 1 (model inputs per call)."""
    return None if value is None else integer(value, name)


def call_inputs(internal: int | None, image_shape: Sequence[int], forward_only: bool = False) -> int:
    """Model inputs per compiled call: ``internal`` when given, else as many images of
    ``image_shape`` (H, W, ...) as hold :data:`CALL_PIXELS` pixels (twice that for calls that
    only run the model forward), 1 to :data:`MAX_CALL_INPUTS`."""
    if internal is not None:
        return int(internal)
    pixels = max(1, int(image_shape[0]) * int(image_shape[1]))
    budget = CALL_PIXELS * (2 if forward_only else 1)
    return max(1, min(MAX_CALL_INPUTS, budget // pixels))


def samples_per_call(internal: int | None, x: np.ndarray, forward_only: bool = False) -> int:
    """Samples (steps, noise draws, baselines, masks) of every image of the batch ``x``
    (N, H, W, C) per compiled call: ``call_inputs(internal, (H, W), forward_only) // N``, at
    least 1 (a batch larger than the budget is evaluated one sample at a time, all its images
    at once)."""
    return max(1, call_inputs(internal, x.shape[1:3], forward_only) // max(1, len(x)))


# ---------------------------------------------------------------------- baselines
#: The named baselines: all-zero model input, the lowest value of the model's input range
#: (a black image), and each image's per-channel mean.
BASELINE_NAMES = ("zeros", "black", "mean")


def _names_text(names: Sequence[str]) -> str:
    return "a number, an array" + "".join(f", {n!r}" for n in names[:-1]) + (
        f" or {names[-1]!r}" if names else "")


def check_baseline(baseline: Any, what: str = "baseline", names: Sequence[str] = BASELINE_NAMES) -> Any:
    """Validate a baseline argument where it is given (the constructor); returns it.

    Strings must be one of ``names``; arrays are checked when resolved.
    """
    if isinstance(baseline, str) and baseline not in names:
        raise InputError(f"{what} must be {_names_text(names)}; got {baseline!r}")
    return baseline


def resolve_baseline(baseline: Any, x: np.ndarray, spec=None, what: str = "baseline",
                     names: Sequence[str] = BASELINE_NAMES) -> np.ndarray:
    """The baseline as an array shaped like ``x``, in ``x``'s dtype (a fresh copy).

    Parameters
    ----------
    baseline : number, array broadcastable to ``x``, or one of ``names``
        ``"zeros"``: all zeros; ``"black"``: the lowest value of ``spec.input_range`` (per
        channel where given); ``"mean"``: each image's per-channel mean over (H, W).
    x : array (H, W, C) or (N, H, W, C)
        The image(s) the baseline stands in for.
    spec : ModelSpec, optional
        Needed for ``"black"``.
    what : str
        Parameter name used in error messages.
    names : sequence of str
        The names accepted (a metric may accept none).

    Raises
    ------
    InputError
        Unknown name, "black" without an input range, a shape that does not broadcast to
        ``x.shape``, NaN or inf.
    """
    x = np.asarray(x)
    if isinstance(baseline, str):
        check_baseline(baseline, what, names)
        if baseline == "zeros":
            return np.zeros_like(x)
        if baseline == "mean":
            return np.broadcast_to(x.mean(axis=(-3, -2), keepdims=True), x.shape).astype(x.dtype)
        rng = None if spec is None else spec.input_range
        if rng is None:
            name = "the model" if spec is None else f"model {spec.name!r}"
            raise InputError(
                f"{what}='black' needs the model's input range, which {name} does not "
                "declare; pass a number or an array"
            )
        return np.broadcast_to(np.asarray(rng[0], x.dtype), x.shape).copy()
    try:
        arr = np.asarray(baseline, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be {_names_text(names)}; got {baseline!r}") from None
    try:
        out = np.broadcast_to(arr, x.shape)
    except ValueError:
        shapes = [f"({x.shape[-1]},)", str(x.shape[-3:])] + ([str(x.shape)] if x.ndim > 3 else [])
        raise InputError(
            f"{what} has shape {arr.shape}; expected a number, {', '.join(shapes[:-1])} or "
            f"{shapes[-1]} (it must broadcast to {x.shape})"
        ) from None
    if not np.all(np.isfinite(out)):
        raise InputError(f"{what} contains NaN or inf")
    return out.astype(x.dtype)


__all__ = [
    "BASELINE_NAMES",
    "check_baseline",
    "choice",
    "chunks",
    "fraction",
    "integer",
    "number",
    "pair",
    "resolve_baseline",
]
