"""Tiny hand-set float64 Keras networks for the relevance tests, each with its NumPy twin.

``NETS[name](bias=True, seed=0) -> (model, ref)``: the Keras model and the matching
:class:`~suites.support.lrp_ref.RefNet`, built from the same NumPy weights.  The twins are
written layer by layer from the weights (convolutions as explicit matrices, BatchNorm
composed into the matrix before it, zero-padding and cropping composed into the next
layer), never from the Keras model.

=========  =================================================================================
dense      Flatten -> Dense(6, relu) -> Dense(5, relu) -> Dense(4)
conv       the shared tiny CNN: Conv(relu) -> Conv -> ReLU(6) -> MaxPool -> Flatten -> Dense
residual   Conv(stride 2, relu) -> [Conv -> BN] + Conv 1x1 -> Add -> ReLU -> [identity + Conv]
           -> Add -> ReLU -> GlobalAveragePooling -> Dense
concat     [Conv(relu), Conv 1x1(relu)] -> Concatenate -> MaxPool -> Conv(valid, relu)
           -> AveragePooling -> Flatten -> Dense
bn         ZeroPadding -> Conv(stride 2, valid) -> BN -> ReLU -> DepthwiseConv -> BN -> ReLU(6)
           -> SeparableConv -> BN -> Activation(relu) -> BN (alone) -> Conv 1x1 -> Cropping
           -> GlobalAveragePooling -> Dense
=========  =================================================================================
"""

from __future__ import annotations

import keras
import numpy as np

from . import lrp_ref as ref
from . import tiny

L = keras.layers
DT = "float64"


def _rng(seed):
    return np.random.default_rng(seed)


def _bias(rng, n, scale, bias):
    """``bias``: True (normal), False (zeros) or "negative" (minus the absolute value)."""
    b = rng.normal(0, scale, n)
    if bias == "negative":
        return -np.abs(b)
    return b if bias else np.zeros(n)


def _bn_params(rng, c, negative_gamma=False, bias=True):
    """BatchNorm statistics; ``bias`` False / "negative" makes the folded bias 0 / <= 0."""
    gamma = rng.uniform(0.5, 1.5, c)
    if negative_gamma:
        gamma[0] = -gamma[0]
    p = dict(gamma=gamma, beta=rng.normal(0, 0.2, c), mean=rng.normal(0, 0.3, c),
             var=rng.uniform(0.5, 2.0, c), eps=1e-3)
    if bias is not True:
        s = p["gamma"] / np.sqrt(p["var"] + p["eps"])
        p["beta"] = p["mean"] * s - (np.abs(p["beta"]) if bias == "negative" else 0.0)
    return p


def _bn_layer(name, p):
    return L.BatchNormalization(name=name, epsilon=p["eps"], dtype=DT)


def _set_bn(layer, p):
    layer.set_weights([p["gamma"], p["beta"], p["mean"], p["var"]])


def _bn_affine(p):
    s = p["gamma"] / np.sqrt(p["var"] + p["eps"])
    return s, p["beta"] - p["mean"] * s


def _fold(m, b, out_shape, p):
    """Compose a BatchNorm (per channel) into a matrix and bias over flattened outputs."""
    s, t = _bn_affine(p)
    reps = int(np.prod(out_shape[:-1]))
    s_full, t_full = np.tile(s, reps), np.tile(t, reps)
    b_full = np.zeros(m.shape[1]) if b is None else np.tile(b, reps)
    return m * s_full, b_full * s_full + t_full


def _tile_bias(b, out_shape):
    return np.tile(b, int(np.prod(out_shape[:-1])))


# ---------------------------------------------------------------------- nets
def dense_net(bias: bool = True, seed: int = 0):
    r = _rng(seed)
    w = {"w1": r.normal(0, 0.5, (18, 6)), "b1": _bias(r, 6, 0.2, bias),
         "w2": r.normal(0, 0.5, (6, 5)), "b2": _bias(r, 5, 0.2, bias),
         "w3": r.normal(0, 0.5, (5, 4)), "b3": _bias(r, 4, 0.2, bias)}
    inp = keras.Input((3, 3, 2), dtype=DT)
    d1 = L.Dense(6, activation="relu", name="d1", dtype=DT)
    d2 = L.Dense(5, activation="relu", name="d2", dtype=DT)
    d3 = L.Dense(4, name="out", dtype=DT)
    model = keras.Model(inp, d3(d2(d1(L.Flatten(name="flat", dtype=DT)(inp)))), name="dense_net")
    d1.set_weights([w["w1"], w["b1"]]); d2.set_weights([w["w2"], w["b2"]]); d3.set_weights([w["w3"], w["b3"]])
    net = ref.RefNet((3, 3, 2))
    net.linear("d1", "x", w["w1"], w["b1"], (6,), act="relu")
    net.linear("d2", "d1", w["w2"], w["b2"], (5,), act="relu")
    net.linear("out", "d2", w["w3"], w["b3"], (4,))
    return model, net


def conv_net(bias: bool = True, seed: int = 0):
    w = tiny.tiny_weights(seed)
    if bias is not True:
        w = {k: ((-np.abs(v) if bias == "negative" else np.zeros_like(v)) if k.startswith("b") else v)
             for k, v in w.items()}
    model = tiny.tiny_cnn(w)
    net = ref.RefNet((6, 6, 2))
    m1, s1 = ref.conv_matrix(w["w1"], (6, 6, 2))
    net.linear("conv1", "x", m1, _tile_bias(w["b1"], s1), s1, act="relu")
    m2, s2 = ref.conv_matrix(w["w2"], s1)
    net.linear("conv2", "conv1", m2, _tile_bias(w["b2"], s2), s2)
    net.relu("relu6", "conv2", max_value=6.0)
    net.maxpool("pool", "relu6", 2)
    net.linear("dense", "pool", w["w3"], w["b3"], (3,))
    return model, net


def residual_net(bias: bool = True, seed: int = 0):
    r = _rng(seed)
    w = {"w1": r.normal(0, 0.5, (3, 3, 2, 4)), "b1": _bias(r, 4, 0.1, bias),
         "w2": r.normal(0, 0.4, (3, 3, 4, 4)), "b2": _bias(r, 4, 0.1, bias),
         "ws": r.normal(0, 0.5, (1, 1, 4, 4)), "bs": _bias(r, 4, 0.1, bias),
         "w3": r.normal(0, 0.4, (3, 3, 4, 4)), "b3": _bias(r, 4, 0.1, bias),
         "wd": r.normal(0, 0.5, (4, 3)), "bd": _bias(r, 3, 0.1, bias)}
    bn = _bn_params(r, 4, bias=bias)
    inp = keras.Input((6, 6, 2), dtype=DT)
    c1 = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1", dtype=DT)
    c2 = L.Conv2D(4, 3, padding="same", name="c2", dtype=DT)
    bn2 = _bn_layer("bn2", bn)
    sc = L.Conv2D(4, 1, name="sc", dtype=DT)
    c3 = L.Conv2D(4, 3, padding="same", name="c3", dtype=DT)
    dense = L.Dense(3, name="out", dtype=DT)
    a1 = c1(inp)
    y1 = L.ReLU(name="r1", dtype=DT)(L.Add(name="add1", dtype=DT)([bn2(c2(a1)), sc(a1)]))
    y2 = L.ReLU(name="r2", dtype=DT)(L.Add(name="add2", dtype=DT)([y1, c3(y1)]))
    model = keras.Model(inp, dense(L.GlobalAveragePooling2D(name="gap", dtype=DT)(y2)), name="residual_net")
    c1.set_weights([w["w1"], w["b1"]]); c2.set_weights([w["w2"], w["b2"]]); sc.set_weights([w["ws"], w["bs"]])
    c3.set_weights([w["w3"], w["b3"]]); dense.set_weights([w["wd"], w["bd"]]); _set_bn(bn2, bn)

    net = ref.RefNet((6, 6, 2))
    m1, s1 = ref.conv_matrix(w["w1"], (6, 6, 2), strides=2, padding="same")
    net.linear("c1", "x", m1, _tile_bias(w["b1"], s1), s1, act="relu")
    m2, s2 = ref.conv_matrix(w["w2"], s1)
    m2f, b2f = _fold(m2, w["b2"], s2, bn)
    net.linear("c2", "c1", m2f, b2f, s2)
    ms, ss = ref.conv_matrix(w["ws"], s1)
    net.linear("sc", "c1", ms, _tile_bias(w["bs"], ss), ss)
    net.add("add1", ["c2", "sc"])
    net.relu("r1", "add1")
    m3, s3 = ref.conv_matrix(w["w3"], s1)
    net.linear("c3", "r1", m3, _tile_bias(w["b3"], s3), s3)
    net.add("add2", ["r1", "c3"])
    net.relu("r2", "add2")
    mg, sg = ref.gap_matrix(s3)
    net.linear("gap", "r2", mg, None, sg)
    net.linear("out", "gap", w["wd"], w["bd"], (3,))
    return model, net


def concat_net(bias: bool = True, seed: int = 0):
    r = _rng(seed)
    w = {"wa": r.normal(0, 0.5, (3, 3, 2, 3)), "ba": _bias(r, 3, 0.1, bias),
         "wb": r.normal(0, 0.5, (1, 1, 2, 2)), "bb": _bias(r, 2, 0.1, bias),
         "wc": r.normal(0, 0.4, (2, 2, 5, 4)), "bc": _bias(r, 4, 0.1, bias),
         "wd": r.normal(0, 0.5, (4, 3)), "bd": _bias(r, 3, 0.1, bias)}
    inp = keras.Input((6, 6, 2), dtype=DT)
    ca = L.Conv2D(3, 3, padding="same", activation="relu", name="a", dtype=DT)
    cb = L.Conv2D(2, 1, activation="relu", name="b", dtype=DT)
    cc = L.Conv2D(4, 2, padding="valid", activation="relu", name="c", dtype=DT)
    dense = L.Dense(3, name="out", dtype=DT)
    cat = L.Concatenate(name="cat", dtype=DT)([ca(inp), cb(inp)])
    y = cc(L.MaxPooling2D(2, name="mp", dtype=DT)(cat))
    y = L.Flatten(name="flat", dtype=DT)(L.AveragePooling2D(2, name="ap", dtype=DT)(y))
    model = keras.Model(inp, dense(y), name="concat_net")
    ca.set_weights([w["wa"], w["ba"]]); cb.set_weights([w["wb"], w["bb"]])
    cc.set_weights([w["wc"], w["bc"]]); dense.set_weights([w["wd"], w["bd"]])

    net = ref.RefNet((6, 6, 2))
    ma, sa = ref.conv_matrix(w["wa"], (6, 6, 2))
    net.linear("a", "x", ma, _tile_bias(w["ba"], sa), sa, act="relu")
    mb, sb = ref.conv_matrix(w["wb"], (6, 6, 2))
    net.linear("b", "x", mb, _tile_bias(w["bb"], sb), sb, act="relu")
    net.concat("cat", ["a", "b"])
    net.maxpool("mp", "cat", 2)
    mc, sc_ = ref.conv_matrix(w["wc"], net.shapes["mp"], padding="valid")
    net.linear("c", "mp", mc, _tile_bias(w["bc"], sc_), sc_, act="relu")
    mp_, sp = ref.avgpool_matrix(sc_, 2)
    net.linear("ap", "c", mp_, None, sp)
    net.linear("out", "ap", w["wd"], w["bd"], (3,))
    return model, net


def bn_net(bias: bool = True, seed: int = 0):
    r = _rng(seed)
    w = {"w1": r.normal(0, 0.5, (3, 3, 2, 4)), "b1": _bias(r, 4, 0.1, bias),
         "wdw": r.normal(0, 0.5, (3, 3, 4, 1)), "bdw": _bias(r, 4, 0.1, bias),
         "wsd": r.normal(0, 0.5, (3, 3, 4, 1)), "wsp": r.normal(0, 0.5, (1, 1, 4, 5)),
         "bsep": _bias(r, 5, 0.1, bias),
         "wl": r.normal(0, 0.5, (1, 1, 5, 3)), "bl": _bias(r, 3, 0.1, bias),
         "wd": r.normal(0, 0.5, (3, 3)), "bd": _bias(r, 3, 0.1, bias)}
    bns = {k: _bn_params(r, c, negative_gamma=(k == "bnl"), bias=bias) for k, c in
           [("bn1", 4), ("bndw", 4), ("bnsep", 5), ("bnl", 5)]}
    inp = keras.Input((7, 7, 2), dtype=DT)
    c1 = L.Conv2D(4, 3, strides=2, padding="valid", name="c1", dtype=DT)
    dw = L.DepthwiseConv2D(3, padding="same", name="dw", dtype=DT)
    sep = L.SeparableConv2D(5, 3, padding="same", name="sep", dtype=DT)
    lin = L.Conv2D(3, 1, name="lin", dtype=DT)
    dense = L.Dense(3, name="out", dtype=DT)
    bl = {k: _bn_layer(k, p) for k, p in bns.items()}
    y = c1(L.ZeroPadding2D(1, name="pad", dtype=DT)(inp))
    y = L.ReLU(name="r1", dtype=DT)(bl["bn1"](y))
    y = L.ReLU(max_value=6.0, name="r6", dtype=DT)(bl["bndw"](dw(y)))
    y = L.Activation("relu", name="r2", dtype=DT)(bl["bnsep"](sep(y)))
    y = lin(bl["bnl"](y))
    y = L.GlobalAveragePooling2D(name="gap", dtype=DT)(L.Cropping2D(1, name="crop", dtype=DT)(y))
    model = keras.Model(inp, dense(y), name="bn_net")
    c1.set_weights([w["w1"], w["b1"]]); dw.set_weights([w["wdw"], w["bdw"]])
    sep.set_weights([w["wsd"], w["wsp"], w["bsep"]]); lin.set_weights([w["wl"], w["bl"]])
    dense.set_weights([w["wd"], w["bd"]])
    for k, p in bns.items():
        _set_bn(bl[k], p)

    net = ref.RefNet((7, 7, 2))
    mpad, spad = ref.pad_matrix((7, 7, 2), ((1, 1), (1, 1)))
    m1, s1 = ref.conv_matrix(w["w1"], spad, strides=2, padding="valid")
    m1f, b1f = _fold(mpad @ m1, w["b1"], s1, bns["bn1"])
    net.linear("c1", "x", m1f, b1f, s1)
    net.relu("r1", "c1")
    mdw, sdw = ref.conv_matrix(w["wdw"], s1, depthwise=True)
    mdwf, bdwf = _fold(mdw, w["bdw"], sdw, bns["bndw"])
    net.linear("dw", "r1", mdwf, bdwf, sdw)
    net.relu("r6", "dw", max_value=6.0)
    msd, ssd = ref.conv_matrix(w["wsd"], sdw, depthwise=True)
    msp, ssp = ref.conv_matrix(w["wsp"], ssd)
    msf, bsf = _fold(msd @ msp, w["bsep"], ssp, bns["bnsep"])
    net.linear("sep", "r6", msf, bsf, ssp)
    net.relu("r2", "sep")
    s_l, t_l = _bn_affine(bns["bnl"])
    net.scale("bnl", "r2", s_l, t_l)
    ml, sl = ref.conv_matrix(w["wl"], ssp)
    net.linear("lin", "bnl", ml, _tile_bias(w["bl"], sl), sl)
    mcrop, scrop = ref.crop_matrix(sl, ((1, 1), (1, 1)))
    mg, sg = ref.gap_matrix(scrop)
    net.linear("gap", "lin", mcrop @ mg, None, sg)
    net.linear("out", "gap", w["wd"], w["bd"], (3,))
    return model, net


NETS = {"dense": dense_net, "conv": conv_net, "residual": residual_net, "concat": concat_net, "bn": bn_net}


def net_input(model, n: int = 3, seed: int = 1, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Uniform float64 inputs in [low, high] for a tiny net."""
    shape = (n,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).uniform(low, high, shape)
