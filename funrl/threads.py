"""How many CPU threads a training run uses, and why one by default.

funrl's training is many small ops (64-wide MLPs, a few thousand elements per
op); torch splits an op across threads only above ~32k elements, so a second
intra-op thread buys little here, while OpenMP threads that spin-wait at every
op's barrier collapse when another program holds a core: measured on a 2-core
machine, `funrl train` fell from ~20k to 145-925 env-steps/s at 2 threads
with other processes busy, against 16-21k at 1 thread (benchmarks/threads.py
has the current numbers).  So a run uses one thread unless told otherwise
(``--threads N`` / ``funrl.run(threads=N)``, or ``OMP_NUM_THREADS`` set in the
environment); to use several cores, run several processes
(``torchrun --nproc-per-node K -m funrl train ...`` splits the seeds).

Thread counts change how some reductions are split, so results are equal
across thread counts up to floating-point reassociation (README,
"Reproducibility"); a given thread count reproduces bit for bit.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

__all__ = ["default_threads", "check_threads", "using_threads"]


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set to a positive int, else 1 (see the module docstring)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    return 1


def check_threads(threads, name: str = "threads") -> int:
    """``threads`` as an int >= 1, or the default for None; ValueError naming ``name`` otherwise."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{name}: expected an int >= 1 (torch threads for this run) or None (default), got {threads!r}")
    return threads


@contextlib.contextmanager
def using_threads(threads: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous count is restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
