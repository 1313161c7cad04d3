"""Small saved models and tiny comparison runs for the grid, report and CLI tests.

The models are saved ``.keras`` files (what ``--model-file`` takes): a 32 px residual CNN
with a global-average-pooling head (every method applies), a 32 px CNN with a Flatten
head (CAM does not apply), and a model with a ``Lambda`` layer (unsafe to load).  Weights
are seeded, so every call builds the same files.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

SIZE = 32


def _gap_cnn() -> keras.Model:
    """x (32, 32, 3) -> conv s2 -> conv -> conv (+ residual) -> conv s2 -> conv -> GAP -> Dense(4)."""
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(inp)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    y = L.Conv2D(8, 3, padding="same", name="conv3")(y)
    x = L.ReLU(name="add_relu")(L.Add(name="add")([x, y]))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv4")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv5")(x)
    out = L.Dense(4, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="gap_cnn")


def _flat_cnn() -> keras.Model:
    """x (32, 32, 3) -> conv -> pool -> conv -> pool -> conv -> Flatten -> Dense(4): no GAP head."""
    L = keras.layers
    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1, name="scale")(inp)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    out = L.Dense(4, name="logits")(L.Flatten(name="flatten")(x))
    return keras.Model(inp, out, name="flat_cnn")


def _lambda_cnn() -> keras.Model:
    L = keras.layers
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = L.Lambda(lambda t: t / 255.0, name="scale")(inp)
    x = L.Conv2D(4, 3, activation="relu", name="conv1")(x)
    out = L.Dense(4, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="lambda_cnn")


BUILDERS = {"gap_cnn": _gap_cnn, "flat_cnn": _flat_cnn, "lambda_cnn": _lambda_cnn}


def save_model(name: str, folder: str | Path) -> Path:
    """Save model ``name`` (see :data:`BUILDERS`) as ``folder/name.keras``; returns the path."""
    path = Path(folder) / f"{name}.keras"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        BUILDERS[name]().save(path)
    return path


def strip_timing(results, columns=("method", "model", "image", "neuron", "metric")):
    """The results frame without wall-time measurements, sorted for comparison."""
    keep = ~results["metric"].isin(["cost_ratio", "seconds_per_image"])
    return results[keep].sort_values(list(columns)).reset_index(drop=True)


_RUNS: dict = {}
RUN_METHODS = ("saliency", "grad_cam", "cam")


def tiny_config(model_dir: str | Path, **changes):
    """The shared tiny configuration: the GAP and the Flatten-head model (saved in
    ``model_dir``), three methods (CAM is n/a on the Flatten head and on intermediate
    neurons), one photo and two synthetic images, a two-step randomization on one image."""
    from cnnvis_eval.evaluation import RunConfig

    kw = dict(models=(), model_files=(save_model("gap_cnn", model_dir), save_model("flat_cnn", model_dir)),
              methods=RUN_METHODS, photos=("chelsea",), synthetic=2, scenes=0, birds=0, randomization_images=1,
              randomization_steps=2)
    kw.update(changes)
    return RunConfig(**kw)


def tiny_run(tmp_path_factory):
    """``(run folder, config)`` of the finished tiny grid run of :func:`tiny_config`, report
    built; computed once per session and shared by the tests that only read it."""
    from cnnvis_eval.evaluation import GridRun
    from cnnvis_eval.report import build_report

    if "tiny" not in _RUNS:
        cfg = tiny_config(tmp_path_factory.mktemp("models"))
        out = tmp_path_factory.mktemp("tiny_run")
        GridRun(cfg, out, progress=False, log=None).run()
        build_report(out)
        _RUNS["tiny"] = (out, cfg)
    return _RUNS["tiny"]


def cell_file(root: str | Path, model: str, method: str, neuron: str, suffix: str = ".npz") -> Path | None:
    """The stored file of cell (model, method, neuron) of a run folder: its heatmaps
    (``suffix=".npz"``) or the reason it does not apply (``".na.txt"``), found through the
    folder's ``models.json`` (cells are stored by content key); None if there is none."""
    import json

    root = Path(root)
    if not (root / "models.json").is_file():  # a folder stored by name (before issue 14)
        legacy = root / "heatmaps" / model / method / f"{neuron}{suffix}"
        return legacy if legacy.is_file() else None
    key = json.loads((root / "models.json").read_text())[model]["key"]
    found = [p for p in (root / "heatmaps" / key / method).glob(f"{neuron}.*{suffix}")
             if suffix != ".npz" or not p.name.endswith(".na.txt")]
    assert len(found) <= 1, f"several stored files for one cell: {found}"
    return found[0] if found else None


def stored_cells(root: str | Path) -> set:
    """``{(model, method, neuron)}`` of the heatmap files stored in a run folder, models by
    their display names in its ``models.json``."""
    import json

    root = Path(root)
    record = json.loads((root / "models.json").read_text())
    return {(name, p.parent.name, p.name.split(".")[0]) for name, r in record.items()
            for p in (root / "heatmaps" / r["key"]).glob("*/*.npz")}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its IHDR chunk; raises AssertionError if not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def decode_png(data: bytes) -> np.ndarray:
    """A PNG as an (H, W, C) array (matplotlib's reader)."""
    import io

    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")
