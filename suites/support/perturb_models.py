"""Hand-set models and NumPy references for the perturbation and synthesis tests.

Nothing here imports cnnvis_eval (docs/architecture.md, rule 5): the references are independent
re-computations with plain loops.
"""

from __future__ import annotations

import keras
import numpy as np

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def region_model(size: int = 32, region=(4, 16, 4, 16), dtype: str = "float32") -> keras.Model:
    """A model whose logit 0 depends only on the texture inside one image region.

    x (size, size, 3) -> Conv2D "texture" (2 filters: +/- Laplacian of the channel sum,
    ReLU, so the two channels together are |Laplacian|) -> Cropping2D "region" to rows
    ``region[0]:region[1]``, cols ``region[2]:region[3]`` -> GlobalAveragePooling ->
    Dense "logits" (2): logit 0 = mean |Laplacian| in the region (times 10), logit 1 = its
    negative.  Flat superpixels (LIME's mean colour) and faded pixels (RISE) lower logit 0
    exactly when they fall inside the region.
    """
    r0, r1, c0, c1 = region
    k = np.zeros((3, 3, 3, 2))
    for c in range(3):
        k[:, :, c, 0] = LAPLACIAN
        k[:, :, c, 1] = -LAPLACIAN
    inp = keras.Input((size, size, 3), dtype=dtype, name="image")
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="texture", dtype=dtype)
    crop = keras.layers.Cropping2D(((r0, size - r1), (c0, size - c1)), name="region", dtype=dtype)
    gap = keras.layers.GlobalAveragePooling2D(name="gap", dtype=dtype)
    dense = keras.layers.Dense(2, name="logits", dtype=dtype)
    model = keras.Model(inp, dense(gap(crop(conv(inp)))), name="region_model")
    conv.set_weights([k, np.zeros(2)])
    dense.set_weights([np.array([[10.0, -10.0], [10.0, -10.0]]), np.zeros(2)])
    return model


def textured_image(size: int = 32, seed: int = 0, tile: int = 8) -> np.ndarray:
    """(1, size, size, 3) float32 image in [-1, 1]: flat coloured tiles of ``tile`` px with a
    fine random texture on top (so superpixels follow the tiles and every tile has texture)."""
    rng = np.random.default_rng(seed)
    n = -(-size // tile)
    colours = rng.uniform(-0.6, 0.6, (n, n, 3))
    img = np.repeat(np.repeat(colours, tile, 0), tile, 1)[:size, :size]
    img = img + rng.uniform(-0.3, 0.3, (size, size, 1))
    return np.clip(img, -1, 1)[None].astype(np.float32)


REGION_CASE_SIZE = 40
REGION_CASE = (8, 32, 8, 32)  # rows 8:32, cols 8:32 = 3 x 3 of the 8-px tiles


def region_case(size: int = REGION_CASE_SIZE, region=REGION_CASE):
    """``(model, x, inside)``: :func:`region_model` reading ``region``, two textured images
    (size, size, 3) and the region's (size, size) bool mask -- the perturbation methods'
    end-to-end case (the region must hold their maxima)."""
    model = region_model(size, region)
    inside = np.zeros((size, size), bool)
    inside[region[0]:region[1], region[2]:region[3]] = True
    x = np.concatenate([textured_image(size, seed=0), textured_image(size, seed=1)])
    return model, x, inside


def linear_model(size: int = 12, channels: int = 2, classes: int = 3, seed: int = 0,
                 dtype: str = "float64") -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """logits = flatten(x) @ W + b; returns (model, W (size, size, channels, classes), b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (size, size, channels, classes))
    b = rng.normal(0, 1, classes)
    inp = keras.Input((size, size, channels), dtype=dtype, name="image")
    dense = keras.layers.Dense(classes, name="logits", dtype=dtype)
    model = keras.Model(inp, dense(keras.layers.Flatten(dtype=dtype)(inp)), name="linear")
    dense.set_weights([w.reshape(-1, classes), b])
    return model, w, b


def occlusion_reference(x, w, b, cls: int, window, stride, baseline: float) -> np.ndarray:
    """Occlusion map of the linear model by brute force: for every window position (a last
    position flush with the border added when the stride misses it) evaluate the occluded
    logit, credit the drop to the window's pixels, average per pixel.  x (H, W, C)."""
    h, wd, _ = x.shape
    (wh, ww), (sh, sw) = window, stride

    def starts(n, k, s):
        out = list(range(0, n - k + 1, s))
        if out[-1] != n - k:
            out.append(n - k)
        return out

    def logit(img):
        return float(np.sum(img * w[..., cls]) + b[cls])

    f0 = logit(x)
    total = np.zeros((h, wd))
    count = np.zeros((h, wd))
    for y0 in starts(h, wh, sh):
        for x0 in starts(wd, ww, sw):
            occ = x.copy()
            occ[y0:y0 + wh, x0:x0 + ww, :] = baseline
            total[y0:y0 + wh, x0:x0 + ww] += f0 - logit(occ)
            count[y0:y0 + wh, x0:x0 + ww] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)  # uncovered: 0


def rise_masks_reference(grids, shifts, size) -> np.ndarray:
    """Petsiuk et al.'s mask generator: each binary grid upsampled with
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` to
    ``(s + 1) * cell`` pixels and cropped at its shift.  grids (N, s, s), shifts (N, 2)."""
    from skimage.transform import resize

    h, w = size
    s = grids.shape[1]
    ch, cw = -(-h // s), -(-w // s)
    out = np.empty((len(grids), h, w))
    for i, (g, (dy, dx)) in enumerate(zip(grids, shifts)):
        up = resize(g.astype(np.float64), ((s + 1) * ch, (s + 1) * cw), order=1,
                    mode="reflect", anti_aliasing=False)
        out[i] = up[dy:dy + h, dx:dx + w]
    return out


def tv_numpy(u: np.ndarray, beta: float = 2.0, scale: float = 1.0) -> float:
    """Total variation with exponent beta of one image u (H, W, C), by explicit loops over
    the pixels with a right and a lower neighbour (mean over them)."""
    h, w, _ = u.shape
    vals = []
    for i in range(h - 1):
        for j in range(w - 1):
            d = np.sum((u[i, j + 1] - u[i, j]) ** 2) + np.sum((u[i + 1, j] - u[i, j]) ** 2)
            vals.append((d / scale**2) ** (beta / 2))
    return float(np.mean(vals))


def small_cnn(size: int = 32, seed: int = 0, classes: int = 5) -> keras.Model:
    """A small random-weight ReLU CNN (He init, seeded): conv8-conv16-pool-conv32-GAP-dense."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1",
                            kernel_initializer="he_normal")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2",
                            kernel_initializer="he_normal")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3",
                            kernel_initializer="he_normal")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inp, out, name="small_cnn")


def centre_model(size: int = 48, centre: int = 16, dtype: str = "float32") -> keras.Model:
    """A model that reads only the central ``centre x centre`` pixels of the image.

    x (size, size, 3) -> Cropping2D "centre" -> Conv2D 1x1 "bright" (identity, ReLU: the
    positive part of each channel) -> GlobalAveragePooling -> Dense "logits" (2): logit 0 =
    3 x the mean positive channel value in the centre, logit 1 = its negative.  Hiding a
    centre pixel with 0 (occlusion's and RISE's baseline) or grey lowers logit 0 wherever a
    channel is positive; nothing outside the centre matters.
    """
    m = (size - centre) // 2
    inp = keras.Input((size, size, 3), dtype=dtype, name="image")
    crop = keras.layers.Cropping2D(((m, size - centre - m), (m, size - centre - m)), name="centre", dtype=dtype)
    conv = keras.layers.Conv2D(3, 1, activation="relu", name="bright", dtype=dtype)
    gap = keras.layers.GlobalAveragePooling2D(name="gap", dtype=dtype)
    dense = keras.layers.Dense(2, name="logits", dtype=dtype)
    model = keras.Model(inp, dense(gap(conv(crop(inp)))), name="centre_model")
    conv.set_weights([np.eye(3)[None, None], np.zeros(3)])
    dense.set_weights([np.array([[1.0, -1.0]] * 3), np.zeros(2)])
    return model


def flat_tiles(size: int = 48, tile: int = 8, seed: int = 0) -> np.ndarray:
    """(1, size, size, 3) float32 image in [-0.9, 0.9] made of flat coloured ``tile`` px
    tiles (no texture: hiding a tile by its own mean colour changes nothing)."""
    rng = np.random.default_rng(seed)
    n = -(-size // tile)
    colours = rng.uniform(-0.9, 0.9, (n, n, 3))
    return np.repeat(np.repeat(colours, tile, 0), tile, 1)[None, :size, :size].astype(np.float32)


def tile_mlp(height: int = 8, width: int = 16, tile: int = 4, filters: int = 3, hidden: int = 6,
             classes: int = 2, seed: int = 0) -> tuple[keras.Model, dict]:
    """A nonlinear float64 model on ``tile`` px tiles: Conv2D "tiles" (``tile`` x ``tile``,
    stride ``tile``, ReLU: each output pixel reads one tile) -> Flatten -> Dense "hidden"
    (ReLU) -> Dense "logits".  Returns (model, weights) with the weights as NumPy arrays
    (``conv`` (t, t, 3, F), ``conv_b``, ``w1``, ``b1``, ``w2``, ``b2``) for
    :func:`tile_mlp_numpy`.  Hiding a tile changes only its own features, and the hidden
    layer mixes the tiles nonlinearly (so Shapley values are not the tile contributions of a
    linear model)."""
    rng = np.random.default_rng(seed)
    n = (height // tile) * (width // tile)
    w = {"conv": rng.normal(0, 0.5, (tile, tile, 3, filters)), "conv_b": rng.normal(0, 0.3, filters),
         "w1": rng.normal(0, 1.0, (n * filters, hidden)), "b1": rng.normal(0, 0.3, hidden),
         "w2": rng.normal(0, 1.0, (hidden, classes)), "b2": rng.normal(0, 0.3, classes)}
    inp = keras.Input((height, width, 3), dtype="float64", name="image")
    conv = keras.layers.Conv2D(filters, tile, strides=tile, activation="relu", name="tiles", dtype="float64")
    d1 = keras.layers.Dense(hidden, activation="relu", name="hidden", dtype="float64")
    d2 = keras.layers.Dense(classes, name="logits", dtype="float64")
    model = keras.Model(inp, d2(d1(keras.layers.Flatten(dtype="float64")(conv(inp)))), name="tile_mlp")
    conv.set_weights([w["conv"], w["conv_b"]])
    d1.set_weights([w["w1"], w["b1"]])
    d2.set_weights([w["w2"], w["b2"]])
    return model, w


def tile_mlp_numpy(x: np.ndarray, w: dict, tile: int) -> np.ndarray:
    """:func:`tile_mlp`'s logits for images x (N, H, W, 3), float64, by loops over the tiles
    (row-major, as Flatten orders them)."""
    n, h, wd, _ = x.shape
    feats = []
    for i in range(0, h, tile):
        for j in range(0, wd, tile):
            patch = x[:, i:i + tile, j:j + tile, :]
            feats.append(np.maximum(np.einsum("nabc,abcf->nf", patch, w["conv"]) + w["conv_b"], 0.0))
    f = np.stack(feats, axis=1).reshape(n, -1)  # (N, tiles * filters), tile-major
    hid = np.maximum(f @ w["w1"] + w["b1"], 0.0)
    return hid @ w["w2"] + w["b2"]


def tile_labels(height: int, width: int, tile: int) -> np.ndarray:
    """(H, W) labels of the ``tile`` px tiles, row-major 0..n-1."""
    return (np.arange(height)[:, None] // tile) * (width // tile) + np.arange(width)[None, :] // tile


def exact_shapley(v, m: int) -> np.ndarray:
    """Shapley values (m,) of the game ``v`` by brute force: ``v(z)`` for all 2^m coalitions
    ``z`` ((2^m, m) 0/1 array in, (2^m,) values out, one call), then
    ``phi_i = sum_{S not i} |S|! (m - |S| - 1)! / m! (v(S + i) - v(S))``, float64."""
    from math import factorial

    codes = np.arange(2 ** m)
    z = (codes[:, None] >> np.arange(m)[None, :]) & 1
    values = np.asarray(v(z), np.float64)
    size = z.sum(axis=1)
    weight = np.array([factorial(k) * factorial(m - k - 1) / factorial(m) for k in range(m)])
    phi = np.zeros(m)
    for i in range(m):
        without = codes[z[:, i] == 0]
        phi[i] = np.sum(weight[size[without]] * (values[without | (1 << i)] - values[without]))
    return phi


def tile_mlp_game(x: np.ndarray, hidden: np.ndarray, w: dict, tile: int, cls: int):
    """The coalition game of :func:`tile_mlp` on x (H, W, 3) with fill ``hidden`` (H, W, 3):
    ``v(z)`` (K, n_tiles) 0/1 -> (K,) logits of class ``cls``.  Each tile's features are
    computed once shown and once hidden (the tile convolution reads one tile), then mixed per
    coalition: cheap enough for all 2^16 coalitions."""
    on = tile_features(x, w, tile)  # (tiles, F)
    off = tile_features(hidden, w, tile)

    def v(z):
        z = np.asarray(z, np.float64)[:, :, None]
        f = (z * on[None] + (1 - z) * off[None]).reshape(len(z), -1)
        return (np.maximum(f @ w["w1"] + w["b1"], 0.0) @ w["w2"] + w["b2"])[:, cls]

    return v


def tile_features(x: np.ndarray, w: dict, tile: int) -> np.ndarray:
    """The ReLU tile features (n_tiles, F) of one image (H, W, 3), tiles row-major."""
    h, wd, _ = x.shape
    return np.stack([np.maximum(np.einsum("abc,abcf->f", x[i:i + tile, j:j + tile], w["conv"]) + w["conv_b"], 0.0)
                     for i in range(0, h, tile) for j in range(0, wd, tile)])
