"""The runtime defaults of :mod:`cnnvis_eval.runtime`: TensorFlow's pooled CPU allocator.

The property checked is the one the default exists for: with the package imported, repeated
large allocations no longer fault fresh pages in from the kernel (each ``mmap``-ed activation
under the malloc allocator costs one fault per 4 KiB page); a user's own setting is kept.
Page-fault counts, not times, so the test does not depend on the machine's load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cnnvis_eval import runtime

PROBE = r"""
import json, resource
import cnnvis_eval, os
import tensorflow as tf

@tf.function
def step(x):
    return tf.reduce_sum(tf.nn.relu(x * 2.0 + 1.0))  # two 64 MB temporaries per call

x = tf.random.uniform((16, 1024, 1024))
step(x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step(x).numpy()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"faults": faults, "env": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC")}))
"""


def _probe(**env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != runtime.BFC_ENV}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_sets_the_pool_unless_the_user_chose():
    env = {}
    assert runtime.configure(env) == {runtime.BFC_ENV: "true"} and env[runtime.BFC_ENV] == "true"
    mine = {runtime.BFC_ENV: "false"}
    assert runtime.configure(mine) == {runtime.BFC_ENV: "false"}


def test_importing_the_package_stops_large_tensors_faulting_fresh_pages():
    pooled = _probe()
    malloc = _probe(**{runtime.BFC_ENV: "false"})
    assert pooled["env"] == "true" and malloc["env"] == "false"  # the user's choice is kept
    # the pool reuses its memory: far fewer faults than one 64 MB temporary's 16,384 pages
    assert pooled["faults"] < 500, pooled
    # malloc: 2 x 64 MB of fresh pages per call = ~32,000 faults where glibc maps each anew
    # (seen on Intel Xeon machines here); where the C library keeps the memory (an AMD EPYC
    # machine here: 0.2 faults per call) there is nothing to save, and nothing to compare
    if malloc["faults"] > 10_000:
        assert pooled["faults"] < 0.05 * malloc["faults"], (pooled, malloc)
