"""Tasks and a method for the Ray executor's tests, importable by the Ray workers.

Importing this module registers the method ``_test_exit_worker`` (its explanation ends the
worker process with ``os._exit``: a worker that dies mid-run); the tests remove it from the
registry again.
"""

from __future__ import annotations

import os

from cnnvis_eval.methods.base import Explainer, register

EXIT_METHOD = "_test_exit_worker"


def square(x, tick):
    """``x * x``; reports ``x`` units of progress."""
    tick(x)
    return x * x


def pid(key, tick):
    """The worker's process id (``key`` only routes the task)."""
    tick(1)
    return os.getpid()


def exit_if(flag, tick):
    """Ends the worker process when ``flag`` (a task that kills its own process)."""
    if flag:
        os._exit(3)
    tick(1)
    return os.getpid()


def fail(message, tick):
    """Raises ValueError(message) in the worker."""
    raise ValueError(message)


@register(EXIT_METHOD)
class ExitWorker(Explainer):
    """A method whose explanation ends its process (``os._exit``)."""

    def _explain_batch(self, x, bound):
        os._exit(3)
