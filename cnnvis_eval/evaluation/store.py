"""The files of one run (:class:`RunStore`): keyed by content, verified when read.

A run folder holds::

    config.json                      the configuration and the versions (:func:`versions`)
    models.json                      display name -> {source, key}: which model is which
    images/<key>.npz                 the images one model saw (ids, masks, class names)
    heatmaps/<key>/<method>/<neuron>.<tag>.npz     a cell: heatmaps, indices, scores, timings
    heatmaps/<key>/<method>/<neuron>.<tag>.na.txt  a cell that does not apply: its reason
    rows/<stage>/<key>.<rows tag>[__<part>].parquet  each stage's rows of one model
    cells.parquet, results.parquet (+ .csv), curves.parquet, agreement.parquet, reference.parquet

Results are keyed by what produced them, never by a display name (rule 9 of
docs/architecture.md), through a :class:`ModelKey` per model:

- ``key``: the model's content (:func:`cnnvis_eval.models.spec.fingerprint` of its
  architecture and weights; a zoo model with random weights: its name, input size and seed);
- a cell's ``tag``: the library version, the method, its parameters and the images;
- the ``rows tag``: the library version and the run's configuration (methods, parameters,
  images, stages).

A model whose file changed gets another key, so nothing stored for its old content is reused
(the old files stay, and are used again only if the same content comes back).  Display names
live in ``models.json`` and in the rows' ``model`` column, which :meth:`RunStore.load_rows`
sets from the run's current names.

Every file is verified when read (:meth:`RunStore.read_cell`, :meth:`~RunStore.read_images`,
:meth:`~RunStore.read_rows`, :meth:`~RunStore.read_json`): a file that cannot be read, lacks
an expected key or column, or holds arrays of the wrong shape, dtype or non-finite values is
moved aside to ``<name>.corrupt``, a warning names it and what is wrong, and the caller
computes it again.  Every write is atomic (a temporary file, then a rename), so an
interrupted run leaves no half-written file.  Long-frame rows are built by
:func:`cnnvis_eval.frame.rows`, the one builder the metrics and the test suite use too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import CnnVisError
from ..frame import COLUMNS

CELL_ARRAYS = ("heatmap", "indices", "scores", "seconds", "seconds_per_image")
IMAGE_ARRAYS = ("images", "ids", "masks", "synthetic", "class_names")
ROW_COLUMNS = {  # the columns every stored rows file of a stage has
    "scores": COLUMNS,
    "agreement": ("method_a", "method_b", "value", "model", "neuron"),
    "reference": ("model", "forward_backward_seconds_per_image"),
    "randomization": ("method", "model", "step", "image", "metric", "value"),
}
CORRUPT = ".corrupt"

_log = logging.getLogger(__name__)


class DamagedFile(CnnVisError, ValueError):
    """A stored file that is not what it should be (the message says what is wrong); the
    store's verified reads catch it and move the file aside."""


def digest(*parts) -> str:
    """16 hex characters of a sha256 of ``parts`` as canonical JSON (a storage key)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ModelKey:
    """Where one model's results are stored.

    Attributes
    ----------
    key : str
        The model's content key (hex).
    cells : dict
        ``method -> tag`` of its cells (library version, method, parameters, images).
    rows : str
        The tag of its stage rows (library version, the run's configuration).
    """

    key: str
    cells: dict = field(default_factory=dict)
    rows: str = ""


def atomic_write(path, write) -> None:
    """``write(tmp)`` into a temporary file next to ``path``, then rename it to ``path``.

    The temporary name is unique per process and call (``.<name>.<pid>.<random>.tmp``),
    so two writers of one path never share it; a failed write leaves no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class RunStore:
    """Files of one run under ``root``; every write is atomic (tmp file + rename), every
    read verified.

    Parameters
    ----------
    root : str or Path
        The run folder (created).
    warn : callable, optional
        Receives one line per damaged file moved aside (default: this module's logger).

    Models are named by their display name once :meth:`bind` has given each its
    :class:`ModelKey`; the path methods then build content-keyed paths.
    """

    def __init__(self, root: str | Path, warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.warn = warn or _log.warning
        self.models: dict[str, ModelKey] = {}

    # -- names and paths --------------------------------------------------------
    def bind(self, model: str, key: ModelKey):
        """Store the results of the model displayed as ``model`` under ``key``."""
        self.models[model] = key

    def key(self, model: str) -> ModelKey:
        try:
            return self.models[model]
        except KeyError:
            raise LookupError(f"model {model!r} has no storage key in this run (RunStore.bind)") from None

    def heatmap_path(self, model: str, method: str, neuron: str) -> Path:
        """Where the cell (model, method, neuron) is stored (``.npz``)."""
        k = self.key(model)
        return self.root / "heatmaps" / k.key / method / f"{neuron}.{k.cells[method]}.npz"

    def images_path(self, model: str) -> Path:
        """Where the images ``model`` saw are stored (``.npz``)."""
        return self.root / "images" / f"{self.key(model).key}.npz"

    @staticmethod
    def na_path(cell_path: Path) -> Path:
        """Where a cell that does not apply keeps its reason (``<neuron>.<tag>.na.txt``)."""
        return cell_path.with_suffix(".na.txt")

    def rows_path(self, stage: str, model: str, *parts: str) -> Path:
        """Where a stage keeps one part of a model's rows:
        ``rows/<stage>/<key>.<rows tag>[__<part>...].parquet``."""
        return self.root / "rows" / stage / ("__".join((self._prefix(model),) + parts) + ".parquet")

    def _prefix(self, model: str) -> str:
        k = self.key(model)
        return f"{k.key}.{k.rows}"

    def model_rows(self, stage: str, model: str) -> list[Path]:
        """The rows files ``stage`` stored for ``model``."""
        folder, prefix = self.root / "rows" / stage, self._prefix(model)
        return sorted([*folder.glob(f"{prefix}.parquet"), *folder.glob(f"{prefix}__*.parquet")])

    # -- writes -----------------------------------------------------------------
    def save_text(self, path: Path, text: str):
        self._atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def save_json(self, path: Path, obj):
        self.save_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))

    @staticmethod
    def _atomic(path: Path, write):
        atomic_write(path, write)

    def save_cell(self, path: Path, **arrays):
        """Store named arrays as a compressed ``.npz``."""
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        self._atomic(path, write)

    def save_rows(self, path: Path, df: pd.DataFrame):
        self._atomic(path, lambda tmp: df.to_parquet(tmp, index=False))

    # -- verified reads ---------------------------------------------------------
    def quarantine(self, path: Path, what: str):
        """Move a damaged ``path`` aside to ``<name>.corrupt`` and warn, naming it and ``what``."""
        aside = path.with_name(path.name + CORRUPT)
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another process moved it first
            return
        self.warn(f"stored file {str(path)!r} is damaged ({what}): moved to {aside.name!r}, computing it again")

    def _verified(self, path: Path, read):
        """``read(path)``, or None when ``path`` is missing or damaged (then moved aside)."""
        if not path.is_file():
            return None
        try:
            return read(path)
        except DamagedFile as err:
            self.quarantine(path, str(err))
            return None

    def load_cell(self, path: Path) -> dict:
        """The arrays of a stored ``.npz`` (no pickled objects); DamagedFile if unreadable."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except Exception as err:
            raise DamagedFile(f"not a readable .npz: {type(err).__name__}: {err}") from err

    def read_cell(self, path: Path, shape: tuple) -> dict | None:
        """A stored cell's arrays, verified: :data:`CELL_ARRAYS` present, ``heatmap`` a finite
        float array of ``shape`` (N, H, W), ``indices`` and ``scores`` (N,), finite timings.
        None when missing or damaged (moved aside)."""
        return self._verified(path, lambda p: check_cell(self.load_cell(p), shape))

    def read_images(self, path: Path, expected: dict) -> bool:
        """Whether ``path`` holds exactly the arrays ``expected`` (:data:`IMAGE_ARRAYS`); a
        damaged file or one with other images is moved aside (False)."""

        def read(p):
            z = self.load_cell(p)
            missing = [k for k in expected if k not in z]
            if missing:
                raise DamagedFile(f"no {', '.join(missing)} array")
            for k, want in expected.items():
                if z[k].shape != np.shape(want) or not np.array_equal(z[k], want):
                    raise DamagedFile(f"{k!r} is {z[k].dtype} {z[k].shape}, not this run's "
                                      f"{np.asarray(want).dtype} {np.shape(want)} images")
            return True

        return bool(self._verified(path, read))

    def read_rows(self, path: Path, stage: str) -> pd.DataFrame | None:
        """A stored rows file of ``stage``, verified (readable parquet with the columns of
        :data:`ROW_COLUMNS`); None when missing or damaged (moved aside)."""

        def read(p):
            try:
                df = pd.read_parquet(p)
            except FileNotFoundError:
                raise
            except Exception as err:
                raise DamagedFile(f"not a readable parquet file: {type(err).__name__}: {err}") from err
            missing = [c for c in ROW_COLUMNS.get(stage, ()) if c not in df.columns]
            if missing:
                raise DamagedFile(f"no column {', '.join(missing)}")
            return df

        return self._verified(path, read)

    def check_rows(self, stage: str, model: str) -> int:
        """Verify the rows ``stage`` stored for ``model``, moving damaged files aside; how
        many were damaged."""
        return sum(self.read_rows(p, stage) is None for p in self.model_rows(stage, model))

    def read_json(self, path: Path, keys: tuple = ()) -> dict | None:
        """A stored JSON object with ``keys``, verified; None when missing or damaged (moved aside)."""

        def read(p):
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as err:
                raise DamagedFile(f"not valid JSON: {err}") from err
            if not isinstance(obj, dict) or any(k not in obj for k in keys):
                raise DamagedFile(f"not a JSON object with {', '.join(keys) or 'entries'}")
            return obj

        return self._verified(path, read)

    def load_rows(self, stage: str) -> pd.DataFrame:
        """All rows ``stage`` stored for the bound models, each file's ``model`` column set
        to the model's display name (empty frame if none).  Damaged files are moved aside
        and left out."""
        frames = []
        for model in self.models:
            for p in self.model_rows(stage, model):
                df = self.read_rows(p, stage)
                if df is not None:
                    frames.append(df.assign(model=model) if "model" in df.columns else df)
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)


def check_cell(z: dict, shape: tuple) -> dict:
    """``z`` if it is a sound cell of heatmaps of ``shape`` (N, H, W); DamagedFile naming what
    is wrong otherwise."""
    missing = [k for k in CELL_ARRAYS if k not in z]
    if missing:
        raise DamagedFile(f"no {', '.join(missing)} array")
    h = z["heatmap"]
    if h.shape != tuple(shape):
        raise DamagedFile(f"heatmap of shape {h.shape}, expected {tuple(shape)}")
    if not np.issubdtype(h.dtype, np.floating):
        raise DamagedFile(f"heatmap of dtype {h.dtype}, expected float")
    if not np.isfinite(h).all():
        bad = np.flatnonzero(~np.isfinite(h).reshape(len(h), -1).all(axis=1))
        raise DamagedFile(f"heatmap not finite (NaN or inf) for image {', '.join(map(str, bad))}")
    for k in ("indices", "scores"):
        if z[k].shape != shape[:1]:
            raise DamagedFile(f"{k} of shape {z[k].shape}, expected {shape[:1]}")
    if not np.issubdtype(z["indices"].dtype, np.integer):
        raise DamagedFile(f"indices of dtype {z['indices'].dtype}, expected integers")
    for k in ("seconds", "seconds_per_image"):
        if z[k].shape != () or not np.isfinite(z[k]):
            raise DamagedFile(f"{k} is not one finite number")
    return z


def versions() -> dict:
    """The versions a run records in its ``config.json`` (library, TensorFlow, Keras, ...)."""
    import keras
    import tensorflow as tf

    import cnnvis_eval

    return {"cnnvis_eval": cnnvis_eval.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


__all__ = ["CELL_ARRAYS", "IMAGE_ARRAYS", "ROW_COLUMNS", "atomic_write", "DamagedFile", "ModelKey", "RunStore", "check_cell",
           "digest", "versions"]
