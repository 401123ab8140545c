"""Does each funrl algorithm learn its task?  Many seeds in one vmapped, compiled run, against the issue's targets.

For every row: ``--seeds`` seeds (default 16) trained together by
``funrl.algorithms.common.Driver`` (``funrl.jit(vmap(piece))``), then scored
across seeds with the interquartile mean and a percentile-bootstrap 95% CI
(``funrl.stats.summarize``):

* return rows: each seed's final policy (greedy / mean action,
  ``module.evaluation_policy``) is evaluated for ``--episodes`` episodes with
  ``funrl.evaluation.evaluate_policy``; a seed's score is its mean episode
  return.  The training return at the end of the run
  (``funrl.results.final_returns``: mean ``episode_return`` over the last 5% of
  updates) is reported beside it.
* tabular rows: a seed's score is the exact discounted value, from the initial
  state, of the greedy policy of its final Q-table (the algorithm's
  ``greedy_value`` metric); the target is 99% of the optimal value, which
  ``funrl.dp.policy_iteration`` computes on the env's ``absorbing_tables()``.

A row is *met* when the IQM reaches the target; ``gap`` = IQM - target
(negative: missed by that much).

| row | task | budget (env steps per seed) | target |
|---|---|---|---|
| ppo | CartPole-v1 | 500k | >= 490 |
| dqn | CartPole-v1 | 500k | >= 480 |
| a2c | CartPole-v1 | 500k | >= 450 |
| reinforce | CartPole-v1 | 500k | >= 400 |
| ppo-acrobot | Acrobot-v1 | 500k | >= -90 |
| ddpg, td3, sac | Pendulum-v1 | 20k | >= -200 |
| q_learning, sarsa | FrozenLake-v1 (4x4, slippery) | the tabular Config's default | within 1% of optimal |

Algorithms whose module does not import are skipped with a note.  Budgets
scale with ``--steps-scale``; ``--max-updates`` stops each run early (a smoke
run: the schedules still follow the full budget).  ``--quick`` = 2 seeds,
scale 0.002, at most 2 updates, eager, 2 evaluation episodes.  Writes
``benchmarks/results/learning.json`` (``learning_quick.json`` with
``--quick``, or ``--out``), atomically, after every row: a run that is
stopped keeps the rows it finished.  Rows of an earlier run in that file that
this run does not redo are kept (each row records when and how it ran), so the
slow rows can be run one session at a time; ``--fresh`` starts the file over.
Not run in CI (the full run takes hours on 2 CPU cores); only ``--quick`` is
smoke-tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import torch

from funrl.checkpoint import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


class Row(NamedTuple):
    """One line of the table: an algorithm on a task with a budget and a target."""

    algo: str  #: funrl.algorithms name
    env_id: str
    budget: int | None  #: env steps per seed (None: the Config's default)
    target: float  #: IQM threshold (return rows) or relative tolerance to the optimum (tabular rows)
    kind: str  #: "return" or "dp"
    overrides: dict = {}


ROWS: dict[str, Row] = {
    "ppo": Row("ppo", "CartPole-v1", 500_000, 490.0, "return"),
    "dqn": Row("dqn", "CartPole-v1", 500_000, 480.0, "return"),
    "a2c": Row("a2c", "CartPole-v1", 500_000, 450.0, "return"),
    "reinforce": Row("reinforce", "CartPole-v1", 500_000, 400.0, "return"),
    "ppo-acrobot": Row("ppo", "Acrobot-v1", 500_000, -90.0, "return"),
    "ddpg": Row("ddpg", "Pendulum-v1", 20_000, -200.0, "return"),
    "td3": Row("td3", "Pendulum-v1", 20_000, -200.0, "return"),
    "sac": Row("sac", "Pendulum-v1", 20_000, -200.0, "return"),
    "q_learning": Row("tabular", "FrozenLake-v1", None, 0.01, "dp", {"method": "q_learning"}),
    "sarsa": Row("tabular", "FrozenLake-v1", None, 0.01, "dp", {"method": "sarsa"}),
}
ALIASES = {"all": list(ROWS), "tabular": ["q_learning", "sarsa"], "acrobot": ["ppo-acrobot"]}


def select_rows(text: str) -> list[str]:
    """Row names from a comma-separated ``--algos`` value (row names or aliases: all, tabular, acrobot)."""
    names = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part in ALIASES:
            names.extend(ALIASES[part])
        elif part in ROWS:
            names.append(part)
        else:
            raise ValueError(f"--algos: unknown row {part!r}; known: {', '.join(ROWS)} (aliases: {', '.join(ALIASES)})")
    return list(dict.fromkeys(names))


def _optimal_value(env, gamma: float) -> float:
    """Optimal discounted value from the initial-state distribution (policy iteration on the exact tables)."""
    from funrl import dp

    P, R = env.absorbing_tables()
    result = dp.policy_iteration(P, R, gamma)
    return float((env.initial_distribution.to(result.v) * result.v).sum())


def run_row(name: str, row: Row, args) -> dict:
    """Train ``args.seeds`` seeds of one row in one Driver and score them; a dict for the JSON."""
    import funrl
    from funrl import stats, tree
    from funrl import random as jr
    from funrl.algorithms import get
    from funrl.algorithms.common import Driver, seed_keys
    from funrl.evaluation import evaluate_policy
    from funrl.results import concat_metrics, final_returns

    try:
        module = get(row.algo)
    except Exception as e:  # another helper may still be writing it
        return {"name": name, "algo": row.algo, "env": row.env_id, "skipped": f"{type(e).__name__}: {e}"}
    device = torch.device(args.device)
    base = module.Config(**row.overrides)
    budget = row.budget if row.budget is not None else base.total_timesteps
    steps = max(1, int(round(budget * args.steps_scale)))
    config = dataclasses.replace(base, total_timesteps=steps)
    env, env_params = funrl.envs.make(row.env_id)
    env_params = tree.map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, env_params)

    torch._dynamo.reset()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    driver = Driver(module.make_algorithm, config, env, env_params, compile=args.compile)
    state = driver.init(seed_keys(args.seed, args.seeds, device))
    num_updates = driver.num_updates if args.max_updates is None else min(args.max_updates, driver.num_updates)
    t1 = time.perf_counter()
    state, first = driver.run(state, num_updates=1, chunk_size=1)
    first_update_s = time.perf_counter() - t1
    histories = [first]
    if num_updates > 1:
        state, rest = driver.run(state, num_updates=num_updates, chunk_size=max(1, num_updates // 20), start_update=1)
        histories.append(rest)
    train_s = time.perf_counter() - t0
    metrics = concat_metrics(histories)  # [seeds, updates]
    env_steps = num_updates * driver.steps_per_update

    out = {
        "name": name,
        "algo": row.algo,
        "env": row.env_id,
        "seeds": args.seeds,
        "budget_env_steps_per_seed": budget,
        "env_steps_per_seed": env_steps,
        "num_updates": num_updates,
        "compile": args.compile,
        "config": {k: v for k, v in dataclasses.asdict(config).items()},
        "first_update_s": first_update_s,
        "train_wall_s": train_s,
        "sps": env_steps * args.seeds / train_s,
    }
    if row.kind == "return":
        out["train_return"] = stats.summarize(final_returns(metrics).numpy())
        act = module.evaluation_policy(config, env, env_params)
        t2 = time.perf_counter()
        returns = evaluate_policy(act, state, env, env_params, args.episodes, jr.key(args.seed + 10_000))
        out["eval_wall_s"] = time.perf_counter() - t2
        per_seed = returns.mean(1)
        summary = stats.summarize(per_seed.numpy())
        out.update(criterion=f"IQM of greedy evaluation return ({args.episodes} episodes per seed) >= {row.target:g}")
        out.update(threshold=row.target, per_seed_score=per_seed.tolist())
    else:
        gamma = float(config.gamma)
        optimum = _optimal_value(env, gamma)
        scores = metrics["greedy_value"][:, -1].double()
        summary = stats.summarize(scores.numpy())
        threshold = (1.0 - row.target) * optimum
        out.update(
            criterion=f"IQM of the greedy policy's exact value >= {1 - row.target:.0%} of the optimal value {optimum:.4f} (gamma {gamma})",
            threshold=threshold,
            optimal_value=optimum,
            per_seed_score=scores.tolist(),
            fraction_of_seeds_within=float((scores >= threshold).double().mean()),
            train_return=stats.summarize(final_returns(metrics).numpy()),
        )
    out.update(score=summary, iqm=summary["iqm"], ci_low=summary["ci_low"], ci_high=summary["ci_high"])
    out["met"] = bool(summary["iqm"] >= out["threshold"])
    out["gap"] = summary["iqm"] - out["threshold"]
    out["wall_s"] = time.perf_counter() - t0
    out.update(
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        threads=args.threads,
        device=args.device,
        load_average_before=list(load_before),
        load_average_after=list(os.getloadavg()),
    )
    return out


def _earlier_rows(path: Path, quick: bool, redo: list[str]) -> list[dict]:
    """Rows of an earlier run in ``path`` that this run keeps: same quick mode, not in ``redo``."""
    if not path.exists():
        return []
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"--out: {path} exists but is not a learning.py JSON ({e}); pass --fresh to overwrite it")
    if not isinstance(earlier, dict) or earlier.get("benchmark") != "learning" or not isinstance(earlier.get("rows"), list):
        raise SystemExit(f"--out: {path} exists but is not a learning.py JSON; pass --fresh to overwrite it")
    if earlier.get("quick") != quick:
        return []
    return [r for r in earlier["rows"] if isinstance(r, dict) and r.get("name") not in redo]


def _print_table(rows: list) -> None:
    header = (
        f"{'row':<12} | {'env':<13} | {'steps/seed':>10} | {'target':>9} | {'IQM':>9} | {'95% CI':>21} | "
        f"{'gap':>9} | {'result':>6} | {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "skipped" in r:
            print(f"{r['name']:<12} | {r['env']:<13} | skipped: {r['skipped']}")
            continue
        ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        print(
            f"{r['name']:<12} | {r['env']:<13} | {r['env_steps_per_seed']:>10,} | {r['threshold']:>9.3f} | "
            f"{r['iqm']:>9.3f} | {ci:>21} | {r['gap']:>+9.3f} | {'met' if r['met'] else 'MISSED':>6} | {r['wall_s']:>7.1f}"
        )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", default="all", help=f"comma-separated rows: {', '.join(ROWS)} or all / tabular / acrobot")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per row, trained together (default 16)")
    ap.add_argument("--steps-scale", type=float, default=None, help="fraction of each row's budget (default 1)")
    ap.add_argument("--max-updates", type=int, default=None, help="stop every run after this many updates (smoke runs)")
    ap.add_argument("--episodes", type=int, default=None, help="evaluation episodes per seed (default 10)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, scale 0.002, <= 2 updates, eager")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="compile the vmapped pieces (default: yes, except with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--seed", type=int, default=0, help="base seed")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/learning.json; --quick: learning_quick.json)")
    ap.add_argument("--fresh", action="store_true", help="drop the rows of earlier runs in the JSON instead of keeping them")
    args = ap.parse_args(argv)
    q = args.quick
    try:
        names = select_rows(args.algos)
    except ValueError as e:
        ap.error(str(e))
    if args.seeds is None:
        args.seeds = 2 if q else 16
    if args.steps_scale is None:
        args.steps_scale = 0.002 if q else 1.0
    if args.episodes is None:
        args.episodes = 2 if q else 10
    if args.max_updates is None and q:
        args.max_updates = 2
    if args.compile is None:
        args.compile = not q
    for flag in ("seeds", "episodes"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag}: expected an int >= 1, got {getattr(args, flag)}")
    if not args.steps_scale > 0:
        ap.error(f"--steps-scale: expected a number > 0, got {args.steps_scale}")
    if args.max_updates is not None and args.max_updates < 1:
        ap.error(f"--max-updates: expected an int >= 1, got {args.max_updates}")
    torch.set_num_threads(args.threads)

    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cpus, {args.threads} threads, {args.seeds} seeds, "
        f"scale {args.steps_scale:g}, compile {args.compile}, load average {load[0]:.2f}",
        flush=True,
    )
    out_path = args.out or RESULTS / ("learning_quick.json" if q else "learning.json")
    kept = [] if args.fresh else _earlier_rows(out_path, q, names)
    if kept:
        print(f"keeping {len(kept)} earlier row(s) of {out_path}: {', '.join(r.get('name', '?') for r in kept)}")
    t_start = time.perf_counter()
    rows = []

    def result_so_far() -> dict:
        everything = kept + rows
        return {
            "benchmark": "learning",
            "quick": q,
            "seeds": args.seeds,
            "steps_scale": args.steps_scale,
            "max_updates": args.max_updates,
            "episodes": args.episodes,
            "compile": args.compile,
            "threads": args.threads,
            "device": args.device,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
            "load_average_before": list(load),
            "load_average_after": list(os.getloadavg()),
            "wall_s": time.perf_counter() - t_start,
            "rows": everything,
            "met": [r["name"] for r in everything if r.get("met") is True],
            "missed": [r["name"] for r in everything if r.get("met") is False],
            "skipped": [r["name"] for r in everything if "skipped" in r],
        }

    for name in names:
        print(f"[{name}] training ...", flush=True)
        r = run_row(name, ROWS[name], args)
        if "skipped" in r:
            print(f"[{name}] skipped: {r['skipped']}", flush=True)
        else:
            print(
                f"[{name}] IQM {r['iqm']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] vs {r['threshold']:.3f}: "
                f"{'met' if r['met'] else 'MISSED'} ({r['wall_s']:.1f} s, first update {r['first_update_s']:.1f} s)",
                flush=True,
            )
        rows.append(r)
        # after every row, so that a stopped run keeps what it finished
        write_json_atomic(out_path, result_so_far())
    result = result_so_far()
    write_json_atomic(out_path, result)
    print()
    _print_table(kept + rows)
    print(f"\nwrote {out_path}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
