"""``cnnvis-eval run`` checks every option before the first model loads (issue 14, item 10).

Each bad command must end with exit status 2 and one ``cnnvis-eval: error: ...`` line on
stderr naming the bad value, without loading a model (the loaders are replaced by ones that
fail the test) and without writing anything into ``--out``.  No test here loads a model.
"""

from __future__ import annotations

import contextlib

import os
import re
import tempfile
from pathlib import Path

import pytest

import cnnvis_eval as cv
from cnnvis_eval.cli import main
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation import RunConfig


@pytest.fixture
def no_model_loads(monkeypatch):
    """Every way ``cmd_run`` reaches a model fails the test."""
    import cnnvis_eval.evaluation as evaluation
    import cnnvis_eval.evaluation.inputs as inputs
    import cnnvis_eval.models as models

    def loaded(*args, **kwargs):
        pytest.fail(f"a model was loaded or a run started before the options were checked: {args}")

    for module, name in [(inputs, "load_spec"), (inputs, "load_inputs"), (inputs, "load_model_file"),
                         (models, "load_model"), (evaluation, "GridRun")]:
        monkeypatch.setattr(module, name, loaded)


@pytest.fixture
def refused(tmp_path, capsys, no_model_loads):
    """``refused(argv, *fragments)``: runs ``cnnvis-eval run ARGV`` (``--out`` a fresh folder
    unless given) and checks exit 2, one error line holding every fragment, nothing written."""

    def check(argv, *fragments):
        out = tmp_path / "out"
        if "--out" not in argv:
            argv = argv + ["--out", str(out)]
        assert main(["run", "--quiet"] + argv) == 2
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("cnnvis-eval: error: "), captured.err
        for fragment in fragments:
            assert fragment in lines[0]
        assert captured.out == ""
        assert not out.exists()  # no half-made run folder
        return lines[0]

    return check


@pytest.mark.parametrize("argv, fragments", [
    (["--models", "mobilenet_v2", "--input-size", "10000"],
     ["input_size 10000 is out of range for mobilenet_v2", "32 to 992"]),
    (["--models", "resnet50", "--input-size", "737"], ["input_size 737", "resnet50", "32 to 736"]),
    (["--models", "resnet50", "inception_v3", "--input-size", "64"], ["input_size 64", "inception_v3", "75 to 992"]),
    (["--models", "resnet50", "--input-size", "0"], ["input_size 0", "resnet50"]),
    (["--models", "vgg16", "--weights", "imagenet", "--input-size", "128"],
     ["vgg16 has a Flatten head", "input_size 224, got 128"]),
], ids=["huge", "above-max", "below-min", "zero", "flatten-imagenet"])
def test_input_size_limits(refused, argv, fragments):
    refused(argv, *fragments)


@pytest.mark.parametrize("arch", list(cv.models.ARCHS))
def test_input_size_limits_are_inclusive(arch):
    from cnnvis_eval.evaluation.config import MAX_INPUT_SIZE

    low, high = cv.models.ARCHS[arch].min_size, MAX_INPUT_SIZE[arch]
    assert 32 <= low < cv.models.ARCHS[arch].default_size <= high <= 1024
    for size in (low, high):
        assert RunConfig(models=(arch,), input_size=size).input_size == size
    for size in (low - 1, high + 1):
        with pytest.raises(InputError, match=f"input_size {size} is out of range for {arch}"):
            RunConfig(models=(arch,), input_size=size)


@pytest.mark.parametrize("entries, fragments", [
    (["synthetic:abc"], ["'synthetic:abc'", "whole number >= 1", "'abc'"]),
    (["synthetic:-1"], ["'synthetic:-1'"]),
    (["synthetic:0"], ["'synthetic:0'"]),
    (["chelsea", "synthetic:1.5"], ["'synthetic:1.5'"]),
    (["synthetic:"], ["'synthetic:'"]),
    (["synthetic:5000"], ["synthetic must be >= 0 and at most 1000, got 5000"]),
], ids=["word", "negative", "zero", "fraction", "empty", "too-many"])
def test_bad_synthetic_entries(refused, entries, fragments):
    refused(["--images"] + entries, *fragments)


def test_synthetic_given_twice(refused):
    refused(["--images", "chelsea", "synthetic:2", "synthetic:3"], "twice", "'synthetic:2'", "'synthetic:3'")
    refused(["--images", "synthetic:2", "--synthetic", "3"], "--synthetic 3", "give one")


def test_unknown_model_next_to_a_valid_one(refused):
    line = refused(["--models", "mini_vgg", "no_such_model"], "unknown model 'no_such_model'", "available:")
    assert all(m in line for m in cv.list_models())


@pytest.mark.parametrize("argv, fragments", [
    (["--models", "mini_vgg", "--input-size", "0"], ["input_size 0 does not apply to mini_vgg"]),
    (["--input-size", "96"], ["input_size 96 does not apply to mini_vgg, mini_resnet", "mini_mobilenet"]),
    (["--models", "mini_vgg", "--weights", "imagenet"], ["weights 'imagenet' does not apply to mini_vgg"]),
    (["--models", "mini_resnet", "--weights", "some.h5"], ["weights 'some.h5' does not apply to mini_resnet"]),
], ids=["size-zero", "size-default-models", "imagenet", "weights-file"])
def test_big_model_options_on_mini_models(refused, argv, fragments):
    refused(argv + ["--methods", "saliency"], *fragments)


def test_big_model_options_on_a_model_file(refused, tmp_path):
    model = tmp_path / "mine.keras"
    model.write_bytes(b"never read")
    refused(["--model-file", str(model), "--input-size", "96"], f"input_size 96 does not apply to file:{model}")


@pytest.mark.parametrize("argv, fragment", [
    (["--images", "chelsea", "coffee", "chelsea"], "photo 'chelsea' is given twice"),
    (["--models", "mini_vgg", "mini_resnet", "mini_vgg"], "model 'mini_vgg' is given twice"),
    (["--methods", "saliency,grad_cam", "saliency"], "method 'saliency' is given twice"),
], ids=["photo", "model", "method"])
def test_duplicates(refused, argv, fragment):
    refused(argv, fragment)


def test_duplicate_model_file(refused, tmp_path, monkeypatch):
    model = tmp_path / "mine.keras"
    model.write_bytes(b"never read")
    monkeypatch.chdir(tmp_path)
    refused(["--model-file", "mine.keras", "--model-file", str(model)], "model file", "is given twice")


def test_unknown_photo(refused):
    line = refused(["--models", "mini_vgg", "--images", "chelsea", "no_such_photo"],
                   "unknown photo 'no_such_photo'", "available: chelsea")
    assert all(name in line for name in cv.data.photos.list_photos())


def _unwritable_folder(tmp_path) -> Path:
    """A folder this process cannot write into: a read-only one (root writes anywhere, so
    then /sys, which the kernel keeps read-only for everyone)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder available")


def test_read_only_out(refused, tmp_path):
    folder = _unwritable_folder(tmp_path)
    refused(["--models", "mini_vgg", "--out", str(folder / "reports")],
            f"cannot write the run folder '{folder / 'reports' / 'run-'}", f"{str(folder)!r} is not writable")
    assert not (folder / "reports").exists()


def test_out_is_a_file(refused, tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("a file, not a folder")
    refused(["--models", "mini_vgg", "--out", str(afile / "reports")], f"{str(afile)!r} is not a folder")


@pytest.mark.parametrize("argv, fragment", [
    (["--workers", "0"], "--workers must be >= 1, got 0"),
    (["--workers", "-1"], "--workers must be >= 1, got -1"),
    (["--seed", "-1"], "seed must be between 0 and 2147483647, got -1"),
    (["--run-id", "../elsewhere"], "--run-id must be a folder name (no path), got '../elsewhere'"),
    (["--model-file", "no/such/model.keras"], "model file 'no/such/model.keras' does not exist"),
    (["--models", "resnet50", "--weights", "no/such/weights.h5"], "weights file 'no/such/weights.h5' does not exist"),
], ids=["workers-0", "workers-negative", "seed", "run-id", "model-file", "weights-file"])
def test_other_options(refused, argv, fragment):
    refused(argv, fragment)


def test_missing_model_file_is_found_before_another_file_loads(refused, tmp_path):
    good = tmp_path / "good.keras"
    good.write_bytes(b"would be loaded first")
    refused(["--model-file", str(good), "--model-file", str(tmp_path / "gone.keras")],
            f"model file {str(tmp_path / 'gone.keras')!r} does not exist")


@pytest.mark.parametrize("argv", [["--input-size", "abc"], ["--workers", "2.5"], ["--no-such-option"]])
def test_argparse_errors_are_one_line(argv, capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_info:
        main(["run"] + argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnvis-eval: error: ") and argv[0] in lines[0]


def test_valid_options_still_reach_the_run(tmp_path, monkeypatch, no_model_loads):
    """The checks refuse only what is wrong: big-model options next to a mini model, the
    limits themselves, a fresh --out below a missing folder."""
    import cnnvis_eval.evaluation as evaluation
    import cnnvis_eval.report as report

    seen = {}

    class FakeRun:
        def __init__(self, config, out, progress=True, workers=None):
            seen.update(config=config, out=Path(out))

        def run(self):
            pass

    monkeypatch.setattr(evaluation, "GridRun", FakeRun)
    monkeypatch.setattr(evaluation, "RunLock", lambda out: contextlib.nullcontext())  # it makes the folder
    monkeypatch.setattr(report, "build_report", lambda out, benchmarks=None: Path(out) / "index.html")
    out = tmp_path / "not" / "yet"
    assert main(["run", "--quiet", "--models", "mini_vgg", "mobilenet_v2", "xception", "--input-size", "672",
                 "--weights", "imagenet", "--images", "chelsea", "synthetic:3", "--seed", "0",
                 "--workers", "1", "--out", str(out)]) == 0
    cfg = seen["config"]
    assert cfg.input_size == 672 and cfg.weights == "imagenet" and cfg.synthetic == 3 and cfg.photos == ("chelsea",)
    assert seen["out"].parent == out and not out.exists()  # the probe left nothing behind


@pytest.mark.parametrize("argv, message", [
    (["--input-shape", "16,16"], r"--input-shape must be H,W,C \(three whole numbers\), got '16,16'"),
    (["--input-shape", "16,16,3"], r"file_input_shape \(16, 16, 3\) does not apply: the run has no model file"),
    (["--output", "cls"], r"file_output 'cls' does not apply: the run has no model file"),
])
def test_model_file_options_without_a_model_file(argv, message, tmp_path, capsys, no_model_loads):
    assert main(["run", "--models", "mini_vgg", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


def test_model_file_input_shape_out_of_range(tmp_path, capsys, no_model_loads):
    (tmp_path / "m.keras").touch()
    assert main(["run", "--model-file", str(tmp_path / "m.keras"), "--input-shape", "16,16,4",
                 "--out", str(tmp_path / "out")]) == 2
    assert "file_input_shape (16, 16, 4) is out of range" in capsys.readouterr().err
