"""A Dask worker that starts warm: ``dask worker tcp://HOST:PORT --nthreads 1 --preload grader.dask_worker``.

Dask runs ``dask_setup`` in each worker process as it starts. It starts the grader's heavy imports and a spare
runner then, not in the worker's first grading; the batch then starts each worker's probe server for its rubric
(grader/batch.py). So a cluster kept up between batches pays neither again, and a fresh one pays them while the
client is still connecting and staging.
"""

from __future__ import annotations

import grader

# Dask's statistical profiler samples the worker's threads every 10 ms: a grading's time is spent in its notebook's
# kernel, in other processes, where it sees nothing, and on a busy core each sample is taken from the gradings.
PROFILER_CALLBACKS = ("profile", "profile-cycle")


def dask_setup(worker) -> None:
    for name in PROFILER_CALLBACKS:  # preloads run before the worker starts its periodic callbacks
        worker.periodic_callbacks.pop(name, None)
    grader.warm_up()
