"""Tasks on a Ray cluster: :class:`RayExecutor` (the optional extra ``cnnvis_eval[ray]``).

The same interface as :class:`~cnnvis_eval.evaluation.executors.ProcessExecutor`, backed by
Ray actors.  Each actor is one long-lived worker process (``cpus_per_worker`` CPUs, and a
share of a GPU when the cluster has GPUs): it keeps the model it loaded and its compiled
functions from one task to the next, and the executor routes a task to the actor that last
ran a task with the same affinity key (the runner uses the model), so a model is loaded
and traced once per actor, not once per task.

Without ``address`` a local Ray instance is started on the loopback interface (no
dashboard) and shut down when the executor closes; ``address="auto"``, ``"host:port"`` or
``"ray://host:port"`` joins a running cluster.  Workers do not share the driver's disk:
the runner ships each task the stored files it needs and writes the files a task returns
(:attr:`RayExecutor.remote`, see :meth:`cnnvis_eval.evaluation.runner.GridRun.run`).

Failures: Ray missing, an unreachable address, workers that cannot import ``cnnvis_eval``
(or another version of it) raise :class:`RayUnavailable` with one line saying what to do.
A worker process that dies while running a task (killed, out of memory, a crash) costs
that task only: its result is a :class:`TaskLost`, a new actor replaces the dead one, the
other tasks go on.  An exception raised by a task itself is raised again in the driver, as
with the process pool.  This module imports ``ray`` when an executor is entered, never at
import time; ``import cnnvis_eval`` never imports it.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from ..errors import CnnVisError

INSTALL_HINT = 'pip install "cnnvis_eval[ray]"'
MAX_REPLACEMENTS = 4  # dead actors replaced per map() call before the executor gives up


class RayUnavailable(CnnVisError, RuntimeError):
    """Ray cannot run the tasks: not installed, the cluster cannot be reached, or its workers
    lack ``cnnvis_eval`` (the message says which, and what to do)."""


@dataclass(frozen=True)
class TaskLost:
    """The result of a task whose worker process died before it finished (``message`` says
    how); the runner records the task's cells as errors, and a rerun computes them."""

    message: str


def _quiet(*args, **kwargs):
    """A progress callback that does nothing."""


def import_ray():
    """The ``ray`` module, or :class:`RayUnavailable` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_address(address: str | None, timeout: float = 3.0) -> None:
    """:class:`RayUnavailable` unless ``address`` is None, ``"auto"``, or a ``[ray://]host:port``
    that accepts a TCP connection within ``timeout`` seconds (Ray itself retries an
    unreachable address for minutes)."""
    if address in (None, "auto"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray-address must be auto, host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {err.strerror or err} "
                             "(is it running? `ray status` on its head node)") from None


class _Worker:
    """The body of a Ray actor: imports ``modules`` (``cnnvis_eval`` first), sets the
    TensorFlow threads, then runs tasks; module-level state (the loaded model) persists
    between tasks."""

    def __init__(self, threads: int, modules: tuple):
        import importlib

        for name in modules:
            importlib.import_module(name)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.get_logger().setLevel("ERROR")

    def ready(self) -> dict:
        import cnnvis_eval

        return {"pid": os.getpid(), "host": socket.gethostname(), "version": cnnvis_eval.__version__}

    def run(self, fn: Callable, task: tuple):
        """``fn(*task, tick=...)`` -> (result, ticks reported); ObjectRefs in ``task`` are resolved."""
        import ray

        from cnnvis_eval.quiet import quiet_retracing

        task = tuple(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in task)
        ticks = [0]

        def tick(k=1):
            ticks[0] += k

        with quiet_retracing():
            result = fn(*task, tick=tick)
        return result, ticks[0]


class RayExecutor:
    """Tasks on ``workers`` Ray actors (``with RayExecutor(2) as ex: ex.map(fn, tasks)``).

    Parameters
    ----------
    workers : int or None
        Actors (None: one per ``cpus_per_worker`` CPUs of the cluster, at most 4 on a local
        instance); capped by the cluster's CPUs.
    address : str or None
        None: start a local instance on 127.0.0.1 with ``workers * cpus_per_worker`` CPUs;
        ``"auto"``, ``"host:port"`` or ``"ray://host:port"``: join that cluster.  When Ray is
        already initialized in this process it is used as it is (and left running).
    cpus_per_worker : int
        CPUs each actor declares (and TensorFlow threads it uses).
    gpus_per_worker : float or None
        GPUs each actor declares (None: 1, or the cluster's GPUs shared between the actors
        when fewer, when the cluster has GPUs; else 0).
    modules : tuple of str
        Modules each actor imports at start besides ``cnnvis_eval`` (e.g. one that
        registers your own methods).
    temp_dir : str, optional
        Ray's session folder of a local instance (default Ray's, ``/tmp/ray``; keep it short:
        Unix socket paths are limited to ~107 characters).
    images_per_task : int or None
        A grid run's explain tasks are (model, group of methods, image shard) with at most
        this many images each, rounded up to whole explain batches (None: automatic, see
        :func:`~cnnvis_eval.evaluation.remote.image_shards`); the stored cells do not depend
        on it, bit for bit.

    The executor can be entered again while open (``with ex: GridRun(..., executor=ex).run()``
    for several runs): the runs share its warm actors, which end with the outermost block.

    Attributes
    ----------
    cluster : dict
        After ``__enter__``: ``address``, ``nodes``, ``cpus``, ``gpus``, ``workers``,
        ``cpus_per_worker``, ``gpus_per_worker``, ``ray`` (version): recorded in the run's
        ``config.json``.
    """

    in_process = False
    remote = True  # workers do not see the driver's files: the runner ships them

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_worker: int = 1,
                 gpus_per_worker: float | None = None, modules: Sequence[str] = (), temp_dir: str | None = None,
                 images_per_task: int | None = None):
        from ..errors import InputError

        if workers is not None and int(workers) < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        if images_per_task is not None and int(images_per_task) < 1:
            raise InputError(f"images per task must be >= 1, got {images_per_task}")
        self.images_per_task = None if images_per_task is None else int(images_per_task)
        if int(cpus_per_worker) < 1:
            raise InputError(f"cpus_per_worker must be >= 1, got {cpus_per_worker}")
        self.requested = None if workers is None else int(workers)
        self.workers = self.requested or 1
        self.address = address
        self.cpus_per_worker = int(cpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
        # the user's modules first (they import cnnvis_eval themselves): a missing one fails fast
        self.modules = tuple(m for m in modules if m != "cnnvis_eval") + ("cnnvis_eval",)
        self.temp_dir = temp_dir
        self.cluster: dict = {}
        self._ray = self._cls = None
        self._actors: list = []
        self._started = False
        self._depth = 0  # nested ``with`` blocks: the actors live until the outermost ends

    # -- lifetime ---------------------------------------------------------------
    def __enter__(self) -> "RayExecutor":
        self._depth += 1
        if self._depth > 1:  # entered again (e.g. a second run): the same warm actors
            return self
        try:
            return self._open()
        except BaseException:
            self._depth = 0
            raise

    def _open(self) -> "RayExecutor":
        ray = import_ray()
        self._ray = ray
        if not ray.is_initialized():
            check_address(self.address)
            kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if self.address is None:
                cpus = (self.requested or min(os.cpu_count() or 1, 4)) * self.cpus_per_worker
                kw.update(num_cpus=cpus, num_gpus=0 if not _local_gpus() else None, _node_ip_address="127.0.0.1")
                if self.temp_dir:
                    kw["_temp_dir"] = str(self.temp_dir)
                kw = {k: v for k, v in kw.items() if v is not None}
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise RayUnavailable(f"cannot start or join Ray (address {self.address or 'local'}): "
                                     + " ".join(str(err).split())[:300]) from None
            self._started = True
        try:
            self._start_actors()
        except BaseException:
            self._close()
            raise
        return self

    def _start_actors(self):
        ray = self._ray
        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 0)), float(res.get("GPU", 0))
        fit = cpus // self.cpus_per_worker
        if fit < 1:
            raise RayUnavailable(f"the Ray cluster has {cpus} CPUs, fewer than one worker's {self.cpus_per_worker}")
        wanted = self.requested or (min(fit, 4) if self._started and self.address is None else fit)
        self.workers = max(1, min(wanted, fit))
        gpw = self.gpus_per_worker
        if gpw is None:
            gpw = min(1.0, gpus / self.workers) if gpus else 0.0
        self._cls = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=gpw, max_restarts=0)(_Worker)
        self._actors = [self._new_actor() for _ in range(self.workers)]
        try:
            infos = ray.get([a.ready.remote() for a in self._actors], timeout=600)
        except ray.exceptions.RayActorError as err:
            raise RayUnavailable(
                f"the Ray workers cannot start: {_cause(err)}; every node needs the same cnnvis_eval "
                f"(and the modules {', '.join(self.modules)}) as the driver: {INSTALL_HINT}") from None
        except ray.exceptions.GetTimeoutError:
            raise RayUnavailable(
                f"{self.workers} Ray workers ({self.cpus_per_worker} CPUs, {gpw:g} GPUs each) did not start within "
                "10 minutes: is the cluster short of free CPUs or GPUs? (`ray status`)") from None
        from .. import __version__

        other = sorted({i["version"] for i in infos} - {__version__})
        if other:
            raise RayUnavailable(f"the Ray workers run cnnvis_eval {', '.join(other)}, the driver {__version__}: "
                                 "results are keyed by the library version; install the same version everywhere")
        alive = [n for n in ray.nodes() if n.get("Alive")]
        self.cluster = {"executor": "ray", "address": self.address or "local", "nodes": len(alive), "cpus": cpus,
                        "gpus": gpus, "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                        "gpus_per_worker": gpw, "ray": ray.__version__}

    def _new_actor(self):
        return self._cls.remote(self.cpus_per_worker, self.modules)

    def __exit__(self, exc_type=None, *exc) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self._close()

    def _close(self) -> None:
        ray, actors, self._actors = self._ray, self._actors, []
        if ray is None:
            return
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # already dead
                pass
        if self._started:
            ray.shutdown()
            self._started = False

    def share(self, value):
        """``value`` put once into the cluster's object store: a handle to pass in tasks
        (resolved in the worker) instead of copying ``value`` into every task."""
        return self._ray.put(value)

    # -- tasks ------------------------------------------------------------------
    def map(self, fn: Callable, tasks: Sequence[tuple], tick: Callable[[int], Any] = _quiet,
            on_done: Callable[[int], Any] = _quiet, affinity: Callable[[tuple], Hashable] | None = None,
            collect: Callable[[Any], Any] | None = None) -> list:
        """``[fn(*task, tick=...) for task in tasks]`` on the actors, in task order.

        ``tick(k)`` receives the progress a task reported when the task completes;
        ``on_done(1)`` per completed task; ``collect(result)`` (in this process, as each task
        completes) replaces the result; ``affinity(task)``: a task goes preferably to the
        actor whose last task had the same key.  A task whose actor died gives a
        :class:`TaskLost` (the actor is replaced, up to :data:`MAX_REPLACEMENTS` times).
        """
        ray = self._ray
        if ray is None or not self._actors:
            raise RuntimeError("use RayExecutor as a context manager: with RayExecutor(n) as ex: ...")
        keys = [affinity(t) if affinity is not None else None for t in tasks]
        results: list = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        free = list(self._actors)
        last: dict = {}
        running: dict = {}
        replaced = 0
        while pending or running:
            while free and pending:
                actor = free.pop()
                held = {k for a, k in last.items() if a != id(actor)}
                i = next_task(pending, keys, last.get(id(actor)), held)
                pending.remove(i)
                last[id(actor)] = keys[i]
                running[actor.run.remote(fn, tasks[i])] = (i, actor)
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
            for ref in done:
                i, actor = running.pop(ref)
                try:
                    result, ticks = ray.get(ref)
                except ray.exceptions.RayActorError as err:
                    results[i] = TaskLost(f"the Ray worker running it died ({_cause(err)})")
                    self._actors.remove(actor)
                    if replaced >= MAX_REPLACEMENTS:
                        if not self._actors:
                            raise RayUnavailable(f"{replaced + 1} Ray workers died in one run; last: "
                                                 f"{_cause(err)}") from None
                        continue
                    replaced += 1
                    actor = self._new_actor()
                    self._actors.append(actor)
                except ray.exceptions.RayTaskError as err:
                    raise err.as_instanceof_cause() from None
                else:
                    results[i] = collect(result) if collect is not None else result
                    tick(ticks)
                on_done(1)
                free.append(actor)
        return results


def next_task(pending, keys: list, want, held: set) -> int:
    """The task an idle actor takes from ``pending`` (task indices, in order): the first
    with its last task's key ``want``; else the first whose key no other actor holds
    (``held``); else the first."""
    for test in (lambda k: want is not None and k == want, lambda k: k not in held):
        for j in pending:
            if test(keys[j]):
                return j
    return pending[0]


def _cause(err) -> str:
    """One line of a Ray error: the first line of its message, with the worker's exit detail."""
    text = " ".join(str(err).split())
    detail = text.split("Worker exit detail:", 1)[-1] if "Worker exit detail:" in text else ""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    for marker in ("ModuleNotFoundError", "ImportError"):
        if marker in text:
            return text[text.index(marker):][:200]
    return (first + (f" — {detail.strip()[:160]}" if detail else "")).strip()


def _local_gpus() -> bool:
    """Whether this machine has a GPU TensorFlow sees (then a local instance declares it)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def ray_available() -> bool:
    """Whether ``ray`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


__all__ = ["INSTALL_HINT", "RayExecutor", "RayUnavailable", "TaskLost", "check_address", "import_ray",
           "next_task", "ray_available"]
