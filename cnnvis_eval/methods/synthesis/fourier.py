"""The decorrelated Fourier image parameterization of feature visualization (Olah,
Mordvintsev & Schubert, "Feature Visualization", Distill 2017), with Lucid's formulas
(``lucid/optvis/param/spatial.py`` ``rfft2d_freqs``/``fft_image`` and
``lucid/optvis/param/color.py`` ``to_valid_rgb``).

The optimized parameter is a complex spectrum ``S`` (stored as real and imaginary parts,
``(2, N, C, H, W // 2 + 1)``).  The image is

``t = irfft2d(S * scale) / 4``,  ``scale = sqrt(H W) / max(f, 1 / max(H, W)) ** decay_power``

with ``f = sqrt(fx^2 + fy^2)`` the frequency (cycles per pixel, ``numpy.fft.fftfreq``) of each
rfft2d bin, so white noise in ``S`` gives an image whose power spectrum falls as
``1 / f ** (2 decay_power)`` (Lucid: decay 1, natural images' 1/f^2).  Colours: ``t``'s
channels are read as decorrelated colours and mixed by Lucid's square root of ImageNet's colour
correlation ``C`` (normalized by its largest column norm): ``rgb = sigmoid(t @ C_n^T)``, in
(0, 1).  White ``t`` thus gives colours with covariance ``C_n C_n^T`` before the sigmoid.

Deviation from Lucid: for an odd width Lucid keeps one extra frequency column and crops one
pixel; we use ``irfft2d`` with ``fft_length = (H, W)`` (the exact inverse of ``rfft2d``), so
the map is invertible (:func:`spectrum_of`) for every size.

NumPy helpers here are float64; :func:`fft_image_tf` and :func:`to_valid_rgb_tf` are the
TensorFlow forward maps used inside the compiled step.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

#: Lucid's square root of the ImageNet colour correlation matrix (RGB).
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]])


def color_matrix() -> np.ndarray:
    """``C_n``: Lucid's colour matrix divided by its largest column norm, (3, 3) float64."""
    c = COLOR_CORRELATION_SVD_SQRT
    return c / np.max(np.linalg.norm(c, axis=0))


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each ``rfft2d`` bin of an (h, w) image: (h, w // 2 + 1) float64,
    ``sqrt(fy^2 + fx^2)`` in cycles per pixel (``numpy.fft.fftfreq``)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Lucid's spectrum scale ``sqrt(h w) / max(f, 1 / max(h, w)) ** decay_power``,
    (h, w // 2 + 1) float64."""
    freqs = rfft2d_freqs(h, w)
    return np.sqrt(w * h) / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power


def fft_image_tf(spectrum, scale, h: int, w: int):
    """Spectrum ``(2, N, C, h, w // 2 + 1)`` (real, imaginary) and scale ``(h, w // 2 + 1)``
    -> the image before colour mixing, ``(N, h, w, C)``: ``irfft2d(S * scale) / 4``."""
    dt = spectrum.dtype
    cdt = tf.complex128 if dt == tf.float64 else tf.complex64
    s = tf.complex(spectrum[0] * scale, spectrum[1] * scale)
    img = tf.signal.irfft2d(tf.cast(s, cdt), fft_length=[h, w])
    return tf.transpose(img, (0, 2, 3, 1)) / tf.constant(4.0, dt)


def to_valid_rgb_tf(t, cmat, decorrelate: bool):
    """``t`` (N, H, W, C) -> ``sigmoid(t @ cmat^T)`` (or ``sigmoid(t)``), values in (0, 1)."""
    if decorrelate:
        t = tf.einsum("nhwc,dc->nhwd", t, cmat)
    return tf.nn.sigmoid(t)


# ---------------------------------------------------------------------- NumPy (float64)
def fft_image(spectrum, h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """NumPy float64 twin of :func:`fft_image_tf`: (2, N, C, h, w // 2 + 1) -> (N, h, w, C)."""
    spectrum = np.asarray(spectrum, np.float64)
    s = (spectrum[0] + 1j * spectrum[1]) * spectrum_scale(h, w, decay_power)
    return np.transpose(np.fft.irfft2(s, s=(h, w)), (0, 2, 3, 1)) / 4.0


def spectrum_of(t, decay_power: float = 1.0) -> np.ndarray:
    """Inverse of the spectral map: the spectrum whose :func:`fft_image` is ``t``.

    ``t`` (N, h, w, C) real -> (2, N, C, h, w // 2 + 1) float64."""
    t = np.asarray(t, np.float64)
    h, w = t.shape[1:3]
    s = np.fft.rfft2(4.0 * np.transpose(t, (0, 3, 1, 2))) / spectrum_scale(h, w, decay_power)
    return np.stack([s.real, s.imag])


def logits_of_rgb(rgb, decorrelate: bool, eps: float = 1e-4) -> np.ndarray:
    """Inverse of the colour map: ``t`` with ``sigmoid(t @ C_n^T) = rgb`` (rgb clipped to
    [eps, 1 - eps] first); (N, H, W, C) float64."""
    rgb = np.clip(np.asarray(rgb, np.float64), eps, 1 - eps)
    z = np.log(rgb) - np.log1p(-rgb)
    if decorrelate:
        z = np.linalg.solve(color_matrix(), z.reshape(-1, 3).T).T.reshape(z.shape)
    return z


__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "color_matrix",
    "fft_image",
    "fft_image_tf",
    "logits_of_rgb",
    "rfft2d_freqs",
    "spectrum_of",
    "spectrum_scale",
    "to_valid_rgb_tf",
]
