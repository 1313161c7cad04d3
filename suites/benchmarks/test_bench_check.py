"""Cost of ``cnnvis-eval check`` as a whole command (issue 15): wall time and peak memory.

Goals (2 CPU cores): a mini model with 16 images and the default methods in under 3 minutes;
MobileNetV2 (random weights, 224 px) with 8 photos and the seven methods of the study in
under 10 minutes; peak memory under 3 GB.  The command runs in a fresh process (so import,
loading, tracing and the report count, as for a user), under a small wrapper process that
reports its child's peak resident set (``RUSAGE_CHILDREN``).  The ratio is to one plain
forward+backward pass of the same model on the same images, timed in this process before
and after the command; the goal is recorded in seconds.

Both cases are slow (minutes): ``pytest suites/benchmarks/test_bench_check.py -m slow
--benchmark-enable -n 0``.  The default run covers the command in suites/unit/test_cli_check.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from cnnvis_eval.testing.session import DEFAULT_METHODS, STUDY_METHODS

pytestmark = [pytest.mark.benchmark(group="check"), pytest.mark.slow]

_WRAPPER = ("import json, resource, subprocess, sys, time\n"
            "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
            "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t,\n"
            "                  'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")


def _command(argv) -> dict:
    """Run ``cnnvis-eval argv`` in a fresh process; its exit status, seconds and peak MB."""
    cli = Path(sys.executable).with_name("cnnvis-eval")
    out = subprocess.run([sys.executable, "-c", _WRAPPER, str(cli), *argv], capture_output=True, text=True,
                         timeout=3600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rc"] in (0, 1), out.stderr[-3000:]
    return result


def _files(tmp: Path, case: str):
    from skimage import data, io

    from cnnvis_eval.data.synthetic import make_synthetic

    (tmp / "images").mkdir()
    if case == "mini":
        spec = cv.load_model("mini_vgg")
        images = make_synthetic(16, 64, seed=7).images
        names = [f"s{i:02d}" for i in range(16)]
        methods, preprocess = DEFAULT_METHODS, "-1,1"
    else:
        spec = cv.load_model("mobilenet_v2", weights=None, input_shape=(224, 224, 3))
        names = ["chelsea", "coffee", "rocket", "astronaut", "camera", "coins", "immunohistochemistry",
                 "hubble_deep_field"]
        images = [getattr(data, n)() for n in names]
        methods, preprocess = STUDY_METHODS, "-1,1"
    for n, img in zip(names, images):
        io.imsave(tmp / "images" / f"{n}.png", np.asarray(img, np.uint8), check_contrast=False)
    spec.model.save(tmp / "model.keras")
    return spec, methods, preprocess


@pytest.mark.parametrize("case, goal_s", [("mini", 180.0), ("mobilenet_v2", 600.0)],
                         ids=["mini_vgg-16img-default", "mobilenet_v2@224-8img-study"])
def test_bench_check_command(benchmark, record, tmp_path, case, goal_s):
    spec, methods, preprocess = _files(tmp_path, case)
    from cnnvis_eval.testing.inputs import load_images

    x = spec.preprocess(load_images(tmp_path / "images", spec.input_shape)[0])
    _, fb = reference_passes(spec)
    fb(x).numpy()  # traced

    def reference():
        t = time.perf_counter()
        fb(x).numpy()
        return time.perf_counter() - t

    argv = ["check", str(tmp_path / "model.keras"), "--images", str(tmp_path / "images"),
            f"--preprocess={preprocess}", "--methods", *methods, "--quiet", "--out", str(tmp_path / "out")]
    before = min(reference() for _ in range(3))
    result = benchmark.pedantic(lambda: _command(argv), rounds=1, iterations=1)
    base = (before + min(reference() for _ in range(3))) / 2
    assert (tmp_path / "out" / "index.html").is_file()
    info = {"method": f"check:{case}", "arch": "", "reference": "forward+backward of the images",
            "goal": f"< {goal_s:.0f} s, peak < 3000 MB", "peak_mb": result["peak_mb"],
            "seconds": result["seconds"], "baseline_median_s": base, "ratio": result["seconds"] / base}
    benchmark.extra_info.update(info)
    record.benchmark(benchmark.name, benchmark.group, info, result["seconds"])
    print(f"\n{case}: {result['seconds']:.1f} s (goal {goal_s:.0f}), peak {result['peak_mb']:.0f} MB (goal 3000)")
