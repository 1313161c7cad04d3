"""Process-wide TensorFlow runtime defaults that make CPU runs faster without changing a number.

**TensorFlow's CPU allocator.**  By default TensorFlow serves CPU tensors with ``malloc``.
Activations of a 224 px network are tens to hundreds of MB each, above glibc's ``mmap``
threshold, so every one is a fresh ``mmap`` whose pages the kernel zero-fills on first touch
and returns at ``free``: measured on MobileNetV2 at 224 px, batch 32, 2 cores, about 140,000
page faults per forward pass (570 MB touched anew) and a third of the CPU time spent in the
kernel (16 of 47 ms per image; the gradient 42 of 119 ms), with the two compute threads
serialized on the faults.  ``TF_CPU_ALLOCATOR_USE_BFC=true`` makes TensorFlow keep a
best-fit-with-coalescing pool (the allocator it uses on GPUs) over the same memory: about 100
faults per pass, kernel time under 2%, and a forward pass about 2x and a gradient about 1.5x
faster in wall time (suites/unit/test_runtime.py checks the faults).  Results are bit-identical (the
allocator decides where tensors live, not what is computed).  Memory: on one workload the
peak is unchanged (1.65 GB both), but the pool never shrinks and fragments over a long mixed
run: ``cnnvis-eval check`` of MobileNetV2 (224 px, 8 photos, seven methods) peaked at 3.68 GB
pooled vs 2.96 GB with malloc, for 767 s vs 1044 s (suites/benchmarks/test_bench_check.py),
while its faithfulness curves ran 128 inputs per call; at 32 per call it peaks at 2.21 GB pooled
(726 s), and 1.99 GB (582 s) with one trace per method: what the pool keeps is the largest batch
a run ever held.

:func:`configure` sets it **unless the user set it** (``TF_CPU_ALLOCATOR_USE_BFC=false`` in
the environment keeps the malloc allocator).  TensorFlow reads the variable when it creates
its CPU allocator, at the first tensor, so it takes effect when ``cnnvis_eval`` is imported
before any TensorFlow computation ran in the process (importing ``tensorflow`` or ``keras``
earlier is fine); the package, the CLI, the pytest plugin and the grid's worker processes all
do that.  Child processes inherit it through the environment.

This module must not import TensorFlow: ``cnnvis_eval/__init__.py`` calls :func:`configure`
first.
"""

from __future__ import annotations

import os

BFC_ENV = "TF_CPU_ALLOCATOR_USE_BFC"


def configure(environ=None) -> dict[str, str]:
    """Set the runtime defaults in ``environ`` (``os.environ``) where the user set nothing.

    Returns the values in effect, e.g. ``{"TF_CPU_ALLOCATOR_USE_BFC": "true"}``.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(BFC_ENV, "true")
    return {BFC_ENV: environ[BFC_ENV]}
