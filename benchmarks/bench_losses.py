"""Backward recursions over time: funrl's GAE and lambda-returns vs loops over time.

Workload: 64 seeds x 16 envs = 1024 sequences of T = 128 steps (float32, ~2%
episode ends).  Each estimator is computed by

* ``funrl``: ``torch.func.vmap`` of :func:`funrl.losses.multistep.truncated_generalized_advantage_estimation`
  / ``lambda_returns`` over the env axis of ``(T, N)`` tensors, as funrl's PPO
  and A2C call it (recursive doubling: ``ceil(log2 T)`` shifted products);
  ``funrl_NT``: the same on sequence-major ``(N, T)`` tensors (``in_dims=0``);
* ``cleanrl_loop``: CleanRL's backward Python loop over ``t`` on ``(T, N)`` tensors
  (what PPO implementations write by hand);
* ``rlax_loop``: a Python loop over ``t`` inside the single-sequence function,
  vmapped over the ``N`` sequences (rlax's definition, run through vmap);
* ``matrix``: the dense closed form ``G = M @ a`` with ``M[t, s] = prod_{k=t}^{s-1} b_k``
  built by a cumulative product over a ``(T, T+1)`` matrix per sequence
  (batched natively, no vmap).

each eager and under ``funrl.jit`` (Inductor), except ``rlax_loop``, whose
compile is the same unrolled graph as ``cleanrl_loop``'s; funrl's scan is also
compiled with Inductor's default ``realize_opcount_threshold`` (30; funrl.jit
uses 4, tuned for the integer RNG).  Compiles use a fresh Inductor cache.  Compile time (first
call) is reported separately from the steady-state time; a trivial function is
compiled first so one-off compiler start-up is not charged to the first method.
Every output is checked against the eager CleanRL loop.

Run ``python benchmarks/bench_losses.py`` (``--quick`` for a smoke run at tiny
sizes; ``--no-compile`` for eager only; ``--skip-compiled-loop`` to skip the
minutes-long compile of the unrolled loop).  Results go to
``benchmarks/results/bench_losses.json`` (``bench_losses_quick.json`` with
``--quick``).  torch uses ``--threads`` threads (default 1: on a shared 2-core
machine more threads only add contention to these small kernels).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import tempfile

# Cold compile times: a fresh Inductor cache, so earlier runs' cached kernels do
# not make a compile look instant (set TORCHINDUCTOR_CACHE_DIR to override).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench_losses_inductor_"))

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from funrl import jit  # noqa: E402
from funrl.checkpoint import write_json_atomic  # noqa: E402
from funrl.losses import multistep  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_losses.json"
GAMMA, LAMBDA = 0.99, 0.95


# ----------------------------------------------------------------------------- candidates
def cleanrl_gae(r, d, values):
    """CleanRL-style: ``(T, N)`` tensors, backward loop over t."""
    steps = r.shape[0]
    adv, last = [], torch.zeros_like(r[0])
    for t in reversed(range(steps)):
        delta = r[t] + d[t] * values[t + 1] - values[t]
        last = delta + d[t] * LAMBDA * last
        adv.append(last)
    return torch.stack(adv[::-1])


def cleanrl_lambda_returns(r, d, v):
    steps = r.shape[0]
    out, g = [], v[-1]
    for t in reversed(range(steps)):
        g = r[t] + d[t] * ((1 - LAMBDA) * v[t] + LAMBDA * g)
        out.append(g)
    return torch.stack(out[::-1])


def funrl_gae(r, d, values):
    f = torch.func.vmap(multistep.truncated_generalized_advantage_estimation, in_dims=(1, 1, None, 1), out_dims=1)
    return f(r, d, LAMBDA, values)


def funrl_lambda_returns(r, d, v):
    f = torch.func.vmap(multistep.lambda_returns, in_dims=(1, 1, 1, None), out_dims=1)
    return f(r, d, v, LAMBDA)


def funrl_gae_nt(r, d, values):
    """Sequence-major ``(N, T)`` inputs (``in_dims=0``), rlax's usual layout."""
    return torch.func.vmap(multistep.truncated_generalized_advantage_estimation, in_dims=(0, 0, None, 0))(
        r, d, LAMBDA, values)


def funrl_lambda_returns_nt(r, d, v):
    return torch.func.vmap(multistep.lambda_returns, in_dims=(0, 0, 0, None))(r, d, v, LAMBDA)


def _rlax_loop_recursion(a, b, bootstrap):
    g, out = bootstrap, []
    for t in reversed(range(a.shape[-1])):
        g = a[t] + b[t] * g
        out.append(g)
    return torch.stack(out[::-1])


def rlax_loop_gae(r, d, values):
    def one(r, d, values):
        delta = r + d * values[1:] - values[:-1]
        return _rlax_loop_recursion(delta, d * LAMBDA, torch.zeros_like(r[0]))

    return torch.func.vmap(one, in_dims=(1, 1, 1), out_dims=1)(r, d, values)


def rlax_loop_lambda_returns(r, d, v):
    def one(r, d, v):
        return _rlax_loop_recursion(r + d * (1 - LAMBDA) * v, d * LAMBDA, v[-1])

    return torch.func.vmap(one, in_dims=(1, 1, 1), out_dims=1)(r, d, v)


def _matrix_recursion(a, b, bootstrap):
    """``G = M @ [a, bootstrap]`` per column of ``(T, N)`` inputs (no logs: zeros stay exact)."""
    steps = a.shape[0]
    a, b = a.T, b.T  # (N, T)
    idx = torch.arange(steps, device=a.device)
    upper = (idx[None, :] >= idx[:, None]).to(a.dtype)  # [t, k] = k >= t
    x = b[:, None, :] * upper + (1 - upper)  # b_k where k >= t, else 1
    m = torch.nn.functional.pad(torch.cumprod(x, dim=-1), (1, 0), value=1.0)  # exclusive products (N, T, T+1)
    m = m * torch.nn.functional.pad(upper, (0, 1), value=1.0)
    a_ext = torch.cat([a, bootstrap.T.reshape(-1, 1)], dim=-1)
    return torch.einsum("nts,ns->nt", m, a_ext).T


def matrix_gae(r, d, values):
    delta = r + d * values[1:] - values[:-1]
    return _matrix_recursion(delta, d * LAMBDA, torch.zeros_like(r[:1]))


def matrix_lambda_returns(r, d, v):
    return _matrix_recursion(r + d * (1 - LAMBDA) * v, d * LAMBDA, v[-1:])


METHODS = {
    "gae": {"funrl": funrl_gae, "funrl_NT": funrl_gae_nt, "cleanrl_loop": cleanrl_gae, "rlax_loop": rlax_loop_gae,
            "matrix": matrix_gae},
    "lambda_returns": {
        "funrl": funrl_lambda_returns,
        "funrl_NT": funrl_lambda_returns_nt,
        "cleanrl_loop": cleanrl_lambda_returns,
        "rlax_loop": rlax_loop_lambda_returns,
        "matrix": matrix_lambda_returns,
    },
}
NO_COMPILE = {"rlax_loop"}  # same unrolled graph as cleanrl_loop under compile
# funrl.jit sets realize_opcount_threshold=4 (good for funrl's integer RNG);
# Inductor's own default is 30.  The doubling scan is measured under both.
INDUCTOR_DEFAULTS = {"realize_opcount_threshold": 30}


# ----------------------------------------------------------------------------- harness
def make_inputs(n: int, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(steps, n, generator=g)
    d = GAMMA * (torch.rand(steps, n, generator=g) > 0.02).float()
    values = torch.randn(steps + 1, n, generator=g)
    return r, d, values


def time_ms(fn, args, reps: int, rounds: int = 5) -> float:
    """Best over ``rounds`` of the mean over ``reps`` calls (the machine is shared and noisy)."""
    fn(*args)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--skip-compiled-loop", action="store_true", help="skip compiling the unrolled loop over T")
    p.add_argument("--out", type=str, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.envs, args.steps, args.reps = 2, 4, 8, 2
    torch.set_num_threads(args.threads)
    n = args.seeds * args.envs
    default_out = RESULTS.with_name("bench_losses_quick.json") if args.quick else RESULTS
    out_path = Path(args.out) if args.out else default_out

    r, d, values = make_inputs(n, args.steps)
    inputs = {"gae": (r, d, values), "lambda_returns": (r, d, values[1:])}
    print(f"{args.seeds} seeds x {args.envs} envs = {n} sequences, T = {args.steps}, float32, "
          f"torch {torch.__version__}, {args.threads} thread(s)")

    warmup_s = None
    if not args.no_compile:
        start = time.perf_counter()
        jit(lambda x: x * 2 + 1)(torch.zeros(3))
        warmup_s = time.perf_counter() - start
        print(f"compiler start-up (a trivial function): {warmup_s:.1f} s")

    rows = []
    for est, methods in METHODS.items():
        reference = methods["cleanrl_loop"](*inputs[est])
        for name, fn in methods.items():
            nt = name.endswith("_NT")
            est_args = tuple(x.T.contiguous() for x in inputs[est]) if nt else inputs[est]
            modes = ["eager"]
            skip_loop = name == "cleanrl_loop" and args.skip_compiled_loop
            if not args.no_compile and name not in NO_COMPILE and not skip_loop:
                modes.append("compiled")
                if name.startswith("funrl"):
                    modes.append("compiled_inductor_defaults")
            for mode in modes:
                compile_s = None
                f = fn
                if mode.startswith("compiled"):
                    f = jit(fn, options=INDUCTOR_DEFAULTS if mode == "compiled_inductor_defaults" else None)
                    start = time.perf_counter()
                    f(*est_args)
                    compile_s = time.perf_counter() - start
                out = f(*est_args)
                err = float(((out.T if nt else out) - reference).abs().max())
                ms = time_ms(f, est_args, args.reps if name != "matrix" else max(1, args.reps // 5))
                rows.append(dict(estimator=est, method=name, mode=mode, ms=ms, compile_s=compile_s, max_abs_err=err))
                extra = f", compile {compile_s:.1f} s" if compile_s is not None else ""
                print(f"  {est:15s} {name:13s} {mode:26s} {ms:9.3f} ms  (max |err| {err:.1e}{extra})", flush=True)

    # Side-by-side ratios against the hand-written loop (eager), the usual baseline.
    print("\nspeed-up over the eager CleanRL loop (x); compile time at this T")
    for est in METHODS:
        base = next(x["ms"] for x in rows
                    if x["estimator"] == est and x["method"] == "cleanrl_loop" and x["mode"] == "eager")
        for x in rows:
            if x["estimator"] == est:
                x["speedup_vs_cleanrl_eager"] = base / x["ms"]
                c = f"{x['compile_s']:.1f} s" if x["compile_s"] is not None else "-"
                print(f"  {est:15s} {x['method']:13s} {x['mode']:26s} {base / x['ms']:8.2f}x   compile {c}")

    result = dict(
        benchmark="bench_losses",
        config=dict(seeds=args.seeds, envs=args.envs, sequences=n, steps=args.steps, dtype="float32", gamma=GAMMA,
                    lambda_=LAMBDA, threads=args.threads, reps=args.reps, quick=args.quick),
        environment=dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                         cpu_count=os.cpu_count(),
                         load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None),
        compiler_startup_s=warmup_s,
        results=rows,
    )
    write_json_atomic(out_path, result)
    print(f"\nwrote {out_path}")
    return result


if __name__ == "__main__":
    main()
