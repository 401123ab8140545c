"""Compile time per compiled piece, cold and warm caches, each in a fresh process (issue 13 item 4).

Question: how long does a user wait for ``torch.compile`` before training
starts, piece by piece, the first time (empty Inductor cache) and the next
time (a new process, the on-disk caches that torch keeps warm)?

Each cell starts a child process with its own ``TORCHINDUCTOR_CACHE_DIR``:
``cold`` with an empty directory, ``warm`` with the directory the cold cell
filled.  The child builds the ``Driver`` of an algorithm (PPO on CartPole-v1 by
default, 8 seeds, compiled) through a lift that times the first call of every
compiled piece (trace + compile + one run; the piece's steady call time is
subtracted), then runs one more update for the steady times.

    python benchmarks/compile_time.py [--algo ppo] [--seeds 8] [--out results/compile_time.json]
    python benchmarks/compile_time.py --quick      # smoke run: eager pieces, no compile

Writes ``benchmarks/results/compile_time.json`` with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def child(algo: str, seeds: int, compile: bool) -> dict:
    """In the child process: first-call and steady seconds per piece of ``algo``'s update."""
    import torch

    import funrl
    from funrl import random as jr
    from funrl.algorithms import DEFAULT_ENVS, get
    from funrl.algorithms.common import Driver

    torch.set_num_threads(1)
    module = get(algo)
    env, env_params = funrl.envs.make(DEFAULT_ENVS[algo])
    calls: dict[str, list[float]] = {}

    def timed_make_algorithm(config, env, env_params, lift):
        def timed_lift(fn):
            piece = lift(fn)
            name = fn.__name__  # stack_steps runs eagerly on every path (a copy, see common.stack_steps)

            def run(*args):
                t = time.perf_counter()
                out = piece(*args)
                calls.setdefault(name, []).append(time.perf_counter() - t)
                return out

            return run

        return module.make_algorithm(config, env, env_params, lift=timed_lift)

    t0 = time.perf_counter()
    driver = Driver(timed_make_algorithm, module.Config(), env, env_params, compile=compile)
    state = driver.init(jr.split(jr.key(0), seeds))
    state, _ = driver.run(state, num_updates=1)
    first_update = time.perf_counter() - t0
    first = {k: list(v) for k, v in calls.items()}
    calls.clear()
    t1 = time.perf_counter()
    driver.run(state, start_update=1, num_updates=3)  # updates 1 and 2 (num_updates: where to stop)
    steady_update = (time.perf_counter() - t1) / 2
    pieces = {}
    for name, times in first.items():
        steady = min(calls[name])  # the fastest of two updates' calls
        pieces[name] = {"first_call_s": times[0], "steady_call_s": steady, "compile_s": max(0.0, times[0] - steady),
                        "calls_per_update": len(calls[name]) // 2}
    return {"first_update_s": first_update, "steady_update_s": steady_update, "pieces": pieces}


def run_cell(algo: str, seeds: int, cache_dir: str, compile: bool) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", "--algo", algo, "--seeds", str(seeds)] + ([] if compile else ["--quick"])
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="ppo", help="algorithm (default ppo, on its default env)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 8, the main job's; --quick: 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: eager pieces (nothing compiles)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/compile_time.json)")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 2 if args.quick else 8
    if args.seeds < 1:
        ap.error(f"--seeds: expected an int >= 1, got {args.seeds}")
    if args.child:
        print(json.dumps(child(args.algo, args.seeds, compile=not args.quick)))
        return {}
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from transfer import machine

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as cache:
        cold = run_cell(args.algo, args.seeds, cache, compile=not args.quick)
        warm = run_cell(args.algo, args.seeds, cache, compile=not args.quick)
    result = {"benchmark": "compile_time", "algo": args.algo, "seeds": args.seeds, "compiled": not args.quick,
              "machine": machine(1), "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
              "torch": torch.__version__, "cold": cold, "warm": warm}
    for name in cold["pieces"]:
        c, w = cold["pieces"][name], warm["pieces"].get(name, {})
        print(f"{name:28} cold {c['compile_s']:6.1f} s   warm {w.get('compile_s', float('nan')):6.1f} s   "
              f"steady {c['steady_call_s'] * 1e3:8.2f} ms x {c['calls_per_update']}/update")
    print(f"first update (all compiles): cold {cold['first_update_s']:.1f} s, warm {warm['first_update_s']:.1f} s; "
          f"process wall cold {cold['process_wall_s']:.1f} s, warm {warm['process_wall_s']:.1f} s")
    out = args.out or RESULTS / ("compile_time_quick.json" if args.quick else "compile_time.json")
    from funrl.checkpoint import write_json_atomic

    write_json_atomic(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
