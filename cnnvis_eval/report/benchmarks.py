"""pytest-benchmark results in the report.

The suite's benchmarks (``suites/benchmarks/``) time every method beside a plain
forward+backward pass of the same model and store the ratio in ``extra_info["ratio"]``;
pytest-benchmark writes them as JSON (``--benchmark-json FILE`` or ``--benchmark-autosave``,
e.g. the committed baseline under ``fixtures/benchmarks/``).  :func:`load_benchmarks` reads
such a file (or the newest one in a folder), :func:`benchmark_frame` turns it into one row
per benchmark, and :func:`ratio_table` pivots the per-method ones to method x architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

COLUMNS = ["name", "group", "method", "arch", "ratio", "median_s", "baseline_median_s", "reference", "goal"]


def load_benchmarks(path: str | Path) -> tuple[Path, dict[str, dict]]:
    """``(file, {fullname: benchmark dict})`` of a pytest-benchmark JSON file, or of the
    newest ``*.json`` below a folder.

    Raises
    ------
    InputError
        No such file, no JSON file in the folder, unreadable JSON, or not a pytest-benchmark file.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
        if not files:
            raise InputError(f"no pytest-benchmark JSON file under {str(path)!r}")
        path = files[-1]
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {str(path)!r} as JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(f"{str(path)!r} is not a pytest-benchmark file (no 'benchmarks' list)")
    try:
        return path, {b["fullname"]: b for b in data["benchmarks"]}
    except (TypeError, KeyError) as err:
        raise InputError(f"{str(path)!r}: a benchmark has no 'fullname' ({err})") from err


def ratio_of(bench: dict) -> float | None:
    """``extra_info["ratio"]`` of one benchmark (None when it has none)."""
    r = (bench.get("extra_info") or {}).get("ratio")
    return None if r is None else float(r)


def benchmark_row(name: str, group: str | None, info: dict, median_s: float | None) -> dict:
    """One row of :func:`benchmark_frame` from a benchmark's name, group, ``extra_info`` and
    median time (what ``suites/benchmarks`` records while it runs)."""
    return {"name": name, "group": group or "", "method": str(info.get("method", "")),
            "arch": str(info.get("arch", "")), "ratio": info.get("ratio"), "median_s": median_s,
            "baseline_median_s": info.get("baseline_median_s"),
            "reference": str(info.get("reference", "")), "goal": str(info.get("goal", ""))}


def benchmark_frame(benchmarks: dict[str, dict]) -> pd.DataFrame:
    """One row per benchmark: ``name`` (the test id), ``group``, ``method``, ``arch`` (the
    architecture of the per-method benchmarks, else empty), ``ratio`` (method / reference
    pass), ``median_s`` (the method's median time), ``baseline_median_s`` (the reference's),
    ``reference`` and ``goal`` (as the benchmark recorded them)."""
    rows = [benchmark_row(full.split("::")[-1], b.get("group"), b.get("extra_info") or {},
                          (b.get("stats") or {}).get("median")) for full, b in sorted(benchmarks.items())]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("ratio", "median_s", "baseline_median_s"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(np.float64)
    return frame


def ratio_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Method x architecture table of the per-method benchmarks' ratios (the median when a
    cell was measured more than once); empty when none has an architecture."""
    per = frame[(frame["arch"] != "") & frame["ratio"].notna()] if len(frame) else frame
    if per.empty:
        return pd.DataFrame()
    table = per.pivot_table(index="method", columns="arch", values="ratio", aggfunc="median")
    table.columns.name = None
    return table


__all__ = ["COLUMNS", "load_benchmarks", "ratio_of", "benchmark_row", "benchmark_frame", "ratio_table"]
