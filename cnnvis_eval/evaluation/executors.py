"""Where a run's tasks execute: in this process, or in a pool of spawned worker processes.

The runner hands an :class:`Executor` a function and a list of tasks (argument tuples) and
gets the results back in task order.  Two executors ship: :class:`LocalExecutor` (in this
process, one task after the other) and :class:`ProcessExecutor` (spawned worker processes;
TensorFlow does not survive ``fork``).  The distributed one,
:class:`~cnnvis_eval.evaluation.ray_executor.RayExecutor` (the extra ``cnnvis_eval[ray]``),
implements the same interface, plus ``remote = True`` (its workers do not share this
machine's disk, see :mod:`~cnnvis_eval.evaluation.remote`).

Progress: a task reports finished cells by calling the ``tick`` it is given (``tick(k)``);
the executor forwards those calls to the ``tick`` of :meth:`Executor.map` in this process
(through a queue for worker processes), and calls ``on_done(k)`` when ``k`` more tasks
have finished.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
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

    Workers never outlive this process: each watches its parent and exits within
    :data:`PARENT_POLL` seconds of the parent's death (even a SIGKILL).  Workers ignore
    SIGINT (a Ctrl-C reaches the whole process group; the parent alone handles it); when
    the ``with`` block ends by an exception (KeyboardInterrupt included) the parent
    terminates the workers instead of waiting for their tasks.  Progress comes back
    through a plain queue of the spawn context: no manager process.

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
        self._pool = self._queue = None

    def __enter__(self) -> "ProcessExecutor":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")  # TensorFlow does not survive fork
        # handed to the workers at their start (an mp queue cannot travel with a task); a
        # SimpleQueue's put is synchronous, so a task's ticks arrive before its result
        self._queue = ctx.SimpleQueue()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_init,
                                         initargs=(self.threads, self._queue, os.getpid()))
        return self

    def __exit__(self, exc_type, *exc) -> None:
        pool, queue, self._pool, self._queue = self._pool, self._queue, None, None
        processes = list((getattr(pool, "_processes", None) or {}).values())
        try:
            if exc_type is None:
                pool.shutdown()  # waits for the tasks
        except BaseException:  # e.g. Ctrl-C while waiting
            exc_type = BaseException
            raise
        finally:
            if exc_type is not None:  # interrupted or failed: stop the workers, not their tasks
                pool.shutdown(wait=False, cancel_futures=True)
                _stop(processes)
            queue.close()

    def map(self, fn, tasks, tick=_quiet, on_done=_quiet) -> list:
        from concurrent.futures import wait

        if self._pool is None:
            raise RuntimeError("use ProcessExecutor as a context manager: with ProcessExecutor(n) as ex: ...")
        with _sigint_ignored():  # the pool starts its workers on submit: they inherit SIG_IGN
            futures = [self._pool.submit(_call, fn, task) for task in tasks]
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.25)
            if finished:
                on_done(len(finished))
            while not self._queue.empty():
                tick(self._queue.get())
        return [f.result() for f in futures]


PARENT_POLL = 0.5  # seconds between a worker's checks that its parent is alive
_PROGRESS = None  # a worker's progress queue (set by _worker_init)


def _call(fn, task):
    """One task in a worker process; its progress goes back through the queue."""
    return fn(*task, tick=_PROGRESS.put)


def _worker_init(threads: int, progress, parent_pid: int):
    """Worker process start: ignore SIGINT, exit when the parent dies, keep the progress
    queue, share the cores between the workers."""
    global _PROGRESS
    import signal
    import threading

    import tensorflow as tf
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent_pid)
    _PROGRESS = progress
    # tqdm's default lock holds a multiprocessing semaphore: a worker terminated mid-run
    # would leak it (and the resource tracker warn at exit); workers draw no bars
    tqdm.set_lock(threading.RLock())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    # every cell builds fresh explainers, whose functions trace once each: TensorFlow's
    # "N out of the last M calls triggered tf.function retracing" warning is expected here
    tf.get_logger().setLevel("ERROR")


def exit_with_parent(parent_pid: int, poll: float = PARENT_POLL):
    """End this process (``os._exit``) once process ``parent_pid`` is no longer its parent,
    i.e. the parent died and this process was re-parented; checked every ``poll`` seconds by
    a daemon thread, so a worker stops computing and writing within ``poll`` seconds of its
    parent's death, whatever the parent died of."""
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextmanager
def _sigint_ignored():
    """SIGINT ignored in this block (in the main thread; elsewhere signals cannot be set).
    Processes started here inherit the disposition and never raise KeyboardInterrupt."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(processes, grace: float = 5.0):
    """Terminate ``processes`` (SIGTERM), then kill the ones still alive after ``grace`` s."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


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


__all__ = ["Executor", "LocalExecutor", "ProcessExecutor", "exit_with_parent", "make_executor", "resolve_workers"]
