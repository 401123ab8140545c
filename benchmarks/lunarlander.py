"""DQN on gymnasium's LunarLander-v3: funrl through ``"gymnasium:LunarLander-v3"`` vs a CleanRL-style loop.

Question: trained on an env funrl does not reimplement (through its gymnasium
bridge, :mod:`funrl.envs.gymnasium_env`), does funrl's DQN learn what CleanRL's
DQN learns, and how long does it take?

Both sides train ``--steps`` env steps per seed with the same hyper-parameters:
``funrl.algorithms.dqn.Config()``'s defaults, which are CleanRL's ``dqn.py``
defaults (lr 2.5e-4, a 10k buffer, batch 128, epsilon 1 -> 0.05 over half the
run, learning from step 10k, a gradient step every 10 env steps, a hard target
copy every 500 steps, a 120-84 ReLU MLP).  CleanRL runs LunarLander with those
same defaults (its published LunarLander DQN agents list them; about 200+ at
500k steps).

* funrl: ``funrl.run("dqn", env="gymnasium:LunarLander-v3", seeds=S, ...)``:
  the seeds train together (vmapped pieces, eager: the env steps on the host
  and ``funrl train`` switches compile off for it), with funrl's results
  folder (kept only with ``--runs-dir``).  ``--compile`` is an experiment:
  the pieces around the host-stepped env compile (``funrl.jit``), the env
  step itself stays an opaque host call; the JSON records the mode.
* the baseline: DQN written below in CleanRL's single-file style (``nn.Module``,
  ``torch.optim.Adam``, a numpy replay buffer, one ``gymnasium.make`` env,
  Python's ``random`` for epsilon-greedy), one seed after another.

Reported per side: ``return``, the mean undiscounted return of the last
``--last-episodes`` training episodes of each seed (funrl: of the trailing
updates holding at least that many episodes, weighted by their episode
counts), averaged over seeds, and ``wall_s`` (the whole training, all seeds;
setup included).

Writes ``benchmarks/results/lunarlander.json`` (or ``--out``) with the
machine.  A full run (500k steps) takes hours on a 2-core CPU; smoke-run it
with a small ``--steps`` and ``--learning-starts`` (``--env CartPole-v1``
needs no box2d).  funrl writes one checkpoint, at the end (the baseline
writes none).
Needs ``pip install "funrl[box2d]"`` for LunarLander.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import machine  # noqa: E402  (one definition of "where the numbers were measured")

from funrl.checkpoint import write_json_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def dqn_config(steps: int, learning_starts: int | None = None):
    """funrl's DQN Config (CleanRL's defaults) for a ``steps``-step run; ``learning_starts`` for smoke runs."""
    from funrl.algorithms import dqn

    base = dqn.Config(total_timesteps=steps)
    return base if learning_starts is None else dataclasses.replace(base, learning_starts=learning_starts)


def trailing_mean(returns: np.ndarray, episodes: np.ndarray, last: int) -> float:
    """Mean return of the trailing updates that together hold at least ``last`` episodes.

    Args:
      returns: ``[U]`` mean return of the episodes ended in each update (0 where none).
      episodes: ``[U]`` number of episodes ended in each update.
      last: how many episodes to cover (fewer if the run had fewer).

    Returns:
      ``sum(returns * episodes) / sum(episodes)`` over those updates; NaN without episodes.
    """
    total, weighted = 0.0, 0.0
    for r, n in zip(returns[::-1], episodes[::-1]):
        if n > 0:
            total += n
            weighted += r * n
        if total >= last:
            break
    return weighted / total if total else float("nan")


def run_funrl(env_id: str, config, seeds: int, seed: int, last: int, runs_dir: str | None, compile: bool = False) -> dict:
    import funrl
    from funrl.envs.gymnasium_env import GymnasiumEnv

    # the runner runs gymnasium envs eagerly (GymnasiumEnv.COMPILE); --compile lifts that for this
    # process only, so that funrl.jit compiles the pieces around the host-stepped env op (its fake
    # implementation lets Inductor trace past it) -- an experiment, not what `funrl train` does
    GymnasiumEnv.COMPILE = compile

    out = os.path.join(runs_dir or tempfile.mkdtemp(prefix="funrl-lunarlander-"), f"dqn-{env_id}")
    from funrl.algorithms import dqn

    default = dqn.Config()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name != "total_timesteps" and getattr(config, f.name) != getattr(default, f.name)}
    t0 = time.perf_counter()
    result = funrl.run("dqn", env=f"gymnasium:{env_id}", seeds=seeds, seed=seed, total_steps=config.total_timesteps,
                       out=out, progress=True, plot=False, checkpoint_every=10**9, compile=compile, **fields)
    wall = time.perf_counter() - t0
    m = result["metrics"]  # [seeds, updates]
    per_seed = [trailing_mean(m["episode_return"][s].double().numpy(), m["episodes"][s].double().numpy(), last)
                for s in range(seeds)]
    return {"per_seed_return": per_seed, "return": float(np.mean(per_seed)), "wall_s": wall,
            "episodes": [int(m["episodes"][s].sum()) for s in range(seeds)], "compile": compile,
            "results_folder": out if runs_dir else None}


# ====================================================================== the CleanRL-style baseline
class QNetwork(torch.nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, hidden: tuple):
        super().__init__()
        sizes = (obs_dim, *hidden)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.network = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], n_actions))

    def forward(self, x):
        return self.network(x)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def run_cleanrl(env_id: str, config, seed: int) -> dict:
    """One seed of CleanRL's ``dqn.py`` loop; returns every finished episode's return and the wall time."""
    import gymnasium

    c = config
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    env = gymnasium.make(env_id)
    env.action_space.seed(seed)
    obs_dim = int(np.prod(env.observation_space.shape))
    q_network = QNetwork(obs_dim, env.action_space.n, c.hidden_sizes)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=c.learning_rate, eps=c.adam_eps)
    target_network = QNetwork(obs_dim, env.action_space.n, c.hidden_sizes)
    target_network.load_state_dict(q_network.state_dict())
    buf_obs = np.zeros((c.buffer_size, obs_dim), np.float32)
    buf_next = np.zeros((c.buffer_size, obs_dim), np.float32)
    buf_act = np.zeros(c.buffer_size, np.int64)
    buf_rew = np.zeros(c.buffer_size, np.float32)
    buf_done = np.zeros(c.buffer_size, np.float32)
    pos, full = 0, False
    returns, ep_return = [], 0.0
    obs, _ = env.reset(seed=seed)
    for global_step in range(c.total_timesteps):
        epsilon = linear_schedule(c.start_e, c.end_e, c.exploration_fraction * c.total_timesteps, global_step)
        if random.random() < epsilon:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = int(torch.argmax(q_network(torch.as_tensor(obs, dtype=torch.float32)[None]), dim=1))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        ep_return += float(reward)
        # the real next observation goes in the buffer; only terminations cut the bootstrap
        buf_obs[pos], buf_next[pos], buf_act[pos], buf_rew[pos], buf_done[pos] = obs, next_obs, action, reward, terminated
        pos = (pos + 1) % c.buffer_size
        full = full or pos == 0
        obs = next_obs
        if terminated or truncated:
            returns.append(ep_return)
            ep_return = 0.0
            obs, _ = env.reset()
        if global_step > c.learning_starts:
            if global_step % c.train_frequency == 0:
                idx = np.random.randint(0, c.buffer_size if full else pos, size=c.batch_size)
                b_next = torch.from_numpy(buf_next[idx])
                with torch.no_grad():
                    target_max, _ = target_network(b_next).max(dim=1)
                    td_target = torch.from_numpy(buf_rew[idx]) + c.gamma * target_max * (1 - torch.from_numpy(buf_done[idx]))
                old_val = q_network(torch.from_numpy(buf_obs[idx])).gather(1, torch.from_numpy(buf_act[idx])[:, None]).squeeze()
                loss = torch.nn.functional.mse_loss(td_target, old_val)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if global_step % c.target_network_frequency == 0:
                for tp, qp in zip(target_network.parameters(), q_network.parameters()):
                    tp.data.copy_(c.tau * qp.data + (1.0 - c.tau) * tp.data)
    env.close()
    return {"returns": returns, "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per seed (default 500000)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per side (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--env", default="LunarLander-v3", help="gymnasium id with a Discrete action space")
    parser.add_argument("--last-episodes", type=int, default=100, help="episodes the return averages (default 100)")
    parser.add_argument("--learning-starts", type=int, default=None,
                        help="env steps before learning, both sides (default CleanRL's 10000; lower for smoke runs)")
    parser.add_argument("--compile", action="store_true",
                        help="experiment: compile funrl's pieces around the host-stepped env (funrl train runs eagerly)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs-dir", default=None, help="keep funrl's results folder here (default: a temp dir)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/lunarlander.json)")
    args = parser.parse_args(argv)
    for name in ("steps", "seeds", "last_episodes", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")
    if args.steps < 10:
        parser.error(f"--steps: expected at least one DQN update (10 env steps), got {args.steps}")
    torch.set_num_threads(args.threads)
    if args.learning_starts is not None and args.learning_starts < 0:
        parser.error(f"--learning-starts: expected an int >= 0, got {args.learning_starts}")
    config = dqn_config(args.steps, args.learning_starts)
    load = os.getloadavg()
    print(f"DQN on {args.env}: {args.steps:,} steps x {args.seeds} seed(s), torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {load[0]:.2f}", flush=True)

    funrl_row = run_funrl(args.env, config, args.seeds, args.seed, args.last_episodes, args.runs_dir, args.compile)
    base_runs = [run_cleanrl(args.env, config, args.seed + i) for i in range(args.seeds)]
    base_per_seed = [float(np.mean(r["returns"][-args.last_episodes:])) if r["returns"] else float("nan")
                     for r in base_runs]
    baseline = {"per_seed_return": base_per_seed, "return": float(np.mean(base_per_seed)),
                "wall_s": sum(r["wall_s"] for r in base_runs), "episodes": [len(r["returns"]) for r in base_runs]}
    result = {
        "benchmark": "lunarlander",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(args.threads), "load_average_at_start": load, "load_average_at_end": os.getloadavg()},
        "env": args.env,
        "steps_per_seed": args.steps,
        "seeds": args.seeds,
        "last_episodes": args.last_episodes,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "funrl": funrl_row,
        "cleanrl_style": baseline,
        "wall_ratio_funrl_over_cleanrl": funrl_row["wall_s"] / baseline["wall_s"],
    }
    print(f"\n{'':16} {'return':>10} {'wall s':>10} {'episodes':>10}")
    for name, row in ((f"funrl ({'compiled' if args.compile else 'eager'})", funrl_row), ("cleanrl-style", baseline)):
        print(f"{name:16} {row['return']:10.1f} {row['wall_s']:10.1f} {sum(row['episodes']):10d}")
    print(f"funrl wall / cleanrl-style wall: {result['wall_ratio_funrl_over_cleanrl']:.2f}")
    out = Path(args.out) if args.out else RESULTS / "lunarlander.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(str(out), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
