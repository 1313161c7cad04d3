"""``cnnvis-eval report`` and ``cnnvis-eval list``."""

from __future__ import annotations

import sys
from pathlib import Path


def _grid_verdicts_if_missing(root: Path) -> None:
    """A grid run's folder written before grid runs stored their verdicts: derive them
    (:func:`cnnvis_eval.testing.grid.grid_verdicts`) so the report's scorecard is not empty.
    Suite and check folders (a ``suite`` column, or their own ``verdicts.parquet``) are left alone."""
    import pandas as pd

    results = root / "results.parquet"
    if (root / "verdicts.parquet").exists() or not results.is_file():
        return
    from ..evaluation.store import atomic_write
    from ..testing.grid import grid_verdicts
    from ..testing.verdict import verdict_frame

    frame = pd.read_parquet(results)
    if "suite" in frame.columns:
        return
    table = verdict_frame(grid_verdicts(frame))
    atomic_write(root / "verdicts.parquet", lambda p: table.to_parquet(p, index=False))


def cmd_report(args) -> int:
    from ..errors import CnnVisError
    from ..report import build_report

    try:
        _grid_verdicts_if_missing(Path(args.results_dir))
        page = build_report(args.results_dir, benchmarks=args.benchmarks)
    except CnnVisError as err:
        print(f"cnnvis-eval: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {page}")
    return 0


def cmd_list(args) -> int:
    import cnnvis_eval as cv
    from ..data.photos import DEFAULT_PHOTOS, list_photos
    from ..metrics import list_metrics

    print("methods:", ", ".join(cv.list_methods()))
    print("models: ", ", ".join(cv.list_models()))
    print("metrics:", ", ".join(list_metrics()))
    print("images: ", ", ".join(list_photos()), "(default:", ", ".join(DEFAULT_PHOTOS) + ")",
          "and synthetic[:N], scenes[:N], birds[:N]")
    from ..testing.session import check_names

    print("checks: ", ", ".join(check_names()), "(cnnvis-eval check)")
    return 0
