"""Independent NumPy float64 Excitation Backprop (imports nothing from cnnvis_eval).

Written from the formulas of Zhang et al., "Top-down Neural Attention by Excitation
Backprop" (ECCV 2016 / IJCV 2018), on a :class:`~suites.support.lrp_ref.RefNet` (its
forward values and layer matrices only; none of its relevance code):

* a linear layer (dense, convolution, average pooling as a matrix ``M`` (in, out)):
  ``P(a_i | a_j) = Z_j a_i M+_ij`` with ``Z_j = 1 / sum_i a_i M+_ij``, and
  ``P(a_i) = sum_j P(a_i | a_j) P(a_j)``, the conditional table built explicitly;
* max pooling: the winner of each window takes its parent's probability;
* a rectifier is the same unit: probability passes unchanged;
* concatenation: each part keeps its units' probabilities.

The prior is the one-hot vector of the class.  The dual unit of c-MWP has the negated
weights of the top layer.  A parent with probability but no excitatory input (``Z_j``
undefined) is an error here: the tests' nets avoid it, so no convention is compared.
"""

from __future__ import annotations

import numpy as np


def _conditional(a, m):
    """P(a_i | a_j) as (N, in, out) for inputs a (N, in) >= 0 and weights m (in, out)."""
    assert (a >= 0).all(), "MWP needs non-negative activations"
    e = a[:, :, None] * np.maximum(m, 0.0)[None]  # a_i w_ij+
    z = e.sum(1, keepdims=True)
    return e, z


def mwp(refnet, x, cls, stop="x", top_weights_sign=1.0):
    """Marginal winning probability of every unit at tensor ``stop`` (N, size).

    Parameters
    ----------
    refnet : RefNet
    x : (N, H, W, C) input, >= 0
    cls : (N,) int, the class per image
    stop : str
        Node name (or "x") whose MWP is returned.
    top_weights_sign : float
        -1 gives the dual unit (negated weights of the last layer).
    """
    v = refnet.forward(x)
    last = refnet.nodes[-1]
    n = len(x)
    p = {last["name"]: np.eye(last["m"].shape[1])[np.asarray(cls)]}
    for nd in reversed(refnet.nodes):
        name = nd["name"]
        if name == stop:
            break
        if name not in p:
            continue
        pj = p.pop(name)
        src = nd["src"]
        if nd["kind"] == "linear":
            m = nd["m"] * (top_weights_sign if nd is last else 1.0)
            e, z = _conditional(v[src[0]], m)
            live = pj != 0
            assert (z[:, 0][live] > 0).all(), f"{name}: a winning parent without excitatory input"
            cond = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
            outs = [np.einsum("nij,nj->ni", cond, pj)]
        elif nd["kind"] == "relu":
            outs = [pj]
        elif nd["kind"] == "maxpool":
            a = v[src[0]]
            win = nd["win"]
            pin = np.zeros_like(a)
            for i in range(n):
                winner = win[np.arange(len(win)), a[i][win].argmax(-1)]
                np.add.at(pin[i], winner, pj[i])
            outs = [pin]
        elif nd["kind"] == "concat":
            chans = nd["channels"]
            parts = np.split(pj.reshape(n, -1, sum(chans)), np.cumsum(chans)[:-1], axis=-1)
            outs = [q.reshape(n, -1) for q in parts]
        else:
            raise ValueError(f"mwp reference has no rule for {nd['kind']}")
        for s, q in zip(src, outs):
            p[s] = p[s] + q if s in p else q
    return p[stop]


def contrastive_mwp(refnet, x, cls, stop):
    """c-MWP map at ``stop``: MWP(target) - MWP(dual), summed over channels, truncated at 0.

    Returns (N, h, w)."""
    shape = refnet.shapes[stop]
    diff = mwp(refnet, x, cls, stop) - mwp(refnet, x, cls, stop, top_weights_sign=-1.0)
    return np.maximum(diff.reshape((len(x),) + shape).sum(-1), 0.0)
