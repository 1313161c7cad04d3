"""Quiet by default: TensorFlow's start-up chatter and our own retracing warnings are hidden.

Rule 12 of docs/architecture.md.  Two kinds of noise reach a user who merely imports the
package or runs ``cnnvis-eval``:

- **Start-up chatter** that TensorFlow's C++ side writes to file descriptor 2 while it loads
  and looks for devices: ``WARNING: All log messages before absl::InitializeLog() ...``,
  ``cudart_stub.cc ... Could not find cuda drivers``, ``cpu_feature_guard`` and oneDNN notices
  (info lines), and ``failed call to cuInit`` (an error line that only says there is no GPU).
  ``TF_CPP_MIN_LOG_LEVEL`` alone does not hide them (the absl lines come before TensorFlow
  reads it), so :func:`import_tensorflow` sets the level (``2`` unless the user set one; a
  user's value is never overridden), imports TensorFlow and lists its devices with file
  descriptor 2 captured, and writes back every captured line except those below that level
  and the no-GPU ``cuInit`` error.  Anything else (a real error, a Python warning) still shows.
- **Retracing warnings** ("N out of the last M calls to <function ...> triggered tf.function
  retracing"): explainers are created per model and method and compile their own functions,
  so ordinary use of the library retraces on purpose.  A filter on the ``tensorflow`` logger
  drops this warning when library code is on the call stack; the same warning about a
  user's own function called from user code still shows.  :func:`quiet_retracing` drops it
  inside a block regardless of the caller.

Verbose mode shows everything (no level set, nothing captured, no filter):
``CNNVIS_VERBOSE=1`` in the environment, or ``cnnvis-eval --verbose`` (seen here before the
package imports TensorFlow, and again by the CLI through :func:`set_verbose`).

This module must not import TensorFlow at its top level: ``cnnvis_eval/__init__.py`` imports it
first and calls :func:`import_tensorflow` before anything else imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

VERBOSE_ENV = "CNNVIS_VERBOSE"
LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"  # hide TensorFlow's info and warning lines; errors still show
_CLI_NAMES = ("cnnvis-eval", "cnnvis-eval.exe")
_PACKAGE = __name__.rpartition(".")[0]  # "cnnvis_eval"

_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_GLOG_LINE = re.compile(r"^([IWEF])\d{4} ")  # absl / glog prefix: severity, then MMDD
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_GPU = ("failed call to cuInit",)  # error lines that only say there is no usable GPU
_RETRACING = "triggered tf.function retracing"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def verbose_requested(argv=None, environ=None) -> bool:
    """``$CNNVIS_VERBOSE`` set (not 0/false/no/off), or ``--verbose`` on the cnnvis-eval command line."""
    environ = os.environ if environ is None else environ
    if _truthy(environ.get(VERBOSE_ENV)):
        return True
    argv = sys.argv if argv is None else argv
    if not argv:
        return False
    program = os.path.basename(str(argv[0]))
    # "-m" is argv[0] while ``python -m cnnvis_eval.cli`` imports the package
    return (program in _CLI_NAMES or program == "-m") and "--verbose" in argv[1:]


_state = threading.local()
_verbose = verbose_requested()


def is_verbose() -> bool:
    return _verbose


# ---------------------------------------------------------------------- start-up chatter
def _keep(line: str, level: int) -> bool:
    """Whether a captured start-up line is shown at ``TF_CPP_MIN_LOG_LEVEL`` = ``level``."""
    if level >= 1 and line.strip() == _ABSL_BANNER:
        return False
    m = _GLOG_LINE.match(line)
    if m is None:
        return True
    severity = _SEVERITY[m.group(1)]
    if severity < level:
        return False
    return not (level >= 2 and severity == 2 and any(s in line for s in _NO_GPU))


def set_log_level(environ=None) -> int:
    """Set ``TF_CPP_MIN_LOG_LEVEL`` to 2 unless it is set (a user's value is kept); return it."""
    environ = os.environ if environ is None else environ
    environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
    try:
        return int(environ[LEVEL_ENV])
    except ValueError:
        return 0


def _flush() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


@contextlib.contextmanager
def _captured_stderr(level: int):
    """Capture file descriptor 2 (C++ and Python writes alike); write back what :func:`_keep` keeps."""
    _flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace")
            kept = []
            lines = text.splitlines(keepends=True)
            skip_continuation = False
            for line in lines:
                # cpu_feature_guard's notice spans two lines; its second line has no prefix
                if skip_continuation and line.startswith("To enable the following instructions"):
                    skip_continuation = False
                    continue
                keep = _keep(line, level)
                skip_continuation = not keep and "cpu_feature_guard" in line
                if keep:
                    kept.append(line)
            if kept and sys.stderr is not None:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow() -> None:
    """Import TensorFlow (and let it find its devices) without its start-up chatter.

    Does nothing special in verbose mode or when TensorFlow is already imported (its chatter
    is then already out).  Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it.
    """
    if _verbose or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401
        return
    level = set_log_level()
    try:
        with _captured_stderr(level):
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit attempt happens here
    except OSError:  # pragma: no cover - no usable file descriptor 2 (e.g. some embedded hosts)
        import tensorflow  # noqa: F401


# ---------------------------------------------------------------------- retracing warnings
def _from_library() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == _PACKAGE or name.startswith(_PACKAGE + "."):
            return True
        frame = frame.f_back
    return False


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's retracing warning raised under library code (or inside :func:`quiet_retracing`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _RETRACING not in str(record.msg):
            return True
        if getattr(_state, "depth", 0) > 0:
            return False
        return not _from_library()


_FILTER = _RetracingFilter()


def _tf_logger() -> logging.Logger:
    return logging.getLogger("tensorflow")  # what tf.get_logger() returns


def set_verbose(flag: bool) -> None:
    """Switch verbose mode on or off for what can still change after import (the retracing filter)."""
    global _verbose
    _verbose = bool(flag)
    if _verbose:
        _tf_logger().removeFilter(_FILTER)
    else:
        _tf_logger().addFilter(_FILTER)


@contextlib.contextmanager
def quiet_retracing():
    """Silence TensorFlow's "N out of the last N calls triggered retracing" warning inside the
    block, whoever the caller (e.g. a fresh explainer per step traces new functions on purpose).
    Other TensorFlow warnings still show; verbose mode shows this one too."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def setup() -> None:
    """Called first by ``cnnvis_eval/__init__.py``: TensorFlow imported quietly, retracing filter on."""
    import_tensorflow()
    set_verbose(_verbose)
