"""The main job on a quiet machine and beside one competing CPU-bound process, by thread count.

Issue 16 item 1: a busy machine must slow funrl down in proportion, not 20-50x.
Each cell runs ``funrl train`` (PPO, CartPole-v1, 8 seeds, compiled; the main
job) in a fresh process and reads its summary.json; "loaded" cells start one
``python -c 'while True: pass'`` first and stop it afterwards.

    python benchmarks/threads.py [--total-steps 500000] [--loaded-2-steps 50000] [--out results/threads.json]

The default (1 thread, see funrl.threads) is compared with 2 threads (torch's
own default on 2 cores).  2 threads under load run a shorter job
(``--loaded-2-steps``): at its collapsed rate the full job takes far too long;
compare env-steps/s, not wall time, for that cell.
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


def run_cell(threads: int | None, steps: int, loaded: bool, workdir: str) -> dict:
    out = os.path.join(workdir, f"t{threads}-{'loaded' if loaded else 'alone'}-{steps}")
    cmd = [sys.executable, "-m", "funrl", "train", "--total-steps", str(steps), "--out", out,
           "--no-progress", "--no-plot"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the CLI's own default decides
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
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
    row = {"threads": s["threads"], "loaded": loaded, "env_steps_per_seed": steps, "seeds": s["seeds"],
           "process_wall_s": wall, "train_wall_s": s["wall_time_s"], "sps": s["sps"], "iqm": s["iqm"],
           "load_average_at_start": load}
    print(f"threads {row['threads']}  {'loaded' if loaded else 'alone ':6}  steps/seed {steps:>7,}  "
          f"wall {wall:6.1f} s  {row['sps']:>9,.0f} env-steps/s  IQM {row['iqm']:.1f}", flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total-steps", type=int, default=500_000, help="env steps per seed (the main job: 500k)")
    ap.add_argument("--loaded-2-steps", type=int, default=50_000, help="steps per seed for 2 threads under load")
    ap.add_argument("--out", type=Path, default=RESULTS / "threads.json")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, load average {load[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        rows = [
            run_cell(None, args.total_steps, False, d),  # the default
            run_cell(None, args.total_steps, True, d),
            run_cell(2, args.total_steps, False, d),
            run_cell(2, args.loaded_2_steps, True, d),
        ]
    alone, loaded = rows[0]["sps"], rows[1]["sps"]
    two_alone, two_loaded = rows[2]["sps"], rows[3]["sps"]
    result = {
        "benchmark": "threads",
        "machine": machine(1),
        "load_average_before": list(load),
        "rows": rows,
        "default_slowdown_under_load": alone / loaded,
        "two_threads_slowdown_under_load": two_alone / two_loaded,
        "two_threads_vs_one_alone": two_alone / alone,
    }
    print(f"default (1 thread): {alone / loaded:.2f}x slower beside one busy process; "
          f"2 threads: {two_alone / two_loaded:.1f}x slower; alone, 2 threads run {two_alone / alone:.2f}x the speed of 1")
    from funrl.checkpoint import write_json_atomic

    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
