"""funrl.random vs torch's global generator: samples/s and compile time.

Run:  python benchmarks/bench_random.py [--quick] [--threads 2]

Measures, in one process:
  * uniform and normal, 1e6 float32 samples: funrl eager, funrl compiled (funrl.jit),
    torch.rand / torch.randn — time per call and the ratio to torch;
  * compile time of one function drawing uniform, normal and categorical samples from
    split keys (the shape of an RL rollout step), and of the 1e6-sample samplers.
Writes benchmarks/results/bench_random.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

import funrl
from funrl import random as fr
from funrl.checkpoint import write_json_atomic


def timeit(fn, repeat: int) -> float:
    """Best-of-3 mean seconds per call over ``repeat`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_random.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = 10_000 if args.quick else 1_000_000
    repeat = 3 if args.quick else 20
    k = fr.key(0)
    gen = torch.Generator().manual_seed(0)

    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "torch": torch.__version__,
        "threads": args.threads,
        "n": n,
        "python": sys.version.split()[0],
    }

    # compile time of a rollout-like sampler: split + uniform + normal + categorical
    t0 = time.perf_counter()
    funrl.jit(lambda x: x * 2 + 1)(torch.ones(4))
    results["first_compile_in_process_s"] = time.perf_counter() - t0

    def step_like(key):
        k1, k2, k3 = fr.split(key, 3)
        return fr.uniform(k1, (64,)), fr.normal(k2, (64,)), fr.categorical(k3, torch.zeros(64, 4))

    t0 = time.perf_counter()
    funrl.jit(step_like)(k)
    results["compile_uniform_normal_categorical_s"] = time.perf_counter() - t0

    rows = []
    for name, funrl_fn, torch_fn in [
        ("uniform", lambda key: fr.uniform(key, (n,)), lambda: torch.rand(n, generator=gen)),
        ("normal", lambda key: fr.normal(key, (n,)), lambda: torch.randn(n, generator=gen)),
    ]:
        compiled = funrl.jit(funrl_fn)
        t0 = time.perf_counter()
        compiled(k)
        compile_s = time.perf_counter() - t0
        t_eager = timeit(lambda: funrl_fn(k), max(1, repeat // 4))
        t_comp = timeit(lambda: compiled(k), repeat)
        t_torch = timeit(torch_fn, repeat)
        row = {
            "sampler": name,
            "funrl_eager_ms": t_eager * 1e3,
            "funrl_compiled_ms": t_comp * 1e3,
            "torch_global_rng_ms": t_torch * 1e3,
            "compiled_samples_per_s": n / t_comp,
            "compiled_speedup_vs_torch": t_torch / t_comp,
            "eager_speedup_vs_torch": t_torch / t_eager,
            "compile_s": compile_s,
        }
        rows.append(row)
    results["rows"] = rows

    print(f"funrl.random vs torch ({results['machine']}, torch {torch.__version__}, {args.threads} threads, n={n})")
    print(f"first torch.compile in a process (Inductor warm-up): {results['first_compile_in_process_s']:.1f} s")
    print(f"compile of split + uniform + normal + categorical:  {results['compile_uniform_normal_categorical_s']:.1f} s")
    print(f"{'sampler':8} {'eager ms':>10} {'compiled ms':>12} {'torch ms':>10} {'compiled/torch':>15} {'compile s':>10}")
    for r in rows:
        print(
            f"{r['sampler']:8} {r['funrl_eager_ms']:10.2f} {r['funrl_compiled_ms']:12.3f} "
            f"{r['torch_global_rng_ms']:10.3f} {r['compiled_speedup_vs_torch']:14.2f}x {r['compile_s']:10.1f}"
        )
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
