"""Quiet by default (cnnvis_eval.quiet): no TensorFlow start-up chatter and no retracing
warnings caused by the library on stderr; ``--verbose`` / ``CNNVIS_VERBOSE=1`` show them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnnvis_eval import quiet

ROOT = Path(__file__).resolve().parents[2]
TF_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cudart_stub|cuInit|cpu_feature_guard|oneDNN", re.M)
LIBRARY_RETRACING = re.compile(r"calls to <function Explainer\._grad_fn.*triggered tf\.function retracing")
USER_RETRACING = re.compile(r"calls to <function user_fn at .*triggered tf\.function retracing")

API_SCRIPT = """
import os
import cnnvis_eval as cv
import keras
import numpy as np
import tensorflow as tf

print("level", os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
for k in range(8):  # a fresh model per call: the library compiles new functions on purpose
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(2, 3, activation="relu")(inp)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    cv.explain("saliency", keras.Model(inp, out), np.ones((k % 3 + 1, 12, 12, 3), np.float32))
for k in range(8):  # the user's own retracing function: its warning is meant for the user
    def user_fn(t):
        return t * 2
    tf.function(user_fn)(tf.ones(k + 1))
print("done")
"""


def _start(args, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(env_extra)
    return subprocess.Popen([sys.executable, *args], cwd=str(ROOT / "suites"), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs: dict) -> dict:
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, f"{name} failed:\n{stderr}"
        out[name] = (stdout, stderr)
    return out


@pytest.fixture
def cli_runs():
    """The CLI in two fresh interpreters, quiet and verbose, started together (each imports
    TensorFlow; one fixture per test so that the tests, on different xdist workers, do not
    each start all four)."""
    return _finish({"cli": _start(["-m", "cnnvis_eval.cli", "list"]),
                    "cli_verbose": _start(["-m", "cnnvis_eval.cli", "list", "--verbose"])})


@pytest.fixture
def api_runs():
    """The API script in two fresh interpreters, quiet and verbose, started together."""
    return _finish({"api": _start(["-c", API_SCRIPT]),
                    "api_verbose": _start(["-c", API_SCRIPT], CNNVIS_VERBOSE="1")})


def test_cli_is_quiet_by_default_and_verbose_on_request(cli_runs):
    stdout, stderr = cli_runs["cli"]
    assert "methods:" in stdout
    assert not TF_LINE.search(stderr), stderr
    _, verbose = cli_runs["cli_verbose"]
    if not TF_LINE.search(verbose):
        pytest.skip("TensorFlow printed nothing at start-up on this machine: nothing to hide")
    assert TF_LINE.search(verbose)


def test_api_hides_its_own_retracing_but_not_the_users(api_runs):
    stdout, stderr = api_runs["api"]
    assert "level 2" in stdout and "done" in stdout
    assert not TF_LINE.search(stderr), stderr
    assert not LIBRARY_RETRACING.search(stderr), stderr
    assert USER_RETRACING.search(stderr), stderr  # a warning meant for the user still shows
    _, verbose = api_runs["api_verbose"]
    assert LIBRARY_RETRACING.search(verbose), verbose
    assert USER_RETRACING.search(verbose)


def test_quiet_retracing_block_and_verbose_switch():
    import logging

    logger = logging.getLogger("tensorflow")
    record = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1,
                               "5 out of the last 5 calls to <function f> triggered tf.function retracing.",
                               None, None)
    other = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, "something else", None, None)
    assert quiet._FILTER.filter(record)  # called from test code: the user's warning shows
    with quiet.quiet_retracing():
        assert not quiet._FILTER.filter(record)
        assert quiet._FILTER.filter(other)
    assert quiet._FILTER in logger.filters
    try:
        quiet.set_verbose(True)
        assert quiet._FILTER not in logger.filters
    finally:
        quiet.set_verbose(False)
    assert quiet._FILTER in logger.filters


def test_user_log_level_is_kept_and_verbose_switches():
    env = {}
    assert quiet.set_log_level(env) == 2 and env["TF_CPP_MIN_LOG_LEVEL"] == "2"
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert quiet.set_log_level(env) == 0 and env["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert quiet.verbose_requested(["x"], {"CNNVIS_VERBOSE": "1"})
    assert not quiet.verbose_requested(["x"], {"CNNVIS_VERBOSE": "0"})
    assert quiet.verbose_requested(["/venv/bin/cnnvis-eval", "run", "--verbose"], {})
    assert not quiet.verbose_requested(["/venv/bin/cnnvis-eval", "run"], {})
    assert not quiet.verbose_requested(["train.py", "--verbose"], {})  # someone else's flag


@pytest.mark.parametrize("line, level, shown", [
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n", 2, False),
    ("I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers\n", 2, False),
    ("I0000 00:00:1.0 123 cudart_stub.cc:31] Could not find cuda drivers\n", 0, True),
    ("W0000 00:00:1.0 123 x.cc:1] a warning\n", 1, True),
    ("W0000 00:00:1.0 123 x.cc:1] a warning\n", 2, False),
    ("E0000 00:00:1.0 123 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n", 2, False),
    ("E0000 00:00:1.0 123 x.cc:1] a real error\n", 2, True),
    ("Traceback (most recent call last):\n", 3, True),
])
def test_startup_line_filter(line, level, shown):
    assert quiet._keep(line, level) is shown
