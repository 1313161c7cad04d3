"""Working memory of one explanation vs one plain forward+backward pass (CPU).

What is measured, for one call (after a first call has traced and allocated whatever a
method keeps):

* ``tf_mb``: the peak of TensorFlow's CPU allocator during the call above what it held
  before (``tf.config.experimental.reset_memory_stats`` / ``get_memory_info("CPU:0")``:
  activations kept for the backward pass, temporaries, the perturbed inputs of a batch);
* ``host_mb``: the peak of Python and NumPy allocations during the call (``tracemalloc``:
  noise, masks, samples, gradient sums kept on the host);
* ``call_mb = tf_mb + host_mb``: an upper bound of the call's working memory (the two
  peaks need not coincide).

Earlier versions read the process's resident set (peak ``VmHWM`` after ``clear_refs``)
in a fresh process with oneDNN off and a low mmap threshold, so that freed buffers left the
resident set.  Since the package pools TensorFlow's CPU tensors (it sets
``TF_CPU_ALLOCATOR_USE_BFC=true``, see the README) the pool keeps what the first call grew it
to and that probe read ~9 MB for every method, the forward+backward pass included: it
measured nothing.  The pooling allocator keeps the statistics read here;
:func:`~suites.support.memory.measure` refuses a measurement without them
(:class:`~suites.support.memory.ProbeBlind`).

Run ``python -m suites.benchmarks.memory_probe ARCH SIZE BATCH METHOD [METHOD ...]``
(``reference`` = the forward+backward pass); it prints one JSON line per method, measured
in one process (the statistics are reset per call, so earlier methods do not count).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from suites.support.memory import ProbeBlind, measure


def probe(arch: str, size: int, batch: int, methods: list[str]):
    """Yields :func:`measure` of each of ``methods`` (``"reference"``: the compiled forward+backward
    pass) on ``arch`` (random weights) at ``size`` px, ``batch`` smooth images."""
    import keras

    import cnnvis_eval as cv
    from cnnvis_eval.evaluation.cost import reference_passes
    from suites.support.images import smooth_images

    keras.utils.set_random_seed(0)
    spec = cv.load_model(arch, weights=None, input_shape=(size, size, 3))
    x = spec.preprocess(smooth_images(batch, size))
    for method in methods:
        if method == "reference":
            _, fb = reference_passes(spec)
            call = lambda: fb(x).numpy()  # noqa: E731
        else:
            exp = cv.get_method(method)(spec)
            call = lambda: exp.explain(x, progress=False)  # noqa: E731
        yield {"arch": arch, "size": size, "batch": batch, "method": method, **measure(call)}


__all__ = ["ProbeBlind", "measure", "probe", "run"]


def run(arch: str, size: int, batch: int, method: str, timeout: float = 1800) -> dict:
    """:func:`probe` of one method in a fresh subprocess (from the worktree root)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-m", "suites.benchmarks.memory_probe", arch, str(size), str(batch), method],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # the last line: the method's


if __name__ == "__main__":
    a, s, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for row in probe(a, s, b, sys.argv[4:]):
        print(json.dumps(row), flush=True)
