"""Environment throughput: funrl (eager vmap and compiled) vs gymnasium, env-steps per second.

Every measured step takes random actions and auto-resets finished episodes:

* funrl compiled: one ``funrl.jit`` graph per batch size that splits the
  step key, draws the batch of random actions from it, steps every env and
  auto-resets (what :func:`funrl.envs.make_step_fn` compiles, plus the action
  draw).  Compile time is reported separately.
* funrl eager: the same function under ``torch.func.vmap`` without compiling.
* funrl scan (CartPole): ``--scan`` such steps fused into one compiled call
  with ``torch._higher_order_ops.scan`` (a prototype), as a rollout would be;
  it amortises torch.compile's per-call overhead (guards, wrapper, output
  allocation: tens of microseconds) over the fused steps.
* gymnasium native: ``gymnasium.make_vec(id, N, vectorization_mode="vector_entry_point")``
  (CartPole only; numpy, next-step auto-reset), actions from ``numpy.random.Generator.integers``.
* gymnasium sync: ``SyncVectorEnv`` (a Python loop over N envs), N <= 1024.

Each cell is timed in 5 blocks; the table shows the best block (the least
disturbed on a shared machine), the JSON also the median.

Run ``python benchmarks/bench_envs.py`` (``--quick`` for a smoke run).  Results
go to ``benchmarks/results/bench_envs.json`` (``bench_envs_quick.json`` with ``--quick``).  torch uses ``--threads`` threads
(default 2); numpy/gymnasium run single-threaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium  # noqa: E402

from funrl import jit  # noqa: E402
from funrl import random as jr  # noqa: E402
from funrl import tree  # noqa: E402
from funrl.checkpoint import write_json_atomic  # noqa: E402
from funrl.envs import make, spaces, vmap_reset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_envs.json"


def _batched_actions(space, key, n: int) -> torch.Tensor:
    """``n`` random actions from one key (one batched draw, not one key per env)."""
    if isinstance(space, spaces.Discrete):
        # one 32-bit word per action (randint spends two); modulo bias < n / 2**32
        return space.start + jr.bits(key, (n,)) % space.n
    lo = space.low.to(key.device, torch.float32)
    hi = space.high.to(key.device, torch.float32)
    return jr.uniform(key, (n,) + space.shape, torch.float32, lo, hi)


def make_random_step(env, params, n: int):
    """``step(key, states) -> (key, states, obs, reward, terminated, truncated)`` with random actions."""
    space = env.action_space(params)
    vstep = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))

    def step(key, states):
        ks = jr.split(key, 3)
        keys = jr.split(ks[1], n)
        actions = _batched_actions(space, ks[2], n)
        obs, states, reward, terminated, truncated, _ = vstep(keys, states, actions, params)
        return ks[0], states, obs, reward, terminated, truncated

    return step


def make_random_scan(env, params, n: int, num_steps: int):
    """``num_steps`` random-action steps fused in one graph with ``torch._higher_order_ops.scan``.

    scan is a private prototype in torch 2.13; it needs flat tensor carries,
    hence the flatten/unflatten of the state pytree.
    """
    from torch._higher_order_ops.scan import scan

    step = make_random_step(env, params, n)

    def run(key, states):
        spec = tree.structure(states)

        def body(carry, _):
            k2, s2, _obs, reward, terminated, truncated = step(carry[0], tree.unflatten(spec, carry[1:]))
            return [k2] + tree.leaves(s2), (reward, terminated | truncated)

        xs = torch.zeros(num_steps, 1, device=key.device)
        carry, (rewards, dones) = scan(body, [key] + tree.leaves(states), xs)
        return carry[0], tree.unflatten(spec, carry[1:]), rewards, dones

    return run


def _time_loop(fn, min_time: float, min_iters: int, reps: int = 5) -> tuple[float, float]:
    """Seconds per call of ``fn``: ``(best, median)`` over ``reps`` timed blocks.

    Each block runs at least ``min_time / reps`` seconds.  On a shared machine
    the best block is the least disturbed estimate; the median is reported too.
    """
    # calibrate the block length
    calls, t0 = 0, time.perf_counter()
    while calls < min_iters or time.perf_counter() - t0 < min_time / (4 * reps):
        fn()
        calls += 1
    per_call = (time.perf_counter() - t0) / calls
    block = max(min_iters, int(min_time / reps / max(per_call, 1e-9)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        times.append((time.perf_counter() - t0) / block)
    times.sort()
    return times[0], times[len(times) // 2]


def bench_funrl(env_id: str, n: int, compiled: bool, min_time: float, scan_steps: int = 0) -> dict:
    env, params = make(env_id)
    _, states = vmap_reset(env, jr.split(jr.key(0), n), params)
    if scan_steps:
        step = make_random_scan(env, params, n, scan_steps)
    else:
        step = make_random_step(env, params, n)
    if compiled:
        step = jit(step)
    carry = [jr.key(1), states]
    t0 = time.perf_counter()
    out = step(*carry)
    first = time.perf_counter() - t0
    carry = [out[0], out[1]]
    out = step(*carry)  # a second call: catches any recompilation
    carry = [out[0], out[1]]

    def one():
        o = step(carry[0], carry[1])
        carry[0], carry[1] = o[0], o[1]

    best, median = (t / max(scan_steps, 1) for t in _time_loop(one, min_time, 3))
    return {"steps_per_s": n / best, "steps_per_s_median": n / median, "ms_per_step": best * 1e3,
            "compile_s": first if compiled else None}


def bench_gym(env_id: str, n: int, mode: str, min_time: float) -> dict:
    envs = gymnasium.make_vec(env_id, n, vectorization_mode=mode)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    space = envs.single_action_space
    if isinstance(space, gymnasium.spaces.Discrete):

        def actions():
            return rng.integers(0, space.n, size=n)
    else:
        lo, hi = space.low, space.high

        def actions():
            return rng.uniform(lo, hi, size=(n,) + space.shape).astype(np.float32)

    for _ in range(3):
        envs.step(actions())
    best, median = _time_loop(lambda: envs.step(actions()), min_time, 3)
    envs.close()
    return {"steps_per_s": n / best, "steps_per_s_median": n / median, "ms_per_step": best * 1e3}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and short timings (smoke test)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="batch sizes (default 1 64 1024 4096 16384)")
    ap.add_argument("--scan", type=int, default=None,
                    help="also time CartPole with this many steps fused per compiled call via scan "
                    "(default 16; 0 = off; off with --quick)")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of timing per cell")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/bench_envs.json; --quick: bench_envs_quick.json)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.scan is None:
        args.scan = 0 if args.quick else 16
    out_path = args.out or (RESULTS.with_name("bench_envs_quick.json") if args.quick else RESULTS)
    sizes = args.sizes or ([1, 64] if args.quick else [1, 64, 1024, 4096, 16384])
    min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 1.0)
    env_ids = ["CartPole-v1"] if args.quick else ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"]
    load0 = os.getloadavg()

    rows = []
    for env_id in env_ids:
        for n in sizes:
            row = {"env": env_id, "n": n}
            row["funrl_eager"] = bench_funrl(env_id, n, False, min_time)
            row["funrl_compiled"] = bench_funrl(env_id, n, True, min_time)
            if args.scan and env_id == "CartPole-v1":
                row["funrl_scan"] = bench_funrl(env_id, n, True, min_time, scan_steps=args.scan)
            if env_id == "CartPole-v1":
                row["gym_native"] = bench_gym(env_id, n, "vector_entry_point", min_time)
            if n <= 1024:
                row["gym_sync"] = bench_gym(env_id, n, "sync", min_time)
            rows.append(row)
            _print_row(row)

    result = {
        "benchmark": "env-steps/s with random actions and auto-reset (steps_per_s: best of 5 timed blocks)",
        "torch_threads": args.threads,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "quick": args.quick,
        "scan_steps": args.scan,
        "notes": "gymnasium native uses next-step auto-reset, funrl same-step; numpy/gymnasium single-threaded",
        "rows": rows,
    }
    write_json_atomic(out_path, result)
    print(f"\ntorch threads: {args.threads}; load average start {load0}, end {os.getloadavg()}")
    print(f"wrote {out_path}")
    return result


def _fmt(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


_header_printed = False


def _print_row(row):
    global _header_printed
    if not _header_printed:
        print(
            f"{'env':<12} {'N':>6} | {'eager':>8} {'compiled':>9} {'compile':>8} {'scan':>9} | "
            f"{'gym-native':>10} {'gym-sync':>9} | {'comp/native':>11} {'comp/sync':>9} {'comp/eager':>10} "
            f"{'scan/native':>11} {'scan/sync':>9}"
        )
        _header_printed = True
    c = row["funrl_compiled"]["steps_per_s"]
    e = row["funrl_eager"]["steps_per_s"]
    nat = row.get("gym_native", {}).get("steps_per_s")
    syn = row.get("gym_sync", {}).get("steps_per_s")
    sc = row.get("funrl_scan", {}).get("steps_per_s")
    for name, a, b in (("comp_over_native", c, nat), ("comp_over_sync", c, syn), ("comp_over_eager", c, e),
                       ("scan_over_native", sc, nat), ("scan_over_sync", sc, syn)):
        row[name] = a / b if a and b else None
    print(
        f"{row['env'][:12]:<12} {row['n']:>6} | {_fmt(e):>8} {_fmt(c):>9} "
        f"{row['funrl_compiled']['compile_s']:>7.1f}s {_fmt(sc):>9} | {_fmt(nat):>10} {_fmt(syn):>9} | "
        f"{(f'{c / nat:.2f}x' if nat else '-'):>11} {(f'{c / syn:.1f}x' if syn else '-'):>9} {c / e:>9.1f}x "
        f"{(f'{sc / nat:.2f}x' if sc and nat else '-'):>11} {(f'{sc / syn:.1f}x' if sc and syn else '-'):>9}",
        flush=True,
    )


if __name__ == "__main__":
    main()
