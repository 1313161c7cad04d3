"""A run folder under faults: a second run into it, two writers of one file, a killed or
interrupted run (issue 14, items 4 and 5).

The default tests are fast: the lock is held by a forked process (a real other holder), the
parent-death watch runs in a forked grandchild, the CLI's interrupt handling gets a real
signal in this process.  The ``slow`` tests run the real thing: ``cnnvis-eval run
--workers 2`` in a subprocess (a TensorFlow import per process), killed with SIGKILL,
interrupted with SIGINT to its process group, and two CLI runs into one folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cnnvis_eval.cli import main
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation import GridRun, RunConfig, RunLock, RunStore
from cnnvis_eval.evaluation.executors import exit_with_parent
from suites.support.grid_fixtures import save_model

REPO = Path(__file__).resolve().parents[2]


# -- helpers -------------------------------------------------------------------------
class Holder:
    """A forked process that holds ``RunLock(folder)`` until :meth:`release` or a kill."""

    def __init__(self, folder):
        r, w = os.pipe()  # child -> parent: "locked"
        r2, w2 = os.pipe()  # parent -> child: "release"
        self.pid = os.fork()
        if self.pid == 0:  # the child: only os calls, then os._exit
            code = 0
            try:
                os.close(r), os.close(w2)
                lock = RunLock(folder).acquire()
                os.write(w, b"1")
                os.read(r2, 1)
                lock.release()
            except BaseException:
                code = 1
            os._exit(code)
        os.close(w), os.close(r2)
        self._release = w2
        assert os.read(r, 1) == b"1", "the holder could not take the lock"
        os.close(r)

    def release(self):
        os.write(self._release, b"1")
        os.close(self._release)
        os.waitpid(self.pid, 0)

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self._release)


def lock_is_free(folder) -> bool:
    """Whether another holder (a fresh thread of this process) can take the lock now."""
    seen = []

    def attempt():
        try:
            RunLock(folder).acquire().release()
            seen.append(True)
        except InputError:
            seen.append(False)

    t = threading.Thread(target=attempt)
    t.start()
    t.join()
    return seen[0]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (from /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """The live descendants of ``pid`` (from /proc)."""
    parent_of = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent_of[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parent_of.items() if p in frontier} - found
        found |= frontier
    return {p for p in found if alive(p)}


def survivors(pids) -> str:
    """The processes of ``pids`` still alive, with their command lines (a failure message)."""
    return "survivors: " + "; ".join(f"{p}: {Path(f'/proc/{p}/cmdline').read_bytes()[:100]!r}"
                                     for p in pids if alive(p))


def wait_until(condition, timeout, step=0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def run_argv(models, out, workers="1"):
    argv = ["run", "--methods", "saliency", "--images", "synthetic:1", "--out", str(out), "--run-id", "r",
            "--workers", workers, "--quiet"]
    for m in models:
        argv += ["--model-file", str(m)]
    return argv


# -- item 4: the lock --------------------------------------------------------------------
def test_a_second_run_into_a_locked_folder_is_refused(tmp_path, capsys):
    model = save_model("gap_cnn", tmp_path / "models")
    out = tmp_path / "runs" / "r"
    holder = Holder(out)
    try:
        assert main(run_argv([model], tmp_path / "runs")) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [f"cnnvis-eval: error: another run (pid {holder.pid}) is writing into {str(out)!r}; "
                       "wait for it to finish, or choose another --out folder"]
        assert [p.name for p in out.iterdir()] == [".lock"]  # the refused run wrote nothing
        with pytest.raises(InputError, match=f"another run \\(pid {holder.pid}\\) is writing into"):
            GridRun(RunConfig(models=(), model_files=(model,), methods=("saliency",), photos=(), scenes=0, birds=0, synthetic=1),
                    out, progress=False, log=None)
        assert [p.name for p in out.iterdir()] == [".lock"]
    finally:
        holder.kill()  # a lock dies with its holder: no stale lock after a SIGKILL
    assert lock_is_free(out)


def test_the_lock_waits_for_its_holder_when_asked(tmp_path):
    holder = Holder(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"\(waited 0.3 s\)"):
        RunLock(tmp_path, wait=0.3).acquire()
    assert time.monotonic() - t0 >= 0.3
    threading.Timer(0.3, holder.release).start()
    with RunLock(tmp_path, wait=10):
        pass
    assert lock_is_free(tmp_path)


def test_the_lock_is_reentrant_in_its_thread_only(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):  # the CLI holds it around GridRun, which takes it again
            assert not lock_is_free(tmp_path)
        assert not lock_is_free(tmp_path)  # still held by the outer block
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    assert lock_is_free(tmp_path)


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    cfg = RunConfig(models=(), model_files=(tmp_path / "missing.keras",), methods=("saliency",), photos=(),
                    scenes=0, birds=0, synthetic=1)
    with pytest.raises(InputError, match="no model of the run could be loaded"):
        GridRun(cfg, tmp_path / "r", progress=False, log=None).run()
    assert lock_is_free(tmp_path / "r")


def test_two_writers_of_one_file_do_not_collide(tmp_path):
    """Two threads (or processes) storing the same file: every write lands whole, none
    fails on a temporary file the other renamed away, no temporary file is left."""
    store, path, errors = RunStore(tmp_path), tmp_path / "rows" / "x.txt", []

    def writer(k):
        try:
            for i in range(300):
                store.save_text(path, f"{k}:{i}" * 100)
        except Exception as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    text = path.read_text()
    assert text == text[:len(text) // 100] * 100
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.txt"]


# -- item 5: workers die with their parent; Ctrl-C and SIGTERM end the run in one line -------
def test_a_worker_exits_when_its_parent_is_killed():
    """The watch every worker process starts (:func:`exit_with_parent`), in a forked
    grandchild of this process whose parent is then killed with SIGKILL."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            grandchild = os.fork()
            if grandchild == 0:
                exit_with_parent(os.getppid(), poll=0.05)
                time.sleep(60)
                os._exit(0)
            os.write(w, str(grandchild).encode())
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 32))
    os.close(r)
    assert alive(grandchild)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert wait_until(lambda: not alive(grandchild), timeout=5), "the worker outlived its parent"


@pytest.mark.parametrize("signum, rc, word", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_cli_run_ends_in_one_line(signum, rc, word, tmp_path, monkeypatch, capsys, request):
    """A real signal to this process while the CLI runs: one line naming the folder, exit
    130 / 143, the folder's lock released, the SIGTERM handler restored."""
    import cnnvis_eval.evaluation as evaluation
    import cnnvis_eval.evaluation.inputs as inputs

    class SignalledRun:
        def __init__(self, config, out, progress=True, workers=None):
            pass

        def run(self):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises in the main thread before this ends
            raise AssertionError("the signal was not delivered")

    monkeypatch.setattr(evaluation, "GridRun", SignalledRun)
    monkeypatch.setattr(inputs, "load_spec", lambda name, config: None)
    (tmp_path / "m.keras").touch()  # the CLI checks that a model file exists before loading any
    # Python's own SIGINT handler, as in a terminal (a pytest-xdist worker ignores SIGINT)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous_int))
    before = signal.getsignal(signal.SIGTERM)
    assert main(run_argv([tmp_path / "m.keras"], tmp_path)) == rc
    out = tmp_path / "r"
    assert capsys.readouterr().err.splitlines() == [
        f"cnnvis-eval: {word}; run again with the same command to resume ({out})"]
    assert lock_is_free(out)
    assert signal.getsignal(signal.SIGTERM) == before


# -- the real thing: cnnvis-eval run --workers 2 in a subprocess (slow) ---------------------------
def start_cli(argv, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = "import sys; from cnnvis_eval.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def two_models(tmp_path):
    return [save_model("gap_cnn", tmp_path / "models"), save_model("flat_cnn", tmp_path / "models")]


def wait_for_cells(proc, out, timeout=300):
    """Wait until the run ``proc`` stored its first cell (its workers are computing)."""
    ok = wait_until(lambda: proc.poll() is not None or any((out / "heatmaps").glob("*/*/*.npz")), timeout)
    assert ok and proc.poll() is None, f"the run ended early or never started: {proc.communicate()}"


@pytest.mark.slow
def test_killing_the_parent_of_a_two_worker_run_leaves_no_process(tmp_path):
    proc = start_cli(run_argv(two_models(tmp_path), tmp_path / "runs", workers="2"))
    out = tmp_path / "runs" / "r"
    children = set()
    try:
        wait_for_cells(proc, out)
        children = descendants(proc.pid)
        assert len(children) >= 2  # the workers (and the resource tracker)
        proc.kill()
        proc.wait(30)  # not communicate(): on failure survivors would hold its pipes open
        assert not (out / "results.parquet").exists()  # killed mid-run
        assert wait_until(lambda: not any(alive(p) for p in children), timeout=20), survivors(children)
    finally:
        for p in children | descendants(proc.pid) | {proc.pid}:  # no survivor outlives a failure
            if alive(p):
                os.kill(p, signal.SIGKILL)
        proc.stdout.close(), proc.stderr.close()


@pytest.mark.slow
def test_ctrl_c_on_a_two_worker_run_is_one_line_and_the_run_resumes(tmp_path, capsys):
    models = two_models(tmp_path)
    argv = run_argv(models, tmp_path / "runs", workers="2")
    out = tmp_path / "runs" / "r"
    proc = start_cli(argv, start_new_session=True)  # its own process group, as a terminal's job
    wait_for_cells(proc, out)
    children = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole group gets SIGINT
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"cnnvis-eval: interrupted; run again with the same command to resume ({out})"]
    assert wait_until(lambda: not any(alive(p) for p in children), timeout=10), survivors(children)
    stored = {p: p.stat().st_mtime_ns for p in (out / "heatmaps").glob("*/*/*.npz")}
    assert stored and not list(out.rglob("*.tmp"))
    # the same command again resumes: the stored cells are not recomputed
    assert main(run_argv(models, tmp_path / "runs", workers="1")) == 0  # in this process
    assert {p: p.stat().st_mtime_ns for p in stored} == stored
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["model"]) == {"gap_cnn", "flat_cnn"}


@pytest.mark.slow
def test_two_cli_runs_into_one_folder(tmp_path, capsys):
    argv = run_argv(two_models(tmp_path)[:1], tmp_path / "runs")
    out = tmp_path / "runs" / "r"
    first = start_cli(argv)
    assert wait_until(lambda: first.poll() is not None or (out / ".lock").is_file()
                      and (out / ".lock").read_text().strip() == str(first.pid), timeout=300)
    assert first.poll() is None
    assert main(argv) == 2  # the second run, in this process, while the first one runs
    err = capsys.readouterr().err
    assert err.splitlines() == [f"cnnvis-eval: error: another run (pid {first.pid}) is writing into {str(out)!r}; "
                                "wait for it to finish, or choose another --out folder"]
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["model"]) == {"gap_cnn"} and (out / "index.html").is_file()
