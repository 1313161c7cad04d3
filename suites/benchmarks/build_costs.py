"""Build the cost table of ``cnnvis-eval plan`` (``cnnvis_eval/evaluation/costs.csv``).

    python -m suites.benchmarks.build_costs [BASELINE_JSON] [--remeasure]
    python -m suites.benchmarks.build_costs --measure-missing [ARCH@SIZE ...]   # first, resumable

One row per (architecture, method): seconds per image of a warm explanation at the grid's
parameters, labelled

- ``measured``: the committed benchmark baseline (``fixtures/benchmarks/...``, batch 8,
  ``test_bench_methods``: the five minis at 64 px, resnet50 and mobilenet_v2 at 224 px);
- ``measured`` too: what the baseline lacks (VGG16, InceptionV3, Xception at native size;
  the slow methods and Score-CAM on the big architectures), measured by
  :func:`measure_missing` into ``suites/benchmarks/missing_costs.json`` as a ratio to the
  forward+backward pass alternated with it, times the reference forward+backward pass;
- ``estimated``: what neither has (rows :func:`measure_missing` has not reached): perturbation methods as
  their number of model inputs per image times one measured forward pass per image
  (Score-CAM: one per channel of the last convolution); the other methods as the median
  over the five minis of their ratio to a forward+backward pass, times this architecture's
  measured forward+backward pass.

Plus per architecture the reference rows ``forward`` and ``forward_backward`` (measured
once by :func:`measure_references` into ``suites/benchmarks/reference_passes.json``,
compiled, median of 3, batch 4 on the big architectures; scaled to the baseline's machine
load, see :func:`main`) and the methods that do not apply (``n/a``: zero cost).  The numbers are this machine's (2 shared cores, see the
baseline's machine_info); ``plan --speed`` scales them to other workers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import cnnvis_eval as cv
from cnnvis_eval.errors import UnsupportedArchitectureError, UnsupportedLayerError
from cnnvis_eval.evaluation import method_params
from cnnvis_eval.evaluation.cost import median_seconds, reference_passes
from cnnvis_eval.evaluation.plan import COSTS, model_inputs
from suites.support.images import smooth_images
from suites.support.models import big_spec, mini_spec

BASELINE = Path("fixtures/benchmarks/Linux-CPython-3.11-64bit/0001_baseline.json")
REFERENCES = Path(__file__).with_name("reference_passes.json")  # measured by measure_references()
MINI = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
BIG_NATIVE = {"vgg16": 224, "inception_v3": 299, "xception": 299, "resnet50": 224, "mobilenet_v2": 224}
PERTURBATION = ("lime", "kernel_shap", "rise", "occlusion", "score_cam", "sobol", "hsic")


def measured(path: Path) -> pd.DataFrame:
    rows = []
    for b in json.loads(path.read_text())["benchmarks"]:
        info = b.get("extra_info", {})
        if not (b.get("group") or "").startswith("methods ") or "arch" not in info:
            continue
        batch = info.get("batch", 8)
        rows.append({"arch": info["arch"], "method": info["method"], "seconds_per_image": b["stats"]["median"] / batch,
                     "ratio": info["ratio"], "fb_baseline": info["baseline_median_s"] / batch})
    return pd.DataFrame(rows)


def measure_references() -> dict:
    """Seconds per image of the compiled forward and forward+backward passes of every
    architecture (median of 3; batch 8 on the minis, 4 on the big ones)."""
    out = {}
    for arch, (spec, batch) in _archs().items():
        x = spec.preprocess(smooth_images(batch, spec.input_shape[0]))
        fwd, fb = reference_passes(spec)
        out[arch] = {"forward": median_seconds(lambda: fwd(x), rounds=3) / batch,
                     "forward_backward": median_seconds(lambda: fb(x), rounds=3) / batch}
        print(arch, out[arch], flush=True)
    return out


MISSING = Path(__file__).with_name("missing_costs.json")  # measured by measure_missing()
LONG_S = 20.0  # methods estimated above this many seconds per image: one image, one call


def measure_missing(baseline: Path = BASELINE, out: Path = MISSING, archs=None) -> dict:
    """Measure the (architecture, method) costs the baseline lacks, as the baseline does:
    the method's time over a compiled forward+backward pass of the same model on the same
    images, the two alternated in this process (so a change of machine load hits both).

    Batch 2, median of 3 alternations after one warm-up call (tracing), except methods whose
    estimate exceeds :data:`LONG_S` seconds per image (Score-CAM, XRAI, the
    integrated-gradient family and the perturbation methods on the big architectures): one
    image, one call, tracing included (a few percent of such a call).  Results are written to
    ``out`` after every row (JSON ``{arch: {method: {...}}}``), so an interrupted run resumes
    where it stopped; rows already there are not measured again.
    """
    import datetime
    import platform

    from cnnvis_eval.evaluation.plan import load_costs

    done = json.loads(out.read_text()) if out.is_file() else {}
    base = measured(baseline)
    have = set(zip(base["arch"], base["method"]))
    estimate = load_costs().set_index(["arch", "method"])["seconds_per_image"]
    todo = []  # (estimate, arch, method): cheap rows first, so an interrupted run has most rows
    for arch, (spec, _) in _archs().items():
        if "@" not in arch or (archs and arch not in archs):
            continue
        for method in cv.list_methods():
            if (arch, method) not in have and method not in done.get(arch, {}):
                todo.append((float(estimate.get((arch, method), 0.0)), arch, method, spec))
    passes = {}
    for est, arch, method, spec in sorted(todo, key=lambda t: t[:3]):
        if arch not in passes:
            passes[arch] = (spec.preprocess(smooth_images(2, spec.input_shape[0])), reference_passes(spec)[1])
        x2, fb = passes[arch]
        params = method_params(method, spec)
        try:
            explainer = cv.get_method(method)(spec, **params)
        except (UnsupportedArchitectureError, UnsupportedLayerError):
            continue
        long = est > LONG_S
        x = x2[:1] if long else x2
        fb(x).numpy()
        pairs = []
        for i in range(1 if long else 4):  # the first short round is the warm-up
            t0 = time.perf_counter()
            fb(x).numpy()
            t1 = time.perf_counter()
            explainer.explain(x, batch_size=len(x), progress=False)
            t2 = time.perf_counter()
            if long or i:
                pairs.append((t2 - t1, t1 - t0))
        ratio = float(np.median([m / f for m, f in pairs]))
        row = {"ratio": ratio, "seconds_per_image": float(np.median([m for m, _ in pairs])) / len(x),
               "fb_seconds_per_image": float(np.median([f for _, f in pairs])) / len(x), "batch": len(x),
               "rounds": len(pairs), "params": params, "when": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": platform.processor() or platform.machine()}
        done.setdefault(arch, {})[method] = row
        out.write_text(json.dumps(done, indent=1, sort_keys=True, default=str))
        print(arch, method, f"ratio {ratio:.2f}", f"{row['seconds_per_image']:.3f} s/image", flush=True)
    return done


def _archs() -> dict:
    archs = {m: (mini_spec(m), 8) for m in MINI}
    archs.update({f"{n}@{s}": (big_spec(n, s), 4) for n, s in BIG_NATIVE.items()})
    return archs


def main(baseline: Path = BASELINE, remeasure: bool = False):
    """Write the cost table from the baseline and the reference passes (measured again with
    ``remeasure``, else read from :data:`REFERENCES`).

    The reference passes are measured in one session, whose machine load differs from the
    baseline's: they are scaled by the geometric mean over the big architectures the
    baseline has (resnet50, mobilenet_v2) of (baseline forward+backward / measured
    forward+backward), so every number is on the baseline's scale and the architectures
    keep their measured relative costs.  (Measured on a shared 2-core machine: the two
    factors were 0.24 and 0.47, so the estimates are good to about a factor of 2.)"""
    base = measured(baseline)
    ratio = base[base["arch"].isin(MINI)].groupby("method")["ratio"].median()
    if remeasure or not REFERENCES.is_file():
        REFERENCES.write_text(json.dumps(measure_references(), indent=1, sort_keys=True))
    refs = json.loads(REFERENCES.read_text())
    missing = json.loads(MISSING.read_text()) if MISSING.is_file() else {}
    fb_base = base.groupby("arch")["fb_baseline"].median()
    # the big architectures only: the minis' passes take milliseconds, too noisy to anchor on
    each = {a: fb_base[a] / refs[a]["forward_backward"] for a in refs if a in fb_base.index and "@" in a}
    anchor = float(np.exp(np.mean(np.log(list(each.values())))))
    print(f"reference passes scaled by {anchor:.3f} (geometric mean of {each}) to the baseline's machine load")
    out = []
    for arch, (spec, _) in _archs().items():
        f_s, fb_s = refs[arch]["forward"] * anchor, refs[arch]["forward_backward"] * anchor
        how = f"measured ({REFERENCES.name}), scaled x{anchor:.3f} to the baseline"
        out += [{"arch": arch, "method": "forward", "seconds_per_image": f_s, "source": "measured",
                 "basis": "compiled forward pass " + how},
                {"arch": arch, "method": "forward_backward", "seconds_per_image": fb_s, "source": "measured",
                 "basis": "compiled forward+backward pass " + how}]
        mine = base[base["arch"] == arch].set_index("method")
        for method in cv.list_methods():
            params = method_params(method, spec)
            if method in mine.index:
                out.append({"arch": arch, "method": method, "seconds_per_image": mine.loc[method, "seconds_per_image"],
                            "source": "measured", "basis": f"benchmark baseline {baseline.name}, batch 8",
                            "params": json.dumps(params, sort_keys=True)})
                continue
            got = missing.get(arch, {}).get(method)
            if got is not None:
                out.append({"arch": arch, "method": method, "seconds_per_image": got["ratio"] * fb_s,
                            "source": "measured",
                            "basis": f"ratio to forward+backward {got['ratio']:.2f} ({MISSING.name}: batch "
                                     f"{got['batch']}, median of {got['rounds']}) x measured forward+backward",
                            "params": json.dumps(params, sort_keys=True)})
                continue
            try:
                cv.get_method(method)(spec, **params)
            except (UnsupportedArchitectureError, UnsupportedLayerError) as err:
                out.append({"arch": arch, "method": method, "seconds_per_image": 0.0, "source": "n/a",
                            "basis": str(err).splitlines()[0][:160]})
                continue
            if method in PERTURBATION:
                k = model_inputs(method, spec.input_shape[0], params, _channels(spec))
                out.append({"arch": arch, "method": method, "seconds_per_image": k * f_s, "source": "estimated",
                            "basis": f"{k} model inputs per image x measured forward pass",
                            "params": json.dumps(params, sort_keys=True)})
            else:
                out.append({"arch": arch, "method": method, "seconds_per_image": float(ratio[method]) * fb_s,
                            "source": "estimated",
                            "basis": f"median ratio to forward+backward on the minis ({ratio[method]:.2f}) x "
                                     "measured forward+backward",
                            "params": json.dumps(params, sort_keys=True)})
    table = pd.DataFrame(out)
    table["params"] = table["params"].fillna("{}")
    table.to_csv(COSTS, index=False, float_format="%.6g")
    print(f"wrote {COSTS} ({len(table)} rows)")


def _channels(spec) -> int:
    """Channels of the model's last convolutional feature map (Score-CAM's masks)."""
    return int(spec.model.get_layer(spec.last_conv_layer).output.shape[-1])


if __name__ == "__main__":
    if "--measure-missing" in sys.argv:  # then: python -m suites.benchmarks.build_costs
        measure_missing(archs=[a for a in sys.argv[1:] if "@" in a] or None)
        sys.exit(0)
    args = [a for a in sys.argv[1:] if a != "--remeasure"]
    main(Path(args[0]) if args else BASELINE, remeasure="--remeasure" in sys.argv)
