"""Where a run's tasks execute: in this process, or in a pool of spawned worker processes.

The runner hands an :class:`Executor` a function and a list of tasks (argument tuples) and
gets the results back in task order.  Two executors ship: :class:`LocalExecutor` (in this
process, one task after the other) and :class:`ProcessExecutor` (spawned worker processes;
TensorFlow does not survive ``fork``).  A distributed executor (e.g. Ray) implements the
same small interface.

Progress: a task reports finished cells by calling the ``tick`` it is given (``tick(k)``);
the executor forwards those calls to the ``tick`` of :meth:`Executor.map` in this process
(through a queue for worker processes), and calls ``on_done(k)`` when ``k`` more tasks
have finished.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol, Sequence


def _quiet(*args, **kwargs):
    """A progress callback that does nothing."""


class Executor(Protocol):
    """Runs tasks; used as a context manager around the :meth:`map` calls of one run.

    Attributes
    ----------
    workers : int
        Tasks run at once.
    in_process : bool
        Whether tasks run in this process (the runner then gives each model one task with
        all its work; otherwise it splits the work into phases of smaller tasks, see
        :meth:`cnnvis_eval.evaluation.runner.GridRun.run`).
    """

    workers: int
    in_process: bool

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...

    def map(self, fn: Callable, tasks: Sequence[tuple], tick: Callable[[int], Any] = _quiet,
            on_done: Callable[[int], Any] = _quiet) -> list:
        """``[fn(*task, tick=...) for task in tasks]``, in task order; the tasks may run at
        once, in other processes (then ``fn`` and the tasks must pickle)."""
        ...


class LocalExecutor:
    """Tasks in this process, one after the other (``workers=1``).

    TensorFlow's retracing warnings are silenced while tasks run: every cell builds fresh
    explainers, whose functions trace once each, on purpose.
    """

    workers = 1
    in_process = True

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, fn, tasks, tick=_quiet, on_done=_quiet) -> list:
        from ..quiet import quiet_retracing

        out = []
        with quiet_retracing():
            for task in tasks:
                out.append(fn(*task, tick=tick))
                on_done(1)
        return out


class ProcessExecutor:
    """Tasks in ``workers`` spawned worker processes that live as long as the executor
    (``with ProcessExecutor(n) as ex: ...``), so a worker keeps what it loaded from one
    task to the next.

    Parameters
    ----------
    workers : int
        Worker processes (>= 1).
    threads : int, optional
        TensorFlow threads per worker (default: the CPU cores shared between the workers).
    """

    in_process = False

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = int(workers)
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 1) // self.workers)
        self._pool = self._manager = self._queue = None

    def __enter__(self) -> "ProcessExecutor":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")  # TensorFlow does not survive fork
        self._manager = ctx.Manager()
        self._manager.__enter__()
        self._queue = self._manager.Queue()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                         initargs=(self.threads,))
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self._pool.shutdown()
            else:
                self._pool.shutdown(wait=False, cancel_futures=True)
        finally:
            self._manager.__exit__(exc_type, *exc)
            self._pool = self._manager = self._queue = None

    def map(self, fn, tasks, tick=_quiet, on_done=_quiet) -> list:
        import queue as queue_mod
        from concurrent.futures import wait

        if self._pool is None:
            raise RuntimeError("use ProcessExecutor as a context manager: with ProcessExecutor(n) as ex: ...")
        futures = [self._pool.submit(_call, fn, task, self._queue) for task in tasks]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.25)
            if finished:
                on_done(len(finished))
            while True:
                try:
                    tick(self._queue.get_nowait())
                except queue_mod.Empty:
                    break
        return [f.result() for f in futures]


def _call(fn, task, progress):
    """One task in a worker process; its progress goes back through the queue."""
    return fn(*task, tick=progress.put)


def _worker_init(threads: int):
    """Worker process start: share the cores between the workers."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    # every cell builds fresh explainers, whose functions trace once each: TensorFlow's
    # "N out of the last M calls triggered tf.function retracing" warning is expected here
    tf.get_logger().setLevel("ERROR")


def resolve_workers(workers: int | None, n_models: int) -> int:
    """Worker processes for ``n_models``: ``workers``, or (None) one per CPU core, at most 4.

    Raises
    ------
    InputError
        ``workers`` < 1.
    """
    from ..errors import InputError

    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    return max(1, min(int(workers), n_models))


def make_executor(workers: int | None, n_models: int) -> Executor:
    """The executor for ``workers`` (see :func:`resolve_workers`): :class:`LocalExecutor`
    for one, :class:`ProcessExecutor` for more."""
    n = resolve_workers(workers, n_models)
    return LocalExecutor() if n == 1 else ProcessExecutor(n)


__all__ = ["Executor", "LocalExecutor", "ProcessExecutor", "make_executor", "resolve_workers"]
