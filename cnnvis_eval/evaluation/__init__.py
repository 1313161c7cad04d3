"""Evaluation: the comparison grid, split by job.

- :mod:`.config`: what a run covers (:class:`RunConfig`), the neurons, the grid's method parameters;
- :mod:`.inputs`: the model of a name or a model file, its images and masks, its neurons;
- :mod:`.store`: the files of a run (:class:`RunStore`);
- :mod:`.lock`: one run writes into a folder at a time (:class:`RunLock`);
- :mod:`.stages`: the scoring stages declared as data, and the code that runs them;
- :mod:`.runner`: the orchestration (:class:`GridRun`, :func:`run_grid`);
- :mod:`.executors`: where tasks run (in process, worker processes);
- :mod:`.ray_executor`, :mod:`.remote`: tasks on a Ray cluster (imports ray only when used);
- :mod:`.cost`: the reference passes method costs are expressed against;
- :mod:`.plan`: what a run will cost, from the measured cost table (``cnnvis-eval plan``).
"""

from .config import GRID_PARAMS, NEURONS, RunConfig, method_params
from .executors import Executor, LocalExecutor, ProcessExecutor
from .inputs import ImageSet, load_spec
from .lock import RunLock
from .runner import GridRun, run_grid
from .store import RunStore

__all__ = ["GRID_PARAMS", "NEURONS", "Executor", "GridRun", "ImageSet", "LocalExecutor", "ProcessExecutor",
           "RunConfig", "RunLock", "RunStore", "load_spec", "method_params", "run_grid"]
