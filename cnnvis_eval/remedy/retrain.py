"""Retraining a classifier away from its irrelevant features (thesis ch. 4-5).

:func:`retrain` fine-tunes a *copy* of the user's model (``keras.models.clone_model`` with
the weights copied: the user's model is never modified) with one remedy and returns it:

=====================  ===============================================================
remedy                 what the fine-tuning sees
=====================  ===============================================================
``"plain"``            the training data, cross-entropy only (baseline)
``"pas"``              CE + lam * PAS (:func:`~cnnvis_eval.remedy.losses.pas_penalty`)
``"pasa"``             CE + lam * PASA (needs a GAP + linear head)
``"pasa_contrast"``    PASA on the class-contrast map (``contrast=True``)
``"rrr"``              CE + lam * RRR, Right for the Right Reasons (Ross et al. 2017)
``"random_crop"``      images whose mask region is cut from another image
``"inpaint"``          images whose mask region is inpainted (generative replacement)
``"noise"``            images whose mask region is noise (augmentation baseline)
``"selective_dropout"`` the irrelevant filters' activations zeroed during training
=====================  ===============================================================

Training: Adam, sparse cross-entropy on the logits (a softmax output is stripped), batches
shuffled by a NumPy generator from ``seed``, one compiled step (``tf.function``; RRR's
second-order gradient needs it).  The forward pass is :meth:`cnnvis_eval.graph.FlatGraph.run`
of the copy, layers in inference mode (BatchNorm statistics frozen, dropout off), so the same
seed and data give the same weights.  Selective dropout multiplies the analysed layer's
output by a 0/1 channel mask inside that forward pass only (a graph override): the returned
model is a plain model of the user's architecture.  Mask augmentation (``mask_dilation``,
``mask_jitter``) changes the masks the loss sees, re-drawn every epoch.

:func:`lambda_sweep` retrains at several lambdas and picks one on validation data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from ..errors import InputError, UnsupportedArchitectureError
from ..graph import find_cam_head
from ..models.spec import as_spec
from .detect import filter_analysis
from .features import analysis_layer, check_inputs, class_weights, downsample_masks, feature_maps
from .losses import EPS, pas_penalty, pasa_penalty, rrr_penalty
from .masks import as_masks, augment_masks
from .replace import inpaint_replace, noise_replace, random_crop_replace

LOSS_REMEDIES = ("pas", "pasa", "pasa_contrast", "rrr")
REPLACEMENTS = {"random_crop": random_crop_replace, "inpaint": inpaint_replace, "noise": noise_replace}
REMEDIES = ("plain",) + LOSS_REMEDIES + tuple(REPLACEMENTS) + ("selective_dropout",)


def as_data(data, what: str = "data") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x float32 (N, H, W, C), y int64 (N,), masks bool (N, H, W))`` from an
    :class:`~cnnvis_eval.data.artefacts.ArtefactSet` (its ``artefact_masks``) or a tuple."""
    if hasattr(data, "artefact_masks"):
        x, y, m = data.x, data.y, data.artefact_masks
    else:
        try:
            x, y, m = data
        except (TypeError, ValueError):
            raise InputError(f"{what} must be an ArtefactSet or a tuple (x, y, masks)") from None
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4 or y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise InputError(f"{what}: need x (N, H, W, C) and integer labels y (N,); got {x.shape} and "
                         f"{y.shape} {y.dtype}")
    return x.astype(np.float32), y.astype(np.int64), as_masks(m, len(x), x.shape[1:3], f"{what} masks")


def copy_model(model: keras.Model) -> keras.Model:
    """A new model of the same architecture with a copy of the weights."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _check_number(name: str, value, low: float, integer: bool = False):
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if not ok or isinstance(value, bool) or not np.isfinite(value) or value < low:
        raise InputError(f"{name} must be {'an integer' if integer else 'a number'} >= {low}, got {value!r}")


@dataclass
class _Plan:
    """What :func:`retrain` resolved: the layer, PASA's head, the dropped channels."""

    layer: str | None
    channels: np.ndarray | None


def _resolve(model, remedy, x, masks, layer, channels) -> _Plan:
    spec = as_spec(model)
    check_inputs(spec, x)
    needs_layer = remedy in ("pas", "pasa", "pasa_contrast", "selective_dropout") or layer is not None
    name = analysis_layer(spec, layer, what=f"the {remedy} remedy") if needs_layer else None
    if remedy.startswith("pasa") and class_weights(spec, name) is None:
        raise UnsupportedArchitectureError(
            f"PASA needs a CAM head (GlobalAveragePooling2D -> Dense) pooling layer {name!r}; "
            f"model {spec.name!r} has none there (use remedy='pas')")
    ch = None
    if remedy == "selective_dropout":
        if channels is None:
            ch = filter_analysis(spec, x, masks, layer=name).irrelevant
        else:
            ch = np.asarray(list(channels), int).reshape(-1)
            k = spec.graph.shape(spec.graph.key(name))[-1]
            if ch.size and (ch.min() < 0 or ch.max() >= k):
                raise InputError(f"channels must be indices in [0, {k}) of layer {name!r}; got {ch.tolist()}")
    return _Plan(name, ch)


def retrain(model, data, *, remedy: str = "pas", lam: float = 1.0, epochs: int = 5,
            batch_size: int = 32, lr: float = 1e-3, seed: int = 0, layer: str | None = None,
            mask_dilation: int = 0, mask_jitter: int = 0, channels=None, eps: float = EPS,
            history: list | None = None) -> keras.Model:
    """Fine-tune a copy of ``model`` with a remedy; the user's model is left untouched.

    Parameters
    ----------
    model : keras.Model
        Functional or Sequential, inputs (N, H, W, C), logits or softmax output.
    data : ArtefactSet or tuple (x (N, H, W, C), y (N,), masks (N, H, W) bool)
        Training data and its irrelevant regions.
    remedy : str
        One of :data:`REMEDIES` (module docstring).
    lam : float >= 0
        Weight of the penalty (``pas``, ``pasa``, ``rrr``; ignored by the others).
    epochs, batch_size, lr, seed : training settings (Adam with constant ``lr``)
    layer : str, optional
        The convolutional layer PAS / PASA / selective dropout act on; default the map the
        CAM head pools, else the last convolutional feature map.
    mask_dilation, mask_jitter : int
        Mask augmentation in pixels (:func:`~cnnvis_eval.remedy.masks.augment_masks`);
        dilation applies to every remedy, jitter (re-drawn each epoch) to the loss remedies.
    channels : iterable of int, optional
        Selective dropout's channels; default the irrelevant filters of
        :func:`~cnnvis_eval.remedy.detect.filter_analysis` on ``data``.
    eps : float
        The penalties' denominators' epsilon.
    history : list, optional
        Receives one dict per epoch: ``epoch``, ``ce``, ``penalty`` (batch means), ``seconds``.

    Returns
    -------
    keras.Model
        The fine-tuned copy (uncompiled).

    Raises
    ------
    InputError
        Unknown remedy, ``lam < 0``, bad training settings, masks of the wrong shape, a
        layer that is not a convolutional feature map.
    UnsupportedArchitectureError
        ``"pasa"`` / ``"pasa_contrast"`` on a model without a GAP + linear head at ``layer``.
    UnsupportedLayerError
        A subclassed model (its layers cannot be reached).
    """
    if remedy not in REMEDIES:
        raise InputError(f"unknown remedy {remedy!r}; use one of {REMEDIES}")
    _check_number("lam", lam, 0.0)
    _check_number("epochs", epochs, 1, integer=True)
    _check_number("batch_size", batch_size, 1, integer=True)
    _check_number("eps", eps, 0.0)
    if not lr > 0:
        raise InputError(f"lr must be > 0, got {lr!r}")
    x, y, masks = as_data(data)
    masks = augment_masks(masks, dilation=mask_dilation)
    augment_masks(masks[:1], jitter=mask_jitter)  # checks the jitter
    plan = _resolve(model, remedy, x, masks, layer, channels)
    k = int(as_spec(model).num_classes)
    if y.min() < 0 or y.max() >= k:
        raise InputError(f"labels must be in [0, {k}) for a {k}-class model; got {y.min()}..{y.max()}")
    if remedy in REPLACEMENTS:
        fill = REPLACEMENTS[remedy]
        x = fill(x, masks) if remedy == "inpaint" else fill(x, masks, seed=seed)

    keras.utils.set_random_seed(seed)
    clone = copy_model(model)
    spec = as_spec(clone)
    graph = spec.graph
    out_key = graph.output_key
    key = graph.key(plan.layer) if plan.layer else None
    overrides = None
    if plan.channels is not None:
        node = graph.producer(key)
        keep = np.ones(graph.shape(key)[-1], np.float32)
        keep[plan.channels] = 0.0
        keep = tf.constant(keep)
        overrides = {node.name: lambda *a, **kw: graph.call_layer(node, *a, **kw) * keep}
    weights = find_cam_head(graph).linear.layer.kernel if remedy.startswith("pasa") else None
    variables = clone.trainable_variables
    optimizer = keras.optimizers.Adam(lr)
    optimizer.build(variables)
    lam_t = tf.constant(float(lam), tf.float32)
    spec_x = tf.TensorSpec((None,) + x.shape[1:], tf.float32)

    def forward(t, outputs):
        return graph.run(tf.cast(t, graph.input_dtype), outputs, overrides)

    @tf.function(input_signature=[spec_x, tf.TensorSpec((None,), tf.int64), tf.TensorSpec((None,) + masks.shape[1:])],
                 autograph=False)  # the branches below are on Python values, decided when tracing
    def step(xb, yb, mb):
        with tf.GradientTape() as tape:
            if remedy == "rrr":
                penalty, logits = rrr_penalty(lambda t: forward(t, [out_key])[0], xb, mb)
            elif remedy in ("pas", "pasa", "pasa_contrast"):
                a, logits = forward(xb, [key, out_key])
                low = tf.image.resize(mb[..., None], tf.shape(a)[1:3], method="area")[..., 0]
                if remedy == "pas":
                    penalty = pas_penalty(a, low, eps)
                else:
                    w = tf.reshape(weights, (-1,) + tuple(weights.shape[-2:]))
                    penalty = pasa_penalty(a, low, tf.reduce_sum(w, 0), yb, eps, remedy == "pasa_contrast")
            else:
                logits = forward(xb, [out_key])[0]
                penalty = tf.constant(0.0)
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                yb, tf.cast(logits, tf.float32), from_logits=True))
            loss = ce + lam_t * penalty if remedy in LOSS_REMEDIES else ce
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return ce, penalty

    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        m_epoch = masks
        if mask_jitter and remedy in LOSS_REMEDIES:
            m_epoch = augment_masks(masks, jitter=mask_jitter, seed=rng)
        order = rng.permutation(len(x))
        ces, pens = [], []
        for b in range(0, len(x), batch_size):
            idx = order[b:b + batch_size]
            ce, pen = step(x[idx], y[idx], m_epoch[idx].astype(np.float32))
            ces.append(float(ce))
            pens.append(float(pen))
        if history is not None:
            history.append({"epoch": epoch + 1, "ce": float(np.mean(ces)), "penalty": float(np.mean(pens)),
                            "seconds": time.perf_counter() - t0})
    return clone


def activation_share(model, x, masks, layer: str | None = None) -> float:
    """The PAS share on a data set, in NumPy: mean over images of ``sum(A m) / sum(A)``."""
    spec = as_spec(model)
    name = analysis_layer(spec, layer)
    a = np.maximum(feature_maps(spec, x, name).astype(np.float64), 0)
    m = downsample_masks(as_masks(masks, len(a), np.shape(x)[1:3]), a.shape[1:3]).astype(np.float64)
    total = a.sum((1, 2, 3))
    return float(np.mean(np.einsum("nhwk,nhw->n", a, m) / np.maximum(total, 1e-12)))


@dataclass
class Sweep:
    """A lambda sweep (see :func:`lambda_sweep`).

    Attributes
    ----------
    lam : float
        The chosen lambda.
    model : keras.Model
        The model retrained with it.
    curve : pandas.DataFrame
        One row per lambda: ``lam``, ``val_accuracy``, ``val_share`` (activation share on the
        validation masks), ``train_seconds``, ``chosen``.
    """

    lam: float
    model: keras.Model
    curve: pd.DataFrame


def lambda_sweep(model, data, validation, *, remedy: str = "pas",
                 lams=(0.0, 0.3, 1.0, 3.0, 10.0), **kwargs) -> Sweep:
    """Retrain at each lambda and keep the one with the best validation accuracy.

    Parameters
    ----------
    model : keras.Model
    data : ArtefactSet or (x, y, masks)
        Training data.
    validation : ArtefactSet or (x, y, masks)
        Choosing data: it must contain images where the shortcut misleads (e.g. the
        validation split with the artefact swapped), else the largest accuracy is the
        shortcut's and lambda = 0 wins.
    remedy : {"pas", "pasa", "pasa_contrast", "rrr"}
    lams : sequence of float >= 0
    **kwargs
        For :func:`retrain` (epochs, lr, seed, ...).

    Returns
    -------
    Sweep
        Ties go to the smaller lambda.
    """
    if remedy not in LOSS_REMEDIES:
        raise InputError(f"lambda_sweep is for the loss remedies {LOSS_REMEDIES}, got {remedy!r}")
    lams = sorted(float(v) for v in lams)
    if not lams:
        raise InputError("lams is empty")
    for v in lams:
        _check_number("lam", v, 0.0)
    vx, vy, vm = as_data(validation, "validation")
    rows, models = [], []
    for lam in lams:
        t0 = time.perf_counter()
        m = retrain(model, data, remedy=remedy, lam=lam, **kwargs)
        secs = time.perf_counter() - t0
        acc = float((feature_maps(m, vx, logits=True)[1].argmax(1) == vy).mean())
        rows.append({"lam": lam, "val_accuracy": acc, "val_share": activation_share(m, vx, vm, kwargs.get("layer")),
                     "train_seconds": secs})
        models.append(m)
    curve = pd.DataFrame(rows)
    best = int(np.argmax(curve["val_accuracy"].to_numpy()))  # first maximum: the smallest lambda
    curve["chosen"] = np.arange(len(curve)) == best
    return Sweep(lams[best], models[best], curve)


__all__ = ["LOSS_REMEDIES", "REMEDIES", "Sweep", "activation_share", "as_data", "copy_model",
           "lambda_sweep", "retrain"]
