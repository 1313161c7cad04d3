"""The pytest plugin of cnnvis_eval.testing, run in-process on a saved mini model and a folder
of two PNGs: ids ``test_<check>[<method>-<variant>]``, verdicts as outcomes, the verdict
table in ``--cnnvis-report DIR``; nothing collected without ``--cnnvis-model``.

Entry-point autoloading is off in the inner runs (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) and the
plugin is loaded with ``-p``, so the test means the same before and after the entry point is
installed.  The collected suite file lives in this checkout, so the inner runs take the
repository as rootdir and name the suite file on the command line (the repository's
conftest.py is then an initial conftest, as in ``pytest suites/ --cnnvis-model X``); the
record plugin's row buffers are swapped for empty ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.testing import plugin
from suites.support import record

ROOT = Path(__file__).resolve().parents[2]
from suites.support.models import mini_spec


@pytest.fixture
def inner(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(plugin, "_VERDICTS", [])
    monkeypatch.setattr(plugin, "_CONTEXTS", {})
    for name in ("_ROWS", "_CURVES", "_AGREEMENT", "_BENCHMARKS"):
        monkeypatch.setattr(record, name, [])
    monkeypatch.chdir(tmp_path)

    def run(*args):
        return pytest.main(["-p", "cnnvis_eval.testing.plugin", "-p", "no:cacheprovider", "-v",
                            "--rootdir", str(ROOT), *args])

    return run


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from skimage import io

    from cnnvis_eval.data.synthetic import make_synthetic

    d = tmp_path_factory.mktemp("user")
    path = d / "my_model.keras"
    mini_spec("mini_vgg").model.save(path)
    (d / "images").mkdir()
    syn = make_synthetic(2, 64, seed=4242)
    for i, img in enumerate(syn.images):
        io.imsave(d / "images" / f"img{i}.png", np.asarray(img, np.uint8), check_contrast=False)
    return path, d / "images"


def test_plugin_collects_checks_and_reports_verdicts(inner, user_files, tmp_path, capsys):
    model, images = user_files
    out = tmp_path / "report"
    code = inner("--cnnvis-model", str(model), "--cnnvis-images", str(images), "--cnnvis-preprocess=-1,1",
                 "--cnnvis-methods", "saliency,grad_cam",
                 "--cnnvis-checks", "randomization.cascading_all,invariance.batch,conservation,localization.pointing_game",
                 "--cnnvis-report", str(out), str(plugin.SUITE))
    stdout = capsys.readouterr().out
    assert code == pytest.ExitCode.OK, stdout[-3000:]
    for test_id in ("test_randomization[saliency-cascading_all]", "test_randomization[grad_cam-cascading_all]",
                    "test_invariance[grad_cam-batch]", "test_conservation[saliency]",
                    "test_localization[grad_cam-pointing_game]"):
        assert test_id in stdout, stdout[-3000:]
    assert "4 passed, 4 skipped" in stdout
    assert "n/a; measured nan" in stdout and "no ground-truth masks given" in stdout
    table = pd.read_parquet(out / "verdicts.parquet")
    cells = table[~table["metric"].str.contains(":control:")]
    assert len(cells) == 8 and set(cells["model"]) == {"my_model"}
    assert set(cells[cells["metric"] == "randomization.cascading_all"]["status"]) == {"pass"}


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
