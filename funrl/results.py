"""A results folder: what :func:`funrl.run` writes and ``funrl eval / plot / export`` and warm starts read.

::

    runs/ppo-CartPole-v1-20261130-120000/
      config.json         the run's settings, versions, machine     read_config_json, write_config_json
      metrics.csv         one row per update per seed               MetricsCSV, load_run
      summary.json        IQM, 95% CI, per-seed final returns, SPS  read_summary_json, write_summary_json
      checkpoints/        the training state every checkpoint_every
                          updates, with those updates' metrics      write_checkpoint, read_checkpoint
      learning_curve.png  (with matplotlib: :mod:`funrl.plotting`)

Axis order: metrics held in memory are ``[seeds, updates]`` everywhere in funrl
(``vmap(train)``, :meth:`funrl.algorithms.common.Driver.run`, :func:`funrl.run`,
:func:`load_run`, the checkpoints' metrics).  metrics.csv has one row per
``(update, seed)``, updates in order and the seeds of each update together::

    update,seed,env_steps,episode_return,...
    1,0,512,21.5,...
    1,1,512,18.0,...

This module writes and reads files only: it imports nothing of the runner, so
plotting and evaluation import it without pulling the training loop in.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import re

from typing import Any, NamedTuple

import torch

from funrl import checkpoint as ckpt
from funrl import tree

__all__ = [
    "CONFIG_JSON_KEYS",
    "TrainedRun",
    "load_trained",
    "METRICS_AXES",
    "read_config_json",
    "write_config_json",
    "read_summary_json",
    "write_summary_json",
    "metrics_csv_text",
    "MetricsCSV",
    "load_run",
    "concat_metrics",
    "final_returns",
    "write_checkpoint",
    "read_checkpoint",
    "clean_temp_files",
]

#: the keys every results folder's config.json has (what resume, eval and warm starts read)
CONFIG_JSON_KEYS = ("algo", "env", "seeds", "seed", "config")

#: how a checkpoint's metadata names the layout of its metrics (older checkpoints, without it, hold
#: ``[updates, seeds]``)
METRICS_AXES = "seed,update"


# ------------------------------------------------------------------ config.json
def read_config_json(path: str, required: tuple[str, ...] = CONFIG_JSON_KEYS) -> dict:
    """A results folder's ``config.json`` as a dict.

    Args:
      path: the file (``<folder>/config.json``).
      required: keys it must have.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not valid JSON, not a JSON object, or lacks a ``required`` key
        (the message names the file and the missing keys).
    """
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise ValueError(
            f"{path}: missing key(s) {', '.join(map(repr, missing))}; a funrl results folder's "
            f"config.json has {', '.join(map(repr, required))}"
        )
    return cfg


def write_config_json(directory: str, record: dict) -> str:
    """Write ``<directory>/config.json`` atomically: ``record`` plus ``versions`` and ``machine``.

    Args:
      record: the run's settings; it must have :data:`CONFIG_JSON_KEYS`.

    Returns:
      the path written.

    Raises:
      ValueError: ``record`` lacks a required key (naming it).
    """
    missing = [k for k in CONFIG_JSON_KEYS if k not in record]
    if missing:
        raise ValueError(f"record: missing key(s) {', '.join(map(repr, missing))}; config.json needs "
                         f"{', '.join(map(repr, CONFIG_JSON_KEYS))}")
    from funrl import __version__

    record = {
        **record,
        "versions": {"funrl": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
    }
    return ckpt.write_json_atomic(os.path.join(directory, "config.json"), record)


# ------------------------------------------------------------------ summary.json
def read_summary_json(directory: str) -> dict | None:
    """``<directory>/summary.json`` as a dict, or None when there is none (an unfinished run)."""
    path = os.path.join(directory, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_summary_json(directory: str, summary: dict) -> str:
    """Write ``<directory>/summary.json`` atomically; returns the path."""
    return ckpt.write_json_atomic(os.path.join(directory, "summary.json"), summary)


def final_returns(metrics: dict, window_frac: float = 0.05) -> torch.Tensor:
    """Per-seed return at the end of training: mean ``episode_return`` over the last updates with episodes.

    Args:
      metrics: leaves ``[S, U]`` with ``episode_return`` and ``episodes``.
      window_frac: the share of the last updates averaged (at least one update).

    Returns:
      float64 ``[S]`` (0 for a seed with no episode in the window).
    """
    ret = metrics["episode_return"].double()
    eps = metrics["episodes"].double()
    U = ret.shape[1]
    w = max(1, int(math.ceil(U * window_frac)))
    r, e = ret[:, -w:], (eps[:, -w:] > 0).double()
    return (r * e).sum(1) / e.sum(1).clamp(min=1.0)


# ------------------------------------------------------------------ metrics.csv
def metrics_csv_text(metrics: dict, steps_per_update: int, first_update: int = 0, header: bool = True) -> str:
    """metrics.csv text for ``metrics`` (leaves ``[S, U]``): the rows of updates ``first_update + 1 ...``.

    Values are written with ``repr`` (a float32 or float64 value reads back exactly).
    """
    names = list(metrics)
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(["update", "seed", "env_steps", *names])
    if not names:
        return buf.getvalue()
    S, U = metrics[names[0]].shape[:2]
    cols = {n: metrics[n].detach().double().cpu().tolist() for n in names}
    for u in range(U):
        for s in range(S):
            w.writerow([first_update + u + 1, s, (first_update + u + 1) * steps_per_update] + [repr(cols[n][s][u]) for n in names])
    return buf.getvalue()


def concat_metrics(parts: list) -> dict:
    """Metrics of consecutive stretches of updates joined along the update axis (leaves ``[S, U]``, on CPU).

    Empty dicts and None are skipped; no parts give ``{}``.
    """
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {k: torch.cat([p[k].detach().cpu() for p in parts], 1) for k in parts[0]}


class MetricsCSV:
    """``metrics.csv``, grown by appending the rows of each checkpoint's updates (one writer: rank 0).

    Appending keeps writing the results linear in the run's length (rewriting the
    whole file at every checkpoint was quadratic).  An append is not atomic; rows
    a crash left after the newest checkpoint, or a torn last line, are dropped by
    :meth:`restore` when the run resumes, so a resumed run's file equals an
    uninterrupted run's byte for byte.
    """

    def __init__(self, path: str, steps_per_update: int):
        self.path = path
        self.steps_per_update = steps_per_update
        self.started = False  # False: the next write replaces the file (header first)

    def append(self, metrics: dict, first_update: int) -> None:
        """Write the rows of ``metrics`` (leaves ``[S, n]``, updates ``first_update + 1 ...``)."""
        if not metrics:
            return
        if not self.started:
            ckpt.write_text_atomic(self.path, metrics_csv_text(metrics, self.steps_per_update, first_update))
            self.started = True
            return
        data = metrics_csv_text(metrics, self.steps_per_update, first_update, header=False).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def restore(self, upto: int, segment: dict, write: bool = True) -> dict:
        """The whole metrics history of a resumed run, the file cut back to match it.

        Args:
          upto: the update before the checkpoint's ``segment``: the file must hold
            the rows of updates ``1 .. upto`` (the checkpoint does not).
          segment: the checkpoint's metrics, leaves ``[S, n]``, updates ``upto + 1 .. upto + n``.
          write: rewrite the file to exactly the rows of updates ``1 .. upto + n``
            (False: read only).

        Returns:
          name -> tensor ``[S, upto + n]`` (the dtypes of ``segment``).

        Raises:
          ValueError: the file is missing or lacks the rows of updates ``1 .. upto``
            (naming the file and what it lacks).
        """
        names = list(segment)
        S = segment[names[0]].shape[0] if names else 0
        header = metrics_csv_text({n: torch.zeros(S, 0) for n in names}, 1)
        kept = [header]
        prior = {n: torch.zeros(S, 0, dtype=segment[n].dtype) for n in names}
        if upto > 0:
            need = f"the rows of updates 1..{upto} for {S} seeds (the checkpoint holds only the later ones)"
            try:
                with open(self.path, "rb") as f:
                    text = f.read().decode("utf-8")
            except FileNotFoundError:
                raise ValueError(f"{self.path}: missing; resuming needs {need}") from None
            lines = text.splitlines(keepends=True)
            rows = lines[1 : 1 + upto * S]
            if not lines or lines[0] != header:
                raise ValueError(f"{self.path}: expected the header {header.strip()!r}, got {(lines[:1] or [''])[0].strip()!r}")
            if len(rows) < upto * S or not rows[-1].endswith("\r\n"):
                raise ValueError(f"{self.path}: expected {need}, found {len(rows)} rows")
            values = []
            for i, row in enumerate(rows):
                parts = row[:-2].split(",")
                u, s = divmod(i, S)
                if len(parts) != 3 + len(names) or parts[0] != str(u + 1) or parts[1] != str(s):
                    raise ValueError(f"{self.path}: line {i + 2}: expected update {u + 1}, seed {s} "
                                     f"with {len(names)} metrics, got {row.strip()!r}")
                values.append([float(v) for v in parts[3:]])
            table = torch.tensor(values, dtype=torch.float64).reshape(upto, S, len(names))
            prior = {n: table[:, :, j].T.to(segment[n].dtype) for j, n in enumerate(names)}
            kept += rows
        if write:
            ckpt.write_text_atomic(self.path, "".join(kept) + metrics_csv_text(segment, self.steps_per_update, upto, header=False))
            self.started = True
        return concat_metrics([prior, segment])


def load_run(directory: str) -> dict:
    """Read a results folder: ``config.json``, ``summary.json`` (if present) and ``metrics.csv`` as tensors.

    Returns:
      dict with ``config``, ``summary`` (None for an unfinished run), ``metrics``
      (name -> float64 tensor ``[S, U]``, seeds x updates; NaN where a row is
      missing), ``env_steps`` ``[U]`` (per seed, at each update) and ``directory``.
    """
    config = read_config_json(os.path.join(directory, "config.json"), required=())
    summary = read_summary_json(directory)
    with open(os.path.join(directory, "metrics.csv")) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    names = header[3:]
    updates = sorted({int(r[0]) for r in rows})
    seeds = sorted({int(r[1]) for r in rows})
    idx_u = {u: i for i, u in enumerate(updates)}
    metrics = {n: torch.full((len(seeds), len(updates)), math.nan, dtype=torch.float64) for n in names}
    env_steps = torch.zeros(len(updates), dtype=torch.float64)
    for r in rows:
        u, s = idx_u[int(r[0])], int(r[1])
        env_steps[u] = float(r[2])
        for n, v in zip(names, r[3:]):
            metrics[n][s, u] = float(v)
    return {"config": config, "summary": summary, "metrics": metrics, "env_steps": env_steps, "directory": directory}


# ------------------------------------------------------------------ checkpoints
def write_checkpoint(manager: ckpt.CheckpointManager, metrics_csv: MetricsCSV, update: int, state, metrics: dict,
                     first: int, loggers=()) -> None:
    """Append the rows of updates ``first + 1 .. update`` to metrics.csv, then save checkpoint ``update``.

    The checkpoint holds the state and only those updates' metrics (leaves
    ``[S, update - first]``; ``history_from`` and ``metrics_axes`` in its
    metadata): the earlier rows are in metrics.csv, which already holds every
    row a checkpoint needs when it is written.

    Args:
      loggers: other writers of the same rows (``logger.log(metrics, first)``, e.g.
        :class:`funrl.tensorboard_logger.TensorBoardLogger`), called after metrics.csv's
        append and before the checkpoint.
    """
    metrics_csv.append(metrics, first)
    for logger in loggers:
        logger.log(metrics, first)
    manager.save(update, {"state": state, "history": metrics},
                 metadata={"update": update, "history_from": first, "metrics_axes": METRICS_AXES})


def read_checkpoint(manager: ckpt.CheckpointManager, map_location=None) -> tuple[int, object, tuple[int, dict]]:
    """``(update, state, (first, metrics))`` of the newest good checkpoint; metrics on CPU, leaves ``[S, n]``.

    ``first``: the update before the checkpoint's metrics (the rows of updates
    ``1 .. first`` are in metrics.csv).  Older checkpoints are read too: those
    without ``history_from`` hold the whole history (``first`` 0), those without
    ``metrics_axes`` hold it ``[updates, seeds]`` (it is transposed here).

    Raises:
      funrl.checkpoint.CheckpointError: the folder has no usable checkpoint.
    """
    if manager.latest_step() is None:
        raise ckpt.CheckpointError(f"{manager.directory}: no checkpoint to resume from")
    step, saved, meta = manager.load(map_location=map_location)
    meta = meta if isinstance(meta, dict) else {}
    metrics = {k: v.detach().cpu() for k, v in saved["history"].items()}
    if meta.get("metrics_axes") != METRICS_AXES:
        metrics = {k: v.transpose(0, 1).contiguous() for k, v in metrics.items()}
    return step, saved["state"], (meta.get("history_from", 0), metrics)


class TrainedRun(NamedTuple):
    """A results folder's newest checkpoint, rebuilt with its algorithm and env (see :func:`load_trained`)."""

    cfg: dict  #: config.json
    module: Any  #: the algorithm module
    config: Any  #: its Config, as the run used it
    env_id: str
    env: Any
    env_params: Any
    update: int  #: the update count of the checkpoint
    states: Any  #: every seed's training state, leaves ``[S, ...]``


def load_trained(directory: str, map_location=None) -> TrainedRun:
    """The newest good checkpoint of ``directory`` with the config, algorithm and env that trained it.

    What ``funrl eval``, ``funrl eval --video`` and ``funrl export`` start from: the
    saved state is poured into the structure of a fresh ``init`` of the same config
    (checkpoints hold leaves, never pickled objects).
    """
    from funrl.algorithms import resolve_config
    from funrl.algorithms.common import Driver, seed_keys
    from funrl.envs import make

    cfg = read_config_json(os.path.join(directory, "config.json"))
    module, env_id, config = resolve_config(cfg["algo"], cfg["env"], None, cfg["config"])
    env, env_params = getattr(module, "make_env", make)(env_id, **(cfg.get("env_params") or {}))
    template = Driver(module.make_algorithm, config, env, env_params, compile=False).init(
        seed_keys(cfg["seed"], int(cfg["seeds"])))
    update, saved, _ = ckpt.CheckpointManager(os.path.join(directory, "checkpoints")).load(map_location=map_location)
    states = tree.unflatten(tree.structure(template), tree.leaves(saved["state"]))
    return TrainedRun(cfg, module, config, env_id, env, env_params, update, states)


def clean_temp_files(directory: str) -> None:
    """Remove the temp files an interrupted atomic write of a results file left in ``directory``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if re.fullmatch(r"\.(config\.json|metrics\.csv|summary\.json|learning_curve\.png)\..+\.tmp", name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))
