"""``cnnvis-eval plan`` (issue 18): a run's cells, CPU-hours and wall time from the cost
table, checked against sums done here by hand from the table's own rows (read with the
``csv`` module, not the code under test)."""

from __future__ import annotations

import csv
import json

import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation import RunConfig
from cnnvis_eval.evaluation.plan import COSTS, makespan, plan, study_config

STAGES_NONE = ("complexity",)  # no stage with a modelled cost: explain cells only


def _table() -> dict:
    with open(COSTS, newline="", encoding="utf-8") as f:
        return {(r["arch"], r["method"]): r for r in csv.DictReader(f)}


def _s(arch, method) -> float:
    return float(_table()[arch, method]["seconds_per_image"])


def test_two_methods_one_image_by_hand():
    config = RunConfig(models=("mini_resnet",), methods=("saliency", "grad_cam"), photos=("chelsea",),
                       scenes=0, birds=0, synthetic=0, stages=STAGES_NONE)
    sal, gc = _s("mini_resnet", "saliency"), _s("mini_resnet", "grad_cam")
    one = plan(config, workers=1)
    assert one.cells == 6  # 1 model x 2 methods x 3 neurons
    assert one.seconds == pytest.approx(3 * 1 * (sal + gc), rel=1e-9)
    assert one.cpu_hours == pytest.approx(3 * (sal + gc) * 2 / 3600, rel=1e-9)
    assert one.wall_seconds == pytest.approx(3 * (sal + gc), rel=1e-9)
    two = plan(config, workers=2, speed=2.0)  # one task per method, on two workers twice as fast
    assert two.wall_seconds == pytest.approx(max(3 * sal, 3 * gc) / 2, rel=1e-9)
    assert two.floor_seconds == pytest.approx(max(3 * sal, 3 * gc) / 2, rel=1e-9)


def test_stages_and_sample_counts_by_hand():
    config = RunConfig(models=("mini_vgg",), methods=("lime",), photos=("chelsea", "coffee"), scenes=0, birds=0, synthetic=1,
                       stages=("randomization", "faithfulness", "cost"), randomization_images=2,
                       randomization_steps=3, faithfulness_steps=10, method_params={"lime": {"num_samples": 1000}})
    row = _table()["mini_vgg", "lime"]
    measured_at = json.loads(row["params"])["num_samples"]
    s = float(row["seconds_per_image"]) * 1000 / measured_at
    fwd, fb = _s("mini_vgg", "forward"), _s("mini_vgg", "forward_backward")
    n = 3
    expected = 3 * n * s + 2 * (3 + 1) * s + 2 * n * (10 + 1) * fwd + 4 * n * fb
    p = plan(config)
    assert p.seconds == pytest.approx(expected, rel=1e-9)
    assert list(p.rows["source"]) == ["estimated"]  # scaled away from the measured 200 samples


def test_na_methods_cost_nothing_and_labels():
    table = _table()
    assert table["resnet50@224", "saliency"]["source"] == "measured"  # in the benchmark baseline
    # the rows the baseline lacks: measured by build_costs.measure_missing
    import json

    from suites.benchmarks.build_costs import MISSING

    missing = json.loads(MISSING.read_text())
    for arch, method in [("vgg16@224", "saliency"), ("resnet50@224", "score_cam"), ("xception@299", "xrai"),
                         ("xception@299", "score_cam")]:
        assert method in missing[arch] and table[arch, method]["source"] == "measured", (arch, method)
    # nothing is estimated: every applicable row is the baseline's or measure_missing's, for
    # every registered method on every architecture
    assert {r["source"] for r in table.values()} <= {"measured", "n/a"}
    archs = {a for a, _ in table}
    assert len(archs) == 10 and all((a, m) in table for a in archs for m in cv.list_methods())
    assert table["vgg16@224", "cam"]["source"] == "n/a"  # Flatten head: no CAM
    config = RunConfig(models=("vgg16",), methods=("cam", "saliency"), photos=("chelsea",), scenes=0, birds=0, synthetic=0,
                       stages=STAGES_NONE)
    p = plan(config)
    assert p.cells == 3 and p.seconds == pytest.approx(3 * _s("vgg16@224", "saliency"), rel=1e-9)


def test_the_study_grid():
    config = study_config()
    assert (len(config.models), len(config.photos), config.synthetic) == (5, 10, 0)
    p = plan(config, workers=8)
    table = _table()
    applicable = [(a, m) for (a, m), r in table.items() if "@" in a and m in config.methods and r["source"] != "n/a"]
    assert p.cells == 3 * len(applicable)
    lime = [r for (a, m), r in table.items() if m == "lime" and "@" in a]
    lime_explain = sum(3 * 10 * float(r["seconds_per_image"]) * 1000 / json.loads(r["params"])["num_samples"]
                       for r in lime)
    assert p.rows[p.rows["method"] == "lime"]["explain_s"].sum() == pytest.approx(lime_explain, rel=1e-9)
    assert p.seconds / 8 <= p.wall_seconds <= p.seconds  # 8 workers: at best 8 times faster
    assert "CPU-hours" in p.text() and "wall time on 8 workers" in p.text()


def test_explain_tasks_split_by_images_by_hand():
    """The explain tasks are (model, method group, image shard), as ``run --executor ray``
    splits them: one model and method on 4 workers is 4 one-image tasks, not one task of 4."""
    config = RunConfig(models=("mini_vgg",), methods=("lime",), photos=("chelsea", "coffee"), scenes=0, birds=0, synthetic=2,
                       stages=STAGES_NONE)
    s = _s("mini_vgg", "lime")
    one = plan(config, workers=1)
    assert one.tasks[0] == [pytest.approx(3 * 4 * s)] and one.wall_seconds == pytest.approx(3 * 4 * s)
    four = plan(config, workers=4)
    assert four.tasks[0] == [pytest.approx(3 * s)] * 4 and four.wall_seconds == pytest.approx(3 * s)
    assert one.floor_seconds == four.floor_seconds == pytest.approx(3 * s)  # one image per task on many workers
    three = plan(config, workers=4, images_per_task=3)  # shards of 3 + 1 images
    assert sorted(three.tasks[0]) == [pytest.approx(3 * s), pytest.approx(9 * s)]
    assert three.wall_seconds == three.floor_seconds == pytest.approx(9 * s)
    assert one.seconds == four.seconds == three.seconds  # the same compute, split differently


def test_explain_shards_hold_whole_batches_by_hand():
    """Shards are rounded up to whole explain batches, as the Ray run splits them: saliency's
    batches of 16 over 4 images leave no split (one task on 4 workers); with batches of 2 (the
    local run's 0 | 1-2 | 3) one image per task becomes shards of 1, 2 and 1 images, said once."""
    photos = dict(photos=("chelsea", "coffee"), synthetic=2, scenes=0, birds=0, stages=STAGES_NONE)
    s = _s("mini_vgg", "saliency")
    default = plan(RunConfig(models=("mini_vgg",), methods=("saliency",), **photos), workers=4)
    assert default.tasks[0] == [pytest.approx(3 * 4 * s)] and default.floor_seconds == pytest.approx(3 * 4 * s)
    assert default.note is None
    config = RunConfig(models=("mini_vgg",), methods=("saliency",), method_params={"saliency": {"batch_size": 2}},
                       **photos)
    two = plan(config, workers=4, images_per_task=1)
    assert two.tasks[0] == [pytest.approx(3 * s), pytest.approx(6 * s), pytest.approx(3 * s)]
    assert two.floor_seconds == two.wall_seconds == pytest.approx(6 * s)
    assert "images per task 1 rounded up to whole explain batches: 2 for saliency" in two.text()


def test_randomization_tasks_split_by_method_by_hand():
    """Five methods are 4 groups; one model on 8 workers gets one randomization task per
    method (the curves are stored per method), on 1 worker one per group."""
    methods = ("saliency", "grad_cam", "gradient_x_input", "guided_backprop", "smoothgrad")
    config = RunConfig(models=("mini_vgg",), methods=methods, photos=("chelsea",), scenes=0, birds=0, synthetic=0,
                       stages=("randomization",), randomization_images=1, randomization_steps=3)
    per = {m: 1 * (3 + 1) * _s("mini_vgg", m) for m in methods}
    assert per["smoothgrad"] > per["saliency"]
    eight, two = plan(config, workers=8), plan(config, workers=1)
    assert sorted(eight.tasks[1]) == pytest.approx(sorted([0.0] + list(per.values())))
    groups = [per["saliency"] + per["smoothgrad"], per["grad_cam"], per["gradient_x_input"], per["guided_backprop"]]
    assert sorted(two.tasks[1]) == pytest.approx(sorted([0.0] + groups))
    assert two.floor_seconds - max(two.floor_tasks[0]) == pytest.approx(per["smoothgrad"])


def test_makespan_places_longest_first():
    assert makespan([2, 3, 2, 3, 2], 2) == 7  # 3 | 3, then 2 | 2, then 2 on the first: 3+2+2 | 3+2
    assert makespan([5, 1, 1, 1], 2) == 5
    assert makespan([1, 1], 4) == 1


def test_plan_refuses_what_it_cannot_cost(tmp_path):
    config = RunConfig(models=("mini_vgg",), methods=("saliency",), photos=("chelsea",), scenes=0, birds=0, synthetic=0)
    with pytest.raises(InputError, match="workers must be >= 1"):
        plan(config, workers=0)
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    files = RunConfig(models=(), model_files=(str(model),), methods=("saliency",), photos=("chelsea",),
                      scenes=0, birds=0, synthetic=0)
    with pytest.raises(InputError, match="m.keras"):  # the probe cannot load it
        plan(files)


def test_a_model_file_is_planned_from_a_probe(tmp_path):
    """A user's model file: its forward and forward+backward passes are measured, its methods
    estimated from them by hand here: LIME = 201 model inputs x forward, saliency = the
    minis' median ratio to forward+backward (from the table) x forward+backward, CAM n/a
    (mini_vgg's Flatten head)."""
    import statistics

    from suites.support.models import mini_spec

    path = tmp_path / "mine.keras"
    mini_spec("mini_vgg").model.save(path)
    config = RunConfig(models=(), model_files=(str(path),), methods=("saliency", "lime", "cam"),
                       photos=("chelsea", "coffee"), scenes=0, birds=0, synthetic=0, stages=STAGES_NONE)
    p = plan(config)
    (name, (f, fb)), = p.probed.items()
    assert str(path) in name and 0 < f < fb < 10
    table = _table()
    minis = ["mini_vgg", "mini_resnet", "mini_inception", "mini_mobilenet", "mini_xception"]
    ratio = statistics.median(float(table[a, "saliency"]["seconds_per_image"])
                              / float(table[a, "forward_backward"]["seconds_per_image"]) for a in minis)
    rows = p.rows.set_index("method")
    assert rows.loc["lime", "explain_s"] == pytest.approx(3 * 2 * 201 * f, rel=1e-9)
    assert rows.loc["saliency", "explain_s"] == pytest.approx(3 * 2 * ratio * fb, rel=1e-9)
    assert rows.loc["cam", "source"] == "n/a" and rows.loc["cam", "explain_s"] == 0
    assert set(rows["source"]) == {"estimated", "n/a"} and "probed on this machine" in p.text()


def test_cli_plan(capsys):
    from cnnvis_eval import cli

    assert cli.main(["plan", "--models", "mini_resnet", "--methods", "saliency", "grad_cam", "--images", "chelsea",
                     "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "18 cells" not in out and "6 cells" in out and "wall time on 2 workers" in out
    assert cli.main(["plan", "--study", "--workers", "16"]) == 0
    import cnnvis_eval as cv

    assert f"5 models x {len(cv.list_methods())} methods x 10 images" in capsys.readouterr().out
    assert cli.main(["plan", "--workers", "0"]) == 2
    assert capsys.readouterr().err.startswith("cnnvis-eval: error: --workers must be >= 1")
    assert cli.main(["plan", "--images-per-task", "0"]) == 2
    assert capsys.readouterr().err.startswith("cnnvis-eval: error: --images-per-task must be >= 1")
    assert cli.main(["plan", "--models", "mini_vgg", "--methods", "lime", "--images", "chelsea", "coffee",
                     "--workers", "2", "--images-per-task", "1"]) == 0
    assert "wall time on 2 workers" in capsys.readouterr().out
