"""TensorBoard scalars of a run (``funrl train --tensorboard``, ``funrl.run(..., tensorboard=True)``).

The run's metrics go to ``<out>/tensorboard/`` through ``torch.utils.tensorboard``
(needs the ``tensorboard`` package: ``pip install 'funrl[tensorboard]'``), the
same rows as metrics.csv and written with them, at every checkpoint::

    tensorboard --logdir runs/        # every run under runs/ side by side

Tags, per update, at step = env steps per seed (metrics.csv's ``env_steps``):

* ``<metric>`` for every metrics.csv column: the mean over the seeds.  For the
  per-episode metrics (``episode_return``, ``episode_length``) the mean is over
  the seeds that completed an episode in the update (an update without one
  reports 0 there, which is no return); an update where no seed completed one
  has no point.
* ``episode_return/seed_<i>``: seed *i*'s return where it completed an episode
  (CleanRL's ``charts/episodic_return``, one curve per seed).

Resume: a resumed run opens a new event file that starts with a purge marker at
the first update it writes, so TensorBoard hides whatever an earlier process
logged from there on (rows written after the checkpoint the run resumes from):
each step appears once.
"""

from __future__ import annotations

import glob
import os
import time

import torch

__all__ = ["require_tensorboard", "tensorboard_scalars", "TensorBoardLogger", "EPISODE_METRICS"]

#: metrics that describe the episodes completed in an update (0 when none completed)
EPISODE_METRICS = ("episode_return", "episode_length")

_INSTALL = "pip install 'funrl[tensorboard]'"


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or a clear error when the package is missing.

    Raises:
      ImportError: ``tensorboard`` is not installed (the message says how to install it).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(f"tensorboard: logging to TensorBoard needs the tensorboard package ({e}); "
                          f"install it with: {_INSTALL}") from None
    return SummaryWriter


def tensorboard_scalars(history: dict, first_update: int, steps_per_update: int) -> list[tuple[int, dict[str, float]]]:
    """The scalars of each update of ``history``, as :class:`TensorBoardLogger` writes them.

    Args:
      history: name -> tensor ``[S, n]`` (seeds x updates): the metrics of updates
        ``first_update + 1 .. first_update + n`` for S seeds (metrics.csv's rows).
      first_update: the update before the first row.
      steps_per_update: env steps per seed in one update.

    Returns:
      ``[(step, {tag: value})]``, one entry per update, ``step = update * steps_per_update``;
      tags as in the module docstring.

    Raises:
      ValueError: a metric that is not ``[S, n]`` like the others (naming it).
    """
    if not history:
        return []
    names = list(history)
    S, n = tuple(history[names[0]].shape) if history[names[0]].dim() == 2 else (None, None)
    cols = {}  # name -> [n, S]: one row per update, as the tags are written
    for name in names:
        v = history[name]
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or (n is not None and tuple(v.shape) != (S, n)):
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"history[{name!r}]: expected a tensor [seeds, updates] like the other metrics "
                             f"({(S, n)}), got {got}")
        cols[name] = v.detach().double().cpu().T
    done = cols["episodes"] > 0 if "episodes" in cols else torch.ones(n, S, dtype=torch.bool)
    any_done = done.any(1).tolist()
    # whole columns at once, then Python lists: a loop of tensor ops per update costs more than the writing
    means = {}
    for name, v in cols.items():
        if name in EPISODE_METRICS:
            means[name] = ((v * done).sum(1) / done.sum(1).clamp(min=1)).tolist()
        else:
            means[name] = v.mean(1).tolist()
    returns = cols["episode_return"].tolist() if "episode_return" in cols else None
    done_rows = done.tolist()
    out = []
    for u in range(n):
        tags = {name: m[u] for name, m in means.items() if any_done[u] or name not in EPISODE_METRICS}
        if returns is not None:
            tags.update({f"episode_return/seed_{s}": returns[u][s] for s in range(S) if done_rows[u][s]})
        out.append(((first_update + u + 1) * steps_per_update, tags))
    return out


class TensorBoardLogger:
    """Writes a run's metrics to ``log_dir`` as TensorBoard scalars (rank 0 only).

    Args:
      log_dir: the event files' folder (``<out>/tensorboard``).
      steps_per_update: env steps per seed in one update (the x-axis unit).
      start_update: the update the run starts from (0, or the resumed checkpoint's):
        events an earlier process logged at later updates are hidden (purged).

    Raises:
      ImportError: the tensorboard package is missing (see :func:`require_tensorboard`).
    """

    def __init__(self, log_dir: str, steps_per_update: int, start_update: int = 0):
        SummaryWriter = require_tensorboard()
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._summary = Summary
        self.log_dir = log_dir
        self.steps_per_update = steps_per_update
        _wait_for_a_later_file_name(log_dir)
        # the purge marker hides every older event at or after the first step this process writes
        self.writer = SummaryWriter(log_dir, purge_step=(start_update + 1) * steps_per_update)

    def log(self, history: dict, first_update: int) -> None:
        """Write the rows of ``history`` (leaves ``[S, n]``, updates ``first_update + 1 ...``) and flush."""
        S = self._summary
        # one event per update with every tag: ~10x faster than add_scalar per tag (19 vs 208 us per scalar,
        # measured on a loaded 2-core CPU), which matters for runs of many short updates such as DQN's 50k
        file_writer = self.writer._get_file_writer()
        for step, tags in tensorboard_scalars(history, first_update, self.steps_per_update):
            file_writer.add_summary(S(value=[S.Value(tag=t, simple_value=v) for t, v in tags.items()]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wait_for_a_later_file_name(log_dir: str) -> None:
    """Sleep until a new event file's name sorts after every existing one.

    TensorBoard reads a folder's event files in name order, and the names start
    with the creation time in whole seconds: a resumed run's file created in the
    same second as an earlier one (a test, never a real resume) could sort first
    and its purge marker would not hide the earlier events.
    """
    stamps = [int(os.path.basename(p).split(".")[3]) for p in glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))
              if os.path.basename(p).split(".")[3].isdigit()]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(max(0.01, max(stamps) + 1 - time.time()))
