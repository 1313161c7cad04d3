"""Throughput of the grid on Ray vs the process pool (issue 18), on this machine.

- one small default-like run (the five minis, 2 photos + 2 synthetic images, six methods
  incl. RISE and occlusion, every stage) into a fresh folder with: the process pool (2
  workers), Ray with 1 worker (2 CPUs), Ray with 2 workers (1 CPU each); cells per second
  of the whole run, start-up included (``extra_info["cells_per_s"]``);
- the start-up time of a local Ray instance: ``ray.init`` to the first actor ready (it
  imports TensorFlow and cnnvis_eval);
- the overhead per task: a task that does nothing, on a warm actor.

Slow (minutes): ``pytest suites/benchmarks/test_bench_ray.py -m slow --benchmark-enable -n 0 -s``.
Measured once (2 shared cores, load average 6-9 from other jobs, so noisy): process pool
447 s (0.20 cells/s), Ray 1 worker 329 s (0.27 cells/s), Ray 2 workers 312 s (0.29 cells/s);
local instance start-up 15.4 s; 1.3 ms per task on a warm actor.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from cnnvis_eval.evaluation import GridRun, ProcessExecutor, RunConfig
from cnnvis_eval.evaluation.config import NEURONS

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "cnnvis_eval[ray]")')
from cnnvis_eval.evaluation.ray_executor import RayExecutor  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray"), pytest.mark.benchmark(group="ray")]

CONFIG = dict(photos=("chelsea", "coffee"), synthetic=2, scenes=0, birds=0,
              methods=("saliency", "grad_cam", "integrated_gradients", "lrp_epsilon", "rise", "occlusion"))


def _executor(kind: str, temp: str):
    if kind == "process-2":
        return ProcessExecutor(2)
    workers = int(kind[-1])
    return RayExecutor(workers, cpus_per_worker=2 // workers, temp_dir=temp)


@pytest.mark.parametrize("kind", ["process-2", "ray-1", "ray-2"])
def test_bench_grid_throughput(kind, benchmark, tmp_path):
    config = RunConfig(**CONFIG)
    cells = len(config.models) * len(config.methods) * len(NEURONS)
    temp = tempfile.mkdtemp(prefix="cvb", dir="/tmp")

    times = []

    def run():
        t0 = time.perf_counter()
        GridRun(config, tmp_path / f"run-{time.monotonic_ns()}", progress=False, log=None,
                executor=_executor(kind, temp)).run()
        times.append(time.perf_counter() - t0)

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    seconds = times[-1]
    benchmark.extra_info.update(kind=kind, cells=cells, seconds=seconds, cells_per_s=cells / seconds)
    print(f"{kind}: {cells} cells in {seconds:.1f} s = {cells / seconds:.2f} cells/s")


def test_bench_ray_startup_and_task_overhead(benchmark):
    from suites.support import ray_tasks

    temp = tempfile.mkdtemp(prefix="cvb", dir="/tmp")  # short: Unix socket paths are limited
    t0 = time.perf_counter()
    with RayExecutor(1, temp_dir=temp) as ex:
        startup = time.perf_counter() - t0
        ex.map(ray_tasks.square, [(1,)])  # warm
        n, times = 50, []

        def batch():
            t = time.perf_counter()
            out = ex.map(ray_tasks.square, [(1,)] * n)
            times.append(time.perf_counter() - t)
            return out

        assert benchmark.pedantic(batch, rounds=3, iterations=1) == [1] * n
        per_task = sorted(times)[len(times) // 2] / n
    shutil.rmtree(temp, ignore_errors=True)
    benchmark.extra_info.update(startup_s=startup, overhead_per_task_s=per_task)
    print(f"ray start-up {startup:.1f} s, overhead {per_task * 1000:.1f} ms per task")
