"""``funrl.run``: train many seeds with progress, a results folder, checkpoints and resume.

This is what ``funrl train`` calls; notebooks call it directly::

    results = funrl.run("ppo", env="CartPole-v1", seeds=8, total_steps=100_000, out="runs/ppo")
    results["summary"]["iqm"]

The results folder holds ``config.json`` (resolved config, versions, device),
``metrics.csv`` (one row per update per seed), ``summary.json`` (IQM, 95%
bootstrap CI, mean, per-seed final returns, wall time, SPS), ``checkpoints/``
and, with matplotlib installed, ``learning_curve.png``.

Seeds: seed *i* trains with ``fold_in(key(seed), i)``, whatever the number of
seeds, so runs with different seed counts (or seeds split across processes)
agree seed by seed.

Processes: under ``torchrun`` (``WORLD_SIZE > 1``) each process trains one
contiguous block of the seeds and rank 0 gathers metrics and states and writes
the results folder and seed-ordered checkpoints; the results equal a
single-process run's (see :mod:`funrl.distributed`).

Resume: the whole training state (params, optimizer state, env states, replay
buffers, keys, counters) and the metrics so far are checkpointed atomically
every ``checkpoint_every`` updates; ``run(..., resume=DIR)`` continues from the
newest good checkpoint and reaches the same final parameters, bit for bit on
CPU, as an uninterrupted run.

Warm starts: ``run(..., init=DIR)`` starts from the final params of the run in
``DIR`` (see :mod:`funrl.transfer`); ``env_params`` changes the env's params
(e.g. a longer pole); both are recorded in config.json and kept on resume.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import signal
import sys
import time
from typing import Any

import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import distributed, stats, transfer, tree
from funrl.algorithms import DEFAULT_ENVS, get
from funrl.algorithms.common import Runner, check_hparams

__all__ = ["run", "check_finite", "Diverged", "resolve_config", "parse_value", "seed_keys", "final_returns", "chunk_returns", "load_run"]


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
def _metrics_csv(history: dict, steps_per_update: int, first_update: int = 0) -> str:
    names = list(history)
    U, S = history[names[0]].shape
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["update", "seed", "env_steps", *names])
    cols = {n: history[n].detach().double().cpu().tolist() for n in names}
    for u in range(U):
        for s in range(S):
            w.writerow([first_update + u + 1, s, (first_update + u + 1) * steps_per_update] + [repr(cols[n][u][s]) for n in names])
    return buf.getvalue()


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
class _Progress:
    """tqdm bar on a terminal, plain periodic lines otherwise (CI logs stay readable)."""

    def __init__(self, total_steps: int, enabled: bool, label: str):
        self.enabled = enabled
        self.label = label
        self.total = total_steps
        self.bar = None
        self.last_line = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", unit_scale=True, desc=label, dynamic_ncols=True)

    def update(self, env_steps: int, sps: float, ret_mean: float, ret_iqm: float):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = env_steps
            # 4 significant digits: CartPole's 487.3 and a language task's reward 0.734 both read well
            self.bar.set_postfix(sps=f"{sps:,.0f}", ret_mean=f"{ret_mean:.4g}", ret_iqm=f"{ret_iqm:.4g}", refresh=False)
            self.bar.refresh()
            return
        now = time.perf_counter()
        if now - self.last_line >= 5.0 or env_steps >= self.total:
            self.last_line = now
            pct = 100.0 * env_steps / max(self.total, 1)
            print(
                f"[{self.label}] {env_steps:,}/{self.total:,} steps ({pct:.0f}%)  sps {sps:,.0f}  "
                f"return mean {ret_mean:.4g}  iqm {ret_iqm:.4g}",
                flush=True,
            )

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
      resume: a results folder to continue from its newest good checkpoint
        (its config.json fixes algo, env, seeds, config, device and compile; other arguments are ignored).
      checkpoint_every: updates between checkpoints.
      chunk_size: updates between progress reports.
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
    w = distributed.world()
    ctx = distributed.init(w) if w.distributed else None
    try:
        return _run(
            ctx, algo, env, seeds, total_steps, out, device, compile, seed, resume,
            checkpoint_every, chunk_size, progress, plot, hparams, init, init_seed, env_params, overrides,
        )
    finally:
        distributed.cleanup(ctx)


def _on_rank0(ctx, fn):
    """``fn()`` on rank 0, its result broadcast to every rank; an error there stops every rank.

    Single-process (``ctx`` None) it is just ``fn()``.
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
    return distributed.broadcast_object(result, ctx)


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


def _run(ctx, algo, env, seeds, total_steps, out, device, compile, seed, resume,
         checkpoint_every, chunk_size, progress, plot, hparams, init, init_seed, env_params, overrides) -> dict:
    # ctx is None for a single process; under torchrun this rank trains only its
    # block of seeds and rank 0 alone writes files (see funrl.distributed).
    w = ctx.world if ctx is not None else distributed.World()
    start_update = 0
    history_prev = None
    if resume is not None:
        saved = _on_rank0(ctx, lambda: read_config_json(os.path.join(resume, "config.json")))
        algo, env, seeds, seed = saved["algo"], saved["env"], saved["seeds"], saved["seed"]
        overrides = saved["config"]
        total_steps = None
        hparams = saved.get("hparams")
        # the checkpoint holds the (warm-started) params: init is recorded, not applied again
        init, init_seed = None, None
        # JSON stores a tensor override (one value per env) as a list
        env_params = {k: torch.tensor(v) if isinstance(v, list) else v for k, v in (saved.get("env_params") or {}).items()}
        # Resume exactly as the run started: compiled and eager kernels round differently,
        # so switching mode midway would break bit-for-bit equality with an uninterrupted run.
        compile = saved.get("compile", compile)
        device = saved.get("device", device)
        out = resume
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but torch.cuda.is_available() is False")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an int >= 1, got {seeds!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every: expected an int >= 1, got {checkpoint_every!r}")
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
    env_params_t = tree.map(lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x, env_params_t)
    runner = Runner(module.make_algorithm, config, env_obj, env_params_t, compile=compile)
    U = runner.num_updates
    if out is None:
        out = os.path.join("runs", f"{algo}-{env_id}-{time.strftime('%Y%m%d-%H%M%S')}")
    if ctx is not None:
        out = distributed.broadcast_object(out, ctx)  # the ranks' clocks may name different folders
    manager = ckpt.CheckpointManager(os.path.join(out, "checkpoints"), keep=2)

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

    if resume is not None:

        def load_latest():
            if manager.latest_step() is None:
                raise ckpt.CheckpointError(f"{os.path.join(out, 'checkpoints')}: no checkpoint to resume from")
            return manager.load(map_location=dev if ctx is None else "cpu")

        if ctx is None:
            start_update, saved_tree, _ = load_latest()
            saved_state = saved_tree["state"]
            history_prev = saved_tree["history"]
        else:
            # rank 0 reads the one seed-ordered checkpoint and hands each rank its block,
            # so a run resumes under any number of processes and only rank 0 needs the folder
            loaded, error = None, None
            if w.main:
                try:
                    loaded = load_latest()
                except Exception as e:  # noqa: BLE001 - reported to every rank
                    error = e
            distributed.raise_if_any_failed(error, ctx)
            start_update = distributed.broadcast_object(loaded[0] if w.main else None, ctx)
            saved_state = distributed.scatter_blocks_from_rank0(loaded[1]["state"] if w.main else None, blocks, ctx)
            history_prev = loaded[1]["history"] if w.main else None
        state = tree.unflatten(tree.structure(state), [x.to(dev) for x in tree.leaves(saved_state)])
    elif w.main:
        config_record = {
            "algo": algo.lower(),
            "env": env_id,
            "seeds": seeds,
            "seed": seed,
            "config": dataclasses.asdict(config),
            "hparams": {k: torch.as_tensor(v).tolist() for k, v in (hparams or {}).items()},
            "env_params": dict(env_params or {}),
            "init": init_info,
            "device": device,
            "compile": compile,
            "num_updates": U,
            "steps_per_update": runner.steps_per_update,
            "processes": w.world_size,
            "versions": {"funrl": funrl.__version__, "torch": torch.__version__, "python": platform.python_version()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        }
        ckpt.write_json_atomic(os.path.join(out, "config.json"), config_record)

    chunks: list = [history_prev] if history_prev else []
    new_history: list = []
    label = f"{algo}/{env_id}"
    bar = _Progress(U * runner.steps_per_update, progress and w.main, label)
    fail_at = distributed.fail_after_update(w)
    t_start = time.perf_counter()

    check_metrics = getattr(module, "check_metrics", None)  # e.g. LM tasks: rewards inside the declared range

    def callback(st, info):
        new_history.append(info.metrics)
        check_finite(module, st, info.chunk_metrics, info.update, block_start, out)
        if check_metrics is not None:
            check_metrics(config, env_obj, info.chunk_metrics, info.update)
        if fail_at is not None and info.update >= fail_at:
            raise RuntimeError(
                f"{distributed.FAIL_RANK_ENV}={os.environ.get(distributed.FAIL_RANK_ENV)}: "
                f"rank {w.rank} raising after update {info.update} (testing hook)"
            )
        # progress shows rank 0's block (no collectives here: a rank that raises mid-chunk
        # must not leave the others waiting); every rank runs at about the same rate
        ret = chunk_returns(info.chunk_metrics)
        ret = ret[~torch.isnan(ret)]  # seeds that finished no episode in this chunk have no return yet
        mean = float(ret.mean()) if ret.numel() > 0 else float("nan")
        iqm = float(stats.iqm(ret.numpy())) if ret.numel() > 0 else float("nan")
        bar.update(info.update * runner.steps_per_update, info.sps * seeds / block_count, mean, iqm)

    # SIGTERM behaves like Ctrl-C: stop, keep the last good checkpoint, tell how to resume.
    previous_handler = None
    if hasattr(signal, "SIGTERM"):
        try:
            previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        except ValueError:  # not in the main thread
            previous_handler = None
    full_state = state
    try:
        update = start_update
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
            update += n
            if w.main:
                all_new.append(hist)
            _on_rank0(ctx, lambda: _write_checkpoint(manager, out, update, full_state, chunks + all_new, runner.steps_per_update))
    except KeyboardInterrupt:
        bar.close()
        if w.main:
            print(f"\ninterrupted; resume with: funrl train --resume {out}", file=sys.stderr, flush=True)
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    bar.close()
    wall = time.perf_counter() - t_start
    history = _concat_histories(chunks + all_new) if w.main else None

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
            }
        )
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


def _write_checkpoint(manager, out, update, state, histories, steps_per_update) -> None:
    history = _concat_histories(histories)
    manager.save(update, {"state": state, "history": history}, metadata={"update": update})
    ckpt.write_text_atomic(os.path.join(out, "metrics.csv"), _metrics_csv(history, steps_per_update))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _concat_histories(parts: list) -> dict:
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {k: torch.cat([p[k].detach().cpu() for p in parts], 0) for k in parts[0]}
