"""``funrl.run``: train many seeds with progress, a results folder, checkpoints and resume.

This is what ``funrl train`` calls; notebooks call it directly::

    results = funrl.run("ppo", env="CartPole-v1", seeds=8, total_steps=100_000, out="runs/ppo")
    results["summary"]["iqm"]

The results folder holds ``config.json`` (resolved config, versions, device),
``metrics.csv`` (one row per update per seed), ``summary.json`` (IQM, 95%
bootstrap CI, mean, per-seed final returns, wall time, SPS), ``checkpoints/``
and, with matplotlib installed, ``learning_curve.png``.

Progress (``progress=True``): a tqdm bar on a terminal, plain lines on stdout
otherwise.  Steps and rates are env steps summed over the seeds (``sps`` in
summary.json is the same unit); the rate and the ETA count only the updates run
in this process (after ``resume``, from the checkpoint on) and, when compiling,
leave out the first chunk, whose wall time is reported on its own ("compiled in
41 s") after a line announcing the compile.  The return shown is, per seed, that
of the seed's last completed episode, carried across chunks in which it
completed none ("—" before any seed finished one); seeds with a NaN or infinite
metric are left out of it and counted as ``diverged: k``.

Seeds: seed *i* trains with ``fold_in(key(seed), i)``, whatever the number of
seeds, so runs with different seed counts (or seeds split across processes)
agree seed by seed.

Processes: under ``torchrun`` (``WORLD_SIZE > 1``) each process trains one
contiguous block of the seeds and rank 0 gathers metrics and states and writes
the results folder and seed-ordered checkpoints; the results equal a
single-process run's (see :mod:`funrl.distributed`).

Resume: the whole training state (params, optimizer state, env states, replay
buffers, keys, counters) and the metrics of the updates since the previous
checkpoint are checkpointed atomically every ``checkpoint_every`` updates, after
those updates' rows were appended to metrics.csv (so writing results stays
linear in the run's length); ``run(..., resume=DIR)`` continues from the newest
good checkpoint, with the settings config.json recorded (``checkpoint_every``
and ``chunk_size`` included; an argument that would change them is an error),
cuts metrics.csv back to that checkpoint and reaches the same final parameters
and metrics.csv, bit for bit on CPU, as an uninterrupted run.  Resuming a
finished run changes nothing.

Warm starts: ``run(..., init=DIR)`` starts from the final params of the run in
``DIR`` (see :mod:`funrl.transfer`); ``env_params`` changes the env's params
(e.g. a longer pole); both are recorded in config.json and kept on resume.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import io
import json
import math
import os
import platform
import re
import signal
import sys
import time
from typing import Any

import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import distributed, stats, sweeps, transfer, tree
from funrl.algorithms import DEFAULT_ENVS, get
from funrl.algorithms.common import Runner, check_hparams
from funrl.tensorboard_logger import TensorBoardLogger, require_tensorboard
from funrl.threads import check_threads, using_threads

__all__ = ["run", "check_finite", "check_resume_args", "resume_conflicts", "Diverged", "resolve_config", "parse_value", "seed_keys", "final_returns", "chunk_returns", "load_run"]


# ------------------------------------------------------------------ configuration
def parse_value(field: dataclasses.Field, default: Any, text: str):
    """Parse a command-line string for a Config field, typed like its default.

    Raises:
      ValueError: naming the field, the expected type and the given text.
    """
    name = f"config.{field.name}"
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a bool (true/false), got {text!r}")
    if isinstance(default, int):
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = math.nan
            if f == f and f.is_integer():
                return int(f)
            raise ValueError(f"{name}: expected an int, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name}: expected a float, got {text!r}") from None
    if isinstance(default, tuple):
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name}: expected comma-separated ints like 64,64, got {text!r}") from None
    if isinstance(default, str):
        return text
    raise ValueError(f"{name}: cannot be set from the command line (type {type(default).__name__})")


def resolve_config(algo: str, env_id: str | None = None, total_steps: int | None = None, overrides: dict | None = None):
    """The algorithm module, the env id and the resolved ``Config``.

    Precedence: the Config's defaults < the module's ``ENV_CONFIGS[env_id]`` <
    ``total_steps`` < ``overrides`` (values may be strings from the command
    line; they are parsed to each field's type).
    """
    module = get(algo)
    env_id = env_id or DEFAULT_ENVS[algo.lower()]
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    base = module.Config()
    values = dict(getattr(module, "ENV_CONFIGS", {}).get(env_id, {}))
    if total_steps is not None:
        values["total_timesteps"] = int(total_steps)
    for k, v in (overrides or {}).items():
        if k == "freeze" and k not in fields:
            raise ValueError(f"freeze: {algo} has no network layers to freeze (its Config has no freeze field)")
        if k not in fields:
            import difflib

            close = difflib.get_close_matches(k, list(fields), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {k}: unknown {algo} config field{hint}; fields: {', '.join(fields)}")
        values[k] = parse_value(fields[k], getattr(base, k), v) if isinstance(v, str) else v
    return module, env_id, dataclasses.replace(base, **values)


def seed_keys(seed: int, num_seeds: int, device="cpu", first: int = 0) -> torch.Tensor:
    """Keys ``(num_seeds, 2)``: row i is ``fold_in(key(seed), first + i)`` (independent of ``num_seeds``)."""
    base = jr.key(seed, device=device)
    return torch.stack([jr.fold_in(base, first + i) for i in range(num_seeds)])


def final_returns(history: dict, window_frac: float = 0.05) -> torch.Tensor:
    """Per-seed return at the end of training: mean ``episode_return`` over the last updates with episodes.

    Args:
      history: metrics stacked over updates, leaves ``[U, S]``.

    Returns:
      float64 ``[S]``.
    """
    ret = history["episode_return"].double()
    eps = history["episodes"].double()
    U = ret.shape[0]
    w = max(1, int(math.ceil(U * window_frac)))
    r, e = ret[-w:], (eps[-w:] > 0).double()
    return (r * e).sum(0) / e.sum(0).clamp(min=1.0)


def chunk_returns(chunk: dict) -> torch.Tensor:
    """Per-seed mean return of the episodes completed in a chunk of updates.

    Args:
      chunk: metrics of the chunk's updates, leaves ``[C, S]`` with
        ``episode_return`` (mean return of the episodes completed in an update)
        and ``episodes`` (how many completed).

    Returns:
      float64 ``[S]``: episode-weighted mean return per seed; NaN for a seed
      that completed no episode in the chunk (a zero would read as a real return).
    """
    ret = chunk["episode_return"].double().cpu()
    eps = chunk["episodes"].double().cpu()
    total = eps.sum(0)
    mean = (ret * eps).sum(0) / total.clamp(min=1.0)
    return torch.where(total > 0, mean, torch.full_like(mean, math.nan))


# ------------------------------------------------------------------ files
def _metrics_csv(history: dict, steps_per_update: int, first_update: int = 0, header: bool = True) -> str:
    """metrics.csv text for ``history`` (leaves ``[U, S]``): rows of updates ``first_update + 1 ...``."""
    names = list(history)
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(["update", "seed", "env_steps", *names])
    if not names:
        return buf.getvalue()
    U, S = history[names[0]].shape
    cols = {n: history[n].detach().double().cpu().tolist() for n in names}
    for u in range(U):
        for s in range(S):
            w.writerow([first_update + u + 1, s, (first_update + u + 1) * steps_per_update] + [repr(cols[n][u][s]) for n in names])
    return buf.getvalue()


class _MetricsCSV:
    """``metrics.csv``, grown by appending the rows of each checkpoint's updates (rank 0 only).

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

    def append(self, history: dict, first_update: int) -> None:
        """Write the rows of ``history`` (leaves ``[n, S]``, updates ``first_update + 1 ...``)."""
        if not history:
            return
        if not self.started:
            ckpt.write_text_atomic(self.path, _metrics_csv(history, self.steps_per_update, first_update))
            self.started = True
            return
        data = _metrics_csv(history, self.steps_per_update, first_update, header=False).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def restore(self, upto: int, segment: dict, write: bool = True) -> dict:
        """The whole metrics history of a resumed run, the file cut back to match it.

        Args:
          upto: the update before the checkpoint's ``segment``: the file must hold
            the rows of updates ``1 .. upto`` (the checkpoint does not).
          segment: the checkpoint's metrics, leaves ``[n, S]``, updates ``upto + 1 .. upto + n``.
          write: rewrite the file to exactly the rows of updates ``1 .. upto + n``
            (False: read only).

        Returns:
          name -> tensor ``[upto + n, S]`` (the dtypes of ``segment``).

        Raises:
          ValueError: the file is missing or lacks the rows of updates ``1 .. upto``
            (naming the file and what it lacks).
        """
        names = list(segment)
        S = segment[names[0]].shape[1] if names else 0
        header = _metrics_csv({n: torch.zeros(0, S) for n in names}, 1)
        kept = [header]
        prior = {n: torch.zeros(0, S, dtype=segment[n].dtype) for n in names}
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
            prior = {n: table[:, :, j].to(segment[n].dtype) for j, n in enumerate(names)}
            kept += rows
        if write:
            ckpt.write_text_atomic(self.path, "".join(kept) + _metrics_csv(segment, self.steps_per_update, upto, header=False))
            self.started = True
        return _concat_histories([prior, segment])


def load_run(directory: str) -> dict:
    """Read a results folder: ``config.json``, ``summary.json`` (if present) and ``metrics.csv`` as tensors.

    Returns:
      dict with ``config``, ``summary`` and ``metrics`` (name -> float64 tensor ``[U, S]``) and ``env_steps`` ``[U]``.
    """
    config = read_config_json(os.path.join(directory, "config.json"), required=())
    summary = None
    if os.path.exists(os.path.join(directory, "summary.json")):
        with open(os.path.join(directory, "summary.json")) as f:
            summary = json.load(f)
    with open(os.path.join(directory, "metrics.csv")) as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    names = header[3:]
    updates = sorted({int(r[0]) for r in rows})
    seeds = sorted({int(r[1]) for r in rows})
    idx_u = {u: i for i, u in enumerate(updates)}
    metrics = {n: torch.full((len(updates), len(seeds)), math.nan, dtype=torch.float64) for n in names}
    env_steps = torch.zeros(len(updates), dtype=torch.float64)
    for r in rows:
        u, s = idx_u[int(r[0])], int(r[1])
        env_steps[u] = float(r[2])
        for n, v in zip(names, r[3:]):
            metrics[n][u, s] = float(v)
    return {"config": config, "summary": summary, "metrics": metrics, "env_steps": env_steps, "directory": directory}


# ------------------------------------------------------------------ progress
#: What the compile line quotes: the wall time of the first chunk (10 updates, compiling included)
#: of the default PPO run (``funrl train ppo``: CartPole-v1, 8 seeds, one thread), measured on a
#: 2-core CPU shared with a test run: 151 s and 229 s with an empty Inductor cache (104 s of CPU
#: time), 60 s with a warm one; the later chunks took 2-3 s.  Other algorithms, machines and
#: loads take more or less.
COMPILE_SECONDS_PPO = 150
COMPILE_SECONDS_PPO_CACHED = 60


def _duration(seconds: float) -> str:
    """``41 s``, ``3m12s``, ``2h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Progress:
    """Progress of a run: a tqdm bar on a terminal, plain periodic lines otherwise (CI logs stay readable).

    Unit: env steps summed over the seeds (``update * steps_per_update * seeds``),
    for the count, the total and the rate alike, as in summary.json's ``sps``.
    The rate and the ETA count only the updates this process ran (a resumed run
    starts from its checkpoint) and, with ``compile``, leave out the first chunk,
    whose time (compiling included) is reported on its own line.

    Returns: per seed, the return of the seed's last completed episode (the mean
    ``episode_return`` of the last update with ``episodes > 0``), carried across
    chunks in which the seed completed none; shown as the mean and IQM over the
    seeds that finished an episode ("—" before any did).  A seed whose return is
    not finite is left out of both and counted as ``diverged: k``.

    Args:
      clock: seconds, for tests (default ``time.perf_counter``).
      tty: draw a tqdm bar (default: whether stderr is a terminal).
      stream: where the bar and its messages go (default stderr); plain lines go to stdout.
    """

    def __init__(self, label: str, num_updates: int, steps_per_update: int, seeds: int, enabled: bool,
                 start_update: int = 0, compile: bool = False, clock=time.perf_counter, tty: bool | None = None,
                 stream=None, every_s: float = 5.0):
        self.enabled = enabled
        self.label = label
        self.num_updates = num_updates
        self.steps_per_update = steps_per_update
        self.seeds = seeds
        self.compile = compile
        self.clock = clock
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.last_line = None
        self.last_return = None  # float64 [S]: the last known per-seed return (NaN: no episode yet)
        self.seen = None  # bool [S]: the seed completed an episode
        self.diverged = None  # bool [S]: a metric of the seed was NaN or infinite
        self.start_update = start_update
        self.t0 = clock()
        self.rate_from = None  # (update, time) the rate is measured from; None until it is known
        if not compile:
            self.rate_from = (start_update, self.t0)
        if not enabled:
            return
        self.tty = tty if tty is not None else sys.stderr.isatty()
        if compile:
            self._say(f"[{label}] compiling the vmapped pieces (first run in this environment: about "
                      f"{COMPILE_SECONDS_PPO} s, as measured for the default PPO run on a 2-core CPU; later runs "
                      f"reuse Inductor's cache: about {COMPILE_SECONDS_PPO_CACHED} s)")
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self._steps(num_updates), initial=self._steps(start_update), file=self.stream,
                            desc=f"{label} (env steps summed over {seeds} seeds)", unit_scale=True, dynamic_ncols=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")

    def _steps(self, update: int) -> int:
        return update * self.steps_per_update * self.seeds

    def _say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif self.tty:
            print(text, file=self.stream, flush=True)
        else:
            print(text, flush=True)

    def _returns(self, chunk_metrics: dict) -> None:
        """Carry each seed's last completed episode's return over to this chunk."""
        ret = chunk_metrics["episode_return"].double().cpu()  # [C, S]
        eps = chunk_metrics["episodes"].double().cpu() > 0
        if self.last_return is None:
            self.last_return = torch.full((ret.shape[1],), math.nan, dtype=torch.float64)
            self.seen = torch.zeros(ret.shape[1], dtype=torch.bool)
        if self.diverged is None:
            self.diverged = torch.zeros(ret.shape[1], dtype=torch.bool)
        for v in chunk_metrics.values():  # any metric, not only the returns: a NaN seed is never hidden
            if v.is_floating_point() and v.dim() == 2:
                self.diverged |= ~torch.isfinite(v.detach().cpu()).all(0)
        any_ep = eps.any(0)
        C = ret.shape[0]
        last = C - 1 - eps.flip(0).double().argmax(0)  # index of the last update with an episode
        latest = ret.gather(0, last[None]).squeeze(0)
        self.last_return = torch.where(any_ep, latest, self.last_return)
        self.seen |= any_ep

    def text(self, update: int) -> str:
        """The progress after ``update``: rate, ETA and returns (the part after the step count)."""
        parts = []
        if self.rate_from is not None and update > self.rate_from[0]:
            u0, t_from = self.rate_from
            dt = max(self.clock() - t_from, 1e-9)
            rate = self._steps(update - u0) / dt
            parts.append(f"{rate:,.0f} env steps/s")
            parts.append(f"eta {_duration(self._steps(self.num_updates - update) / max(rate, 1e-9))}")
        else:
            parts.append("— env steps/s")
        if self.seen is None:
            parts.append("return —")
            return "  ".join(parts)
        diverged = self.diverged | (self.seen & ~torch.isfinite(self.last_return))
        good = self.seen & ~diverged
        if bool(good.any()):
            r = self.last_return[good]
            # 4 significant digits: CartPole's 487.3 and a language task's reward 0.734 both read well
            parts.append(f"return (last episode, {int(good.sum())}/{good.numel()} seeds) "
                         f"mean {float(r.mean()):.4g} iqm {float(stats.iqm(r.numpy())):.4g}")
        else:
            parts.append("return —")
        if bool(diverged.any()):
            parts.append(f"diverged: {int(diverged.sum())}")
        return "  ".join(parts)

    def update(self, update: int, chunk_metrics: dict) -> None:
        """Report the chunk of updates that ended at ``update`` (metrics ``[C, S]``)."""
        if not self.enabled:
            return
        now = self.clock()
        self._returns(chunk_metrics)
        if self.compile and self.rate_from is None:
            n = update - self.start_update
            self._say(f"[{self.label}] compiled in {_duration(now - self.t0)} (the first {n} update{'s' * (n != 1)}' "
                      f"wall time, compiling included; left out of the rate)")
            self.rate_from = (update, now)
        if self.bar is not None:
            self.bar.n = self._steps(update)
            self.bar.set_postfix_str(self.text(update), refresh=False)
            self.bar.refresh()
            return
        if self.last_line is None or now - self.last_line >= self.every_s or update >= self.num_updates:
            self.last_line = now
            pct = 100.0 * update / max(self.num_updates, 1)
            print(f"[{self.label}] {self._steps(update):,}/{self._steps(self.num_updates):,} env steps summed over "
                  f"{self.seeds} seeds ({pct:.0f}%)  {self.text(update)}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------ the run
def run(
    algo: str = "ppo",
    env: str | None = None,
    seeds: int = 8,
    total_steps: int | None = None,
    out: str | None = None,
    device: str = "cpu",
    compile: bool = True,
    seed: int = 0,
    resume: str | None = None,
    checkpoint_every: int = 50,
    chunk_size: int = 10,
    progress: bool = True,
    plot: bool = True,
    hparams: dict | None = None,
    init: str | None = None,
    init_seed: int | None = None,
    env_params: dict | None = None,
    sweep: dict | None = None,
    threads: int | None = None,
    tensorboard: bool = False,
    **overrides,
) -> dict:
    """Train ``seeds`` seeds of ``algo`` on ``env`` and write a results folder.

    Args:
      algo: algorithm name (``funrl algos``).
      env: gymnasium-style env id (default: the one the algorithm is tuned for).
      seeds: number of seeds, trained together (vmapped, compiled).
      total_steps: env steps per seed (default: the Config's ``total_timesteps``).
      out: results folder (default ``runs/<algo>-<env>-<timestamp>``).
      device: ``"cpu"`` or ``"cuda"``.
      compile: compile the vmapped pieces (False: eager vmap, same numbers up to rounding).
      seed: base seed; seed i uses ``fold_in(key(seed), i)``.
      resume: a results folder to continue from its newest good checkpoint.  Its
        config.json fixes algo, env, seeds, seed, total_steps, the config (``**overrides``),
        hparams, sweep, init, init_seed, env_params, device, compile, checkpoint_every and
        chunk_size: an argument given with a value other than its default that differs
        from the stored one is a ``ValueError`` naming it.  A finished run (its newest
        checkpoint at the last update and summary.json written) is left unchanged: the
        result has ``finished`` True and the stored summary.
      checkpoint_every: updates between checkpoints (recorded in config.json).
      chunk_size: updates between progress reports and finiteness checks (recorded in config.json).
      progress: show progress.
      plot: write ``learning_curve.png`` when matplotlib is installed.
      hparams: optional per-seed values of batchable hyper-parameters (name -> list/tensor of length ``seeds``).
      init: a results folder whose final params (newest good checkpoint) the
        run starts from: network params and their target copies only, not the
        optimizer state, env states or counters (see :mod:`funrl.transfer`).
      init_seed: with ``init``, start every seed from the source's seed
        ``init_seed``; None (default): seed for seed (the seed counts must match).
      env_params: overrides for :func:`funrl.envs.make` (e.g. ``{"length": 1.0,
        "masspole": 0.2}`` for a longer, heavier CartPole pole).
      sweep: a grid of batchable hyper-parameters, name -> list of values (e.g.
        ``{"learning_rate": [1e-4, 3e-4]}``; several names: their Cartesian product).
        ``seeds`` is then per setting: the run trains ``settings x seeds`` seeds, setting-major
        (seeds ``k*seeds .. k*seeds+seeds-1`` are setting k), and summary.json adds
        ``"settings"`` (see :mod:`funrl.sweeps`).
      threads: torch CPU threads while the run trains (restored afterwards); None:
        1, or ``OMP_NUM_THREADS`` when set -- one thread per process degrades in
        proportion on a busy machine where more collapse (see :mod:`funrl.threads`).
        Not stored for resume: results agree across thread counts up to reassociation.
      tensorboard: also write the metrics as TensorBoard scalars in ``<out>/tensorboard/``
        (needs ``pip install 'funrl[tensorboard]'``; see :mod:`funrl.tensorboard_logger`).
      **overrides: Config fields, e.g. ``freeze=r"^actor\\.linear_0\\."`` (a regex over
        param paths kept fixed in training; see ``funrl.algorithms.common.param_paths``).

    ``init``, ``init_seed``, ``env_params`` and the config (``freeze`` included)
    are written to config.json, so a resumed run keeps them.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the seeds are
    split across the processes in contiguous blocks
    (:func:`funrl.distributed.seed_block`), each on ``device`` (``"cuda"``:
    ``cuda:LOCAL_RANK``); every process calls ``run`` with the same arguments.

    Returns:
      dict with ``summary`` (as in summary.json), ``metrics`` (name -> tensor
      ``[U, S]``), ``state`` (the final batched training state, leaves
      ``[S, ...]``), ``out`` and ``seed_block`` (``(start, count)`` of the seeds
      this process trained).  Under torchrun rank 0 returns the full metrics
      and state (on CPU); other ranks return the summary, ``metrics`` None and
      their own block's state (leaves ``[count, ...]``).

    Raises:
      funrl.distributed.RankFailed: under torchrun, on the ranks that did not
        fail themselves, when another rank raised (each failed rank re-raises
        its own error after printing ``funrl: rank R failed: ...``).
    """
    args = dict(algo=algo, env=env, seeds=seeds, total_steps=total_steps, out=out, device=device, compile=compile,
                seed=seed, resume=resume, checkpoint_every=checkpoint_every, chunk_size=chunk_size, progress=progress,
                plot=plot, hparams=hparams, init=init, init_seed=init_seed, env_params=env_params, threads=threads,
                sweep=sweep, tensorboard=tensorboard)
    # with resume, an argument given a value other than its default must agree with the stored run
    given = {k: args[k] for k in _RESUMED_ARGS if not _is_default(args[k], _RUN_DEFAULTS[k])}
    return _start(args, overrides, given)


def _is_default(value, default) -> bool:
    return value is default or (type(value) is type(default) and value == default)


def _start(args: dict, overrides: dict, given: dict, names: dict | None = None) -> dict:
    """``run(**args, **overrides)``; ``given``: the arguments the caller set (checked against a resumed run).

    ``names``: how errors name arguments (the command line passes its flags).
    """
    threads = check_threads(args.get("threads"), (names or {}).get("threads", "threads"))
    w = distributed.world()
    ctx = distributed.init(w) if w.distributed else None
    try:
        a = args
        with using_threads(threads):
            result = _run(
                ctx, a["algo"], a["env"], a["seeds"], a["total_steps"], a["out"], a["device"], a["compile"], a["seed"],
                a["resume"], a["checkpoint_every"], a["chunk_size"], a["progress"], a["plot"], a["hparams"], a["init"],
                a["init_seed"], a["env_params"], overrides, given, names, a.get("sweep"),
                tensorboard=a.get("tensorboard", False),
            )
        result["threads"] = threads
        return result
    finally:
        distributed.cleanup(ctx)


_RUN_DEFAULTS = {p.name: p.default for p in inspect.signature(run).parameters.values() if p.default is not p.empty}


def _on_rank0(ctx, fn, broadcast: bool = True):
    """``fn()`` on rank 0, its result broadcast to every rank; an error there stops every rank.

    Single-process (``ctx`` None) it is just ``fn()``.  ``broadcast=False``: the
    result stays on rank 0 (the other ranks get None), for results only rank 0 uses.
    """
    if ctx is None:
        return fn()
    result, error = None, None
    if ctx.world.main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - reported to every rank, re-raised on this one
            error = e
    distributed.raise_if_any_failed(error, ctx)
    return distributed.broadcast_object(result, ctx) if broadcast else result


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


#: the keys every results folder's config.json has (what resume, eval and warm starts read)
CONFIG_JSON_KEYS = ("algo", "env", "seeds", "seed", "config")


def read_config_json(path: str, required: tuple[str, ...] = CONFIG_JSON_KEYS) -> dict:
    """A results folder's ``config.json`` as a dict.

    Raises:
      ValueError: the file is not valid JSON, not a JSON object, or lacks a ``required`` key
        (the message names the file and the missing keys).
    """
    try:
        cfg = _read_json(path)
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


#: run()'s arguments that a resumed run takes from config.json (given ones must agree with it)
_RESUMED_ARGS = ("algo", "env", "seeds", "total_steps", "device", "compile", "seed", "checkpoint_every",
                 "chunk_size", "hparams", "init", "init_seed", "env_params", "sweep", "tensorboard")


def _norm(x):
    """``x`` as config.json holds it (tuples as lists, tensors as lists), for comparisons."""
    return json.loads(json.dumps(x, default=ckpt._json_default))


def resume_conflicts(saved: dict, given: dict, overrides: dict | None = None) -> list[tuple[str, Any, Any]]:
    """Arguments given with a resume that differ from the run recorded in its config.json.

    Args:
      saved: the run's config.json.
      given: ``run()`` argument names (see ``_RESUMED_ARGS``) -> the values given.
        A dict argument (``hparams``, ``env_params``) is compared key by key; ``sweep``
        as a whole grid, and for a sweep run ``seeds`` is per setting.
      overrides: Config fields -> values (strings are parsed as on the command line).

    Returns:
      ``(name, stored, given)`` for each conflict; names are ``run()``'s argument
      names, ``hparams[k]``, ``env_params[k]`` or ``config.<field>``.
    """
    cfg = saved.get("config") or {}
    init = saved.get("init") or {}
    # a sweep's seeds are per setting (config.json's "seeds" counts them all)
    seeds = (saved.get("sweep") or {}).get("seeds_per_setting", saved.get("seeds"))
    stored = {"algo": saved.get("algo"), "env": saved.get("env"), "seeds": seeds, "seed": saved.get("seed"),
              "total_steps": cfg.get("total_timesteps"), "init": init.get("dir"), "init_seed": init.get("seed")}
    # keys older config.json files lack: nothing stored, nothing to conflict with
    for k in ("device", "compile", "checkpoint_every", "chunk_size", "tensorboard"):
        if k in saved:
            stored[k] = saved[k]
    out = []
    for name, value in given.items():
        if name in ("hparams", "env_params"):
            have = saved.get(name) or {}
            for k, v in (value or {}).items():
                # config.json holds hparams as torch.as_tensor(v).tolist() (float32 values)
                vn = torch.as_tensor(v).tolist() if name == "hparams" else v
                if k not in have or _norm(vn) != _norm(have[k]):
                    out.append((f"{name}[{k!r}]", have.get(k), v))
            continue
        if name == "sweep":
            if not sweeps.same_grid(saved.get("sweep"), value):
                out.append(("sweep", (saved.get("sweep") or {}).get("grid"), value))
            continue
        if name not in stored:
            continue
        s, v = stored[name], value
        if name == "algo":
            s, v = str(s).lower(), str(v).lower()
        elif name == "init" and v is not None:
            v = os.path.abspath(v)
        if _norm(v) != _norm(s):
            out.append((name, stored[name], value))
    if overrides:
        module = get(saved["algo"])
        fields = {f.name: f for f in dataclasses.fields(module.Config)}
        base = module.Config()
        for k, v in overrides.items():
            if k not in fields:
                resolve_config(saved["algo"], saved["env"], None, {k: v})  # raises naming the unknown field
            typed = parse_value(fields[k], getattr(base, k), v) if isinstance(v, str) else v
            if k not in cfg or _norm(typed) != _norm(cfg[k]):
                out.append((f"config.{k}", cfg.get(k), v))
    return out


def check_resume_args(resume: str, saved: dict, given: dict, overrides: dict | None = None, names: dict | None = None) -> None:
    """Raise when arguments given with ``resume`` conflict with the stored run (see :func:`resume_conflicts`).

    Args:
      names: how to show each conflict's name (e.g. command-line flags); default its own.

    Raises:
      ValueError: naming every conflicting argument, the stored and the given value.
    """
    conflicts = resume_conflicts(saved, given, overrides)
    if not conflicts:
        return
    names = names or {}
    shown = "; ".join(f"{names.get(n, n)}: stored {s!r}, given {v!r}" for n, s, v in conflicts)
    raise ValueError(
        f"resume: {os.path.join(resume, 'config.json')} records a run these arguments would change ({shown}); "
        f"a resumed run keeps its stored settings: leave them out, or start a new run in another folder"
    )


def _resumed_settings(saved: dict, checkpoint_every: int, chunk_size: int, compile: bool, device: str,
                      tensorboard: bool = False) -> dict:
    """The arguments of a resumed run, from its config.json (older files lack some keys: the given values stand)."""
    return {
        "algo": saved["algo"], "env": saved["env"], "seeds": saved["seeds"], "seed": saved["seed"],
        "overrides": saved["config"], "total_steps": None, "hparams": saved.get("hparams"),
        # the checkpoint holds the (warm-started) params: init is recorded, not applied again
        "init": None, "init_seed": None,
        # JSON stores a tensor override (one value per env) as a list
        "env_params": {k: torch.tensor(v) if isinstance(v, list) else v for k, v in (saved.get("env_params") or {}).items()},
        # Resume exactly as the run started: compiled and eager kernels round differently,
        # so switching mode midway would break bit-for-bit equality with an uninterrupted run.
        "compile": saved.get("compile", compile), "device": saved.get("device", device),
        "checkpoint_every": saved.get("checkpoint_every", checkpoint_every),
        "chunk_size": saved.get("chunk_size", chunk_size),
        "sweep": saved.get("sweep"),
        "tensorboard": saved.get("tensorboard", tensorboard),
    }


def _clean_temp_files(out: str) -> None:
    """Remove the temp files an interrupted atomic write of a results file left in ``out``."""
    try:
        names = os.listdir(out)
    except FileNotFoundError:
        return
    for name in names:
        if re.fullmatch(r"\.(config\.json|metrics\.csv|summary\.json|learning_curve\.png)\..+\.tmp", name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, name))


def _run(ctx, algo, env, seeds, total_steps, out, device, compile, seed, resume,
         checkpoint_every, chunk_size, progress, plot, hparams, init, init_seed, env_params, overrides,
         given=None, names=None, sweep=None, tensorboard=False) -> dict:
    # ctx is None for a single process; under torchrun this rank trains only its
    # block of seeds and rank 0 alone writes files (see funrl.distributed).
    w = ctx.world if ctx is not None else distributed.World()
    start_update = 0
    if resume is not None:
        saved = _on_rank0(ctx, lambda: read_config_json(os.path.join(resume, "config.json")))
        check_resume_args(resume, saved, {k: v for k, v in (given or {}).items() if k in _RESUMED_ARGS}, overrides, names)
        r = _resumed_settings(saved, checkpoint_every, chunk_size, compile, device, tensorboard)
        algo, env, seeds, seed, overrides, total_steps = r["algo"], r["env"], r["seeds"], r["seed"], r["overrides"], None
        hparams, init, init_seed, env_params = r["hparams"], None, None, r["env_params"]
        compile, device, checkpoint_every, chunk_size = r["compile"], r["device"], r["checkpoint_every"], r["chunk_size"]
        tensorboard = r["tensorboard"]
        out, sweep = resume, r["sweep"]
    elif sweep is not None:
        # from here on, seeds counts every setting's seeds and hparams holds each seed's setting
        sweep_module, _, sweep_config = resolve_config(algo, env, total_steps, overrides)
        seeds, hparams, sweep = sweeps.plan(sweep_module, sweep_config, sweep, seeds, overrides, hparams, parse=parse_value)
    if tensorboard:
        require_tensorboard()  # before anything runs or a folder is made
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an int >= 1, got {seeds!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: expected an int >= 1, got {checkpoint_every!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size!r}")
    if seeds < w.world_size:
        raise ValueError(f"seeds: expected at least one seed per process ({w.world_size} processes), got {seeds}")
    dev = distributed.local_device(device, w)
    if w.distributed and dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    blocks = distributed.seed_blocks(seeds, w.world_size)
    block_start, block_count = blocks[w.rank]
    if init_seed is not None and init is None:
        raise ValueError(f"init_seed: given ({init_seed!r}) without init (the results folder to start from)")
    module, env_id, config = resolve_config(algo, env, total_steps, overrides)
    # the LM algorithms run their pieces eagerly (vmapped): see COMPILE in funrl/algorithms/lm_common.py
    compile = compile and getattr(module, "COMPILE", True)
    make_env = getattr(module, "make_env", funrl.envs.make)  # LM algorithms take a task from funrl.lm.tasks
    env_obj, env_params_t = make_env(env_id, **dict(env_params or {}))
    if compile and not getattr(env_obj, "COMPILE", True):
        # "gymnasium:ID" envs step on the host (funrl/envs/gymnasium_env.py): such runs stay eager
        compile = False
        if progress and w.main:
            print(f"[{algo}/{env_id}] note: {env_id} steps gymnasium on the host; training runs eagerly "
                  "(compile off)", file=sys.stderr, flush=True)
    env_params_t = tree.map(lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x, env_params_t)
    runner = Runner(module.make_algorithm, config, env_obj, env_params_t, compile=compile)
    U = runner.num_updates
    if out is None:
        out = os.path.join("runs", f"{algo}-{env_id}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ctx is not None:
        out = distributed.broadcast_object(out, ctx)  # the ranks' clocks may name different folders
    manager = ckpt.CheckpointManager(os.path.join(out, "checkpoints"), keep=2)
    metrics_csv = _MetricsCSV(os.path.join(out, "metrics.csv"), runner.steps_per_update)

    # seed i gets fold_in(key(seed), i) whichever process trains it
    keys = seed_keys(seed, block_count, dev, first=block_start)
    hp_tensors = None
    if hparams:
        hp_tensors = {}
        for k, v in hparams.items():
            v = torch.as_tensor(v, dtype=torch.float32, device=dev)
            if v.shape != (seeds,):
                raise ValueError(f"hparams[{k!r}]: expected shape ({seeds},) (one value per seed), got {tuple(v.shape)}")
            hp_tensors[k] = v[block_start : block_start + block_count]
        # every rank checks all seeds' values, so all raise together
        check_hparams(config, hparams)
    state = runner.init(keys, hp_tensors)
    init_info = None
    if init is not None:
        state, init_info = _warm_start(ctx, module, config, state, init, init_seed, seeds, blocks, dev)
    if w.main:
        os.makedirs(out, exist_ok=True)  # only now: a run that cannot start leaves no folder behind

    history_prev = None
    if resume is not None:
        start_update, saved_state, segment = _load_resume_checkpoint(ctx, manager, out, blocks, dev)
        state = tree.unflatten(tree.structure(state), [x.to(dev) for x in tree.leaves(saved_state)])
        summary_path = os.path.join(out, "summary.json")
        if start_update >= U and _on_rank0(ctx, lambda: os.path.exists(summary_path)):
            # finished: report it, change nothing
            summary = _on_rank0(ctx, lambda: _read_json(summary_path))
            metrics = metrics_csv.restore(*segment, write=False) if w.main else None
            return {"summary": summary, "metrics": metrics, "state": state, "out": out,
                    "seed_block": (block_start, block_count), "finished": True}
        history_prev = _prepare_resumed_folder(ctx, out, manager, metrics_csv, segment)
    elif w.main:
        config_record = {
            "algo": algo.lower(),
            "env": env_id,
            "seeds": seeds,
            "seed": seed,
            "config": dataclasses.asdict(config),
            "hparams": {k: torch.as_tensor(v).tolist() for k, v in (hparams or {}).items()},
            "env_params": dict(env_params or {}),
            "sweep": sweep,
            "init": init_info,
            "device": device,
            "compile": compile,
            "checkpoint_every": checkpoint_every,
            "chunk_size": chunk_size,
            "tensorboard": bool(tensorboard),
            "num_updates": U,
            "steps_per_update": runner.steps_per_update,
            "processes": w.world_size,
            "versions": {"funrl": funrl.__version__, "torch": torch.__version__, "python": platform.python_version()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        }
        ckpt.write_json_atomic(os.path.join(out, "config.json"), config_record)

    tb = TensorBoardLogger(os.path.join(out, "tensorboard"), runner.steps_per_update, start_update) if tensorboard and w.main else None
    label = f"{algo}/{env_id}" + (f" sweep of {sweeps.describe(sweep)}" if sweep else "")
    bar = _Progress(label, U, runner.steps_per_update, seeds, progress and w.main, start_update=start_update,
                    compile=compile)
    fail_at = distributed.fail_after_update(w)
    t_start = time.perf_counter()

    check_metrics = getattr(module, "check_metrics", None)  # e.g. LM tasks: rewards inside the declared range

    def callback(st, info):
        check_finite(module, st, info.chunk_metrics, info.update, block_start, out)
        if check_metrics is not None:
            check_metrics(config, env_obj, info.chunk_metrics, info.update)
        if fail_at is not None and info.update >= fail_at:
            raise RuntimeError(
                f"{distributed.FAIL_RANK_ENV}={os.environ.get(distributed.FAIL_RANK_ENV)}: "
                f"rank {w.rank} raising after update {info.update} (testing hook)"
            )
        # progress shows rank 0's block's returns (no collectives here: a rank that raises mid-chunk
        # must not leave the others waiting); every rank runs at about the same rate
        bar.update(info.update, info.chunk_metrics)

    # SIGTERM behaves like Ctrl-C: stop, keep the last good checkpoint, tell how to resume.
    previous_handler = None
    if hasattr(signal, "SIGTERM"):
        try:
            previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        except ValueError:  # not in the main thread
            previous_handler = None
    try:
        state, full_state, all_new = _train_with_checkpoints(
            ctx, runner, state, start_update, checkpoint_every, chunk_size, callback, manager, metrics_csv, tb)
    except KeyboardInterrupt:
        bar.close()
        if w.main:
            print(f"\ninterrupted; resume with: funrl train --resume {out}", file=sys.stderr, flush=True)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if tb is not None:
            tb.close()
    bar.close()
    wall = time.perf_counter() - t_start
    history = _concat_histories([history_prev] + all_new) if w.main else None

    def write_summary():
        finals = final_returns(history)
        summary = stats.summarize(finals.numpy())
        steps_run = (U - start_update) * runner.steps_per_update * seeds
        summary.update(
            {
                "algo": algo.lower(),
                "env": env_id,
                "seeds": seeds,
                "per_seed_final_return": finals.tolist(),
                "env_steps_per_seed": U * runner.steps_per_update,
                "wall_time_s": wall,
                "sps": steps_run / max(wall, 1e-9),
                "resumed_from_update": start_update if resume else None,
                "processes": w.world_size,
                "threads": torch.get_num_threads(),  # per process
            }
        )
        if sweep:
            summary["settings"] = sweeps.summarize_settings(finals, sweep)
        # written only here, after every rank finished: a summary always describes a whole run
        ckpt.write_json_atomic(os.path.join(out, "summary.json"), summary)
        if plot:
            try:
                from funrl.plotting import plot_runs

                plot_runs([out], os.path.join(out, "learning_curve.png"))
            except ImportError:
                pass
        return summary

    summary = _on_rank0(ctx, write_summary)
    if not w.main:
        # the full metrics and state live on rank 0; this rank returns its own block's state
        return {"summary": summary, "metrics": None, "state": state, "out": out, "seed_block": (block_start, block_count)}
    return {"summary": summary, "metrics": history, "state": full_state, "out": out, "seed_block": (block_start, block_count)}


def _load_resume_checkpoint(ctx, manager, out, blocks, dev):
    """``(update, state, (history_from, history))`` of the newest good checkpoint.

    Under torchrun rank 0 reads the one seed-ordered checkpoint and hands each rank
    its block of the state, so a run resumes under any number of processes and only
    rank 0 needs the folder; the metrics stay on rank 0 (None elsewhere).
    """

    def load_latest():
        if manager.latest_step() is None:
            raise ckpt.CheckpointError(f"{os.path.join(out, 'checkpoints')}: no checkpoint to resume from")
        step, saved, meta = manager.load(map_location=dev if ctx is None else "cpu")
        # checkpoints hold the metrics of the updates since the previous one (history_from);
        # older ones hold the whole history (no history_from)
        first = meta.get("history_from", 0) if isinstance(meta, dict) else 0
        return step, saved, (first, {k: v.cpu() for k, v in saved["history"].items()})

    if ctx is None:
        step, saved, segment = load_latest()
        return step, saved["state"], segment
    loaded = _on_rank0(ctx, load_latest, broadcast=False)
    step = distributed.broadcast_object(loaded[0] if ctx.world.main else None, ctx)
    state = distributed.scatter_blocks_from_rank0(loaded[1]["state"] if ctx.world.main else None, blocks, ctx)
    return step, state, (loaded[2] if ctx.world.main else None)


def _prepare_resumed_folder(ctx, out, manager, metrics_csv, segment):
    """On rank 0: remove interrupted writes' temp files and cut metrics.csv back to the checkpoint.

    Returns:
      the whole metrics history up to the checkpoint on rank 0, None elsewhere.
      An error on rank 0 stops every rank.
    """

    def prepare():
        _clean_temp_files(out)
        manager.clean_temp()
        return metrics_csv.restore(*segment)

    return _on_rank0(ctx, prepare, broadcast=False)


def _train_with_checkpoints(ctx, runner, state, update, checkpoint_every, chunk_size, callback, manager, metrics_csv, tb=None):
    """Train from ``update`` to the end, checkpointing every ``checkpoint_every`` updates.

    At each checkpoint rank 0 appends the new updates' rows to metrics.csv, then
    saves the state (every seed's, gathered under torchrun) with those updates'
    metrics.

    Returns:
      ``(state, full_state, histories)``: this rank's state, the whole state (rank 0)
      and the metrics of each checkpoint's updates (rank 0; empty list elsewhere).
    """
    w = ctx.world if ctx is not None else distributed.World()
    U = runner.num_updates
    full_state = state
    all_new = []
    while update < U:
        n = min(checkpoint_every - (update % checkpoint_every), U - update)
        if ctx is None:
            state, hist = runner.run(state, num_updates=update + n, callback=callback, chunk_size=chunk_size, start_update=update)
            full_state = state
        else:
            error = None
            try:
                state, hist = runner.run(state, num_updates=update + n, callback=callback, chunk_size=chunk_size, start_update=update)
            except Exception as e:  # noqa: BLE001 - every rank learns of it and stops here
                error = e
            distributed.raise_if_any_failed(error, ctx)
            hist = distributed.gather_tree_to_rank0(hist, ctx, dim=1)  # [n, S] on rank 0
            full_state = distributed.gather_tree_to_rank0(state, ctx, dim=0)  # leaves [S, ...] on rank 0
        first, update = update, update + n
        if w.main:
            hist = {k: v.detach().cpu() for k, v in hist.items()}
            all_new.append(hist)
        _on_rank0(ctx, lambda: _write_checkpoint(manager, metrics_csv, update, full_state, hist, first, tb))
    return state, full_state, all_new


class Diverged(ValueError):
    """A run stopped because a metric or a param became NaN or infinite (see :func:`check_finite`)."""


def check_finite(module, state, chunk_metrics: dict, last_update: int, first_seed: int = 0, out: str | None = None) -> None:
    """Stop a run at the chunk where a metric or a learned param stopped being finite.

    Training on after a NaN only writes NaN checkpoints; stopping here keeps the
    last checkpoint, written before this chunk, which is finite (every earlier
    chunk passed this check).

    Args:
      module: the algorithm module (its ``PARAMS`` path locates the params).
      state: the batched state after the chunk (leaves ``[S, ...]``).
      chunk_metrics: name -> ``[C, S]`` for the chunk's updates.
      last_update: the number of the chunk's last update.
      first_seed: the global index of this process's first seed (torchrun blocks).

    Raises:
      Diverged: naming the metrics or params, the seeds and the first bad update.
    """
    bad_seeds = None
    what = []
    first_bad = last_update
    for name, v in chunk_metrics.items():
        if not v.is_floating_point():
            continue
        bad = ~torch.isfinite(v)  # [C, S]
        if bool(bad.any()):
            what.append(f"metric {name!r}")
            rows = torch.nonzero(bad.any(1)).flatten()
            first_bad = min(first_bad, last_update - v.shape[0] + 1 + int(rows[0]))
            bad_seeds = bad.any(0) if bad_seeds is None else bad_seeds | bad.any(0)
    from funrl.algorithms.common import param_paths

    params = transfer.params_of(module, state)
    for path, leaf in zip(param_paths(params), tree.leaves(params)):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            bad = ~torch.isfinite(leaf.reshape(leaf.shape[0], -1)).all(1)  # [S]
            if bool(bad.any()):
                what.append(f"param {path!r}")
                bad_seeds = bad.cpu() if bad_seeds is None else bad_seeds | bad.cpu()
    if bad_seeds is None:
        return
    seeds = [first_seed + int(i) for i in torch.nonzero(bad_seeds).flatten()]
    shown = ", ".join(what[:4]) + (f" and {len(what) - 4} more" if len(what) > 4 else "")
    resume = f"; its last checkpoint (before update {last_update}) is kept in {out}" if out else ""
    raise Diverged(f"training diverged: {shown} not finite for seed(s) {seeds} by update {first_bad} "
                   f"(checked at update {last_update}){resume}. Lower the learning rate or clip gradients "
                   f"(e.g. --set max_grad_norm=0.5), then start again.")


def _warm_start(ctx, module, config, state, directory, init_seed, seeds, blocks, dev):
    """``transfer.warm_start`` for this process's block of seeds: rank 0 reads the folder, each rank gets its block."""
    if ctx is None:
        state, info = transfer.warm_start(module, state, directory, init_seed, config)
    else:
        loaded = {}

        def load():
            params, info = transfer.load_params(directory)
            loaded["params"] = transfer.select_seeds(params, seeds, init_seed)
            return info

        info = _on_rank0(ctx, load)
        block = distributed.scatter_blocks_from_rank0(loaded.get("params"), blocks, ctx)
        block = tree.map(lambda x: x.to(dev), block)
        state = transfer.with_params(module, state, block, transfer.keep_fresh(module, config))
        info = {**info, "init_seed": init_seed}
    return state, {"dir": os.path.abspath(directory), "seed": init_seed, "algo": info["algo"], "env": info["env"],
                   "seeds": info["seeds"], "update": info["update"]}


def _write_checkpoint(manager, metrics_csv, update, state, history, first, tb=None) -> None:
    """Append the rows of updates ``first + 1 .. update`` to metrics.csv, then save checkpoint ``update``.

    The checkpoint holds the state and only those updates' metrics (``history_from``
    in its metadata): the earlier rows are in metrics.csv, which already holds every
    row a checkpoint needs when it is written.
    """
    metrics_csv.append(history, first)
    if tb is not None:  # TensorBoard gets the same rows, as they are appended
        tb.log(history, first)
    manager.save(update, {"state": state, "history": history}, metadata={"update": update, "history_from": first})


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _concat_histories(parts: list) -> dict:
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {k: torch.cat([p[k].detach().cpu() for p in parts], 0) for k in parts[0]}
