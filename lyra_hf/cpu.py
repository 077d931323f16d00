"""How many CPUs a process may use, and how lyra-hf spreads work over them.

Lyra's operators are small: a second intra-op thread speeds a training step of the default model up little, and
threads that wait on each other at every operator collapse as soon as another process shares a core (BENCHMARKS.md,
"CPU use"). One single-threaded process per usable CPU avoids both. `usable_cpus` counts
what the process may really use: its CPU affinity and its cgroup's CPU quota (containers, batch schedulers), never the
host's core count.
"""

import gc
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

import torch

from .cli import Interrupted


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: str | Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none: cgroup v2's `cpu.max`
    (`"max 100000"` or `"150000 100000"`), else cgroup v1's `cpu/cpu.cfs_quota_us` (-1: none) over
    `cpu/cpu.cfs_period_us`."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def usable_cpus(cgroup_root: str | Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on (`os.sched_getaffinity`), capped by its cgroup quota rounded up; at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads for this process and return the number: `threads` when given (`--threads`), else
    `OMP_NUM_THREADS` when the user set it, else `usable_cpus()`. A notebook calls it once before running a model;
    lyra-train, lyra-predict and lyra-scan call it with their `--threads`."""
    threads = threads or threads_from_environment() or usable_cpus()
    torch.set_num_threads(threads)
    return threads


def threads_from_environment() -> int | None:
    """The user's `OMP_NUM_THREADS`, when set to a positive whole number."""
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(requested) if requested.isdigit() and int(requested) > 0 else None


def plan_processes(num_processes: int | None, threads: int | None) -> tuple[int, int]:
    """(processes, threads per process) for a command's `--num-processes` and `--threads`: by default one
    single-threaded process per usable CPU; `--threads T` alone gives usable // T processes of T threads; an explicit
    `OMP_NUM_THREADS` counts as `--threads`; `--num-processes N` alone gives each usable // N threads."""
    cpus = usable_cpus()
    threads = threads or threads_from_environment()
    if num_processes is None:
        num_processes = max(1, cpus // (threads or 1))
    return num_processes, threads or max(1, cpus // num_processes)


# A second training process pays only when a step holds enough work to share: each step has a fixed cost that does not
# shrink with the batch (Python, autograd, the optimizer, the S4D kernel), and the gradient all-reduce with the wait
# for the slower process adds to it. Below the bar one single-threaded process runs: a little slower idle, but it keeps
# its pace when another program shares a CPU, where two processes or torch's intra-op threads do not. The crossover
# and the busy-neighbour runs behind the bar: BENCHMARKS.md, "CPU use".
MIN_TRAINING_WORK_PER_PROCESS = 2048 * 64  # tokens per step x hidden size


def training_processes(processes: int, tokens_per_step: float, hidden_size: int) -> int:
    """How many of `processes` CPU processes a training run of this size uses by default: each must get at least
    `MIN_TRAINING_WORK_PER_PROCESS` of a step's tokens x hidden size."""
    return max(1, min(processes, int(tokens_per_step * hidden_size // MIN_TRAINING_WORK_PER_PROCESS)))


# Inference batches on a CPU hold at most about this many padded tokens x hidden size. Past it a batch's activations
# outgrow the caches and two workers slow each other down (they contend for memory bandwidth); below it each batch's
# fixed cost takes over. The batch-size sweep at widths 64 and 256: BENCHMARKS.md, "lyra-predict on random 200-letter
# protein rows".
CPU_BATCH_ACTIVATIONS = 8192 * 64


def cpu_batch_tokens(hidden_size: int) -> int:
    """Padded tokens per inference batch on a CPU for a model `hidden_size` wide (`CPU_BATCH_ACTIVATIONS` over it)."""
    return max(1, CPU_BATCH_ACTIVATIONS // hidden_size)


_worker_state: dict = {}
_worker_busy = False


def _interrupt_if_busy(signum, frame) -> None:
    """A worker's Ctrl-C and SIGTERM handler. A terminal's Ctrl-C reaches every process of its group: a worker stops
    the item it is running (unwinding it, so its temporary files are removed, and handing the interrupt back as the
    item's result); an idle worker waits for the pool to close. The parent reports the interrupt, once."""
    if _worker_busy:
        raise Interrupted(signum)


INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def _start_worker(state: dict) -> None:
    torch.set_num_threads(1)
    _worker_state.update(state)
    for signum in INTERRUPTS:
        signal.signal(signum, _interrupt_if_busy)


def _call_in_worker(function: Callable, item):
    global _worker_busy
    _worker_busy = True
    try:
        return function(_worker_state, item)
    finally:
        _worker_busy = False


def _started(state: dict, item) -> None:
    return None


@contextmanager
def interrupts_deferred():
    """Hold Ctrl-C and SIGTERM back for the block and deliver one that came meanwhile as it ends, to the handler there
    was before. Around the start of worker processes: a handler that raises while a worker is forked runs inside
    fork's callbacks, which ignore what it raises (the interrupt is lost), and one that raises inside the executor's
    start leaves workers that nothing stops."""
    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield
        return
    received = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum)) for signum in INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


class WorkerPool:
    """`processes` single-threaded worker processes that share `state` (e.g. a loaded model) and serve every `map` until
    the pool is closed. Workers are forked, so they get `state` without copying or pickling it, and they live as long
    as the pool: a worker keeps the memory its first batches allocated (`retain_freed_memory`), where fresh workers for
    each call would page-fault it in again (BENCHMARKS.md, "CPU use"). With one process, or off Linux (where fork is
    not safe with torch), `map` runs in this process.

    While the pool is open this process's objects are frozen out of garbage collection (`gc.freeze`): a full
    collection writes to every object it scans, and the pages it writes stop being shared with the workers (copy on
    write). At 100,000 rows lyra-predict's process tree then peaked at 696 MiB (PSS) rather than 787 MiB, the difference
    arriving at this process's first full collection, some seconds into a run (BENCHMARKS.md, "CPU use").

        with WorkerPool({"model": model}, processes=2) as pool:
            for chunk in chunks:
                results = list(pool.map(score_group, groups_of(chunk)))
    """

    def __init__(self, state: dict, processes: int):
        self.state = state
        self.executor = None
        self.processes = 1  # that serve `map` at once
        if processes > 1 and sys.platform.startswith("linux"):
            self.processes = processes
            gc.freeze()
            context = multiprocessing.get_context("fork")
            try:
                with interrupts_deferred():  # the workers are forked at the first call, all at once
                    self.executor = ProcessPoolExecutor(
                        processes, mp_context=context, initializer=_start_worker, initargs=(state,)
                    )
                    list(self.map(_started, range(processes)))
            except BaseException:
                self.close()
                raise

    def map(self, function: Callable, items: Iterable) -> Iterator:
        """`function(state, item)` for each item, results in the order of `items`. `function` must be a module-level
        function, and items and results picklable."""
        if self.executor is None:
            return (function(self.state, item) for item in items)
        return self.executor.map(_call_in_worker, repeat(function), items)

    def submit(self, function: Callable, item) -> Future:
        """`function(state, item)` in a worker, as a Future to wait on with others (`concurrent.futures.wait`); with
        one process it runs here, at once, and the Future is done when returned."""
        if self.executor is not None:
            return self.executor.submit(_call_in_worker, function, item)
        future = Future()
        try:
            future.set_result(function(self.state, item))
        except Exception as error:
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(
                wait=True, cancel_futures=True
            )  # on an error or interrupt, pending items are dropped
            gc.unfreeze()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorkerError(Exception):
    """A worker process of `launch_on_cpus` failed: `type_name` and `message` of its exception, and its traceback."""

    def __init__(self, type_name: str, message: str, traceback: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message, self.traceback = type_name, message, traceback


def launch_on_cpus(function: Callable, args: tuple, processes: int) -> dict[int, object]:
    """Run `function(*args)` in `processes` forked processes that form one torch.distributed job on this machine
    (torch's elastic launcher, the engine of torchrun and `accelerate launch`; each process sees RANK, WORLD_SIZE and
    MASTER_ADDR/PORT, and Accelerate forms the gloo group from them). Returns each rank's return value. If a process
    fails, the others are stopped and the first failure is raised as `WorkerError`; after Ctrl-C or SIGTERM the
    processes are stopped and `Interrupted` is raised."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"lyra-hf-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="fork",
    )
    # The launcher logs each failure as a multi-line traceback, and signals as warnings, from module loggers with levels
    # of their own; the caller reports both in its own words.
    prefixes = ("torch.distributed.elastic", "torch.multiprocessing", "torchelastic-events-null")
    names = [name for name in logging.root.manager.loggerDict if name.startswith(prefixes)]
    loggers = [logging.getLogger(name) for name in {*prefixes, *names}]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        return elastic_launch(config, function)(*args)
    except SignalException as error:
        raise Interrupted(error.sigval) from None
    except ChildFailedError as error:
        _, failure = error.get_first_failure()
        reported = failure.message if isinstance(failure.message, dict) else {"message": str(failure.message)}
        type_name, _, message = str(reported.get("message", "")).partition(": ")
        if type_name in ("KeyboardInterrupt", Interrupted.__name__):  # a process saw Ctrl-C before the launcher did
            raise Interrupted(signal.SIGINT) from None
        raise WorkerError(type_name, message, reported.get("extraInfo", {}).get("py_callstack", "")) from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


__all__ = [
    "CPU_BATCH_ACTIVATIONS",
    "WorkerError",
    "WorkerPool",
    "cgroup_cpu_quota",
    "configure_threads",
    "cpu_batch_tokens",
    "launch_on_cpus",
    "plan_processes",
    "training_processes",
    "usable_cpus",
]
