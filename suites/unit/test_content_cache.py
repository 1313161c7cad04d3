"""Per-image work kept by content (cnnvis_eval.content_cache): reused values are tallied at
the seconds they took, so a grid cell's time does not depend on which cell came first."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd

from cnnvis_eval.content_cache import ContentCache, reused_seconds


def _slow(value, seconds=0.05):
    def compute():
        time.sleep(seconds)
        return np.array(value)
    return compute


def test_a_reused_entry_counts_the_seconds_it_took():
    cache = ContentCache(maxsize=2)
    with reused_seconds() as first:
        a = cache.get("a", _slow([1, 2]))
    assert first.seconds == 0 and first.hits == 0 and not a.flags.writeable
    with reused_seconds() as outer:
        with reused_seconds() as inner:
            again = cache.get("a", _slow([9]))
        cache.get("b", _slow([3]))
    assert again is a
    assert 0.05 <= inner.seconds < 0.5 and inner.hits == 1
    assert outer.seconds == inner.seconds and outer.hits == 1  # nested blocks both count
    cache.get("c", _slow([4], 0.0))  # evicts "a" (maxsize 2)
    with reused_seconds() as after:
        cache.get("a", _slow([5], 0.0))
    assert after.hits == 0 and (cache.hits, cache.misses) == (1, 4)


def test_other_threads_do_not_count_into_a_block():
    cache = ContentCache()
    cache.get("a", _slow([1]))
    with reused_seconds() as mine:
        t = threading.Thread(target=lambda: cache.get("a", _slow([1])))
        t.start()
        t.join()
    assert mine.hits == 0 and cache.hits == 1


def test_grid_cell_times_do_not_depend_on_the_segment_cache(tmp_path):
    """XRAI on a mini model, its segments computed by an earlier cell or not: the cell's
    seconds per image agree (they differed ~10x before the tally), and the cache was hit."""
    import cnnvis_eval as cv
    from cnnvis_eval.evaluation.config import RunConfig
    from cnnvis_eval.evaluation.runner import GridRun
    from cnnvis_eval.methods import xrai

    xrai.SEGMENTS.clear()

    def per_image(out):
        config = RunConfig(models=("mini_resnet",), methods=("xrai",), photos=(), synthetic=5, scenes=0, birds=0,
                           stages=(), method_params={"xrai": {"steps": 2}})
        GridRun(config, tmp_path / out, progress=False, workers=1).run()
        cells = pd.read_parquet(tmp_path / out / "cells.parquet")
        return cells.set_index("neuron")["seconds_per_image"]

    cold = per_image("cold")
    assert xrai.SEGMENTS.hits > 0  # mid and high reused the logit cell's segments
    warm = per_image("warm")  # every segment is in the cache now
    assert len(xrai.SEGMENTS) >= 5
    ratio = warm["logit"] / cold["logit"]
    assert 0.5 < ratio < 2.0, (cold, warm)
    # segments dominate XRAI's time at 2 steps: without the tally the reused cells are far cheaper
    assert cold["mid"] / cold["logit"] > 0.5
    cv.cache.default_cache.clear()
