"""The penalties of retraining by loss: PAS, PASA and Right for the Right Reasons.

Each is a TensorFlow function of one batch, added to the cross-entropy as ``CE + lam * P``
(:func:`cnnvis_eval.remedy.retrain` does that).  Notation: ``A`` the activation of the
analysed convolutional layer (N, h, w, K), rectified; ``m`` the irrelevant masks downsampled
to its grid as the share of each cell they cover (N, h, w) in [0, 1]
(:func:`~cnnvis_eval.remedy.features.downsample_masks`); ``M`` the masks at input resolution.

**PAS** (selective-activation loss, thesis 5.1)::

    P_PAS = mean_n  sum_{i,j,k} A[n,i,j,k] m[n,i,j] / (sum_{i,j,k} A[n,i,j,k] + eps)

the share of the layer's activation that lies on the irrelevant region.  A share, not the raw
sum: the raw sum scales with the activations, so its lambda would depend on the
architecture and drift while training, and the cheapest way to lower it would be to shrink
every activation (which the next layer undoes).  The share is in [0, 1] (0: nothing on the
mask), so lambda is on the cross-entropy's scale.  Images with an empty mask add 0.

**PASA** (the adjusted variant, 5.2): only what the true class ``y`` uses counts — its class
activation map ``C = ReLU(sum_k W[k, y] A_k)`` (``W`` the weights of a GAP + linear head, the
CAM of Zhou et al. 2016) — and it is compared with the map outside the mask::

    r_n = mean_in(C_n) / (mean_out(C_n) + eps)                      (form="ratio")
    P_PASA = mean_{n: m_n != 0}  r_n / (1 + r_n)
           = mean_in / (mean_in + mean_out + eps)                   (form="share", default)
    mean_in(C)  = sum(C m) / sum(m),   mean_out(C) = sum(C (1 - m)) / sum(1 - m)

Both are unchanged when the map is scaled, so they cannot be lowered by shrinking all
activations (the weakness of a raw activation penalty that the thesis' adjustment removes):
the class evidence must move off the mask.  The default bounds the ratio to [0, 1) (same
ordering): the plain ratio explodes when the map is ~0 outside the mask — exactly the state of
a shortcut model — and its gradient then swamps the cross-entropy (measured, symbols, 64 px:
the ratio form brought clean accuracy to 0.18 at lambda 10 (5 epochs), and on the contrast
map to 0.52 / 0.12 at lambda 1 / 3 (10 epochs); the share form at lambda 10 kept 0.98-1.0).  Channels the true class does
not weigh are not penalized.  The gradient reaches both the activations and the head's
weights.  It needs the layer to be the one a GAP + linear head pools (otherwise there is no
CAM).  Images with an empty mask are left out of the mean (0 if the batch has none).

A blind spot, measured (64 px, lambda 10, 10 epochs): ``ReLU`` keeps only the *positive*
evidence for the true class, so the model can keep using the artefact as evidence *against*
the other classes — on x-rays the CAM's mass on the artefact went from 0.37 to 0.0 while
accuracy with a swapped artefact stayed 0.0 (symbols: 0.08).
``contrast=True`` penalizes the class-contrast map instead, ``V[:, y] = W[:, y] -
mean_{c != y} W[:, c]`` (the class's lead over the others, what
:func:`~cnnvis_eval.remedy.detect.filter_analysis` ranks contributions by), which counts
both: the ``"pasa_contrast"`` remedy.

**RRR** (Right for the Right Reasons, Ross et al. 2017, eq. 1)::

    P_RRR = mean_n  sum_{h,w,c} ( M[n,h,w] * d/dx[n,h,w,c] sum_k log softmax(f(x_n))_k )^2

the squared input gradient of the summed log-probabilities on the irrelevant pixels.  Ross et
al. sum over the batch; the mean over images keeps lambda independent of the batch size.
The gradient is taken with respect to the model's input as given (e.g. pixels in [0, 1]),
so it needs a second-order gradient for training: inside ``tf.function``.
"""

from __future__ import annotations

import tensorflow as tf

#: default eps of the share denominators (activations and CAM values are O(0.1-10))
EPS = 1e-6


def pas_penalty(a, m, eps: float = EPS):
    """PAS: mean share of the activation on the mask (see the module docstring).

    Parameters
    ----------
    a : float tensor (N, h, w, K)
        Activations of the analysed layer (rectified here).
    m : float tensor (N, h, w)
        Downsampled masks in [0, 1].

    Returns
    -------
    scalar float32 tensor in [0, 1]
    """
    a = tf.nn.relu(tf.cast(a, tf.float32))
    m = tf.cast(m, tf.float32)
    inside = tf.reduce_sum(a * m[..., None], axis=(1, 2, 3))
    total = tf.reduce_sum(a, axis=(1, 2, 3))
    return tf.reduce_mean(inside / (total + eps))


def class_maps(a, weights, y, contrast: bool = False):
    """``ReLU(sum_k V[k, y_n] ReLU(A_n)_k)``: the CAM of each image's class, float32 (N, h, w).

    ``weights`` float (K, classes); ``y`` int (N,).  ``V = W``, or with ``contrast``
    ``V[:, c] = W[:, c] - mean_{c' != c} W[:, c']`` (the class's lead over the others)."""
    a = tf.nn.relu(tf.cast(a, tf.float32))
    w = tf.cast(weights, tf.float32)
    if contrast:
        k = tf.cast(tf.shape(w)[1], tf.float32)
        w = w - (tf.reduce_sum(w, axis=1, keepdims=True) - w) / tf.maximum(k - 1.0, 1.0)
    w = tf.gather(w, tf.cast(y, tf.int32), axis=1)  # (K, N)
    return tf.nn.relu(tf.einsum("nhwk,kn->nhw", a, w))


def pasa_penalty(a, m, weights, y, eps: float = EPS, contrast: bool = False, form: str = "share"):
    """PASA: mean ratio of the true class's CAM inside / outside the mask (module docstring).

    Parameters
    ----------
    a : float tensor (N, h, w, K)
    m : float tensor (N, h, w) in [0, 1]
    weights : float tensor (K, classes)
        The CAM weights (the linear head's kernel).
    y : int tensor (N,)
        True classes.
    contrast : bool
        Use the class-contrast map (:func:`class_maps`) instead of the CAM.
    form : {"share", "ratio"}
        ``mean_in / (mean_in + mean_out + eps)`` or ``mean_in / (mean_out + eps)``.

    Returns
    -------
    scalar float32 tensor >= 0 (< 1 for ``form="share"``)
    """
    cam = class_maps(a, weights, y, contrast)
    m = tf.cast(m, tf.float32)
    area_in = tf.reduce_sum(m, axis=(1, 2))
    area_out = tf.reduce_sum(1.0 - m, axis=(1, 2))
    mean_in = tf.reduce_sum(cam * m, axis=(1, 2)) / tf.maximum(area_in, 1e-12)
    mean_out = tf.reduce_sum(cam * (1.0 - m), axis=(1, 2)) / tf.maximum(area_out, 1e-12)
    some = tf.cast(area_in > 0, tf.float32)
    if form == "ratio":
        ratio = mean_in / (mean_out + eps) * some
    elif form == "share":
        ratio = mean_in / (mean_in + mean_out + eps) * some
    else:
        raise ValueError(f"form must be 'share' or 'ratio', got {form!r}")
    return tf.reduce_sum(ratio) / tf.maximum(tf.reduce_sum(some), 1.0)


def rrr_penalty(forward, x, masks):
    """RRR: mean over images of the squared input gradient of ``sum_k log p_k`` on the mask.

    Parameters
    ----------
    forward : callable
        ``x -> logits`` (N, classes), differentiable (called under a tape here).
    x : float tensor (N, H, W, C)
    masks : float tensor (N, H, W) in {0, 1}
        At input resolution.

    Returns
    -------
    (penalty, logits): scalar float32 tensor >= 0 and the logits of the same pass
    """
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = forward(x)
        s = tf.reduce_sum(tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1))
    g = tape.gradient(s, x)
    g = g * tf.cast(masks, tf.float32)[..., None]
    return tf.reduce_mean(tf.reduce_sum(tf.square(g), axis=(1, 2, 3))), logits


__all__ = ["EPS", "class_maps", "pas_penalty", "pasa_penalty", "rrr_penalty"]
