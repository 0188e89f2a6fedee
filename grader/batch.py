"""The batch: a class's submissions → their results, graded by an executor, re-graded only where something changed.

For each submission, in name order: stage it (grader/staging.py: intake's copy, with every limit, as bytes) → its
key (grader/regrade.py) → if OUT already holds the untouched result of that key, reuse it; otherwise an executor
grades it with ``grade_submission`` and the result is recorded under its key. ``force`` grades everything.

Executors are small and interchangeable; each takes staged submissions lazily (a bounded number in flight, so a
class of thousands is never all in memory; with Dask, one per worker thread, as Dask counts a worker's death
against every task it holds, running or waiting) and yields every one's Result as it finishes, with whether it came from
the grading pipeline (recorded for re-use) or is the batch's own error row (never recorded: retried next run):
- ``LocalPool(jobs)``, the default: threads on this machine, each grading pinned to its share of the cores. It
  imports neither dask nor distributed.
- ``DaskCluster(scheduler)``: the workers of a Dask distributed cluster (``tcp://HOST:PORT``; dask-jobqueue on
  Slurm, dask-kubernetes...), or a LocalCluster on this machine when no address is given. Staged bytes travel to
  the worker, which grades them in its own sandbox into a scratch folder and sends ``OUT/NAME`` back as bytes; the
  client lays it into OUT. A worker that dies mid-grade costs one retry elsewhere (the scheduler's
  ``allowed_failures`` is set to 1), a second death makes an error row.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from grader import grade_submission, intake, regrade, sandbox, staging, warm_up
from grader.result import Result
from grader.rubric import Rubric
from grader.staging import Staged

WORKER_DEATHS_ALLOWED = 1  # one retry on another worker, then an error row
IN_FLIGHT_PER_SLOT = 2  # in the local pool, submissions staged per slot: no slot waits for staging
CONNECT_SECONDS = 30
Outcome = tuple[Result, bool]  # the result, and whether the grading pipeline made it (so it may be re-used)


class BatchError(Exception):
    """The batch cannot start: a scheduler out of reach, workers that are not set up like this machine."""


def grade(
    found: list[intake.Submission],
    rubric: Rubric,
    out: Path,
    executor: LocalPool | DaskCluster,
    keep_artifacts: bool = False,
    force: bool = False,
) -> Iterator[tuple[Result, bool]]:
    """Yield (result, reused) for every submission of ``found``: reused ones first, then graded ones as they finish.

    ``keep_artifacts`` grades everything too: the artifacts asked for exist only after a grading.
    """
    keys: dict[str, str] = {}
    pending = []
    for submission in found:
        if not (force or keep_artifacts):
            staged = staging.stage(submission, rubric)
            kept = regrade.reusable(out, submission.student, regrade.key(staged, rubric))
            if kept is not None:
                yield kept, True
                continue
        pending.append(submission)

    def staged_pending() -> Iterator[Staged]:
        # Staged again, and keyed from these very bytes: a file changed since the first look is graded as it is now.
        for submission in pending:
            staged = staging.stage(submission, rubric)
            keys[staged.student] = regrade.key(staged, rubric)
            yield staged

    for result, by_pipeline in executor.grade(staged_pending(), rubric, out, keep_artifacts):
        if by_pipeline:
            regrade.remember(out, result, keys[result.student])
        else:
            regrade.forget(out, result.student)
        yield result, False


def error_row(student: str, rubric: Rubric, message: str) -> Result:
    """The last line of defence: a failure around the grading (not inside it) is still a row."""
    return Result(student, "error", 0, rubric.max_score, message[:2000])


class LocalPool:
    """``jobs`` gradings at a time in threads of this process, each holding its own share of the cores."""

    def __init__(self, jobs: int = 1):
        self.jobs = jobs

    def grade(self, staged: Iterable[Staged], rubric: Rubric, out: Path, keep_artifacts: bool) -> Iterator[Outcome]:
        slots = CoreSlots(self.jobs)

        def one(submission: Staged) -> Result:
            with slots.taken() as cpus:
                return grade_submission(
                    submission, rubric, out, cpus=cpus, keep_artifacts=keep_artifacts, student=submission.student
                )

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs)
        try:
            finished = _bounded(
                lambda submission: pool.submit(one, submission),
                staged,
                self.jobs * IN_FLIGHT_PER_SLOT,
                lambda running: concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)[0],
            )
            for submission, future in finished:
                try:
                    yield future.result(), True
                except Exception as error:  # grade_submission turns failures into rows; this is the last defence
                    yield error_row(submission.student, rubric, f"the grader failed: {error!r}"), False
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a Ctrl-C stops the queue, not the gradings under way


class DaskCluster:
    """Gradings on the workers of a Dask distributed cluster: at ``scheduler`` (``tcp://HOST:PORT``), or on a
    LocalCluster of ``workers`` processes on this machine (one grading each) when ``scheduler`` is None."""

    def __init__(self, scheduler: str | None = None, workers: int = 1):
        self.scheduler = scheduler
        self.workers = workers

    def grade(self, staged: Iterable[Staged], rubric: Rubric, out: Path, keep_artifacts: bool) -> Iterator[Outcome]:
        import distributed  # here only: the local pool needs no dask

        with self._client(distributed) as client:
            slots = _prepare_workers(client, rubric)
            finished = _bounded(
                lambda submission: client.submit(
                    grade_on_worker, submission, rubric, keep_artifacts, key=f"grade-{uuid.uuid4().hex}", pure=False
                ),
                staged,
                slots,  # no more: a task waiting on a worker that dies counts that death against it too
                lambda running: distributed.wait(running, return_when="FIRST_COMPLETED").done,
            )
            for submission, future in finished:
                yield _collect(submission, future, rubric, out, distributed.KilledWorker)
                future.release()

    @contextmanager
    def _client(self, distributed):
        if self.scheduler is None:
            with (
                distributed.LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    scheduler_port=0,
                    dashboard_address="127.0.0.1:0",  # its HTTP server (health, metrics) on loopback, any free port
                    preload=["grader.dask_worker"],  # as the README starts workers: warm from the start
                ) as cluster,
                distributed.Client(cluster) as client,
            ):
                yield client
            return
        try:
            client = distributed.Client(self.scheduler, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as error:
            raise BatchError(f"no Dask scheduler answers at {self.scheduler}: {error}") from error
        with client:
            yield client


def _collect(submission: Staged, future, rubric: Rubric, out: Path, killed_worker: type) -> Outcome:
    try:
        result, folder = future.result()
    except killed_worker as error:
        message = (
            f"grading this submission killed {WORKER_DEATHS_ALLOWED + 1} Dask workers in a row (it was retried on "
            f"another worker after the first): {error}"
        )
        return error_row(submission.student, rubric, message), False
    except Exception as error:  # the worker's grade_submission turns failures into rows; this is the last defence
        return error_row(submission.student, rubric, f"the grader failed: {error!r}"), False
    if folder is not None:  # None: a name the grader refuses writes no folder, locally either
        place_folder(folder, out / submission.student)
    return result, True


def place_folder(packed: bytes, target: Path) -> None:
    """Replace ``target`` by the packed folder a worker sent, unpacked beside it first (no half folder in OUT)."""
    partial = target.parent / f".partial-{uuid.uuid4().hex}"
    staging.unpack_tree(packed, partial)
    if target.exists():
        sandbox.remove_tree(target)  # re-grading starts from nothing, as locally
    partial.rename(target)


def grade_on_worker(submission: Staged, rubric: Rubric, keep_artifacts: bool) -> tuple[Result, bytes | None]:
    """On a Dask worker: grade the staged submission into a scratch folder, return its result and ``OUT/NAME``
    packed (at most the rubric's ``kept_bytes``, plus the store with ``--keep-artifacts``)."""
    scratch = Path(tempfile.mkdtemp(prefix="grader-worker-"))
    try:
        with _worker_slots().taken() as cpus:
            result = grade_submission(
                submission, rubric, scratch, cpus=cpus, keep_artifacts=keep_artifacts, student=submission.student
            )
        folder = scratch / submission.student
        return result, staging.pack_tree(folder) if folder.is_dir() else None
    finally:
        sandbox.remove_tree(scratch)


_WORKER_CORES: list[int] | None = None  # set by the client (_share_cores): this worker process's share


@cache
def _worker_slots() -> CoreSlots:
    """A worker process's grading slots: one per thread it runs tasks in, each with its part of the worker's cores
    (its share of the host, or all it sees)."""
    import distributed

    return CoreSlots(distributed.get_worker().state.nthreads, _WORKER_CORES)


def _take_share(cores: list[int]) -> None:
    global _WORKER_CORES
    _WORKER_CORES = cores
    _worker_slots.cache_clear()


def _prepare_workers(client, rubric: Rubric) -> int:
    """Check every worker is set up like this machine, allow one retry, share cores, start warming each worker's
    probe server for ``rubric``; return the grading slots."""
    workers = client.scheduler_info()["workers"]
    if not workers:
        client.wait_for_workers(1, timeout=CONNECT_SECONDS)
        workers = client.scheduler_info()["workers"]
    expected, setups = worker_setup(), client.run(worker_setup)
    for what, needs in (
        ("environment", "this kit's code and packages (make venv from the same commit)"),
        ("data", "the verified California Housing cache (make data)"),
    ):
        different = sorted(address for address, setup in setups.items() if setup[what] != expected[what])
        if different:
            raise BatchError(
                f"{len(different)} Dask worker(s) lack {needs}, as this machine has it: {', '.join(different)}; "
                "see the README's Dask section"
            )
    client.run_on_scheduler(_allow_retries, allowed=WORKER_DEATHS_ALLOWED)
    _share_cores(client, workers)
    client.run(_warm_up_for, rubric)
    return sum(worker["nthreads"] for worker in workers.values())


def worker_setup() -> dict[str, str | None]:
    """What a worker must share with the client: the environment (regrade.environment) and the data cache the
    probe splits, by digest (None: no cache)."""
    from coursekit import housing

    cache = sandbox.host_data_home() / housing.CACHE_FILE  # the path scikit-learn reads, without importing it
    return {"environment": regrade.environment(), "data": housing.sha256_of(cache) if cache.is_file() else None}


def _warm_up_for(rubric: Rubric) -> None:
    # Not warm_up itself: client.run sends back what a function returns, and the probe service stays on the worker.
    warm_up(rubric)  # returns at once; the probe server's imports overlap the staging and the first notebook


def _allow_retries(dask_scheduler, allowed: int) -> None:
    # Read by the scheduler each time a worker dies holding a task: past it, the task fails with KilledWorker.
    dask_scheduler.allowed_failures = allowed


def _share_cores(client, workers: dict) -> None:
    """Worker processes on one host that see the same cores get a share each, as ``--jobs`` does locally: the
    student's code of a grading runs on its share (``grade_submission``'s ``cpus``), the grader itself floats."""
    by_host: dict[tuple, list[str]] = {}
    for address, cores in client.run(_cores).items():
        by_host.setdefault((workers[address]["host"], tuple(cores)), []).append(address)
    for (_, cores), addresses in by_host.items():
        for address, share in zip(sorted(addresses), cpu_shares(len(addresses), list(cores)), strict=True):
            client.run(_take_share, share, workers=[address])


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


class CoreSlots:
    """``jobs`` groups of cores (``cpu_shares``); a grading holds one for as long as it runs."""

    def __init__(self, jobs: int, cores: list[int] | None = None):
        self.free: queue.Queue[list[int]] = queue.Queue()
        for cpus in cpu_shares(jobs, cores):
            self.free.put(cpus)

    @contextmanager
    def taken(self) -> Iterator[list[int]]:
        cpus = self.free.get()
        try:
            yield cpus
        finally:
            self.free.put(cpus)


def cpu_shares(jobs: int, cores: list[int] | None = None) -> list[list[int]]:
    """One group of cores per job: ``cores`` (this process's by default) dealt out round-robin, shared when jobs
    outnumber them."""
    cores = cores or sorted(os.sched_getaffinity(0))
    if jobs >= len(cores):
        return [[cores[job % len(cores)]] for job in range(jobs)]
    return [cores[job::jobs] for job in range(jobs)]


def _bounded(submit: Callable, items: Iterable, limit: int, wait_first: Callable) -> Iterator[tuple]:
    """Submit ``items`` keeping at most ``limit`` in flight; yield (item, future) as each finishes."""
    items = iter(items)
    running: dict = {}

    def top_up() -> None:
        while len(running) < limit and (item := next(items, None)) is not None:
            running[submit(item)] = item

    top_up()
    while running:
        done = wait_first(list(running))
        for future in [future for future in running if future in done]:  # in the order they were submitted
            yield running.pop(future), future
        top_up()
