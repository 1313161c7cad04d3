"""A check session: the selected (check, variant, method) cases, one context per model file,
the verdicts (with a progress bar), and the folder a check run writes.

Shared by the pytest plugin (:mod:`cnnvis_eval.testing.plugin`) and ``cnnvis-eval check``
(:mod:`cnnvis_eval.cli`), so that both select, load and decide identically.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .context import CheckContext
from .verdict import Verdict, verdict_frame

DEFAULT_METHODS = ("saliency", "integrated_gradients", "guided_backprop", "grad_cam", "lrp_epsilon")
"""The methods checked when none are named (also the default of ``--cnnvis-methods``)."""

STUDY_METHODS = ("deconvnet", "saliency", "guided_backprop", "grad_cam", "guided_grad_cam", "deep_taylor", "lime")
"""The seven methods the study compared (its Table 2)."""


def check_names() -> list[str]:
    """Every selectable ``check`` and ``check.variant``."""
    from .checks import CHECKS

    return [c if v is None else f"{c}.{v}" for c, (vs, _) in CHECKS.items() for v in vs]


def selected_checks(checks=None) -> list[str]:
    """The checks asked for (default every check), each ``check`` or ``check.variant``.

    Raises InputError naming an unknown one and listing the available ones."""
    from .checks import CHECKS

    wanted = list(checks or CHECKS)
    for w in wanted:
        check, _, variant = w.partition(".")
        if check not in CHECKS or (variant and variant not in CHECKS[check][0]):
            raise InputError(f"unknown check {w!r}; available: {', '.join(check_names())}")
    return wanted


def selected_methods(methods=None) -> list[str]:
    """The methods asked for (default :data:`DEFAULT_METHODS`): registered methods or controls.

    Raises InputError naming the unknown ones (or an empty list) and listing the available ones."""
    from ..methods import list_methods
    from ..metrics import CONTROLS

    methods = list(DEFAULT_METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in list_methods() and m not in CONTROLS]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; "
                         f"available: {', '.join(list_methods())}")
    return methods


def parse_params(items, methods=None) -> dict[str, dict]:
    """``["lime.num_samples=1000", ...]`` -> ``{"lime": {"num_samples": 1000}}``.

    Each item is ``METHOD.NAME=VALUE``; VALUE is read as JSON (``1000``, ``0.5``, ``"slic"``,
    ``[1, 2]``, ``true``) and otherwise kept as text (``slic``).  ``methods``: the methods
    of the run; a parameter of another method is an error (it would be silently unused).

    Raises
    ------
    InputError
        A malformed item, a method that is not checked, or a parameter the method's
        constructor does not take (the line lists the ones it does).
    """
    import inspect

    from ..methods import get_method, list_methods

    out: dict[str, dict] = {}
    for item in items or ():
        head, eq, text = str(item).partition("=")
        method, dot, name = head.strip().partition(".")
        if not (eq and dot and method and name):
            raise InputError(f"parameter {item!r} must read METHOD.NAME=VALUE, e.g. lime.num_samples=1000")
        if method not in list_methods():
            raise InputError(f"parameter {item!r}: {method!r} is not a registered method")
        if methods is not None and method not in methods:
            raise InputError(f"parameter {item!r}: {method!r} is not among the checked methods "
                             f"({', '.join(methods)})")
        accepted = [k for k, v in inspect.signature(get_method(method).__init__).parameters.items()
                    if k not in ("self", "model") and v.kind is not v.VAR_KEYWORD and v.kind is not v.VAR_POSITIONAL]
        if name not in accepted:
            raise InputError(f"parameter {item!r}: {method} has no parameter {name!r}; "
                             f"it takes {', '.join(accepted) or 'none'}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.setdefault(method, {})[name] = value
    return out


def session_params(spec, overrides: dict | None = None) -> dict[str, dict]:
    """The parameters every registered method runs with in a check session (the
    ``check`` command and the pytest plugin): the comparison grid's
    (:func:`cnnvis_eval.evaluation.config.method_params`: e.g. LIME 200 samples, RISE 250
    masks, integrated gradients 16 steps, an occlusion window of 1/6 of the input side),
    updated with ``overrides`` (:func:`parse_params`).

    The checks ask how a method behaves on the model (does its map depend on the weights,
    on the class, on noise); the grid's settings keep the perturbation methods' cost within
    a few hundred forward passes per image, which every check repeats several times.  A
    user who ships LIME at 1,000 samples checks that configuration with
    ``--param lime.num_samples=1000``.
    """
    from ..evaluation.config import GRID_PARAMS, method_params
    from ..methods import list_methods

    overrides = overrides or {}
    return {m: method_params(m, spec, {**GRID_PARAMS.get(m, {}), **overrides.get(m, {})}) for m in list_methods()}


def validate_params(ctx: CheckContext, methods) -> None:
    """Build the explainer of every method on ``ctx`` once, so that a bad parameter value is
    one InputError before the first check (a method that does not apply to the model is
    left for its verdicts, ``n/a``)."""
    from ..errors import UnsupportedArchitectureError, UnsupportedLayerError

    for m in methods:
        try:
            ctx.explainer(m)
        except (UnsupportedLayerError, UnsupportedArchitectureError):
            pass
        except InputError as err:
            raise InputError(f"{m} {ctx.method_params(m)}: {err}") from None


def select_cases(checks=None, methods=None) -> list[tuple[str, str, str | None]]:
    """(check, method, variant) for every selected check, variant and method, checks first.

    Parameters
    ----------
    checks : list of str, optional
        Check names (``"randomization"``: every variant) or ``"check.variant"``; default all.
    methods : list of str, optional
        Registered methods or controls (``edge_sobel``, ...); default :data:`DEFAULT_METHODS`.

    Raises
    ------
    InputError
        An unknown check or method (the line lists the available ones).
    """
    from .checks import CHECKS

    wanted, methods = selected_checks(checks), selected_methods(methods)
    out = []
    for check, (variants, _) in CHECKS.items():
        for variant in variants:
            if any(w in (check, f"{check}.{variant}") for w in wanted):
                out.extend((check, method, variant) for method in methods)
    return out


def open_context(model_file, images, masks=None, preprocess: str | None = None, classes=None,
                 output: str | None = None, seed: int = 0, output_flag: str | None = None,
                 custom_objects=None, input_shape: tuple | None = None,
                 params: dict | None = None) -> CheckContext:
    """A user's model file, images (and masks) as a :class:`CheckContext`.

    Parameters
    ----------
    model_file : path of a ``.keras`` / ``.h5`` model
    images : folder of JPEG/PNG, ``.npz`` with ``images``, image file, or array (N, H, W[, C])
    masks : folder of PNGs named like the images, ``.npz`` with ``masks``, or array; optional
    preprocess : see :func:`~cnnvis_eval.testing.inputs.preprocess_function`
    classes : list of str, optional
        One name per model output class.
    output : str, optional
        The output to explain of a model with several outputs.
    output_flag : str, optional
        The option that sets ``output`` for the caller's user (named in the error).
    custom_objects : list of ``"module:Name"`` or dict, optional
        Classes the model file needs that are not registered with Keras (a subclassed model).
    input_shape : (H, W, C), optional
        For a subclassed model whose file does not record its input shape.
    params : dict, optional
        ``method -> {name: value}`` overrides of :func:`session_params` (from
        :func:`parse_params`).

    Raises
    ------
    InputError
        Any unreadable or mismatched input, in one line naming the file.
    """
    from .inputs import load_images, load_masks

    spec = load_check_model(model_file, preprocess, classes, output, output_flag, custom_objects, input_shape)
    x, ids = load_images(images, spec.input_shape)
    m = load_masks(masks, ids, spec.input_shape) if masks is not None else None
    return CheckContext(spec, spec.preprocess(x), masks=m, seed=seed, name=Path(str(model_file)).stem,
                        params=session_params(spec, params))


def load_check_model(model_file, preprocess: str | None = None, classes=None, output: str | None = None,
                     output_flag: str | None = None, custom_objects=None, input_shape: tuple | None = None):
    """The ModelSpec of a user's model file as a check session uses it (the arguments of
    :func:`open_context`): also how a remote worker loads the shipped file
    (:mod:`cnnvis_eval.testing.remote`)."""
    from .inputs import load_user_model

    spec = load_user_model(model_file, output, preprocess, output_flag=output_flag,
                           custom_objects=custom_objects, input_shape=input_shape)
    classes = list(classes or [])
    if classes:
        if len(classes) != spec.num_classes:
            raise InputError(f"{len(classes)} class names given; the model has {spec.num_classes} classes")
        spec.class_names = tuple(classes)
    return spec


def run_cases(ctx: CheckContext, cases, progress: bool = True) -> list[Verdict]:
    """The verdict of every (check, method, variant) case on ``ctx``, in order.

    ``progress``: a tqdm bar over the cases (on stderr), naming the case being run.
    """
    from tqdm.auto import tqdm

    from .checks import run_check

    out = []
    with tqdm(cases, desc=f"checks on {ctx.name}", unit="check", disable=not progress, leave=False) as bar:
        for check, method, variant in bar:
            bar.set_postfix_str(f"{check}{'.' + variant if variant else ''} {method}", refresh=False)
            out.append(run_check(ctx, check, method, variant))
    return out


def failed_required(verdicts, required) -> list[Verdict]:
    """The ``fail`` verdicts (predicted by the literature or not) of the ``required`` methods."""
    required = set(required or ())
    return [v for v in verdicts if v.method in required and v.status == "fail"]


def scorecard_text(verdicts) -> str:
    """A compact check x method table for the terminal (one row per check, one column per
    method): ``pass``, ``FAIL``, ``fail*`` (a failure the literature predicts), ``inc``
    (inconclusive), ``n/a``; several models give one table each."""
    import pandas as pd

    if not verdicts:
        return "(no verdicts)"
    short = {"pass": "pass", "fail": "FAIL", "inconclusive": "inc", "n/a": "n/a"}
    rows = [(v.model, v.check, v.method, "fail*" if v.status == "fail" and v.known_failure else short[v.status])
            for v in verdicts]
    df = pd.DataFrame(rows, columns=["model", "check", "method", "verdict"])
    out = []
    for model, g in df.groupby("model", sort=False):
        table = g.pivot_table(index="check", columns="method", values="verdict", aggfunc="first", sort=False)
        table = table.reindex(index=list(dict.fromkeys(g["check"])), columns=list(dict.fromkeys(g["method"])))
        table.index.name, table.columns.name = f"{model}:", None
        out.append(table.fillna("").to_string())
    legend = "FAIL: fails the check; fail*: a failure the literature predicts; inc: inconclusive; n/a: does not apply"
    return "\n\n".join(out) + "\n" + legend


def write_check_folder(out, verdicts, config: dict) -> Path:
    """Write a check run's folder: ``verdicts.parquet`` / ``.csv``, ``results.parquet`` (the
    same rows, the long frame every report reads), ``config.json`` and ``index.html``.

    Every file is written to a temporary name and renamed, so a killed run leaves either the
    previous file or the new one.  Returns the report's path.
    """
    from ..evaluation.store import atomic_write
    from ..report import build_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = verdict_frame(verdicts)
    atomic_write(out / "verdicts.parquet", lambda p: table.to_parquet(p, index=False))
    atomic_write(out / "verdicts.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "results.parquet", lambda p: table.to_parquet(p, index=False))
    atomic_write(out / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2, sort_keys=True)))
    return build_report(out, title=f"cnnvis_eval check — {', '.join(config.get('models', [])) or out.name}")


__all__ = ["DEFAULT_METHODS", "STUDY_METHODS", "check_names", "selected_checks", "selected_methods", "failed_required", "load_check_model", "open_context", "parse_params", "run_cases", "session_params",
           "scorecard_text", "select_cases", "validate_params", "write_check_folder"]
