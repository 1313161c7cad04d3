"""Mini models: small, trained members of the five families, for fast tests.

Each is built from the same layer kinds as its big sibling and trained on benchmark v2
(:mod:`cnnvis_eval.data.benchmark`, 64 px, eight classes: the four shapes of
:mod:`cnnvis_eval.data.synthetic` and the four part-based birds of
:mod:`cnnvis_eval.data.parts`), a mixture of single shapes, scenes of 2-3 shapes of different
classes (:mod:`cnnvis_eval.data.scenes`) and birds, with multi-hot targets and a per-class
sigmoid loss, so that a scene's logits are high for every object it holds (held out: top-1
>= 0.95 on shapes and birds, the exact top-k set >= 0.95 on scenes; ``manifest.json``):

=================  ===========================================================================
``mini_vgg``       plain Conv(relu) stacks, max-pooling, Flatten + Dense(relu) + Dense head
``mini_resnet``    Conv + BatchNorm + ReLU, residual Add with 1x1 stride-2 projection shortcuts,
                   GAP + Dense
``mini_inception`` parallel 1x1 / 3x3 / 3x3x2 / avg-pool branches joined by Concatenate, GAP + Dense
``mini_xception``  SeparableConv2D blocks with residual Add (1x1 stride-2 shortcuts), GAP + Dense
``mini_mobilenet`` ZeroPadding2D stem, inverted residuals (1x1 expand, DepthwiseConv2D, ReLU6,
                   linear 1x1 projection, Add), GAP + Dense
=================  ===========================================================================

Heads are linear (logits).  ``<name>_shortcut`` variants are the same architectures trained,
as before benchmark v2, on the shortcut variant of the single-shape data (four classes, a
corner marker that gives the class away; softmax cross-entropy).

The trained files ship inside the package as package data (``cnnvis_eval/models/mini_models/``:
``<name>.keras`` and ``manifest.json``, read through :mod:`importlib.resources`), so an installed
wheel needs no repository checkout.  ``$CNNVIS_MINI_MODELS`` names another folder of the same
files to use instead.  ``python -m cnnvis_eval.models.mini --train`` regenerates every file
deterministically (fixed seeds, TensorFlow op determinism) into that folder.

One module on purpose: the five architectures, their training recipe (epochs, data,
loss), the manifest that records it and the loader that reads it back describe one thing,
the shipped files, and change together (a new layer name must change ``LAYERS``, a new
recipe the manifest's fields).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

import keras
import numpy as np

from ..errors import InputError, WeightsUnavailableError
from .spec import ModelSpec

SIZE = 64
NUM_CLASSES = 8  # clean minis: benchmark v2's CLASSES_V2 (4 shapes + 4 birds)
SHORTCUT_CLASSES = 4  # shortcut minis: the four shapes of the v1 benchmark
FAMILIES = ("vgg", "resnet", "inception", "xception", "mobilenet")
CLEAN = tuple(f"mini_{f}" for f in FAMILIES)
SHORTCUT = tuple(f"{n}_shortcut" for n in CLEAN)
MINI_MODELS: tuple[str, ...] = CLEAN + SHORTCUT

TRAIN_SEED, TEST_SEED = 0, 7_000_001  # data seeds; tests use yet other seeds
WEIGHT_SEED = 1234
BN_MOMENTUM = 0.9

# (last conv feature map, two intermediate layers) per family
LAYERS = {
    "vgg": ("block3_conv2", ("block2_conv2", "block3_conv1")),
    "resnet": ("stage3_out", ("stage2_out", "stage3_1_relu")),
    "inception": ("mixed3", ("mixed1", "mixed2")),
    "xception": ("exit_sepconv_act", ("block2_out_act", "block3_out_act")),
    "mobilenet": ("out_relu", ("block_2_expand_relu", "block_4_expand_relu")),
}


MODELS_ENV = "CNNVIS_MINI_MODELS"
_PACKAGE_FOLDER = "mini_models"  # package data next to this module


def mini_models_dir() -> Path:
    """The folder of trained mini models: ``$CNNVIS_MINI_MODELS`` or the package's own copy.

    The package copy is found with :mod:`importlib.resources`; pip always installs it as
    ordinary files (Keras loads a model from a file path).
    """
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env)
    folder = resources.files(__package__).joinpath(_PACKAGE_FOLDER)
    if not isinstance(folder, Path):  # pragma: no cover - zip imports only
        raise WeightsUnavailableError(
            f"the mini models inside the package are not files on disk ({folder}); install "
            f"cnnvis_eval unpacked (pip does) or set {MODELS_ENV} to a folder of them"
        )
    return folder


# ---------------------------------------------------------------------- architectures
L = keras.layers


def _bn(name):
    return L.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def build_vgg(name="mini_vgg", num_classes=NUM_CLASSES):
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    h = inp
    for b, (filters, convs) in enumerate([(16, 2), (32, 2), (48, 2)], start=1):
        for c in range(1, convs + 1):
            h = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{b}_conv{c}")(h)
        h = L.MaxPooling2D(2, name=f"block{b}_pool")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(48, activation="relu", name="fc1")(h)
    h = L.Dropout(0.3, name="drop")(h)
    out = L.Dense(num_classes, name="predictions")(h)
    return keras.Model(inp, out, name=name)


def _res_block(h, filters, stride, name):
    shortcut = h
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_1_conv")(h)
    y = _bn(f"{name}_1_bn")(y)
    y = L.Activation("relu", name=f"{name}_1_relu")(y)
    y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = _bn(f"{name}_2_bn")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(shortcut)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    y = L.Add(name=f"{name}_add")([shortcut, y])
    return L.Activation("relu", name=f"{name}_out")(y)


def build_resnet(name="mini_resnet", num_classes=NUM_CLASSES):
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    h = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1_conv")(inp)
    h = _bn("conv1_bn")(h)
    h = L.Activation("relu", name="conv1_relu")(h)
    h = _res_block(h, 16, 1, "stage1")
    h = _res_block(h, 32, 2, "stage2")
    h = _res_block(h, 48, 2, "stage3")
    h = L.GlobalAveragePooling2D(name="avg_pool")(h)
    out = L.Dense(num_classes, name="predictions")(h)
    return keras.Model(inp, out, name=name)


def _conv_bn(h, filters, k, name, strides=1, padding="same"):
    h = L.Conv2D(filters, k, strides=strides, padding=padding, use_bias=False, name=f"{name}_conv")(h)
    h = L.BatchNormalization(momentum=BN_MOMENTUM, scale=False, name=f"{name}_bn")(h)
    return L.Activation("relu", name=f"{name}_relu")(h)


def _inception(h, f, name):
    b1 = _conv_bn(h, f, 1, f"{name}_b1")
    b3 = _conv_bn(_conv_bn(h, f, 1, f"{name}_b3a"), f, 3, f"{name}_b3b")
    b5 = _conv_bn(_conv_bn(_conv_bn(h, f // 2, 1, f"{name}_b5a"), f, 3, f"{name}_b5b"), f, 3, f"{name}_b5c")
    bp = L.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_pool")(h)
    bp = _conv_bn(bp, f // 2, 1, f"{name}_bp")
    return L.Concatenate(name=name)([b1, b3, b5, bp])


def build_inception(name="mini_inception", num_classes=NUM_CLASSES):
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    h = _conv_bn(inp, 24, 3, "stem", strides=2)
    # stem_pool keeps 32x32 (stride 1): with the 16x16 of a stride-2 pool the model saw at most
    # 0.90-0.93 of benchmark v2's scenes of small objects exactly (measured, 10-40 epochs)
    h = L.MaxPooling2D(3, strides=1, padding="same", name="stem_pool")(h)
    h = _inception(h, 16, "mixed1")
    h = _inception(h, 16, "mixed2")
    h = L.MaxPooling2D(3, strides=2, padding="same", name="reduce_pool")(h)
    h = _inception(h, 24, "mixed3")
    h = L.GlobalAveragePooling2D(name="avg_pool")(h)
    out = L.Dense(num_classes, name="predictions")(h)
    return keras.Model(inp, out, name=name)


def build_xception(name="mini_xception", num_classes=NUM_CLASSES):
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    h = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="entry_conv")(inp)
    h = _bn("entry_bn")(h)
    h = L.Activation("relu", name="entry_act")(h)
    for b, f in enumerate([32, 48], start=1):  # entry-flow blocks: downsample with residual
        res = L.Conv2D(f, 1, strides=2, padding="same", use_bias=False, name=f"block{b}_res_conv")(h)
        res = _bn(f"block{b}_res_bn")(res)
        y = h if b == 1 else L.Activation("relu", name=f"block{b}_sepconv1_act")(h)
        y = L.SeparableConv2D(f, 3, padding="same", use_bias=False, name=f"block{b}_sepconv1")(y)
        y = _bn(f"block{b}_sepconv1_bn")(y)
        y = L.Activation("relu", name=f"block{b}_sepconv2_act")(y)
        y = L.SeparableConv2D(f, 3, padding="same", use_bias=False, name=f"block{b}_sepconv2")(y)
        y = _bn(f"block{b}_sepconv2_bn")(y)
        y = L.MaxPooling2D(3, strides=2, padding="same", name=f"block{b}_pool")(y)
        h = L.Add(name=f"block{b}_add")([y, res])
        h_act = L.Activation("relu", name=f"block{b}_out_act")(h)
    # middle-flow block: identity residual
    y = L.SeparableConv2D(48, 3, padding="same", use_bias=False, name="block3_sepconv1")(h_act)
    y = _bn("block3_sepconv1_bn")(y)
    y = L.Activation("relu", name="block3_sepconv2_act")(y)
    y = L.SeparableConv2D(48, 3, padding="same", use_bias=False, name="block3_sepconv2")(y)
    y = _bn("block3_sepconv2_bn")(y)
    h = L.Add(name="block3_add")([y, h])
    h = L.Activation("relu", name="block3_out_act")(h)
    h = L.SeparableConv2D(64, 3, padding="same", use_bias=False, name="exit_sepconv")(h)
    h = _bn("exit_sepconv_bn")(h)
    h = L.Activation("relu", name="exit_sepconv_act")(h)
    h = L.GlobalAveragePooling2D(name="avg_pool")(h)
    out = L.Dense(num_classes, name="predictions")(h)
    return keras.Model(inp, out, name=name)


def _inverted(h, expand, out_ch, stride, name):
    in_ch = h.shape[-1]
    y = L.Conv2D(in_ch * expand, 1, use_bias=False, name=f"{name}_expand")(h)
    y = _bn(f"{name}_expand_bn")(y)
    y = L.ReLU(6.0, name=f"{name}_expand_relu")(y)
    if stride == 2:
        y = L.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(y)
    y = L.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
                          name=f"{name}_depthwise")(y)
    y = _bn(f"{name}_depthwise_bn")(y)
    y = L.ReLU(6.0, name=f"{name}_depthwise_relu")(y)
    y = L.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_project")(y)
    y = _bn(f"{name}_project_bn")(y)
    if stride == 1 and in_ch == out_ch:
        y = L.Add(name=f"{name}_add")([h, y])
    return y


def build_mobilenet(name="mini_mobilenet", num_classes=NUM_CLASSES):
    inp = keras.Input((SIZE, SIZE, 3), name="input")
    h = L.ZeroPadding2D(((0, 1), (0, 1)), name="Conv1_pad")(inp)
    h = L.Conv2D(16, 3, strides=2, padding="valid", use_bias=False, name="Conv1")(h)
    h = _bn("bn_Conv1")(h)
    h = L.ReLU(6.0, name="Conv1_relu")(h)
    h = _inverted(h, 3, 16, 1, "block_1")
    h = _inverted(h, 4, 24, 2, "block_2")
    h = _inverted(h, 4, 24, 1, "block_3")
    h = _inverted(h, 4, 32, 2, "block_4")
    h = _inverted(h, 4, 32, 1, "block_5")
    h = L.Conv2D(96, 1, use_bias=False, name="Conv_1")(h)
    h = _bn("Conv_1_bn")(h)
    h = L.ReLU(6.0, name="out_relu")(h)
    h = L.GlobalAveragePooling2D(name="avg_pool")(h)
    out = L.Dense(num_classes, name="predictions")(h)
    return keras.Model(inp, out, name=name)


BUILDERS = {"vgg": build_vgg, "resnet": build_resnet, "inception": build_inception,
            "xception": build_xception, "mobilenet": build_mobilenet}


def family_of(name: str) -> str:
    if name not in MINI_MODELS:
        raise InputError(f"unknown mini model {name!r}; available: {', '.join(MINI_MODELS)}")
    return name.removeprefix("mini_").removesuffix("_shortcut")


def build(name: str) -> keras.Model:
    """An untrained mini model (weights from Keras' global seed): 8 classes, 4 for a shortcut variant."""
    return BUILDERS[family_of(name)](name, SHORTCUT_CLASSES if name.endswith("_shortcut") else NUM_CLASSES)


# ---------------------------------------------------------------------- preprocessing
def preprocess(images) -> np.ndarray:
    """uint8 RGB [0, 255] -> float32 [-1, 1] (a new array)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"images must have shape (N, H, W, 3) or (H, W, 3), got {x.shape}")
    return np.asarray(x, np.float32) / 127.5 - 1.0


def deprocess(x) -> np.ndarray:
    return (np.asarray(x, np.float32) + 1.0) * 127.5


# ---------------------------------------------------------------------- loading
def _manifest() -> dict:
    path = mini_models_dir() / "manifest.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def load_mini(name: str, weights=None, input_shape=None) -> ModelSpec:
    """Load a trained mini model as a ModelSpec.

    Parameters
    ----------
    name : str
        One of :data:`MINI_MODELS`.
    weights : None or path
        None: ``<name>.keras`` from :func:`mini_models_dir` (the package's own trained file);
        a path: that ``.keras`` file (loaded with Keras safe mode).
    input_shape : None or (64, 64, 3)
        Mini models have a fixed input size.
    """
    family = family_of(name)
    if input_shape is not None and tuple(input_shape) != (SIZE, SIZE, 3):
        raise InputError(f"{name} has a fixed input shape {(SIZE, SIZE, 3)}, got {tuple(input_shape)}")
    path = Path(weights) if weights is not None else mini_models_dir() / f"{name}.keras"
    if not path.is_file():
        raise WeightsUnavailableError(
            f"trained mini model file {str(path)!r} is missing; regenerate the mini models with "
            f"`python -m cnnvis_eval.models.mini --train` (or set {MODELS_ENV} to a folder of them)"
        )
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    last, inter = LAYERS[family]
    info = dict(_manifest().get("models", {}).get(name, {}))
    from ..data.benchmark import CLASSES_V2
    from ..data.synthetic import CLASSES

    return ModelSpec(
        name=name,
        model=model,
        preprocess=preprocess,
        deprocess=deprocess,
        input_shape=(SIZE, SIZE, 3),
        last_conv_layer=last,
        intermediate_layers=inter,
        input_range=(-np.ones(3, np.float32), np.ones(3, np.float32)),
        family=family,
        weights=str(path),
        class_names=CLASSES_V2 if model.outputs[0].shape[-1] == len(CLASSES_V2) else CLASSES,
        info=info,
    )


# ---------------------------------------------------------------------- training
def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Inference-mode accuracy on uint8 images."""
    logits = model.predict(preprocess(images), batch_size=batch_size, verbose=0)
    return float((logits.argmax(1) == labels).mean())


def train_model(name: str, data, epochs: int, seed: int = WEIGHT_SEED, lr: float = 2e-3,
                batch_size: int = 64, labels=None, verbose: int = 0) -> keras.Model:
    """Train one mini model deterministically.

    ``data`` is a SyntheticSet (or images with ``labels`` (N,)): softmax cross-entropy on
    the class; or a :class:`~cnnvis_eval.data.benchmark.BenchmarkSet` (multi-hot
    ``targets`` (N, C)): a per-class sigmoid cross-entropy, so a scene's logits are high
    for every object it holds.  Heads stay linear either way.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build(name)
    x = preprocess(data.images)
    multi = labels is None and hasattr(data, "targets")
    y = data.targets if multi else (data.labels if labels is None else np.asarray(labels))
    steps = int(np.ceil(len(x) / batch_size)) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.05)
    loss = (keras.losses.BinaryCrossentropy(from_logits=True) if multi
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss,
                  metrics=[] if multi else ["accuracy"])
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    return model


def benchmark_accuracy(model: keras.Model, data, batch_size: int = 256) -> dict:
    """Held-out accuracy on a BenchmarkSet, per kind of image: top-1 on single shapes
    and birds, the exact top-k set on scenes (k = objects in the scene)."""
    from ..data.benchmark import set_accuracy

    logits = model.predict(preprocess(data.images), batch_size=batch_size, verbose=0)
    hit = set_accuracy(logits, data.targets)
    return {f"test_accuracy_{kind}": float(hit[data.kind == kind].mean()) for kind in ("shape", "scene", "bird")
            if (data.kind == kind).any()}


def save_inference_model(model: keras.Model, path: Path) -> None:
    """Save the architecture and weights only (no optimizer state: 3x smaller files).

    The model is rebuilt from its config (never compiled) rather than cloned: Keras 3.13's
    ``clone_model`` of a compiled model keeps its optimizer, whose moments were then saved
    too (a 2.4 MB mini_vgg instead of 0.84 MB)."""
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save(path)


EPOCHS = {"vgg": 30, "resnet": 20, "inception": 20, "xception": 32, "mobilenet": 12}
SHORTCUT_EPOCHS = 3
N_TRAIN, N_TEST = 5000, 800  # shortcut minis (v1 shapes)
# clean minis: benchmark v2 (single shapes, scenes, birds), train and held-out counts
V2_TRAIN = {"n_shapes": 3000, "n_scenes": 5000, "n_birds": 6000}
V2_TEST = {"n_shapes": 400, "n_scenes": 800, "n_birds": 400}


def train_all(out: Path | None = None, names=MINI_MODELS, verbose: int = 0) -> dict:
    """Train every mini model and write ``<name>.keras`` and ``manifest.json`` to ``out``."""
    import tensorflow as tf

    from ..data.synthetic import make_synthetic

    out = Path(out) if out is not None else mini_models_dir()
    out.mkdir(parents=True, exist_ok=True)
    from ..data.benchmark import CLASSES_V2, make_benchmark
    from ..data.synthetic import CLASSES

    clean_train = make_benchmark(**V2_TRAIN, size=SIZE, seed=TRAIN_SEED)
    clean_test = make_benchmark(**V2_TEST, size=SIZE, seed=TEST_SEED)
    clean_shapes_test = make_synthetic(N_TEST, SIZE, seed=TEST_SEED)
    short_train = make_synthetic(N_TRAIN, SIZE, seed=TRAIN_SEED + 1, shortcut=True, split="train")
    short_test_same = make_synthetic(N_TEST, SIZE, seed=TEST_SEED + 1, shortcut=True, split="train")
    short_test_moved = make_synthetic(N_TEST, SIZE, seed=TEST_SEED + 1, shortcut=True, split="test")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    models = manifest.setdefault("models", {})
    for name in names:
        family = family_of(name)
        shortcut = name.endswith("_shortcut")
        t0 = time.perf_counter()
        epochs = SHORTCUT_EPOCHS if shortcut else EPOCHS[family]
        model = train_model(name, short_train if shortcut else clean_train, epochs, verbose=verbose)
        seconds = time.perf_counter() - t0
        save_inference_model(model, out / f"{name}.keras")
        entry = {
            "family": family,
            "data_seed": TRAIN_SEED + (1 if shortcut else 0),
            "weight_seed": WEIGHT_SEED,
            "epochs": epochs,
            "train_images": N_TRAIN if shortcut else len(clean_train),
            "classes": list(CLASSES if shortcut else CLASSES_V2),
            "loss": "softmax cross-entropy" if shortcut else "per-class sigmoid cross-entropy (multi-hot)",
            "train_seconds": round(seconds, 1),
            "parameters": int(model.count_params()),
            "file_bytes": (out / f"{name}.keras").stat().st_size,
        }
        if shortcut:
            entry["test_accuracy_marker_as_trained"] = accuracy(model, short_test_same.images, short_test_same.labels)
            entry["test_accuracy_marker_moved"] = accuracy(model, short_test_moved.images, short_test_moved.labels)
            entry["test_accuracy_clean"] = accuracy(model, clean_shapes_test.images, clean_shapes_test.labels)
        else:
            entry.update(benchmark_accuracy(model, clean_test))
        entry["test_seed"] = TEST_SEED + (1 if shortcut else 0)
        models[name] = entry
        print(f"{name:28s} {json.dumps({k: v for k, v in entry.items() if 'acc' in k or k == 'train_seconds'})}",
              flush=True)
    manifest.update({
        "command": "python -m cnnvis_eval.models.mini --train",
        "date": time.strftime("%Y-%m-%d"),
        "size": SIZE,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    })
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnvis_eval.models.mini", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", action="store_true", help="train every mini model and write its file and the manifest")
    p.add_argument("--only", nargs="*", help="train only these models")
    p.add_argument("--out", default=None, help="output folder (default: $CNNVIS_MINI_MODELS, else the package's "
                   "cnnvis_eval/models/mini_models/)")
    p.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)
    if not args.train:
        p.print_help()
        return 0
    names = tuple(args.only) if args.only else MINI_MODELS
    for n in names:
        family_of(n)
    train_all(args.out, names, verbose=args.verbose)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
