"""The pytest plugin of cnnvis_eval.testing, run in-process on a saved mini model and a folder
of two PNGs: ids ``test_<check>[<method>-<variant>]``, verdicts as outcomes, the verdict
table in ``--cnnvis-report DIR``; nothing collected without ``--cnnvis-model``.

Entry-point autoloading is off in the inner runs (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) and the
plugin is loaded with ``-p``, so the test means the same before and after the entry point is
installed.  The inner runs have their own rootdir, so this repository's conftest.py (in the
folders above the collected suite file of this checkout) must stay out of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.testing import plugin
from suites.support.models import mini_spec


@pytest.fixture
def inner(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(plugin, "_VERDICTS", [])
    monkeypatch.setattr(plugin, "_CONTEXTS", {})
    monkeypatch.chdir(tmp_path)

    def run(*args):
        return pytest.main(["-p", "pytest_cnnvis_eval", "-p", "no:cacheprovider", "-v",
                            "--rootdir", str(tmp_path), *args])

    return run


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from skimage import io

    from cnnvis_eval.data.synthetic import make_synthetic

    d = tmp_path_factory.mktemp("user")
    path = d / "my_model.keras"
    # a VGG whose Guided Backprop ignores a re-initialized head and whose gradient does not
    # (0.95 vs 0.76 similarity): the shortcut-trained mini; the benchmark-v2 mini_vgg's plain
    # gradient ignores its head too (0.95, suites/sanity/randomization_expected.csv)
    mini_spec("mini_vgg_shortcut").model.save(path)
    (d / "images").mkdir()
    syn = make_synthetic(2, 64, seed=4242)
    for i, img in enumerate(syn.images):
        io.imsave(d / "images" / f"img{i}.png", np.asarray(img, np.uint8), check_contrast=False)
    return path, d / "images"


def test_plugin_collects_checks_and_reports_verdicts(inner, user_files, tmp_path, capsys):
    model, images = user_files
    out = tmp_path / "report"
    code = inner("--cnnvis-model", str(model), "--cnnvis-images", str(images), "--cnnvis-preprocess=-1,1",
                 "--cnnvis-methods", "saliency,grad_cam,guided_backprop",
                 "--cnnvis-checks",
                 "randomization.cascading_top,invariance.batch,conservation,localization.pointing_game",
                 "--cnnvis-report", str(out))
    stdout = capsys.readouterr().out
    assert code == pytest.ExitCode.OK, stdout[-3000:]
    for test_id in ("test_randomization[saliency-cascading_top]", "test_randomization[grad_cam-cascading_top]",
                    "test_invariance[grad_cam-batch]", "test_conservation[saliency]",
                    "test_localization[grad_cam-pointing_game]"):
        assert test_id in stdout, stdout[-3000:]
    assert "5 passed, 6 skipped, 1 xfailed" in stdout
    assert "XFAIL" in stdout and "test_randomization[guided_backprop-cascading_top]" in stdout
    assert "known failure: Adebayo et al. 2018" in stdout  # the cited prediction, not hidden
    assert "pointing_game n/a; no ground-truth masks given" in stdout
    assert (out / "index.html").is_file() and f"cnnvis_eval report: {out / 'index.html'}" in stdout
    table = pd.read_parquet(out / "verdicts.parquet")
    cells = table[~table["metric"].str.contains(":control:")]
    assert len(cells) == 12 and set(cells["model"]) == {"my_model"}
    top = cells[cells["metric"] == "randomization.cascading_top"].set_index("method")
    assert top["status"].to_dict() == {"saliency": "pass", "grad_cam": "pass", "guided_backprop": "fail"}
    assert top.loc["guided_backprop", "known_failure"].startswith("Adebayo")


def test_plugin_without_a_model_collects_nothing(inner, tmp_path, capsys):
    (tmp_path / "test_user.py").write_text("def test_mine():\n    pass\n")
    code = inner(str(tmp_path / "test_user.py"))
    assert code == pytest.ExitCode.OK
    assert "1 passed" in capsys.readouterr().out
    assert plugin._VERDICTS == []


def test_plugin_usage_errors(inner, user_files, capsys):
    model, images = user_files
    assert inner("--cnnvis-model", str(model)) == pytest.ExitCode.USAGE_ERROR
    assert "--cnnvis-model needs --cnnvis-images" in capsys.readouterr().err
    assert inner("--cnnvis-model", str(model), "--cnnvis-images", str(images),
                 "--cnnvis-checks", "randomisation") == pytest.ExitCode.USAGE_ERROR
    assert "unknown check 'randomisation'" in capsys.readouterr().err
    assert inner("--cnnvis-model", str(model), "--cnnvis-images", str(images),
                 "--cnnvis-methods", "gradcam") == pytest.ExitCode.USAGE_ERROR
    assert "unknown method(s) gradcam" in capsys.readouterr().err
    assert inner("--cnnvis-model", str(model), "--cnnvis-images", str(images), "--cnnvis-methods", "saliency",
                 "--cnnvis-param", "saliency.steps=3") == pytest.ExitCode.USAGE_ERROR
    assert "--cnnvis-param: parameter 'saliency.steps=3': saliency has no parameter 'steps'" in capsys.readouterr().err


def test_plugin_method_parameters(inner, user_files, tmp_path, capsys):
    """``--cnnvis-param`` reaches the explainer; a bad value fails the checks with one line."""
    model, images = user_files
    base = ("--cnnvis-model", str(model), "--cnnvis-images", str(images), "--cnnvis-methods", "lime",
            "--cnnvis-checks", "invariance.determinism")
    assert inner(*base, "--cnnvis-param", "lime.num_samples=20") == pytest.ExitCode.OK
    assert "test_invariance[lime-determinism] PASSED" in capsys.readouterr().out
    assert plugin._CONTEXTS[str(model)].explainer("lime").num_samples == 20
    plugin._CONTEXTS.clear()
    assert inner(*base, "--cnnvis-param", "lime.num_samples=0") == pytest.ExitCode.TESTS_FAILED
    assert "cnnvis_eval: lime {" in capsys.readouterr().out


def test_plugin_costs_nothing_without_a_model(tmp_path):
    """The entry point module imports neither cnnvis_eval nor TensorFlow: a user's pytest run
    that does not ask for the checks pays nothing (a fresh interpreter, so this process's
    imports do not count), while ``--help`` still lists the options."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest_cnnvis_eval

    (tmp_path / "test_user.py").write_text(
        "import sys\n\n"
        "def test_nothing_heavy_is_imported():\n"
        "    heavy = sorted(m for m in ('cnnvis_eval', 'tensorflow', 'keras') if m in sys.modules)\n"
        "    assert not heavy, heavy\n")
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
           "PYTHONPATH": str(Path(pytest_cnnvis_eval.__file__).parent)}
    cmd = [sys.executable, "-m", "pytest", "-p", "pytest_cnnvis_eval", "-p", "no:cacheprovider", "-q"]
    run = subprocess.run([*cmd, "test_user.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    helped = subprocess.run([*cmd, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "--cnnvis-model=FILE" in helped.stdout and "--cnnvis-preprocess=MODE" in helped.stdout


def test_several_models_parametrize_the_checks(inner, user_files, tmp_path, capsys):
    """Each ``--cnnvis-model`` adds its own checks, the file's stem first in the test id."""
    import shutil

    model, images = user_files
    other = tmp_path / "other.keras"
    shutil.copy(model, other)
    code = inner("--cnnvis-model", str(model), "--cnnvis-model", str(other), "--cnnvis-images", str(images),
                 "--cnnvis-methods", "saliency", "--cnnvis-checks", "invariance.determinism")
    stdout = capsys.readouterr().out
    assert code == pytest.ExitCode.OK, stdout[-3000:]
    assert "test_invariance[my_model-saliency-determinism] PASSED" in stdout
    assert "test_invariance[other-saliency-determinism] PASSED" in stdout
    assert {v.model for v in plugin._VERDICTS} == {"my_model", "other"}
