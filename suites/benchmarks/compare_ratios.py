"""Compare the cost *ratios* of a benchmark run with a baseline; fail on a regression.

pytest-benchmark's ``--benchmark-compare-fail`` checks time statistics (min, mean, median,
...), which depend on the machine.  The benchmarks here also store
``extra_info["ratio"]`` (method time / a plain forward+backward pass of the same model in
the same run), which travels between machines; this script compares those::

    python -m suites.benchmarks.compare_ratios fixtures/benchmarks CURRENT.json --tolerance 0.25

``BASELINE`` and ``CURRENT`` are pytest-benchmark JSON files (``--benchmark-json FILE``, or
the files ``--benchmark-autosave`` writes) or folders holding them (the newest file found
below the folder is used).  Benchmarks are matched by their full name.  Exit status 1
when a ratio grew by more than ``tolerance`` (relative) and by more than ``--min-change``
(absolute, so ratios near zero do not trip on noise); with ``--strict`` also when a
baseline benchmark is missing from the current run.  Status 2: unreadable input.
"""

from __future__ import annotations

import argparse
import sys

from cnnvis_eval.report.benchmarks import load_benchmarks as load
from cnnvis_eval.report.benchmarks import ratio_of


def compare(baseline: dict[str, dict], current: dict[str, dict], tolerance: float = 0.25,
            min_change: float = 0.05) -> list[dict]:
    """One row per benchmark with a ratio in the baseline: name, baseline, current, change,
    status ("ok", "regressed", "improved", "missing", "new")."""
    rows = []
    for name in sorted(set(baseline) | set(current)):
        b = ratio_of(baseline[name]) if name in baseline else None
        c = ratio_of(current[name]) if name in current else None
        if b is None and c is None:
            continue
        if b is None:
            rows.append({"name": name, "baseline": None, "current": c, "change": None, "status": "new"})
            continue
        if c is None:
            rows.append({"name": name, "baseline": b, "current": None, "change": None, "status": "missing"})
            continue
        change = (c - b) / b if b > 0 else float("inf") if c > b else 0.0
        if c > b * (1 + tolerance) and c - b > min_change:
            status = "regressed"
        elif c < b / (1 + tolerance) and b - c > min_change:
            status = "improved"
        else:
            status = "ok"
        rows.append({"name": name, "baseline": b, "current": c, "change": change, "status": status})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m suites.benchmarks.compare_ratios",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", help="baseline JSON file or folder (e.g. fixtures/benchmarks)")
    p.add_argument("current", help="current JSON file or folder (e.g. .benchmarks)")
    p.add_argument("--tolerance", type=float, default=0.25,
                   help="allowed relative growth of a ratio (default 0.25 = 25%%)")
    p.add_argument("--min-change", type=float, default=0.05,
                   help="ignore absolute ratio changes below this (default 0.05)")
    p.add_argument("--strict", action="store_true", help="also fail when a baseline benchmark did not run")
    args = p.parse_args(argv)
    try:
        bpath, baseline = load(args.baseline)
        cpath, current = load(args.current)
    except ValueError as err:
        print(f"compare_ratios: error: {err}", file=sys.stderr)
        return 2
    rows = compare(baseline, current, args.tolerance, args.min_change)
    print(f"baseline: {bpath}\ncurrent:  {cpath}\n")
    width = max([len(r["name"]) for r in rows] + [9])
    print(f"{'benchmark':<{width}}  {'baseline':>9}  {'current':>9}  {'change':>8}  status")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    missing = sum(r["status"] == "missing" for r in rows)
    for r in rows:
        if r["status"] == "missing" and not args.strict:
            continue  # counted below (a partial run is normal)
        ch = "-" if r["change"] is None else f"{100 * r['change']:+.0f}%"
        print(f"{r['name']:<{width}}  {fmt(r['baseline']):>9}  {fmt(r['current']):>9}  {ch:>8}  {r['status']}")
    bad = [r for r in rows if r["status"] == "regressed" or (args.strict and r["status"] == "missing")]
    compared = sum(r["status"] in ("ok", "regressed", "improved") for r in rows)
    regressed = sum(r["status"] == "regressed" for r in rows)
    print(f"\n{compared} ratios compared, {regressed} regression(s) beyond {100 * args.tolerance:.0f}%"
          + (f"; {missing} baseline benchmark(s) not in the current run" if missing else "")
          + (" (--strict: a failure)" if missing and args.strict else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
