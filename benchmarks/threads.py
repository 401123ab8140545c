"""The main job by processes x threads, on a quiet machine and beside one competing CPU-bound process.

Issue 16 item 1: a busy machine must slow funrl down in proportion, not 20-50x.
Issue 13 item 5: one process with 2 threads against 2 processes x 1 thread
(``funrl train --processes``, funrl's torchrun path), at 8 and 64 seeds; the
faster is what ``funrl train`` does by default (``--processes auto``).
Each cell runs ``funrl train`` (PPO, CartPole-v1, compiled) in a fresh
process and reads its summary.json; "loaded" cells start one busy Python
loop first (it exits with the benchmark) and stop it afterwards.

    python benchmarks/threads.py [--total-steps 500000] [--seeds-64-steps 100000] [--loaded-2-steps 50000]
                                 [--no-loaded] [--out results/threads.json]

8 seeds run the main job (500k steps per seed); 64 seeds a shorter run
(``--seeds-64-steps``).  Every (processes, threads, seeds) shape is compiled
first by a short warm-up run, so the timed cells find Inductor's on-disk
caches warm, as a user's second run does (a cell that compiles cold pays
about a minute more; the warm-up walls are in the JSON).  2 threads under load run a shorter job
(``--loaded-2-steps``): at its collapsed rate the full job takes far too long;
compare env-steps/s, not wall time, for that cell.  ``process_wall_s`` is the
whole command (start-up, compile, training, writing results).
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

import torch

sys.path.insert(0, str(Path(__file__).parent))
from transfer import machine  # noqa: E402 - the machine description every benchmark records

RESULTS = Path(__file__).parent / "results"


def warm_up(processes: int, threads: int, seeds: int, workdir: str) -> float:
    """A one-chunk run of the same shapes, so that the timed cell finds Inductor's caches warm (a user's second run)."""
    out = os.path.join(workdir, f"warmup-p{processes}-t{threads}-s{seeds}")
    cmd = [sys.executable, "-m", "funrl", "train", "--seeds", str(seeds), "--total-steps", str(512 * 10), "--out", out,
           "--no-progress", "--no-plot", "--processes", str(processes), "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FUNRL_PROCESSES")}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    print(f"warm-up {processes} proc x {threads} thr, seeds {seeds}: {wall:.1f} s (compile included)", flush=True)
    return wall


def run_cell(processes: int, threads: int, seeds: int, steps: int, loaded: bool, workdir: str) -> dict:
    out = os.path.join(workdir, f"p{processes}-t{threads}-s{seeds}-{'loaded' if loaded else 'alone'}-{steps}")
    cmd = [sys.executable, "-m", "funrl", "train", "--seeds", str(seeds), "--total-steps", str(steps), "--out", out,
           "--no-progress", "--no-plot", "--processes", str(processes), "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "FUNRL_PROCESSES")}
    # the busy process exits with this one (a killed benchmark once left its busy process running,
    # and every later measurement on the machine was "loaded" without saying so)
    hog_code = f"import os, time\nwhile os.getppid() == {os.getpid()}:\n    for _ in range(10**6): pass\n"
    hog = subprocess.Popen([sys.executable, "-c", hog_code]) if loaded else None
    try:
        time.sleep(1.0 if loaded else 0.0)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    s = json.load(open(os.path.join(out, "summary.json")))
    row = {"processes": s.get("processes", 1), "threads": s["threads"], "loaded": loaded, "seeds": s["seeds"],
           "env_steps_per_seed": steps, "process_wall_s": wall, "train_wall_s": s["wall_time_s"], "sps": s["sps"],
           "iqm": s["iqm"], "load_average_at_start": load}
    print(f"{row['processes']} proc x {row['threads']} thr  {'loaded' if loaded else 'alone ':6}  seeds {seeds:>2}  "
          f"steps/seed {steps:>7,}  wall {wall:6.1f} s  {row['sps']:>9,.0f} env-steps/s  IQM {row['iqm']:.1f}",
          flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-steps", type=int, default=500_000, help="env steps per seed at 8 seeds (the main job: 500k)")
    ap.add_argument("--seeds-64-steps", type=int, default=100_000, help="env steps per seed at 64 seeds")
    ap.add_argument("--loaded-2-steps", type=int, default=50_000,
                    help="steps per seed for 2 threads under load (0: leave that cell out)")
    ap.add_argument("--no-loaded", action="store_true", help="leave out the cells beside a busy process")
    ap.add_argument("--out", type=Path, default=RESULTS / "threads.json")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, load average {load[0]:.2f}", flush=True)
    main_job = args.total_steps
    with tempfile.TemporaryDirectory() as d:
        # every shape compiled once first: the timed cells compare training, not who paid the cold compile
        warmups = {f"p{p}t{t}s{s}": warm_up(p, t, s, d) for p, t, s in
                   [(1, 1, 8), (2, 1, 8), (1, 2, 8), (1, 1, 64), (2, 1, 64), (1, 2, 64)]}
        cells = {
            "p1t1": run_cell(1, 1, 8, main_job, False, d),
            "p2t1": run_cell(2, 1, 8, main_job, False, d),
            "p1t2": run_cell(1, 2, 8, main_job, False, d),
            "s64_p1t1": run_cell(1, 1, 64, args.seeds_64_steps, False, d),
            "s64_p2t1": run_cell(2, 1, 64, args.seeds_64_steps, False, d),
            "s64_p1t2": run_cell(1, 2, 64, args.seeds_64_steps, False, d),
        }
        if not args.no_loaded:
            cells["p1t1_loaded"] = run_cell(1, 1, 8, main_job, True, d)
            cells["p2t1_loaded"] = run_cell(2, 1, 8, main_job, True, d)
            if args.loaded_2_steps:
                cells["p1t2_loaded"] = run_cell(1, 2, 8, args.loaded_2_steps, True, d)
    sps = {k: r["sps"] for k, r in cells.items()}
    result = {
        "benchmark": "threads",
        "machine": machine(1),
        "load_average_before": list(load),
        "rows": list(cells.values()),
        "two_processes_vs_one_thread_8_seeds": sps["p2t1"] / sps["p1t1"],
        "two_processes_vs_two_threads_8_seeds": sps["p2t1"] / sps["p1t2"],
        "two_processes_vs_one_thread_64_seeds": sps["s64_p2t1"] / sps["s64_p1t1"],
        "two_processes_vs_two_threads_64_seeds": sps["s64_p2t1"] / sps["s64_p1t2"],
        "warmup_wall_s": warmups,
        "slowdown_under_load": {k: sps[k] / sps[f"{k}_loaded"] for k in ("p1t1", "p2t1", "p1t2") if f"{k}_loaded" in sps},
        "load_average_after": list(os.getloadavg()),
    }
    print(f"8 seeds: 2 processes x 1 thread run {result['two_processes_vs_one_thread_8_seeds']:.2f}x one 1-thread "
          f"process, {result['two_processes_vs_two_threads_8_seeds']:.2f}x one 2-thread process; 64 seeds: "
          f"{result['two_processes_vs_one_thread_64_seeds']:.2f}x and {result['two_processes_vs_two_threads_64_seeds']:.2f}x")
    if result["slowdown_under_load"]:
        print("slower beside one busy process: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["slowdown_under_load"].items()))
    from funrl.checkpoint import write_json_atomic

    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
