"""Peak memory of one explanation vs one plain forward+backward pass (CPU, fresh process).

TensorFlow's CPU allocator has no peak statistics (``tf.config.experimental.get_memory_info``
is GPU-only) and ``tracemalloc`` does not see its buffers, so this measures the process:

* it runs in a fresh Python process with ``TF_ENABLE_ONEDNN_OPTS=0`` and
  ``MALLOC_MMAP_THRESHOLD_=65536``: with oneDNN on, TensorFlow's CPU allocator pools large
  buffers and never returns them (a second call then shows almost no growth: 17 MB for a
  ResNet50 forward+backward at batch 8); with the plain allocator and a fixed mmap
  threshold every buffer above 64 KiB is mmapped and unmapped when freed, so the resident
  set follows the live tensors.  Which tensors are live (activations kept for the
  backward pass, temporaries) is a property of the graph, not of the kernel library
  (oneDNN fusions may only change small temporaries);
* the model and the method are built and the call is run twice (tracing, graph
  optimisation, first allocations);
* the peak RSS counter is reset (``echo 5 > /proc/self/clear_refs``), the RSS is read
  (``base``: weights, the method's weight copies, compiled graphs, runtime), the call is
  run once more, and the new peak (``VmHWM``) is read.

``call_mb = peak - base`` is the working memory of one call; ``peak_mb`` the process peak
during it.  Run ``python -m suites.benchmarks.memory_probe ARCH SIZE BATCH METHOD``
(``METHOD = reference`` for the forward+backward pass); it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1])  # kB
    raise KeyError(key)


def probe(arch: str, size: int, batch: int, method: str) -> dict:
    import keras

    import cnnvis_eval as cv
    from cnnvis_eval.evaluation.cost import reference_passes
    from suites.support.images import smooth_images

    keras.utils.set_random_seed(0)
    spec = cv.load_model(arch, weights=None, input_shape=(size, size, 3))
    x = spec.preprocess(smooth_images(batch, size))
    if method == "reference":
        _, fb = reference_passes(spec)
        call = lambda: fb(x).numpy()  # noqa: E731
    else:
        exp = cv.get_method(method)(spec)
        call = lambda: exp.explain(x)  # noqa: E731
    call()
    call()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status("VmRSS")
    call()
    peak = _status("VmHWM")
    return {"arch": arch, "size": size, "batch": batch, "method": method,
            "base_mb": base / 1024, "peak_mb": peak / 1024, "call_mb": (peak - base) / 1024}


def run(arch: str, size: int, batch: int, method: str, timeout: float = 1800) -> dict:
    """:func:`probe` in a fresh subprocess (from the worktree root)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-m", "suites.benchmarks.memory_probe", arch, str(size), str(batch), method],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    a, s, b, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print(json.dumps(probe(a, s, b, m)))
