"""How many processes ``funrl train`` uses, and re-launching itself under torchrun to use them.

funrl's pieces are small ops: one torch thread per process is the fast setting
(:mod:`funrl.threads`), so a single process uses one core.  On a machine with
more cores, ``funrl train`` splits its seeds over several one-thread processes
with ``torch.distributed.run`` (funrl's torchrun path, :mod:`funrl.distributed`;
seed *i* trains the same bit for bit whatever the number of processes).
``benchmarks/threads.py`` measures one process with two threads against two
processes with one thread each.

Splitting pays only where an update's time grows with the seeds it carries:
a process runs its updates one after another, and at a few seeds an update
costs the same fixed per-call overhead whatever the seed count, so two
processes of 4 seeds take as long as one of 8 (the main job, 8 seeds x 500k:
165.0 s in one process, 165.6 s in two, 2 cores).  At 64 seeds an update is
arithmetic, and two processes of 32 ran 1.23x the env-steps/s of one.  So
``--processes auto`` (the default) takes one process per usable core
(``os.sched_getaffinity``) but keeps at least :data:`MIN_SEEDS_PER_PROCESS`
seeds in each, and splits CPU runs only: a CUDA run, a run already under
torchrun, a run of fewer than ``2 * MIN_SEEDS_PER_PROCESS`` seeds or a one-core
machine stays one process.  ``--processes N`` asks for N; ``FUNRL_PROCESSES``
sets the default (``1`` turns the re-launch off, as the test suite does).

Nothing here imports torch: ``funrl train`` decides before it pays for it.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Sequence

__all__ = ["usable_cores", "parse_processes", "processes_for", "torchrun_argv", "MIN_SEEDS_PER_PROCESS"]

#: ``auto`` gives every process at least this many seeds (measured: 4 per process gain nothing, 32 gain;
#: 16 lies between the two measured points)
MIN_SEEDS_PER_PROCESS = 16


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def parse_processes(value: str | int | None, name: str = "--processes") -> int | None:
    """``"auto"`` / None -> None (decide from the machine), else an int >= 1.

    Raises:
      ValueError: naming ``name``, for anything else.
    """
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or str(n) != str(value).strip():
        raise ValueError(f"{name}: expected 'auto' or an int >= 1, got {value!r}")
    return n


def processes_for(requested: int | None, seeds: int, device: str, threads: int = 1,
                  environ: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """The number of processes a run of ``seeds`` seeds uses.

    Args:
      requested: ``--processes`` (None: ``auto``, or ``FUNRL_PROCESSES`` when set).
      seeds: seeds in the run (all settings of a sweep together).
      device: ``"cpu"`` or ``"cuda"``; a CUDA run uses one process (one GPU).
      threads: torch threads per process: ``auto`` leaves each process that many cores.
      environ: the environment (default ``os.environ``); under torchrun (``WORLD_SIZE`` set) the answer is 1.
      cores: usable cores (default :func:`usable_cores`).

    Returns:
      An int in ``[1, seeds]`` (``auto``: at most ``seeds // MIN_SEEDS_PER_PROCESS``).

    Raises:
      ValueError: ``requested`` exceeds ``seeds``, or ``FUNRL_PROCESSES`` is malformed.
    """
    environ = os.environ if environ is None else environ
    if environ.get("WORLD_SIZE"):
        return 1
    if requested is None:
        requested = parse_processes(environ.get("FUNRL_PROCESSES") or None, "FUNRL_PROCESSES")
    if requested is not None:
        if requested > seeds:
            raise ValueError(f"--processes: expected at most one process per seed ({seeds}), got {requested}")
        return requested
    if device != "cpu":
        return 1
    cores = usable_cores() if cores is None else cores
    return max(1, min(seeds // MIN_SEEDS_PER_PROCESS, cores // max(1, threads)))


def torchrun_argv(argv: Sequence[str], processes: int, python: str | None = None) -> list[str]:
    """The command that runs ``funrl <argv>`` as ``processes`` torchrun ranks on this machine.

    ``--standalone`` picks a free local port; ``--processes 1`` is appended so
    that the ranks do not re-launch (they would not anyway: ``WORLD_SIZE`` is set).
    """
    if processes < 2:
        raise ValueError(f"processes: expected an int >= 2 to re-launch, got {processes!r}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", "-m", "funrl", *argv, "--processes", "1"]
