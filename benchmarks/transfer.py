"""Does a warm start transfer?  PPO fine-tuned on a changed CartPole pole against PPO from scratch.

1. *source*: PPO on CartPole-v1 with the default pole (``--source-steps`` env
   steps per seed, ``--seeds`` seeds in one vmapped run, ``funrl.run``);
2. *fine-tune*: ``funrl.run(..., init=<source folder>)`` (seed *i* starts from
   the source's seed *i*: params only, fresh optimizer state) on a changed pole
   (``length`` x ``--length-scale``, ``masspole`` x ``--masspole-scale``;
   default both x 2) for ``--steps`` env steps per seed;
3. *scratch*: the same run on the changed pole from a random init.

Metric, for fine-tune and scratch: the first env step (per seed) at which the
IQM over seeds of the per-chunk training return reaches ``--threshold``
(default 475, CartPole-v1's reward threshold).  A chunk is ``--chunk``
consecutive updates; a seed's chunk return is the mean return of the episodes
it completed in the chunk (``funrl.runner.chunk_returns``; a seed that
completed none counts as 0).  The step reported is the end of the first chunk
whose IQM is >= the threshold.  ``ratio`` = fine-tune steps / scratch steps;
the target is ``ratio <= 0.5``.  If scratch never reaches the threshold,
``ratio`` is None and the target counts as met when fine-tuning reached it
within half the budget (``ratio`` is then below ``steps/2 / steps``).

Both target-pole runs use the same ``--seed`` (paired: seed *i* sees the same
random keys).  ``--quick``: 2 seeds, a tiny network and a few hundred steps,
eager (a smoke run: the threshold is not reached).  ``--no-compile`` runs eagerly.
Writes ``benchmarks/results/transfer.json`` (``transfer_quick.json`` with
``--quick``, or ``--out``) atomically, with the machine (CPU model, torch's CPU
capability, threads, load average).  The results folders go to a temporary
directory unless ``--runs-dir`` keeps them (``funrl plot DIR DIR`` draws them).
Not run in CI; only ``--quick`` is smoke-tested.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from funrl.checkpoint import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"

#: PPO Config overrides for --quick (the tests' tiny network and short rollouts)
QUICK_CONFIG = {"num_envs": 2, "num_steps": 16, "num_minibatches": 2, "update_epochs": 1, "hidden_sizes": (8, 8)}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict:
    """Where the numbers were measured."""
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "torch_threads": threads,
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def iqm_curve(metrics: dict, chunk: int, steps_per_update: int) -> tuple[list[int], list[float]]:
    """IQM over seeds of the per-chunk training return, and the env step (per seed) at each chunk's end.

    Args:
      metrics: ``funrl.run``'s metrics, leaves ``[S, U]`` (``episode_return``, ``episodes``).
      chunk: updates per chunk (the last chunk may be shorter).
      steps_per_update: env steps per seed per update.

    Returns:
      ``(env_steps, iqm)``, one entry per chunk.
    """
    from funrl import stats
    from funrl.runner import chunk_returns

    U = metrics["episode_return"].shape[1]
    steps, iqms = [], []
    for start in range(0, U, chunk):
        end = min(start + chunk, U)
        returns = chunk_returns({k: metrics[k][:, start:end] for k in ("episode_return", "episodes")})
        returns = torch.nan_to_num(returns, nan=0.0)  # a seed with no finished episode has not balanced anything yet
        steps.append(end * steps_per_update)
        iqms.append(float(stats.iqm(returns.numpy())))
    return steps, iqms


def steps_to_threshold(steps: list[int], iqms: list[float], threshold: float) -> int | None:
    """The first env step whose chunk IQM is >= ``threshold`` (None: never)."""
    for s, v in zip(steps, iqms):
        if v >= threshold:
            return s
    return None


def verdict(finetune: int | None, scratch: int | None, budget: int, target_ratio: float) -> dict:
    """``ratio`` (fine-tune steps / scratch steps) and whether the target ``ratio <= target_ratio`` is met."""
    if finetune is None:
        return {"ratio": None, "met": False, "note": "fine-tuning did not reach the threshold within the budget"}
    if scratch is None:
        return {
            "ratio": None,
            "ratio_upper_bound": finetune / budget,
            "met": finetune <= target_ratio * budget,
            "note": "scratch did not reach the threshold within the budget; the ratio is below finetune/budget",
        }
    ratio = finetune / scratch
    return {"ratio": ratio, "met": ratio <= target_ratio}


def _phase(name: str, result: dict, args, wall: float, load_before) -> dict:
    """One run's entry in the JSON."""
    metrics = result["metrics"]
    U = metrics["episode_return"].shape[1]
    steps_per_update = result["summary"]["env_steps_per_seed"] // U
    steps, iqms = iqm_curve(metrics, args.chunk, steps_per_update)
    reached = steps_to_threshold(steps, iqms, args.threshold)
    s = result["summary"]
    print(
        f"[{name}] {s['seeds']} seeds x {s['env_steps_per_seed']:,} steps in {wall:.1f} s: final IQM {s['iqm']:.1f}, "
        f"first-chunk IQM {iqms[0]:.1f}, threshold {args.threshold:g} reached at "
        f"{'never' if reached is None else f'{reached:,} steps'}",
        flush=True,
    )
    return {
        "out": result["out"],
        "env_steps_per_seed": s["env_steps_per_seed"],
        "steps_per_update": steps_per_update,
        "final_return": {k: s[k] for k in ("iqm", "ci_low", "ci_high", "mean", "min", "max")},
        "per_seed_final_return": s["per_seed_final_return"],
        "curve": {"env_steps": steps, "iqm": iqms},
        "first_chunk_iqm": iqms[0],
        "steps_to_threshold": reached,
        "wall_s": wall,
        "sps": s["sps"],
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=None, help="seeds per run, trained together (default 16; --quick 2)")
    ap.add_argument("--source-steps", type=int, default=None, help="env steps per seed on the default pole (default 500k)")
    ap.add_argument("--steps", type=int, default=None, help="env steps per seed on the changed pole, both runs (default 500k)")
    ap.add_argument("--length-scale", type=float, default=2.0, help="pole length multiplier (default 2)")
    ap.add_argument("--masspole-scale", type=float, default=2.0, help="pole mass multiplier (default 2)")
    ap.add_argument("--threshold", type=float, default=475.0, help="IQM return to reach (default 475)")
    ap.add_argument("--target-ratio", type=float, default=0.5, help="fine-tune/scratch steps ratio to meet (default 0.5)")
    ap.add_argument("--chunk", type=int, default=None, help="updates per chunk of the return curve (default 10; --quick 1)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="PPO config override (all runs)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, tiny network, a few hundred steps, eager")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile the vmapped pieces (default: yes, except with --quick); --no-compile: eager")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--seed", type=int, default=0, help="base seed")
    ap.add_argument("--runs-dir", type=Path, default=None, help="keep the three results folders here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/transfer.json; --quick: transfer_quick.json)")
    args = ap.parse_args(argv)
    q = args.quick
    if args.seeds is None:
        args.seeds = 2 if q else 16
    if args.source_steps is None:
        args.source_steps = 256 if q else 500_000
    if args.steps is None:
        args.steps = 256 if q else 500_000
    if args.chunk is None:
        args.chunk = 1 if q else 10
    if args.compile is None:
        args.compile = not q
    for flag in ("seeds", "source_steps", "steps", "chunk", "threads"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')}: expected an int >= 1, got {getattr(args, flag)}")
    for flag in ("length_scale", "masspole_scale", "target_ratio"):
        if not getattr(args, flag) > 0:
            ap.error(f"--{flag.replace('_', '-')}: expected a number > 0, got {getattr(args, flag)}")
    torch.set_num_threads(args.threads)

    import funrl
    from funrl.cli import _parse_sets
    from funrl.algorithms import resolve_config

    try:
        config = {**(QUICK_CONFIG if q else {}), **_parse_sets(args.set)}
        resolve_config("ppo", "CartPole-v1", None, config)
    except ValueError as e:
        ap.error(str(e))
    _, default_params = funrl.envs.make("CartPole-v1")
    # the params are float32: 7 significant digits give back the decimal defaults (0.1, not 0.10000000149)
    default_pole = {k: float(f"{float(getattr(default_params, k)):.7g}") for k in ("length", "masspole")}
    pole = {"length": default_pole["length"] * args.length_scale, "masspole": default_pole["masspole"] * args.masspole_scale}
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {cpu_model()}, {os.cpu_count()} cpus, {args.threads} threads, {args.seeds} seeds, "
        f"compile {args.compile}, load average {load[0]:.2f}; changed pole: length {pole['length']:g}, "
        f"masspole {pole['masspole']:g}",
        flush=True,
    )
    out_path = args.out or RESULTS / ("transfer_quick.json" if q else "transfer.json")
    common = dict(seeds=args.seeds, device=args.device, compile=args.compile, seed=args.seed, progress=not q,
                  plot=False, **config)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="funrl-transfer-") as tmp:
        runs = args.runs_dir or Path(tmp)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        phases = {}
        for name, kw in (
            ("source", dict(total_steps=args.source_steps)),
            ("finetune", dict(total_steps=args.steps, env_params=pole)),
            ("scratch", dict(total_steps=args.steps, env_params=pole)),
        ):
            if name == "finetune":
                kw["init"] = phases["source"]["out"]  # seed i starts from the source's seed i
            torch._dynamo.reset()
            load_before = os.getloadavg()
            t0 = time.perf_counter()
            result = funrl.run("ppo", env="CartPole-v1", out=str(runs / f"{stamp}-{name}"), **common, **kw)
            phases[name] = _phase(name, result, args, time.perf_counter() - t0, load_before)
        if args.runs_dir is None:
            for p in phases.values():
                p["out"] = None  # deleted with the temporary directory

    ft, sc = phases["finetune"]["steps_to_threshold"], phases["scratch"]["steps_to_threshold"]
    v = verdict(ft, sc, args.steps, args.target_ratio)
    result = {
        "benchmark": "transfer",
        "quick": q,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "algo": "ppo",
        "env": "CartPole-v1",
        "seeds": args.seeds,
        "seed": args.seed,
        "compile": args.compile,
        "device": args.device,
        "config_overrides": {k: list(v_) if isinstance(v_, tuple) else v_ for k, v_ in config.items()},
        "source_pole": default_pole,
        "changed_pole": pole,
        "source_env_steps_per_seed": args.source_steps,
        "budget_env_steps_per_seed": args.steps,
        "chunk_updates": args.chunk,
        "threshold": args.threshold,
        "criterion": (
            f"first env step (per seed) at which the IQM over {args.seeds} seeds of the per-chunk training return "
            f"({args.chunk} updates per chunk) is >= {args.threshold:g}; target: fine-tune steps <= "
            f"{args.target_ratio:g} x scratch steps"
        ),
        "target_ratio": args.target_ratio,
        "finetune_steps_to_threshold": ft,
        "scratch_steps_to_threshold": sc,
        **v,
        "phases": phases,
        "machine": machine(args.threads),
        "load_average_before": list(load),
        "load_average_after": list(os.getloadavg()),
        "wall_s": time.perf_counter() - t_start,
    }
    write_json_atomic(out_path, result)

    def fmt(s):
        return "never" if s is None else f"{s:,}"

    print()
    print(f"changed pole (length {pole['length']:g}, masspole {pole['masspole']:g}), {args.steps:,} steps per seed, "
          f"{args.seeds} seeds")
    print(f"{'run':<9} | {'steps to IQM >= ' + format(args.threshold, 'g'):>20} | {'first-chunk IQM':>15} | {'final IQM':>9}")
    for name, reached in (("finetune", ft), ("scratch", sc)):
        p = phases[name]
        print(f"{name:<9} | {fmt(reached):>20} | {p['first_chunk_iqm']:>15.1f} | {p['final_return']['iqm']:>9.1f}")
    ratio = "n/a" if v["ratio"] is None else f"{v['ratio']:.3f}"
    print(f"ratio finetune/scratch {ratio} (target <= {args.target_ratio:g}): {'met' if v['met'] else 'MISSED'}"
          + (f" ({v['note']})" if "note" in v else ""))
    print(f"\nwrote {out_path}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
