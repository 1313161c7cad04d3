"""Measure every (check, method, model) cell of the randomization suite and write its verdicts.

``python -m suites.sanity.measure_randomization [--models M ...] [--out CSV]`` runs the
curves of ``test_randomization.py`` (the same functions, parameters and images) for every
registered method on the given minis (default all five), cascading and independent, and
writes ``randomization_expected.csv``: the measured mean ``spearman_abs`` of each check and
its verdict by the suite's rule — below threshold - MARGIN: ``pass``; at or above threshold +
MARGIN: ``fail`` (a strict xfail; the reason is the test module's citation where it has one,
"measured" otherwise); in between: ``open``; ``n/a`` where the method does not apply.  Run it
again whenever the mini models are retrained; with ``--models`` only those rows are replaced
in an existing file, and ``--merge`` folds in the files of other processes (so the minis can
be measured in parallel: ``--models mini_vgg --out a.csv`` and ``--models mini_resnet --out
b.csv``, then ``--models --merge a.csv b.csv``).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

from suites.sanity import test_randomization as T

HEADER = """\
# Randomization suite: measured similarities and the verdict expected of every
# (check, method, model) cell, read by test_randomization.py.
# measured: mean spearman_abs over the first N_IMAGES=4 images of benchmark(16), SEED=0, coarse
# steps (see coarse_groups), SUITE_PARAMS; deep_taylor, deep_taylor_bounded and lrp_alpha1beta0 with
# positive_top=False.  TF 2.21, CPU, oneDNN.  check: logits_layer = cascading step 1 (logits layer
# re-initialized), random_logit = another class, full = cascading step 3 (all weights re-initialized),
# independent_lower = the lower half alone re-initialized (independent).
# expected: pass (asserted below the threshold), fail (strict xfail), open (within MARGIN of the
# threshold: recorded, then skipped), n/a (the method does not apply).  Written by
# `python -m suites.sanity.measure_randomization` (the mini models trained on benchmark v2).
"""
THRESHOLD = {"logits_layer": T.LOGIT_THRESHOLD, "random_logit": T.LOGIT_THRESHOLD,
             "full": T.FULL_THRESHOLD, "independent_lower": T.FULL_THRESHOLD}


def verdict(value: float, threshold: float) -> str:
    v = round(value, 2)  # the file keeps two decimals; the verdict must agree with them
    if v < threshold - T.MARGIN:
        return T.PASS
    if v >= threshold + T.MARGIN:
        return T.FAIL
    return T.OPEN


def measure(method: str, model: str) -> dict:
    """{check: mean similarity or None (n/a)} of one cell."""
    cas = T.run(method, model, "cascading")
    if cas is None:
        return dict.fromkeys(T.CHECKS)
    ind = T.run(method, model, "independent")
    return {"logits_layer": float(np.mean(T.similarity_at(cas, 1))),
            "random_logit": float(np.mean(cas.random_logit)),
            "full": float(np.mean(T.similarity_at(cas, 3))),
            "independent_lower": float(np.mean(T.similarity_at(ind, 3)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(T.MODELS))
    p.add_argument("--methods", nargs="*", default=list(T.METHODS))
    p.add_argument("--out", default=str(T.EXPECTATIONS))
    p.add_argument("--merge", nargs="*", default=[],
                   help="CSV files written by other processes (--out elsewhere): their rows replace the "
                        "file's, then the models given are measured (none: --models with no names)")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = {}
    for path in ([out] if out.is_file() else []) + [Path(m) for m in args.merge]:
        for r in T._read_expectations(path):  # keep the rows of the models not measured now
            rows[r["check"], r["method"], r["model"]] = r
    for model in args.models:
        for method in args.methods:
            got = measure(method, model)
            for check, value in got.items():
                if value is None:
                    rows[check, method, model] = {"measured": "", "expected": T.N_A}
                else:
                    rows[check, method, model] = {"measured": f"{value:.2f}",
                                                  "expected": verdict(value, THRESHOLD[check])}
            print(model, method, {c: (None if v is None else round(v, 2)) for c, v in got.items()}, flush=True)
            T._RUNS.clear()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["check", "method", "model", "measured", "expected"])
    for check in T.CHECKS:
        for method in T.METHODS:
            for model in T.MODELS:
                r = rows.get((check, method, model))
                if r is not None:
                    w.writerow([check, method, model, r["measured"], r["expected"]])
    out.write_text(HEADER + buf.getvalue())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
