"""RL fine-tuning of a transformer from scratch on random-walks: pretraining, then GRPO / RLOO / PPO, 8 seeds at once.

Each row is one ``funrl.run`` (one vmapped run of ``--seeds`` seeds, eager:
see ``COMPILE`` in ``funrl/algorithms/lm_common.py``) of the whole pipeline:
supervised pretraining on random walks (``pretrain_steps`` Adam steps), then
RL with a KL penalty to the pretrained model.  Reported per row:

* ``pretrained``: reward IQM [95% CI] over seeds at the end of pretraining (the
  mean reward of the completions sampled right after the last pretraining step);
* ``final``: reward IQM [95% CI] over seeds at the end of RL (the run's summary:
  mean over the last 5% of updates of completions sampled at temperature 1) and
  ``greedy``: the greedy completions' reward (``funrl eval``, 64 prompts per seed);
* ``kl``: mean per-token k3 estimate of KL(policy || reference) over the last
  5 updates, in nats per real completion token, and ``kl_per_sequence`` (nats
  per completion: per token x mean length);
* ``trainable_fraction``: trainable params in RL / all params (LoRA rows);
* ``wall_s``: the whole row (pretraining + RL), one process.

Targets (issue 12): pretrained IQM <= 0.85, final IQM >= 0.95, KL <= 0.2 nats
per token at beta = 0.02, LoRA with <= 10% trainable >= 0.95, the 8-seed
pipeline <= 5 minutes on a 2-core CPU.

Then sampling throughput (completion tokens per second, ``funrl.lm.sample`` of
the default model, vmapped over 8 seeds x 64 prompts): with and without the KV
cache, eager and compiled (Inductor).

``--quick``: 2 seeds, a tiny model, a few updates, no throughput compile (a
smoke run).  Writes ``benchmarks/results/lm.json`` (``lm_quick.json`` with
``--quick``, or ``--out``) atomically with the machine.  Not run in CI; only
``--quick`` is smoke-tested.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import machine  # noqa: E402  (one definition of "where the numbers were measured")

from funrl.checkpoint import write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

#: row name -> (algorithm, config overrides)
ROWS = {
    "grpo": ("grpo", {}),
    "grpo-lora": ("grpo", {"lora_rank": 4, "learning_rate": 2e-3}),
    "rloo": ("rloo", {}),
    "ppo_lm": ("ppo_lm", {}),
}
QUICK = {"d_model": 16, "n_heads": 2, "n_layers": 1, "num_prompts": 2, "group_size": 4, "pretrain_steps": 4,
         "pretrain_steps_per_update": 2, "total_timesteps": 16}


def iqm_ci(values) -> dict:
    from funrl import stats

    s = stats.summarize(torch.as_tensor(values, dtype=torch.float64).numpy())
    return {"iqm": s["iqm"], "ci_low": s["ci_low"], "ci_high": s["ci_high"], "per_seed": [float(v) for v in values]}


def run_row(name: str, seeds: int, quick: bool, runs_dir: str) -> dict:
    import funrl
    from funrl import tree
    from funrl.evaluation import evaluate_run

    algo, overrides = ROWS[name]
    config = {**overrides, **(QUICK if quick else {})}
    t0 = time.perf_counter()
    result = funrl.run(algo, env="random-walks", seeds=seeds, out=os.path.join(runs_dir, name), progress=not quick,
                       plot=False, chunk_size=10, **config)
    wall = time.perf_counter() - t0
    m = result["metrics"]
    pre = m["phase"][0] == 0  # metrics: [seeds, updates]
    last_pre = int(pre.nonzero().max()) if pre.any() else None
    state = result["state"]
    n_all = sum(x[0].numel() for x in tree.leaves(state.params))
    n_rl = (sum(x[0].numel() for x in tree.leaves(state.adapters)) if config.get("lora_rank") else n_all)
    kl_token = m["kl"][:, -5:].mean(1)
    greedy = evaluate_run(result["out"], episodes=64)
    return {
        "name": name,
        "algo": algo,
        "config": config,
        "seeds": seeds,
        "updates": int(m["phase"].shape[1]),
        "pretrained": iqm_ci(m["episode_return"][:, last_pre].tolist()) if last_pre is not None else None,
        "final": {k: result["summary"][k] for k in ("iqm", "ci_low", "ci_high")} | {
            "per_seed": result["summary"]["per_seed_final_return"]},
        "greedy": {k: greedy["summary"][k] for k in ("iqm", "ci_low", "ci_high")},
        "kl": float(kl_token.mean()),
        "kl_per_sequence": float((kl_token * m["episode_length"][:, -5:].mean(1)).mean()),
        "trainable_params": n_rl,
        "params": n_all,
        "trainable_fraction": n_rl / n_all,
        "wall_s": wall,
    }


def _sampler(quick: bool):
    """The default model (tiny with ``--quick``), params of S seeds, B random-walk prompts, and ``draw``."""
    import funrl
    from funrl import random as jr
    from funrl.lm import sample, tasks

    task = tasks.make("random-walks")
    kw = QUICK if quick else {}
    model = funrl.nn.transformer(vocab_size=task.vocab_size, max_len=task.prompt_len + task.max_new_tokens,
                                 d_model=kw.get("d_model", 64), n_heads=kw.get("n_heads", 4),
                                 n_layers=kw.get("n_layers", 2))
    S, B, L = (2, 8, task.max_new_tokens) if quick else (8, 64, task.max_new_tokens)
    params = torch.func.vmap(model.init)(jr.split(jr.key(0), S))
    prompts, mask = task.prompts(jr.key(1), B)

    def draw(keys, p, use_cache):
        f = lambda k, pp: sample(k, model, pp, prompts, mask, L, 1.0, task.eos_id, task.pad_id,  # noqa: E731
                                 use_cache=use_cache)
        return torch.func.vmap(f)(keys, p)

    return params, (S, B, L), draw


def time_sampling(quick: bool, use_cache: bool, mode: str) -> dict:
    """One throughput row: the first call (compile included) and the mean of the next calls."""
    from funrl import random as jr

    params, (S, B, L), draw = _sampler(quick)
    fn = (lambda k, p: draw(k, p, use_cache)) if mode == "eager" else torch.compile(
        lambda k, p: draw(k, p, use_cache))
    row = {"cache": use_cache, "mode": mode, "seeds": S, "prompts": B, "new_tokens": L}
    t0 = time.perf_counter()
    fn(jr.split(jr.key(2), S), params)
    row["first_call_s"] = time.perf_counter() - t0
    reps = 3 if quick else 20
    t0 = time.perf_counter()
    for i in range(reps):
        out = fn(jr.split(jr.key(3 + i), S), params)
    dt = (time.perf_counter() - t0) / reps
    row.update(call_s=dt, tokens_per_s=S * B * L / dt, real_tokens_per_s=float(out.mask.sum()) / dt)
    return row


def throughput(quick: bool, threads: int, compile_timeout: float) -> list[dict]:
    """Completion tokens per second of funrl.lm.sample: cache vs no cache, eager vs compiled.

    Compiled rows run in a subprocess with a time limit (Inductor's compile of the
    unrolled decoding loop can take many minutes here); a row that does not finish
    records that instead of a number.
    """
    import json
    import subprocess

    rows = []
    for use_cache in (True, False):
        rows.append(time_sampling(quick, use_cache, "eager"))
        if quick:
            continue
        code = (f"import sys, json, torch; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                f"torch.set_num_threads({threads}); import lm; "
                f"print(json.dumps(lm.time_sampling(False, {use_cache}, 'compiled')))")
        try:
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=compile_timeout)
            if proc.returncode == 0:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                rows.append({"cache": use_cache, "mode": "compiled", "error": proc.stderr.strip().splitlines()[-1][:300]})
        except subprocess.TimeoutExpired:
            rows.append({"cache": use_cache, "mode": "compiled",
                         "error": f"compile did not finish within {compile_timeout:.0f} s (killed)"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, tiny model, a few updates (smoke run)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per row (default 8; 2 with --quick)")
    parser.add_argument("--rows", default=None, help=f"comma-separated rows of {', '.join(ROWS)} (default all; "
                        "grpo,grpo-lora with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-throughput", action="store_true", help="skip the sampling throughput table")
    parser.add_argument("--throughput-only", action="store_true", help="only the sampling throughput table")
    parser.add_argument("--compile-timeout", type=float, default=600.0,
                        help="seconds a compiled sampling row may take, compile included (default 600)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/lm.json)")
    parser.add_argument("--runs-dir", default=None, help="keep the results folders here (default: a temporary dir)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 8)
    if seeds < 1:
        parser.error(f"--seeds: expected an int >= 1, got {seeds}")
    if args.threads < 1:
        parser.error(f"--threads: expected an int >= 1, got {args.threads}")
    names = [r.strip() for r in (args.rows or ("grpo,grpo-lora" if args.quick else ",".join(ROWS))).split(",") if r.strip()]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r}; rows: {', '.join(ROWS)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / ("lm_quick.json" if args.quick else "lm.json")
    if args.throughput_only:  # keep the rows of the last full run, replace the sampling table
        import json

        previous = json.loads(out.read_text()) if out.exists() else {}
    load = os.getloadavg()
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="funrl-lm-")
    if args.throughput_only:
        names = []
    for name in names:  # import every row's algorithm now: editing the code during a long run must not break it
        importlib.import_module(f"funrl.algorithms.{ROWS[name][0]}")
    rows = []
    result = {
        "benchmark": "lm",
        "quick": args.quick,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(args.threads), "load_average_at_start": load},
        "task": "random-walks",
        "rows": rows,
        "sampling": [],
    }
    if args.throughput_only:
        rows.extend(previous.get("rows", []))
        result["rows_date"] = previous.get("date")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        row = run_row(name, seeds, args.quick, runs_dir)
        rows.append(row)
        write_json_atomic(str(out), result)  # after every row: a crash later keeps what was measured
        pre = row["pretrained"]
        print(f"{name:10} pretrained {pre['iqm']:.3f} [{pre['ci_low']:.3f}, {pre['ci_high']:.3f}]  "
              f"final {row['final']['iqm']:.3f} [{row['final']['ci_low']:.3f}, {row['final']['ci_high']:.3f}]  "
              f"greedy {row['greedy']['iqm']:.3f}  KL {row['kl']:.3f} nats/token ({row['kl_per_sequence']:.3f}/seq)  "
              f"trainable {100 * row['trainable_fraction']:.1f}%  {row['wall_s']:.0f} s", flush=True)
    sampling = result["sampling"] = [] if args.no_throughput else throughput(args.quick, args.threads,
                                                                                 args.compile_timeout)
    for r in sampling:
        shown = f"{r['tokens_per_s']:,.0f} tokens/s (first call {r['first_call_s']:.1f} s)" if "tokens_per_s" in r else r["error"]
        print(f"sample cache={r['cache']!s:5} {r['mode']:8} {shown}")
    result["machine"]["load_average_at_end"] = os.getloadavg()
    write_json_atomic(str(out), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
