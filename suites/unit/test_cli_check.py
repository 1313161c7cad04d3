"""``cnnvis-eval check MODEL_FILE --images PATH``: the sanity checks on a user's model file
without pytest (issue 15, item 3): the scorecard on the terminal, the verdicts and the HTML
report in ``--out``, exit status 1 when a ``--require``-d method fails a check, 2 on bad input
with one line naming the file and nothing written.

Fast: the trained mini_vgg saved as a user's file, two PNGs, one or two cheap checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cnnvis_eval.cli import main
from suites.support.models import astronaut_face, mini_spec, mtcnn_onet


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from skimage import io

    from cnnvis_eval.data.synthetic import make_synthetic

    d = tmp_path_factory.mktemp("user")
    # a VGG whose Guided Backprop ignores a re-initialized head and whose gradient does not
    # (0.95 vs 0.76 similarity): the shortcut-trained mini; the benchmark-v2 mini_vgg's plain
    # gradient ignores its head too (0.95, suites/sanity/randomization_expected.csv)
    mini_spec("mini_vgg_shortcut").model.save(d / "my_model.keras")
    (d / "images").mkdir()
    syn = make_synthetic(2, 64, seed=4242)
    for i, img in enumerate(syn.images):
        io.imsave(d / "images" / f"img{i}.png", np.asarray(img, np.uint8), check_contrast=False)
    return d / "my_model.keras", d / "images"


def test_check_prints_the_scorecard_and_fails_on_a_required_method(user_files, tmp_path, capsys):
    """Guided Backprop ignores the re-initialized head (Adebayo et al. 2018): required, it makes
    the command fail (1) although the failure is a known one; the gradient passes the same check."""
    model, images = user_files
    out = tmp_path / "check"
    code = main(["check", str(model), "--images", str(images), "--preprocess=-1,1", "--quiet",
                 "--methods", "saliency", "--checks", "randomization.cascading_top", "--require", "guided_backprop",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "required method failed: guided_backprop on my_model: randomization.cascading_top fail" in captured.err
    lines = captured.out.splitlines()
    row = next(ln for ln in lines if ln.startswith("randomization.cascading_top"))
    header = next(ln for ln in lines if "saliency" in ln and "guided_backprop" in ln)
    assert header.split() == ["saliency", "guided_backprop"]  # the required method is checked too
    assert row.split()[1:] == ["pass", "fail*"], row
    table = pd.read_parquet(out / "verdicts.parquet")
    cells = table[~table["metric"].str.contains(":control:")].set_index("method")
    assert cells.loc["saliency", "status"] == "pass" and cells.loc["guided_backprop", "status"] == "fail"
    assert (out / "index.html").is_file() and f"report: {out / 'index.html'}" in captured.out


def test_check_passes_when_the_required_methods_pass(user_files, tmp_path, capsys):
    model, images = user_files
    code = main(["check", str(model), "--images", str(images), "--quiet", "--methods", "saliency",
                 "--checks", "invariance.determinism", "--require", "saliency", "--out", str(tmp_path / "c")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "c" / "verdicts.csv").is_file()


def test_check_runs_the_grid_settings_and_takes_method_parameters(user_files, tmp_path, capsys):
    """A check session runs the perturbation methods at the comparison grid's settings (LIME
    200 samples, not lime's 1000: every check repeats the method) and ``--param`` changes them;
    config.json records the parameters each method ran with, and the explainer really got them."""
    import functools
    import json

    import cnnvis_eval.methods.perturbation.lime as lime_module

    model, images = user_files
    seen = []
    original = lime_module.Lime.__init__

    @functools.wraps(original)  # keeps the signature --param is validated against
    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.num_samples)

    lime_module.Lime.__init__ = spy
    try:
        for extra, want in (([], 200), (["--param", "lime.num_samples=20", "--param", "lime.segmentation=slic"], 20)):
            out = tmp_path / f"c{want}"
            seen.clear()
            code = main(["check", str(model), "--images", str(images), "--quiet", "--methods", "lime",
                         "--checks", "invariance.determinism", "--out", str(out), *extra])
            captured = capsys.readouterr()
            assert code == 0, captured.err
            assert f"parameters (--param to change): lime(num_samples={want}" in captured.out
            params = json.loads((out / "config.json").read_text())["params"]["lime"]
            assert params["num_samples"] == want and seen and set(seen) == {want}, (params, seen)
            assert params.get("segmentation", "quickshift") == ("slic" if extra else "quickshift")
    finally:
        lime_module.Lime.__init__ = original


def _bad_files(d, model):
    """(argv tail, expected fragment of the error line) for each kind of bad input."""
    from skimage import io

    (d / "garbage.keras").write_bytes(b"not a zip")
    (d / "empty").mkdir()
    (d / "text").mkdir()
    (d / "text" / "a.png").write_bytes(b"\x89PNG broken")
    np.savez(d / "two_channels.npz", images=np.zeros((2, 16, 16, 2), np.uint8))
    (d / "masks").mkdir()
    io.imsave(d / "masks" / "other.png", np.zeros((64, 64), np.uint8), check_contrast=False)
    np.savez(d / "three_masks.npz", masks=np.zeros((3, 64, 64), bool))
    return [
        ([str(d / "garbage.keras"), "--images", "IMAGES"], "garbage.keras"),
        ([str(d / "missing.keras"), "--images", "IMAGES"], "missing.keras' does not exist"),
        ([model, "--images", str(d / "nowhere")], "nowhere' do not exist"),
        ([model, "--images", str(d / "empty")], "holds no JPEG or PNG files"),
        ([model, "--images", str(d / "text")], "a.png' cannot be read"),
        ([model, "--images", str(d / "two_channels.npz")], "2 channels"),
        ([model, "--images", "IMAGES", "--require", "gradcam"], "--require: method(s) gradcam are not registered"),
        ([model, "--images", "IMAGES", "--masks", str(d / "masks")], "has no mask for image(s) img0, img1"),
        ([model, "--images", "IMAGES", "--masks", str(d / "three_masks.npz")], "expected 2 masks"),
        ([model, "--images", "IMAGES", "--checks", "randomisation"], "unknown check 'randomisation'"),
        ([model, "--images", "IMAGES", "--classes", "cat", "dog"], "2 class names given; the model has"),
        ([model, "--images", "IMAGES", "--param", "lime"], "must read METHOD.NAME=VALUE"),
        ([model, "--images", "IMAGES", "--param", "lime.num_samples=10"], "'lime' is not among the checked methods"),
        ([model, "--images", "IMAGES", "--methods", "saliency", "--param", "saliency.steps=3"],
         "saliency has no parameter 'steps'"),
        ([model, "--images", "IMAGES", "--methods", "lime", "--param", "lime.num_samples=-1"], "num_samples"),
    ]


def test_check_bad_input_is_one_line_exit_2_and_nothing_written(user_files, tmp_path, capsys):
    model, images = user_files
    for argv, fragment in _bad_files(tmp_path, str(model)):
        argv = [str(images) if a == "IMAGES" else a for a in argv]
        out = tmp_path / "never"
        tail = [] if "--checks" in argv else ["--checks", "invariance.determinism"]
        code = main(["check", *argv, "--quiet", "--out", str(out), *tail])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        assert err.startswith("cnnvis-eval: error: ") and len(err.splitlines()) == 1, err
        assert fragment in err, (fragment, err)
        assert not out.exists(), argv


# ---------------------------------------------------------------------- a model no one here wrote
@pytest.fixture(scope="module")
def onet_files(tmp_path_factory):
    """MTCNN's ONet with the trained weights shipped in the ``mtcnn`` wheel, saved as a user
    would (``model.save``; its class is mtcnn's, not registered with Keras), and the
    astronaut's face as a PNG (any size: the check crops and resizes it to 48x48)."""
    from skimage import io

    d = tmp_path_factory.mktemp("onet")
    mtcnn_onet().save(d / "onet.keras")
    (d / "faces").mkdir()
    io.imsave(d / "faces" / "astronaut.png", astronaut_face(), check_contrast=False)
    return d / "onet.keras", d / "faces"


def test_mtcnn_onet_runs_through_check(onet_files, tmp_path, capsys):
    """The shipped ONet (subclassed, PReLU, three outputs) end to end: without its class the
    file is refused naming the class and how to give it; without --output the outputs are
    listed; with both, every default method gets a verdict: the gradient family passes the
    batch check, the LRP rule refuses PReLU by name (n/a), and class sensitivity is
    inconclusive on a face ONet is sure of (the "not a face" logit is negative)."""
    model, faces = onet_files
    base = ["check", str(model), "--images", str(faces), "--preprocess=-1,1", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "needs the class 'ONet'" in err and "mtcnn.network.onet:ONet" in err, err
    assert main([*base, "--custom-object", "mtcnn.network.onet:ONet", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "3 outputs (0: 'fc6-1', 1: 'fc6-2', 2: 'fc6-3')" in err and "--output NAME" in err, err
    out = tmp_path / "c"
    code = main([*base, "--custom-object", "mtcnn.network.onet:ONet", "--output", "fc6-3",
                 "--checks", "invariance.batch", "class_sensitivity", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pd.read_parquet(out / "verdicts.parquet")
    cells = table[~table["metric"].str.contains(":control:")]
    status = {(r.metric, r.method): r.status for r in cells.itertuples()}
    for method in ("saliency", "integrated_gradients", "guided_backprop", "grad_cam"):
        assert status[("invariance.batch", method)] == "pass", cells.to_string()
        assert status[("class_sensitivity", method)] == "inconclusive"
    assert status[("invariance.batch", "lrp_epsilon")] == "n/a"
    reason = cells[(cells["method"] == "lrp_epsilon") & (cells["metric"] == "invariance.batch")]["reason"].iloc[0]
    assert "PReLU" in reason and "prelu" in reason, reason
    assert set(cells["model"]) == {"onet"}
