"""``funrl.run``: train many seeds with progress, a results folder, checkpoints and resume.

This is what ``funrl train`` calls; notebooks call it directly::

    results = funrl.run("ppo", env="CartPole-v1", seeds=8, total_steps=100_000, out="runs/ppo")
    results["summary"]["iqm"], results["metrics"]["episode_return"].shape  # [seeds, updates]

The results folder (:mod:`funrl.results`) holds ``config.json`` (resolved
config, versions, device), ``metrics.csv`` (one row per update per seed),
``summary.json`` (IQM, 95% bootstrap CI, mean, per-seed final returns, wall
time, SPS), ``checkpoints/`` and, with matplotlib installed,
``learning_curve.png``.  Metrics are ``[seeds, updates]`` in memory, as
``vmap(train)`` gives them.

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
single-process run's.  One code path serves both: ``ctx`` is
:class:`funrl.distributed.Local` or :class:`funrl.distributed.Torchrun`.

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
import dataclasses
import inspect
import json
import math
import os
import signal
import sys
import time
from typing import Any

import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import distributed, results, stats, sweeps, transfer, tree
from funrl.algorithms import get, parse_value, resolve_config
from funrl.algorithms.common import Driver, check_hparams, seed_keys
from funrl.results import CONFIG_JSON_KEYS, final_returns, load_run, read_config_json
from funrl.tensorboard_logger import TensorBoardLogger, require_tensorboard
from funrl.threads import check_threads, using_threads

__all__ = ["run", "check_finite", "check_resume_args", "resume_conflicts", "Diverged", "resolve_config", "parse_value",
           "seed_keys", "final_returns", "chunk_returns", "load_run", "read_config_json", "CONFIG_JSON_KEYS"]


def chunk_returns(chunk: dict) -> torch.Tensor:
    """Per-seed mean return of the episodes completed in a chunk of updates.

    Args:
      chunk: metrics of the chunk's updates, leaves ``[S, C]`` with
        ``episode_return`` (mean return of the episodes completed in an update)
        and ``episodes`` (how many completed).

    Returns:
      float64 ``[S]``: episode-weighted mean return per seed; NaN for a seed
      that completed no episode in the chunk (a zero would read as a real return).
    """
    ret = chunk["episode_return"].double().cpu()
    eps = chunk["episodes"].double().cpu()
    total = eps.sum(1)
    mean = (ret * eps).sum(1) / total.clamp(min=1.0)
    return torch.where(total > 0, mean, torch.full_like(mean, math.nan))


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
        ret = chunk_metrics["episode_return"].double().cpu()  # [S, C]
        eps = chunk_metrics["episodes"].double().cpu() > 0
        if self.last_return is None:
            self.last_return = torch.full((ret.shape[0],), math.nan, dtype=torch.float64)
            self.seen = torch.zeros(ret.shape[0], dtype=torch.bool)
        if self.diverged is None:
            self.diverged = torch.zeros(ret.shape[0], dtype=torch.bool)
        for v in chunk_metrics.values():  # any metric, not only the returns: a NaN seed is never hidden
            if v.is_floating_point() and v.dim() == 2:
                self.diverged |= ~torch.isfinite(v.detach().cpu()).all(1)
        any_ep = eps.any(1)
        C = ret.shape[1]
        last = C - 1 - eps.flip(1).double().argmax(1)  # index of the last update with an episode
        latest = ret.gather(1, last[:, None]).squeeze(1)
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
        """Report the chunk of updates that ended at ``update`` (metrics ``[S, C]``)."""
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
      ``[S, U]``: seeds x updates, as ``vmap(train)`` gives them), ``state``
      (the final batched training state, leaves ``[S, ...]``), ``out`` and
      ``seed_block`` (``(start, count)`` of the seeds this process trained).  Under torchrun rank 0 returns the full metrics
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
    with distributed.context() as ctx, using_threads(threads):
        result = _run(ctx, _Settings(**args, overrides=dict(overrides)), given, names)
    result["threads"] = threads
    return result


_RUN_DEFAULTS = {p.name: p.default for p in inspect.signature(run).parameters.values() if p.default is not p.empty}


@dataclasses.dataclass(frozen=True)
class _Settings:
    """:func:`run`'s arguments (see its docstring); ``overrides``: its ``**overrides`` (Config fields)."""

    algo: str
    env: str | None
    seeds: int
    total_steps: int | None
    out: str | None
    device: str
    compile: bool
    seed: int
    resume: str | None
    checkpoint_every: int
    chunk_size: int
    progress: bool
    plot: bool
    hparams: dict | None
    init: str | None
    init_seed: int | None
    env_params: dict | None
    sweep: dict | None
    threads: int | None
    tensorboard: bool
    overrides: dict


@dataclasses.dataclass
class _Job:
    """What the run is, once set up: the same on every process but for ``block`` (this process's seeds)."""

    settings: _Settings
    module: Any  # the algorithm module
    env_id: str
    config: Any  # the resolved Config
    env: Any
    driver: Driver
    compile: bool  # as run (the language-model algorithms run eagerly)
    device: str  # this process's device
    blocks: list  # (start, count) of every process's seeds
    block: tuple  # (start, count) of this process's seeds
    out: str
    manager: ckpt.CheckpointManager
    metrics_csv: results.MetricsCSV
    init_info: dict | None  # the warm start's source, recorded in config.json


# ------------------------------------------------------------------ the main loop
def _run(ctx, s: _Settings, given: dict, names: dict | None) -> dict:
    """The run, top to bottom.  ``ctx``: :class:`funrl.distributed.Local` or ``Torchrun``; only its main
    process writes files (``ctx.on_main``), every process trains its block of seeds."""
    if s.resume is not None:
        s = _resumed_settings(ctx, s, given, names)
    elif s.sweep is not None:
        s = _swept_settings(s)
    _check_settings(s, ctx.world)
    job, state = _setup(ctx, s)
    start, earlier = 0, None
    if s.resume is not None:
        start, state, earlier, summary = _restore(ctx, job, state)
        if summary is not None:  # a finished run: report it, change nothing
            return {**_result(ctx, job, summary, earlier, state, state), "finished": True}
    else:
        ctx.on_main(lambda: _write_config(job), broadcast=False)
    t0 = time.perf_counter()
    state, full_state, segments = _train(ctx, job, state, start)
    wall = time.perf_counter() - t0
    metrics = results.concat_metrics([earlier, *segments]) if ctx.world.main else None
    # written only here, after every process finished: a summary always describes a whole run
    summary = ctx.on_main(lambda: _write_summary(job, metrics, start, wall))
    return _result(ctx, job, summary, metrics, state, full_state)


# ------------------------------------------------------------------ settings
#: run()'s arguments that a resumed run takes from config.json (given ones must agree with it)
_RESUMED_ARGS = ("algo", "env", "seeds", "total_steps", "device", "compile", "seed", "checkpoint_every",
                 "chunk_size", "hparams", "init", "init_seed", "env_params", "sweep", "tensorboard")


def _resumed_settings(ctx, s: _Settings, given: dict, names: dict | None) -> _Settings:
    """The settings of the run in ``s.resume``, from its config.json; a given argument that differs is an error.

    Older config.json files lack some keys: the given values stand.
    """
    saved = ctx.on_main(lambda: read_config_json(os.path.join(s.resume, "config.json")))
    check_resume_args(s.resume, saved, {k: v for k, v in (given or {}).items() if k in _RESUMED_ARGS},
                      s.overrides, names)
    return dataclasses.replace(
        s, out=s.resume, algo=saved["algo"], env=saved["env"], seeds=saved["seeds"], seed=saved["seed"],
        overrides=saved["config"], total_steps=None, hparams=saved.get("hparams"),
        # the checkpoint holds the (warm-started) params: init is recorded, not applied again
        init=None, init_seed=None,
        # JSON stores a tensor override (one value per env) as a list
        env_params={k: torch.tensor(v) if isinstance(v, list) else v for k, v in (saved.get("env_params") or {}).items()},
        # Resume exactly as the run started: compiled and eager kernels round differently,
        # so switching mode midway would break bit-for-bit equality with an uninterrupted run.
        compile=saved.get("compile", s.compile), device=saved.get("device", s.device),
        checkpoint_every=saved.get("checkpoint_every", s.checkpoint_every),
        chunk_size=saved.get("chunk_size", s.chunk_size),
        sweep=saved.get("sweep"), tensorboard=saved.get("tensorboard", s.tensorboard),
    )


def _swept_settings(s: _Settings) -> _Settings:
    """A sweep's settings: ``seeds`` counts every setting's seeds and ``hparams`` holds each seed's setting."""
    module, _, config = resolve_config(s.algo, s.env, s.total_steps, s.overrides)
    seeds, hparams, sweep = sweeps.plan(module, config, s.sweep, s.seeds, s.overrides, s.hparams, parse=parse_value)
    return dataclasses.replace(s, seeds=seeds, hparams=hparams, sweep=sweep)


def _check_settings(s: _Settings, w: distributed.World) -> None:
    """Raise a ValueError (an ImportError for a missing extra) naming the first setting that cannot run."""
    if s.tensorboard:
        require_tensorboard()  # before anything runs or a folder is made
    if s.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    for name in ("seeds", "checkpoint_every", "chunk_size"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if s.seeds < w.world_size:
        raise ValueError(f"seeds: expected at least one seed per process ({w.world_size} processes), got {s.seeds}")
    if s.init_seed is not None and s.init is None:
        raise ValueError(f"init_seed: given ({s.init_seed!r}) without init (the results folder to start from)")


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


# ------------------------------------------------------------------ setup
def _setup(ctx, s: _Settings) -> tuple[_Job, Any]:
    """The algorithm, env, driver and folder of the run, and this process's initial state (leaves ``[count, ...]``).

    The folder is created only at the end: a run that cannot start leaves no folder behind.
    """
    w = ctx.world
    dev = distributed.local_device(s.device, w)
    if w.distributed and dev.startswith("cuda"):
        torch.cuda.set_device(dev)
    blocks = distributed.seed_blocks(s.seeds, w.world_size)
    start, count = blocks[w.rank]
    module, env_id, config = resolve_config(s.algo, s.env, s.total_steps, s.overrides)
    if hasattr(config, "network"):  # a lambda could not be rebuilt from config.json by eval, export or resume
        from funrl.algorithms.networks import require_import_path

        require_import_path(config)
    # the LM algorithms run their pieces eagerly (vmapped): see COMPILE in funrl/algorithms/lm_common.py
    compile = s.compile and getattr(module, "COMPILE", True)
    make_env = getattr(module, "make_env", funrl.envs.make)  # LM algorithms take a task from funrl.lm.tasks
    env, env_params = make_env(env_id, **dict(s.env_params or {}))
    if compile and not getattr(env, "COMPILE", True):
        # "gymnasium:ID" envs step on the host (funrl/envs/gymnasium_env.py): such runs stay eager
        compile = False
        if s.progress and w.main:
            print(f"[{s.algo}/{env_id}] note: {env_id} steps gymnasium on the host; training runs eagerly "
                  "(compile off)", file=sys.stderr, flush=True)
    env_params = tree.map(lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x, env_params)
    driver = Driver(module.make_algorithm, config, env, env_params, compile=compile)
    # the processes' clocks may name different folders: rank 0's name counts
    out = ctx.broadcast(s.out or os.path.join("runs", f"{s.algo}-{env_id}-{time.strftime('%Y%m%d-%H%M%S')}"))
    # seed i gets fold_in(key(seed), i) whichever process trains it
    state = driver.init(seed_keys(s.seed, count, dev, first=start), _hparams_block(s, config, dev, (start, count)))
    init_info = None
    if s.init is not None:
        state, init_info = _warm_start(ctx, module, config, state, s, blocks, dev)
    ctx.on_main(lambda: os.makedirs(out, exist_ok=True), broadcast=False)
    job = _Job(s, module, env_id, config, env, driver, compile, dev, blocks, (start, count), out,
               ckpt.CheckpointManager(os.path.join(out, "checkpoints"), keep=2),
               results.MetricsCSV(os.path.join(out, "metrics.csv"), driver.steps_per_update), init_info)
    return job, state


def _hparams_block(s: _Settings, config, dev, block: tuple[int, int]) -> dict | None:
    """This process's block of the per-seed ``hparams`` as tensors ``[count]`` (None without hparams).

    Every process checks all seeds' values, so all raise together.
    """
    if not s.hparams:
        return None
    out = {}
    for k, v in s.hparams.items():
        v = torch.as_tensor(v, dtype=torch.float32, device=dev)
        if v.shape != (s.seeds,):
            raise ValueError(f"hparams[{k!r}]: expected shape ({s.seeds},) (one value per seed), got {tuple(v.shape)}")
        out[k] = v[block[0] : block[0] + block[1]]
    check_hparams(config, s.hparams)
    return out


def _warm_start(ctx, module, config, state, s: _Settings, blocks, dev):
    """``transfer.warm_start`` for this process's block of seeds: the main process reads the folder."""
    loaded = {}

    def load():
        params, info = transfer.load_params(s.init)
        loaded["params"] = transfer.select_seeds(params, s.seeds, s.init_seed)
        return info

    info = ctx.on_main(load)
    block = tree.map(lambda x: x.to(dev), ctx.scatter_blocks(loaded.get("params"), blocks))
    state = transfer.with_params(module, state, block, transfer.keep_fresh(module, config))
    return state, {"dir": os.path.abspath(s.init), "seed": s.init_seed, "algo": info["algo"], "env": info["env"],
                   "seeds": info["seeds"], "update": info["update"]}


def _write_config(job: _Job) -> None:
    s = job.settings
    results.write_config_json(job.out, {
        "algo": s.algo.lower(),
        "env": job.env_id,
        "seeds": s.seeds,
        "seed": s.seed,
        "config": dataclasses.asdict(job.config),
        "hparams": {k: torch.as_tensor(v).tolist() for k, v in (s.hparams or {}).items()},
        "env_params": dict(s.env_params or {}),
        "sweep": s.sweep,
        "init": job.init_info,
        "device": s.device,
        "compile": job.compile,
        "checkpoint_every": s.checkpoint_every,
        "chunk_size": s.chunk_size,
        "tensorboard": bool(s.tensorboard),
        "num_updates": job.driver.num_updates,
        "steps_per_update": job.driver.steps_per_update,
        "processes": len(job.blocks),
    })


# ------------------------------------------------------------------ resume
def _restore(ctx, job: _Job, state):
    """Continue from the newest good checkpoint: ``(update, state, metrics so far, summary)``.

    ``summary`` is the stored one for a finished run (its last checkpoint at the
    last update and summary.json written; nothing is changed), else None and the
    folder is prepared: temp files of interrupted writes removed and metrics.csv
    cut back to the checkpoint.  The metrics (leaves ``[S, update]``) are on the
    main process only (None elsewhere).

    The main process reads the one seed-ordered checkpoint and hands each process
    its block of the state, so a run resumes under any number of processes.
    """
    loaded = ctx.on_main(lambda: results.read_checkpoint(job.manager, map_location="cpu"), broadcast=False)
    update = ctx.broadcast(loaded[0] if ctx.world.main else None)
    block = ctx.scatter_blocks(loaded[1] if ctx.world.main else None, job.blocks)
    segment = loaded[2] if ctx.world.main else None
    state = tree.unflatten(tree.structure(state), [x.to(job.device) for x in tree.leaves(block)])
    if update >= job.driver.num_updates:
        summary = ctx.on_main(lambda: results.read_summary_json(job.out))
        if summary is not None:
            return update, state, job.metrics_csv.restore(*segment, write=False) if ctx.world.main else None, summary

    def prepare():
        results.clean_temp_files(job.out)
        job.manager.clean_temp()
        return job.metrics_csv.restore(*segment)

    return update, state, ctx.on_main(prepare, broadcast=False), None


# ------------------------------------------------------------------ training
def _train(ctx, job: _Job, state, update: int):
    """Train from ``update`` to the end with progress, checks and checkpoints.

    Ctrl-C and SIGTERM stop the run, keep the last good checkpoint and say how to resume.

    Returns:
      ``(state, full_state, segments)``: see :func:`_checkpoint_loop`.
    """
    s, main = job.settings, ctx.world.main
    # TensorBoard gets metrics.csv's rows as they are appended (main process only)
    loggers = [TensorBoardLogger(os.path.join(job.out, "tensorboard"), job.driver.steps_per_update, update)
               ] if s.tensorboard and main else []
    label = f"{s.algo}/{job.env_id}" + (f" sweep of {sweeps.describe(s.sweep)}" if s.sweep else "")
    bar = _Progress(label, job.driver.num_updates, job.driver.steps_per_update, s.seeds, s.progress and main,
                    start_update=update, compile=job.compile)
    callback = distributed.with_failure_hook(_chunk_callback(job, bar), ctx.world)
    try:
        with _sigterm_as_keyboard_interrupt():
            return _checkpoint_loop(ctx, job, state, update, callback, loggers)
    except KeyboardInterrupt:
        bar.close()
        if main:
            print(f"\ninterrupted; resume with: funrl train --resume {job.out}", file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
        for logger in loggers:
            logger.close()


def _chunk_callback(job: _Job, bar: _Progress):
    """What runs after every chunk of updates: stop on divergence or bad metrics, then report progress.

    No collectives here: a process that raises mid-chunk must not leave the others
    waiting.  Progress shows the main process's block of seeds (every process runs
    at about the same rate).
    """
    check_metrics = getattr(job.module, "check_metrics", None)  # e.g. LM tasks: rewards inside the declared range
    # with skip_nonfinite the optimizer skips non-finite steps, so non-finite losses are expected; params are not
    metrics_finite = not getattr(job.config, "skip_nonfinite", 0)

    def callback(state, info):
        check_finite(job.module, state, info.chunk_metrics, info.update, job.block[0], job.out,
                     metrics=metrics_finite)
        if check_metrics is not None:
            check_metrics(job.config, job.env, info.chunk_metrics, info.update)
        bar.update(info.update, info.chunk_metrics)

    return callback


def _checkpoint_loop(ctx, job: _Job, state, update: int, callback, loggers=()):
    """Train from ``update`` to the end, checkpointing every ``checkpoint_every`` updates.

    At each checkpoint the main process appends the new updates' rows to
    metrics.csv (and hands them to ``loggers``), then saves the state (every
    seed's, gathered) with those updates' metrics.  An error on any process
    stops every process there.

    Returns:
      ``(state, full_state, segments)``: this process's state, the whole state
      (main process) and the metrics of each checkpoint's updates (main process,
      leaves ``[S, n]``; an empty list elsewhere).
    """
    driver, every = job.driver, job.settings.checkpoint_every
    full_state, segments = state, []
    while update < driver.num_updates:
        n = min(every - (update % every), driver.num_updates - update)
        error, metrics = None, None
        try:
            state, metrics = driver.run(state, num_updates=update + n, callback=callback,
                                        chunk_size=job.settings.chunk_size, start_update=update)
        except Exception as e:  # noqa: BLE001 - every process learns of it and stops here
            error = e
        ctx.raise_if_any_failed(error)
        metrics, full_state = ctx.gather_seeds(metrics), ctx.gather_seeds(state)
        first, update = update, update + n
        if ctx.world.main:
            metrics = {k: v.detach().cpu() for k, v in metrics.items()}
            segments.append(metrics)
        ctx.on_main(lambda: results.write_checkpoint(job.manager, job.metrics_csv, update, full_state, metrics, first,
                                                     loggers), broadcast=False)
    return state, full_state, segments


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt():
    """SIGTERM behaves like Ctrl-C inside the block (the previous handler is restored after it)."""
    previous = None
    if hasattr(signal, "SIGTERM"):
        with contextlib.suppress(ValueError):  # not in the main thread: leave SIGTERM alone
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


class Diverged(ValueError):
    """A run stopped because a metric or a param became NaN or infinite (see :func:`check_finite`)."""


def check_finite(module, state, chunk_metrics: dict, last_update: int, first_seed: int = 0, out: str | None = None,
                 metrics: bool = True) -> None:
    """Stop a run at the chunk where a metric or a learned param stopped being finite.

    Training on after a NaN only writes NaN checkpoints; stopping here keeps the
    last checkpoint, written before this chunk, which is finite (every earlier
    chunk passed this check).

    Args:
      module: the algorithm module (its ``PARAMS`` path locates the params).
      state: the batched state after the chunk (leaves ``[S, ...]``).
      chunk_metrics: name -> ``[S, C]`` for the chunk's updates.
      last_update: the number of the chunk's last update.
      first_seed: the global index of this process's first seed (torchrun blocks).
      out: the results folder (named in the message).
      metrics: check the metrics too (False: only the params -- runs whose config sets
        ``skip_nonfinite``, where a non-finite loss is a skipped step, not a divergence).

    Raises:
      Diverged: naming the metrics or params, the seeds and the first bad update.
    """
    bad_seeds = None
    what = []
    first_bad = last_update
    for name, v in chunk_metrics.items() if metrics else ():
        if not v.is_floating_point():
            continue
        bad = ~torch.isfinite(v)  # [S, C]
        if bool(bad.any()):
            what.append(f"metric {name!r}")
            cols = torch.nonzero(bad.any(0)).flatten()
            first_bad = min(first_bad, last_update - v.shape[1] + 1 + int(cols[0]))
            bad_seeds = bad.any(1) if bad_seeds is None else bad_seeds | bad.any(1)
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


# ------------------------------------------------------------------ summary
def _write_summary(job: _Job, metrics: dict, start: int, wall: float) -> dict:
    """summary.json (and the learning curve with matplotlib) of the whole run; returns the summary."""
    s, driver = job.settings, job.driver
    finals = final_returns(metrics)
    bad = [i for i, x in enumerate(finals.tolist()) if not math.isfinite(x)]
    if bad:  # only with skip_nonfinite (otherwise the chunk check stopped the run): no summary of NaN returns
        raise Diverged(f"training finished, but seed(s) {bad} end with non-finite returns (skip_nonfinite="
                       f"{getattr(job.config, 'skip_nonfinite', 0)} skipped their NaN steps); metrics.csv and the "
                       f"checkpoints in {job.out} are written, summary.json is not")
    summary = stats.summarize(finals.numpy())
    summary.update({
        "algo": s.algo.lower(),
        "env": job.env_id,
        "seeds": s.seeds,
        "per_seed_final_return": finals.tolist(),
        "env_steps_per_seed": driver.num_updates * driver.steps_per_update,
        "wall_time_s": wall,
        "sps": (driver.num_updates - start) * driver.steps_per_update * s.seeds / max(wall, 1e-9),
        "resumed_from_update": start if s.resume else None,
        "processes": len(job.blocks),
        "threads": torch.get_num_threads(),  # per process
    })
    if s.sweep:
        summary["settings"] = sweeps.summarize_settings(finals, s.sweep)
    results.write_summary_json(job.out, summary)
    if s.plot:
        try:
            from funrl.plotting import plot_runs

            plot_runs([job.out], os.path.join(job.out, "learning_curve.png"))
        except ImportError:
            pass
    return summary


def _result(ctx, job: _Job, summary: dict, metrics: dict | None, state, full_state) -> dict:
    """What :func:`run` returns: the main process has every seed's metrics and state, the others their block's state."""
    main = ctx.world.main
    return {"summary": summary, "metrics": metrics if main else None, "state": full_state if main else state,
            "out": job.out, "seed_block": job.block}
