"""Independent tasks as Ray tasks: the grid's (configuration, fold) trainings on several GPUs,
several trainings on one GPU, or a cluster.

:func:`magn_lib.cv.run_grid` runs its trainings one after the other unless its settings say
``executor: ray`` (:class:`~magn_lib.settings.ExecutorSettings`); then it hands the unfinished
ones to :func:`run_on_ray`, where each :class:`Task` becomes one Ray task that asks for
``{"GPU": gpus_per_task}`` and ``cpus_per_task`` CPUs on a GPU cluster, for ``cpus_per_task``
CPUs otherwise (:func:`task_resources`), and trains with ``cpus_per_task`` torch threads.

Where Ray runs (:func:`ray_session`): ``ray_address: null`` starts a local Ray for the run
(no dashboard; the workers' output stays in the task logs unless ``ray_log_to_driver``) and
stops it afterwards; ``auto``, ``host:port`` or ``ray://host:port`` joins an existing cluster
(a head started with ``ray start --head``, KubeRay, a Slurm allocation) and ships this checkout's
``magn_lib`` to it. The tasks read their data from the object store and write their results
where the driver would (the grid's fold folders), so on a cluster of several machines the run's
work folder must be on a file system every node mounts at the same path.

Each task:

- keeps its output (stdout, stderr, warnings, log records) in its own log file
  (:attr:`Task.log`, appended to on a retry);
- reports its progress bars as events (:mod:`magn_lib.progress`) to its own progress file
  (:attr:`Task.progress`), which the driver follows and relays: into the run's progress
  channel under ``magn study`` (so the terminal shows every worker's epochs), into the
  driver's own bar otherwise;
- is retried once when it fails (an exception or a lost worker); a task that fails again is
  reported with its label, error and log, after the other tasks have finished, by
  :class:`TaskError` — the caller publishes nothing partial.

Importing this module does not import Ray; only :func:`ray_session` and :func:`run_on_ray` do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magn_lib.errors import ConfigError
from magn_lib.progress import PROGRESS_ENV, ProgressTail, format_event, tqdm
from magn_lib.settings import ExecutorSettings

__all__ = [
    "RETRIES",
    "Task",
    "TaskError",
    "TaskFailure",
    "ray_session",
    "run_on_ray",
    "start_local_ray",
    "task_resources",
]

# a failed task runs once more before it counts as failed
RETRIES = 1
# seconds between two looks at the finished tasks (also how soon an interrupt is seen)
POLL_S = 0.5
# how long a local Ray may take to start: Ray gives its node 30 s (not configurable), which a
# loaded machine can miss; the start is then tried again until this much time has passed
RAY_START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Task:
    """One unit of work: ``function(**shared, **kwargs)`` (see :func:`run_on_ray`).

    ``label`` names it in progress and errors (``"multi-view fold 2"``); ``log`` and
    ``progress`` are the files its output and its progress events go to (their folder is
    created when missing).
    """

    label: str
    log: Path
    progress: Path
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed on every attempt: its label, the last error and its log file."""

    label: str
    error: str
    log: Path


class TaskError(RuntimeError):
    """Some tasks failed after their retry; ``failures`` lists each (label, error, log)."""

    def __init__(self, failures: Sequence[TaskFailure], n_tasks: int) -> None:
        self.failures = list(failures)
        lines = [f"{len(self.failures)} of {n_tasks} task(s) failed after {RETRIES} retry:"]
        lines += [f"  {f.label}: {f.error} (log: {f.log})" for f in self.failures]
        lines.append("The finished tasks are kept; fix the cause and run again to do the rest.")
        super().__init__("\n".join(lines))


def task_resources(settings: ExecutorSettings, *, use_gpu: bool) -> dict[str, float]:
    """Ray's resource options of one task: ``{"num_cpus": cpus_per_task, "num_gpus":
    gpus_per_task}`` with a GPU, ``{"num_cpus": cpus_per_task, "num_gpus": 0}`` without."""
    return {"num_cpus": float(settings.cpus_per_task),
            "num_gpus": float(settings.gpus_per_task) if use_gpu else 0.0}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: 'ray' needs Ray, which is not installed: install the "
                          "project's ray extra (pip install -e '.[ray]'; make setup does)"
                          ) from None
    return ray


def start_local_ray(*, log_to_driver: bool = False, timeout_s: float = RAY_START_TIMEOUT_S,
                    **options: Any) -> Any:
    """Start a local Ray in this process (no dashboard) and return the ``ray`` module.

    ``options`` go to ``ray.init`` (``num_cpus``, ``num_gpus``...). A start that times out
    (Ray allows its node 30 s, too little on a machine busy with other work) is tried again
    until ``timeout_s`` seconds have passed.

    Raises:
        ConfigError: Ray is not installed or did not start in time (with Ray's reason).
    """
    ray = _ray()
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        try:
            ray.init(include_dashboard=False, log_to_driver=log_to_driver, **options)
            return ray
        except Exception as exc:  # Ray raises a bare Exception when its node times out
            with contextlib.suppress(Exception):
                ray.shutdown()
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"a local Ray did not start in {timeout_s:.0f} s ({attempts} attempt(s)): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            time.sleep(1.0)


@contextlib.contextmanager
def ray_session(settings: ExecutorSettings) -> Iterator[Any]:
    """The ``ray`` module, connected as ``settings`` say, for the duration of the context.

    A Ray this process already joined (``ray.is_initialized()``) is used as it is and left
    running. Otherwise ``ray_address`` ``None`` starts a local Ray on this machine (all its
    CPUs and GPUs, no dashboard; :func:`start_local_ray`) and ``auto`` / ``host:port`` /
    ``ray://host:port`` joins that cluster, shipping this checkout's ``magn_lib`` with the job;
    either is shut down (left) on exit. ``log_to_driver`` is ``ray_log_to_driver``.

    Raises:
        ConfigError: Ray is not installed, or it could not start or reach the cluster (the
            message gives Ray's reason).
    """
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    if settings.ray_address is None:
        start_local_ray(log_to_driver=settings.ray_log_to_driver)
    else:
        import magn_lib

        try:
            ray.init(address=settings.ray_address, log_to_driver=settings.ray_log_to_driver,
                     runtime_env={"py_modules": [str(Path(magn_lib.__file__).parent)]})
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise ConfigError(
                f"ray_address: could not join the Ray cluster at {settings.ray_address!r}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_task(function: Callable[..., Any], shared: Mapping[str, Any], kwargs: Mapping[str, Any],
              log: str, progress: str, threads: int) -> Any:
    """Body of every Ray task: ``function(**shared, **kwargs)`` with ``threads`` torch threads,
    its output in ``log`` and its progress events in ``progress``; a task without GPUs sees
    none (Ray leaves ``CUDA_VISIBLE_DEVICES`` alone for a task that asked for no GPU, and a
    ``device: auto`` training would take one)."""
    import ray
    import torch

    log_path = Path(log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved_env = {name: os.environ.get(name) for name in (PROGRESS_ENV, "CUDA_VISIBLE_DEVICES")}
    os.environ[PROGRESS_ENV] = progress
    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(threads)
    handler = None
    with open(log_path, "a", encoding="utf-8", buffering=1) as stream:
        stream.write(f"--- attempt started {time.strftime('%Y-%m-%d %H:%M:%S')} on "
                     f"{os.uname().nodename}, pid {os.getpid()}, {threads} torch thread(s)\n")
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                result = function(**shared, **kwargs)
        except BaseException:
            stream.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        stream.write(f"--- attempt finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return result


class _Relay:
    """Hands a worker's progress events on: appended to the run's progress channel when there
    is one (under ``magn study``), else shown as the driver bar's postfix."""

    def __init__(self, bar: Any) -> None:
        self.channel = os.environ.get(PROGRESS_ENV)
        self.bar = bar

    def __call__(self, event: dict[str, Any]) -> None:
        if self.channel:
            try:
                with open(self.channel, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps(event) + "\n")
            except OSError:
                pass  # progress is a courtesy
        elif not self.bar.disable:
            self.bar.set_postfix_str(format_event(event), refresh=True)


def run_on_ray(function: Callable[..., Any], tasks: Sequence[Task], settings: ExecutorSettings,
               *, shared: Mapping[str, Any] | None = None, use_gpu: bool | None = None,
               progress: bool = True, desc: str = "tasks", unit: str = "task",
               done_before: int = 0) -> list[Any]:
    """Run ``function(**shared, **task.kwargs)`` for every task as a Ray task; their results in
    the order of ``tasks``.

    Args:
        function: a module-level function (pickled to the workers).
        tasks: the work; each :class:`Task`'s log and progress files are where its output and
            its progress events go (a progress file left by an earlier run is removed first).
        settings: the executor settings (resources per task, where Ray runs).
        shared: large arguments common to every task (datasets): put in Ray's object store
            once, not once per task.
        use_gpu: whether the tasks ask for GPUs; ``None``: when the cluster has any.
        progress: the driver's bar (``desc``, ``unit``; ``done_before`` tasks counted as done
            already) and the relay of the workers' progress events.

    Raises:
        TaskError: some tasks failed twice (raised when every other task has finished).
        ConfigError: Ray is missing, cannot start or reach its cluster, or ``use_gpu`` is
            asked of a cluster without GPUs.
        KeyboardInterrupt: passed on after cancelling the tasks still running.
    """
    tasks = list(tasks)
    if not tasks:
        return []
    with ray_session(settings) as ray:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if use_gpu is None:
            use_gpu = gpus > 0
        elif use_gpu and gpus == 0:
            raise ConfigError("device: 'cuda' asks for GPUs, but the Ray cluster has none; "
                              "use device 'auto' or 'cpu', or a cluster with GPUs")
        remote = ray.remote(_run_task).options(
            **task_resources(settings, use_gpu=use_gpu),
            max_retries=RETRIES, retry_exceptions=True, name=desc,
        )
        shared_refs = ray.put(dict(shared or {}))
        total = done_before + len(tasks)
        bar = tqdm(total=total, initial=done_before, desc=desc, unit=unit, disable=not progress)
        relay = _Relay(bar)
        refs, tails = {}, {}
        try:
            for task in tasks:
                task.progress.unlink(missing_ok=True)
                task.progress.parent.mkdir(parents=True, exist_ok=True)
                ref = remote.remote(function, shared_refs, dict(task.kwargs), str(task.log),
                                    str(task.progress), int(settings.cpus_per_task))
                refs[ref] = task
                if progress:
                    tails[ref] = ProgressTail(task.progress, relay).__enter__()
            results: dict[Any, Any] = {}
            failures: dict[Any, TaskFailure] = {}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for ref in ready:
                    task = refs[ref]
                    try:
                        results[ref] = ray.get(ref)
                    except Exception as exc:  # the task's error, after its retry
                        failures[ref] = TaskFailure(task.label, _describe(exc), task.log)
                    tail = tails.pop(ref, None)
                    if tail is not None:
                        tail.__exit__(None, None, None)
                    bar.update(1)
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        finally:
            for tail in tails.values():
                tail.__exit__(None, None, None)
            bar.close()
    if failures:
        raise TaskError([failures[r] for r in refs if r in failures], len(tasks))
    return [results[r] for r in refs]


def _describe(exc: BaseException) -> str:
    """``Type: message`` of the error a task raised (Ray wraps it; its cause is the task's)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")

