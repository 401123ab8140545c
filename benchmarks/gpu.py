"""Scale on one accelerator: batched CartPole env-steps/s up to 1M envs, and PPO on up to 2048 seeds.

Questions:

1. How many env-steps/s does the pure batched CartPole (``funrl.envs``,
   ``vmap(env.step)`` with auto-reset and random actions drawn from one key,
   compiled with ``funrl.jit``) reach for N = 1k .. 1M envs on one device,
   against gymnasium's native numpy vector env on the CPU at the same N?
2. How many env-steps/s (all seeds, learning included) does funrl's PPO reach
   on CartPole-v1 for S = 1 .. 2048 seeds in one process, against a
   CleanRL-style single-seed loop (``SyncVectorEnv``, ``nn.Module``,
   ``torch.optim``) that would train the S seeds one after another?

What is timed:

* envs: :func:`bench_envs.make_random_step` (the same graph bench_envs.py
  times on the CPU) on ``--device``, compiled unless ``--no-compile``; the
  first call (compile) is reported apart; steady state is the best of 5 timed
  blocks, each ended by a device synchronise.  gymnasium native:
  :func:`bench_envs.bench_gym` (numpy, one CPU thread, next-step auto-reset),
  up to ``--gym-max-n`` envs.
* PPO: :func:`throughput.time_funrl` (a ``Driver`` with compiled or eager
  vmapped pieces; ``compile_s`` from the warm-up updates) with CleanRL's PPO
  config (4 envs x 128 steps per seed per update); the baseline is
  :func:`throughput.cleanrl_ppo` on ``--baseline-device`` (default cpu: for
  a 64-64 MLP and 4 envs the CPU is CleanRL's faster choice) with the best of
  the tried thread counts.  Its rate does not depend on S, so the ratio at S
  is funrl's aggregate rate over the baseline's.

Run on a GPU: ``python benchmarks/gpu.py --device cuda``.  On a CPU it runs at
small sizes with ``--quick`` (N in {64, 1024}, S in {1, 4}, eager, 16-step
rollouts; for the smoke test).  Writes ``benchmarks/results/gpu.json``
(``gpu_quick.json`` with ``--quick``, or ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_envs  # noqa: E402
import throughput  # noqa: E402

from funrl import jit, tree  # noqa: E402
from funrl import random as jr  # noqa: E402
from funrl.checkpoint import write_json_atomic  # noqa: E402
from funrl.envs import make, vmap_reset  # noqa: E402

RESULTS = HERE / "results"
ENV_ID = "CartPole-v1"


def _int_list(text: str) -> list:
    return [int(x) for x in text.split(",") if x.strip()]


def time_env_steps(n: int, device: torch.device, compile: bool, min_time: float, reps: int = 5) -> dict:
    """Env-steps/s of ``n`` batched CartPoles with random actions and auto-reset on ``device``.

    Returns:
      dict with ``steps_per_s`` (best block), ``steps_per_s_median``,
      ``ms_per_step`` (best) and ``compile_s`` (first call; None when eager).
    """
    env, params = make(ENV_ID)
    params = tree.map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, params)
    _, states = vmap_reset(env, jr.split(jr.key(0, device=device), n), params)
    states = tree.map(lambda x: x.contiguous() if isinstance(x, torch.Tensor) else x, states)
    step = bench_envs.make_random_step(env, params, n)
    if compile:
        step = jit(step)
    carry = [jr.key(1, device=device), states]

    def one():
        out = step(carry[0], carry[1])
        carry[0], carry[1] = out[0], out[1]

    t0 = throughput._clock(device)
    one()
    first = throughput._clock(device) - t0
    one()  # a second call catches a recompile for the outputs' strides
    # calibrate: enough calls per block that the block outlasts launch and sync jitter
    t0, calls = throughput._clock(device), 0
    while calls < 3 or throughput._clock(device) - t0 < min_time / (4 * reps):
        one()
        calls += 1
    per_call = (throughput._clock(device) - t0) / calls
    block = max(3, int(min_time / reps / max(per_call, 1e-9)))
    times = []
    for _ in range(reps):
        t0 = throughput._clock(device)
        for _ in range(block):
            one()
        times.append((throughput._clock(device) - t0) / block)
    times.sort()
    best, median = times[0], times[len(times) // 2]
    return {"steps_per_s": n / best, "steps_per_s_median": n / median, "ms_per_step": best * 1e3,
            "compile_s": first if compile else None}


def env_section(args, device: torch.device) -> dict:
    mode = "compiled" if args.compile else "eager"
    rows = []
    for n in args.envs:
        print(f"[envs] funrl {mode} N={n:,} on {device}", flush=True)
        row = {"n": n, "mode": mode, "funrl": time_env_steps(n, device, args.compile, args.min_time)}
        if n <= args.gym_max_n:
            print(f"[envs] gymnasium native N={n:,}", flush=True)
            row["gym_native"] = bench_envs.bench_gym(ENV_ID, n, "vector_entry_point", args.min_time)
            row["ratio_vs_gym_native"] = row["funrl"]["steps_per_s"] / row["gym_native"]["steps_per_s"]
        rows.append(row)
    return {"env": ENV_ID, "note": "random actions, auto-reset; gymnasium native: numpy on one CPU thread", "rows": rows}


def ppo_section(args, device: torch.device) -> dict:
    from funrl.algorithms import ppo

    config = ppo.Config(**args.ppo_overrides)
    section = {"config": dataclasses.asdict(config), "steps_per_update_per_seed": config.batch_size}
    baseline_device = torch.device(args.baseline_device)

    def baseline_sps():
        res = throughput.cleanrl_ppo(config, args.baseline_updates + 1, baseline_device)
        return config.batch_size * args.baseline_updates / sum(res["times"][1:])  # first iteration is warm-up

    print(f"[ppo] CleanRL-style baseline on {baseline_device}: {args.baseline_updates} timed updates", flush=True)
    base = throughput._best_threads(baseline_sps, args.baseline_threads)
    base.update(device=str(baseline_device), updates_timed=args.baseline_updates,
                env_steps_timed=args.baseline_updates * config.batch_size,
                note="single seed; S seeds run one after another at this rate")
    section["baseline"] = base
    rows = []
    for S in args.seeds:
        print(f"[ppo] funrl {'compiled' if args.compile else 'eager'} S={S} on {device}: {args.updates} timed updates",
              flush=True)
        row = throughput.time_funrl(ppo, config, S, args.compile, args.updates, device)
        row["ratio_vs_baseline"] = row["sps"] / base["sps"]
        rows.append(row)
    section["rows"] = rows
    return section


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x / 1e9:.2f}G" if x >= 1e9 else f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def print_tables(result: dict) -> None:
    envs = result["envs"]
    print(f"\nBatched {envs['env']} on {result['device']}: env-steps/s (best of 5 blocks)")
    header = f"{'N':>9} | {'funrl':>9} | {'ms/step':>8} | {'compile s':>9} | {'gym native':>10} | {'vs native':>9}"
    print(header)
    print("-" * len(header))
    for r in envs["rows"]:
        f = r["funrl"]
        comp = f"{f['compile_s']:.1f}" if f["compile_s"] is not None else "-"
        ratio = f"{r['ratio_vs_gym_native']:.2f}x" if "ratio_vs_gym_native" in r else "-"
        print(f"{r['n']:>9,} | {_fmt(f['steps_per_s']):>9} | {f['ms_per_step']:>8.3f} | {comp:>9} | "
              f"{_fmt(r.get('gym_native', {}).get('steps_per_s')):>10} | {ratio:>9}")
    ppo = result["ppo"]
    base = ppo["baseline"]
    print(f"\nPPO on {ENV_ID} ({ppo['steps_per_update_per_seed']} env steps per update per seed); CleanRL-style "
          f"baseline, 1 seed on {base['device']}, {base['threads']} thread(s): {base['sps']:,.0f} env-steps/s")
    header = f"{'seeds':>5} | {'mode':>8} | {'env-steps/s':>12} | {'ms/update':>10} | {'compile s':>9} | {'vs baseline':>11}"
    print(header)
    print("-" * len(header))
    for r in ppo["rows"]:
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        print(f"{r['seeds']:>5} | {r['mode']:>8} | {r['sps']:>12,.0f} | {r['update_s'] * 1e3:>10.1f} | {comp:>9} | "
              f"{r['ratio_vs_baseline']:>10.1f}x")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, eager (smoke test; runs on a CPU)")
    ap.add_argument("--device", default=None, help="device for funrl (default cuda if available, else cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--envs", type=_int_list, default=None,
                    help="env batch sizes (default 1024,16384,131072,1048576; --quick: 64,1024)")
    ap.add_argument("--seeds", type=_int_list, default=None, help="PPO seed counts (default 1,64,256,1024,2048; --quick: 1,4)")
    ap.add_argument("--updates", type=int, default=None, help="timed steady-state PPO updates per cell (default 5; --quick: 1)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile funrl (default: yes, except with --quick; --no-compile runs eager vmap)")
    ap.add_argument("--gym-max-n", type=int, default=1 << 20, help="largest N timed for gymnasium native (default 1048576)")
    ap.add_argument("--baseline-device", default="cpu", help="device of the CleanRL-style baseline (default cpu)")
    ap.add_argument("--baseline-threads", type=_int_list, default=None,
                    help="thread counts tried for the baseline (default 1,2; --quick: --threads)")
    ap.add_argument("--baseline-updates", type=int, default=None, help="timed baseline PPO updates (default 10; --quick: 1)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timing per env cell (default 1; --quick: 0.05)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/gpu.json; --quick: gpu_quick.json)")
    args = ap.parse_args(argv)

    q = args.quick
    if args.compile is None:
        args.compile = not q
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    defaults = {
        "envs": [64, 1024] if q else [1024, 16384, 131072, 1 << 20],
        "seeds": [1, 4] if q else [1, 64, 256, 1024, 2048],
        "updates": 1 if q else 5,
        "baseline_updates": 1 if q else 10,
        "baseline_threads": [args.threads] if q else [1, 2],
        "min_time": 0.05 if q else 1.0,
    }
    throughput.fill_and_check_args(ap, args, defaults, int_lists=("envs", "seeds", "baseline_threads"),
                                   ints=("updates", "baseline_updates", "threads"))
    if not args.min_time > 0:
        ap.error(f"--min-time: expected seconds > 0, got {args.min_time}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device: expected a torch device like cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device: {args.device!r} requested but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)
    # CleanRL's PPO config (4 envs x 128 steps); quick: 16-step rollouts, as throughput.py's quick mode
    args.ppo_overrides = dict(num_steps=16, update_epochs=2, num_minibatches=2) if q else {}

    load_before = os.getloadavg()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"torch {torch.__version__}, device {device}{f' ({gpu})' if gpu else ''}, {os.cpu_count()} cpus, "
          f"threads {args.threads}, {'compiled' if args.compile else 'eager'}, load average {load_before[0]:.2f}",
          flush=True)
    t_start = time.perf_counter()
    result = {
        "benchmark": "gpu",
        "quick": q,
        "device": str(device),
        "gpu": gpu,
        "compile": args.compile,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} cpus",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "threads": args.threads,
        "load_average_before": list(load_before),
    }
    result["envs"] = env_section(args, device)
    result["ppo"] = ppo_section(args, device)
    result["load_average_after"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - t_start
    print_tables(result)

    out_path = args.out or RESULTS / ("gpu_quick.json" if q else "gpu.json")
    write_json_atomic(out_path, result)
    print(f"\nwall {result['wall_s']:.0f} s; wrote {out_path}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
