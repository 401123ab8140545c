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

Two more cells measure what torch offers to keep compiled code across
processes beyond its on-disk caches (compiled runs only):

* ``portable``: the cold cell's ``torch.compiler.save_cache_artifacts()`` (Inductor's
  and AOTAutograd's caches as one blob) loaded with ``load_cache_artifacts`` into a new
  process with an *empty* cache directory -- a fresh machine or container;
* ``precompile``: whether the pieces can skip Dynamo tracing -- ``aot_compile`` of each
  piece (``torch.compile(...).aot_compile`` + ``save_compiled_function``) and the
  ``caching_precompile`` setting (``TORCH_CACHING_PRECOMPILE=1``); the JSON records each
  attempt's outcome (seconds, or the error torch raised).

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


def child(algo: str, seeds: int, compile: bool, save_artifacts: str = "", load_artifacts: str = "") -> dict:
    """In the child process: first-call and steady seconds per piece of ``algo``'s update."""
    import torch

    if load_artifacts:
        with open(load_artifacts, "rb") as f:
            torch.compiler.load_cache_artifacts(f.read())

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
    if save_artifacts:
        data, _ = torch.compiler.save_cache_artifacts()
        Path(save_artifacts).write_bytes(data)
    return {"first_update_s": first_update, "steady_update_s": steady_update, "pieces": pieces}


def probe_aot(algo: str, seeds: int) -> dict:
    """In the child process: try ``aot_compile`` + ``save_compiled_function`` on each piece's first call."""
    import torch

    import funrl
    from funrl import random as jr
    from funrl.algorithms import DEFAULT_ENVS, get
    from funrl.algorithms.common import Driver, in_dims_of, stack_steps

    torch.set_num_threads(1)
    module = get(algo)
    env, env_params = funrl.envs.make(DEFAULT_ENVS[algo])
    outcome: dict[str, str] = {}

    def probing_make_algorithm(config, env, env_params, lift):
        def probing_lift(fn):
            piece = lift(fn)
            if fn is stack_steps:
                return piece

            def run(*args):
                if fn.__name__ not in outcome:
                    t = time.perf_counter()
                    try:
                        compiled = torch.compile(torch.func.vmap(fn, in_dims=in_dims_of(fn)), fullgraph=True)
                        aot = compiled.aot_compile((args, {}))
                        aot.save_compiled_function(str(Path(tempfile.gettempdir()) / f"funrl_aot_{os.getpid()}.bin"))
                        outcome[fn.__name__] = f"ok in {time.perf_counter() - t:.1f} s"
                    except Exception as e:  # the point is to record what torch says
                        outcome[fn.__name__] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                return piece(*args)

            return run

        return module.make_algorithm(config, env, env_params, lift=probing_lift)

    driver = Driver(probing_make_algorithm, module.Config(), env, env_params, compile=False)
    driver.run(driver.init(jr.split(jr.key(0), seeds)), num_updates=1)
    return outcome


def run_cell(algo: str, seeds: int, cache_dir: str, compile: bool, *extra: str, environ: dict | None = None) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir, OMP_NUM_THREADS="1", **(environ or {}))
    cmd = [sys.executable, __file__, "--child", "--algo", algo, "--seeds", str(seeds), *extra]
    cmd += [] if compile else ["--quick"]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1][:300] if lines else f"exit {out.returncode}",
                "process_wall_s": time.perf_counter() - t}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="ppo", help="algorithm (default ppo, on its default env)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 8, the main job's; --quick: 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: eager pieces (nothing compiles)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--save-artifacts", default="", help=argparse.SUPPRESS)
    ap.add_argument("--load-artifacts", default="", help=argparse.SUPPRESS)
    ap.add_argument("--probe-aot", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/compile_time.json)")
    args = ap.parse_args(argv)
    if args.seeds is None:
        args.seeds = 2 if args.quick else 8
    if args.seeds < 1:
        ap.error(f"--seeds: expected an int >= 1, got {args.seeds}")
    if args.child and args.probe_aot:
        print(json.dumps({"aot_compile": probe_aot(args.algo, args.seeds)}))
        return {}
    if args.child:
        print(json.dumps(child(args.algo, args.seeds, not args.quick, args.save_artifacts, args.load_artifacts)))
        return {}
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from transfer import machine

    load = os.getloadavg()
    compiled = not args.quick
    extra: dict = {}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as fresh:
        blob = str(Path(fresh) / "artifacts.bin")
        cold = run_cell(args.algo, args.seeds, cache, compiled, *(["--save-artifacts", blob] if compiled else []))
        warm = run_cell(args.algo, args.seeds, cache, compiled)
        if compiled:
            extra["artifacts_bytes"] = os.path.getsize(blob)
            extra["portable"] = run_cell(args.algo, args.seeds, str(Path(fresh) / "empty"), True, "--load-artifacts", blob)
            extra["precompile"] = {
                **run_cell(args.algo, args.seeds, cache, False, "--probe-aot"),
                "caching_precompile": run_cell(args.algo, args.seeds, str(Path(fresh) / "pre"), True,
                                               environ={"TORCH_CACHING_PRECOMPILE": "1"}),
            }
    result = {"benchmark": "compile_time", "algo": args.algo, "seeds": args.seeds, "compiled": compiled,
              "machine": machine(1), "load_average_before": list(load), "load_average_after": list(os.getloadavg()),
              "torch": torch.__version__, "cold": cold, "warm": warm, **extra}
    for name in cold["pieces"]:
        c, w = cold["pieces"][name], warm["pieces"].get(name, {})
        print(f"{name:28} cold {c['compile_s']:6.1f} s   warm {w.get('compile_s', float('nan')):6.1f} s   "
              f"steady {c['steady_call_s'] * 1e3:8.2f} ms x {c['calls_per_update']}/update")
    print(f"first update (all compiles): cold {cold['first_update_s']:.1f} s, warm {warm['first_update_s']:.1f} s; "
          f"process wall cold {cold['process_wall_s']:.1f} s, warm {warm['process_wall_s']:.1f} s")
    if compiled:
        port = extra["portable"]
        print(f"portable artifacts ({extra['artifacts_bytes'] / 1e6:.1f} MB) into an empty cache: first update "
              f"{port.get('first_update_s', float('nan')):.1f} s {port.get('error', '')}")
        for name, what in extra["precompile"].get("aot_compile", {}).items():
            print(f"aot_compile {name}: {what}")
        pre = extra["precompile"]["caching_precompile"]
        print(f"caching_precompile: {pre.get('error') or 'first update %.1f s' % pre['first_update_s']}")
    out = args.out or RESULTS / ("compile_time_quick.json" if args.quick else "compile_time.json")
    from funrl.checkpoint import write_json_atomic

    write_json_atomic(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
