"""Training throughput with learning included: funrl (compiled / eager) vs a CleanRL-style PyTorch loop.

Question: how many env steps per second (all seeds together, every gradient step
included) does funrl train PPO on CartPole-v1 at S = 1, 8 and 64 seeds, compared
with the usual way, one seed at a time in a CleanRL-style loop (gymnasium
``SyncVectorEnv``, ``nn.Module``, ``torch.optim``)?  Also DQN at S = 1 and 8.

What is timed, per cell:

* funrl: ``funrl.algorithms.common.Driver(make_algorithm, config, ...)`` with
  ``compile=True`` (``funrl.jit(vmap(piece))``) or ``compile=False`` (eager
  ``vmap``), ``init`` outside the clock.  The first update(s) are warm-up:
  ``compile_s`` = (first update + second update) - 2 x steady update, because
  the second call may still specialise; the steady-state rate is measured over
  the following ``--updates`` updates.  ``torch._dynamo.reset()`` before every
  compiled cell, so each cell pays its own compile (Inductor's on-disk caches
  may be warm from earlier runs, as they are for a user's second run).
* the baseline: PPO (and DQN) written below in the CleanRL style with CleanRL's
  hyper-parameters and update loop, single seed, the same config as the funrl
  cells, timed in the same process over the same number of env steps per seed.
  Its rate does not depend on S (seeds run one after another), so the ratio at S
  is funrl's aggregate rate over the baseline's.  It runs with 1 and with 2 torch
  threads and keeps the faster (oversubscribed threads hurt small-op loops).
  Its summary-writer logging is left out (that only favours the baseline).

funrl's PPO cells run at every ``--threads`` count (default 1 and 2) and keep the
fastest, as the baseline does, so both sides are at their best thread setting;
the per-core ratio divides each side's rate by the threads it used.  (Two
processes x one thread, what ``funrl train`` picks for >= 32 seeds on two cores,
is measured end to end by ``threads.py``.)  Eager funrl at S = 64 is slow, so its
timed updates are capped; the JSON says so.  DQN cells run at the first
``--threads`` count only.

The main job (``--main-job``, default on except with ``--quick``): ``funrl train``
as a newcomer runs it (PPO, CartPole-v1, 8 seeds x 500k env steps, compiled, the
CLI's own process and thread choice), end to end in a child process, first with
an empty Inductor cache (cold) and then with the cache it filled (warm), against
the CleanRL-style loop's wall time for one seed x 500k env steps (timed here, at
its best thread count).

Writes ``benchmarks/results/throughput.json`` (``throughput_quick.json`` with
``--quick``, or ``--out``).  ``--quick``: tiny sizes (S in {1, 2}, 16-step
rollouts, one timed update, eager only unless ``--compile``: each compile costs
tens of seconds) for the smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import machine  # noqa: E402  (the machine record every benchmark writes)

from funrl.threads import using_threads  # noqa: E402
TARGET_RATIO_AT_64 = 50.0
TARGET_PER_CORE_AT_64 = 25.0
MAIN_JOB_STEPS = 500_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


# ====================================================================== funrl
def time_funrl(module, config, S: int, compile: bool, updates: int, device: torch.device, env_id: str = "CartPole-v1"):
    """Steady-state aggregate env-steps/s of ``S`` seeds of ``module`` in one Driver, and its warm-up cost.

    Returns:
      dict with ``sps``, ``update_s`` (seconds per steady update), ``first_update_s``,
      ``second_update_s``, ``compile_s`` (compiled only), ``updates_timed`` and
      ``env_steps_timed`` (all seeds).
    """
    import funrl
    from funrl import tree
    from funrl.algorithms.common import Driver, seed_keys

    torch._dynamo.reset()
    env, env_params = funrl.envs.make(env_id)
    env_params = tree.map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, env_params)
    driver = Driver(module.make_algorithm, config, env, env_params, compile=compile)
    state = driver.init(seed_keys(0, S, device))
    warmups = []
    for _ in range(2 if compile else 1):
        t0 = _clock(device)
        state, _ = driver.run(state, num_updates=1, chunk_size=1)
        warmups.append(_clock(device) - t0)
    t0 = _clock(device)
    state, metrics = driver.run(state, num_updates=updates, chunk_size=updates)
    elapsed = _clock(device) - t0
    per_update = elapsed / updates
    steps = driver.steps_per_update * S
    ret, eps = metrics["episode_return"][:, -1], metrics["episodes"][:, -1]  # metrics: [seeds, updates]
    out = {
        "seeds": S,
        # a sanity value (learning is included in the timing): mean over seeds that finished an episode
        "mean_return_last_update": float((ret * (eps > 0)).sum() / (eps > 0).sum().clamp(min=1)),
        "mode": "compiled" if compile else "eager",
        "sps": steps / per_update,
        "update_s": per_update,
        "first_update_s": warmups[0],
        "updates_timed": updates,
        "env_steps_timed": steps * updates,
    }
    if compile:
        out["second_update_s"] = warmups[1]
        out["compile_s"] = max(0.0, sum(warmups) - 2 * per_update)
    return out


# ====================================================================== CleanRL-style PPO (the baseline)
def _layer_init(layer: torch.nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> torch.nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class CleanRLAgent(torch.nn.Module):
    """CleanRL ppo.py's ``Agent``: separate 64-64 tanh actor and critic, orthogonal init."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int = 64):
        super().__init__()
        self.critic = torch.nn.Sequential(
            _layer_init(torch.nn.Linear(obs_dim, hidden)),
            torch.nn.Tanh(),
            _layer_init(torch.nn.Linear(hidden, hidden)),
            torch.nn.Tanh(),
            _layer_init(torch.nn.Linear(hidden, 1), std=1.0),
        )
        self.actor = torch.nn.Sequential(
            _layer_init(torch.nn.Linear(obs_dim, hidden)),
            torch.nn.Tanh(),
            _layer_init(torch.nn.Linear(hidden, hidden)),
            torch.nn.Tanh(),
            _layer_init(torch.nn.Linear(hidden, n_actions), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        logits = self.actor(x)
        probs = torch.distributions.Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def _make_gym_env(env_id: str):
    import gymnasium as gym

    def thunk():
        return gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))

    return thunk


def _sync_vector_env(env_id: str, num_envs: int):
    import gymnasium as gym

    # SAME_STEP autoreset is gymnasium 0.29's behaviour, the one CleanRL's loop was written for
    return gym.vector.SyncVectorEnv(
        [_make_gym_env(env_id) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def cleanrl_ppo(config, num_updates: int, device: torch.device, seed: int = 0, env_id: str = "CartPole-v1") -> dict:
    """CleanRL ppo.py's training loop for ``num_updates`` iterations.

    Returns:
      dict with ``times`` (seconds of each iteration) and ``episode_returns``
      (every completed episode's return, in order).

    ``config`` is funrl's ``ppo.Config`` (so both sides run the same sizes and
    hyper-parameters); the learning-rate annealing uses ``config.num_updates``.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    envs = _sync_vector_env(env_id, config.num_envs)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    agent = CleanRLAgent(obs_dim, int(envs.single_action_space.n), config.hidden_sizes[0]).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=config.adam_eps)
    T, E = config.num_steps, config.num_envs
    batch_size = T * E
    minibatch_size = batch_size // config.num_minibatches
    obs = torch.zeros((T, E) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((T, E) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((T, E)).to(device)
    rewards = torch.zeros((T, E)).to(device)
    dones = torch.zeros((T, E)).to(device)
    values = torch.zeros((T, E)).to(device)
    next_obs, _ = envs.reset(seed=seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(E).to(device)
    times, episode_returns = [], []
    for iteration in range(1, num_updates + 1):
        t0 = _clock(device)
        if config.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / config.num_updates
            optimizer.param_groups[0]["lr"] = frac * config.learning_rate
        for step in range(T):
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            next_obs_np, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            if "final_info" in infos:  # CleanRL logs these; kept as a check that the baseline learns
                ep = infos["final_info"]["episode"]
                episode_returns.extend(ep["r"][ep["_r"]].tolist())
            next_done_np = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs_np).to(device), torch.Tensor(next_done_np).to(device)
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(T)):
                if t == T - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + config.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + config.gamma * config.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for _epoch in range(config.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions.long()[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - logratio).mean()  # noqa: F841 - CleanRL logs it
                    clipfracs += [((ratio - 1.0).abs() > config.clip_coef).float().mean().item()]
                mb_advantages = b_advantages[mb_inds]
                if config.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - config.clip_coef, 1 + config.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                newvalue = newvalue.view(-1)
                if config.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -config.clip_coef, config.clip_coef
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - config.ent_coef * entropy_loss + v_loss * config.vf_coef
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        _explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        times.append(_clock(device) - t0)
    envs.close()
    return {"times": times, "episode_returns": episode_returns}


# ====================================================================== CleanRL-style DQN (the baseline)
class CleanRLQNetwork(torch.nn.Module):
    """CleanRL dqn.py's ``QNetwork``: 120-84 ReLU MLP, PyTorch's default init."""

    def __init__(self, obs_dim: int, n_actions: int, hidden=(120, 84)):
        super().__init__()
        self.network = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden[0]),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden[0], hidden[1]),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden[1], n_actions),
        )

    def forward(self, x):
        return self.network(x)


class _ReplayBuffer:
    """A numpy ring buffer standing in for SB3's ``ReplayBuffer`` that CleanRL uses (same work per add/sample)."""

    def __init__(self, capacity: int, obs_shape: tuple, device: torch.device):
        self.obs = np.zeros((capacity,) + obs_shape, np.float32)
        self.next_obs = np.zeros((capacity,) + obs_shape, np.float32)
        self.actions = np.zeros((capacity, 1), np.int64)
        self.rewards = np.zeros((capacity, 1), np.float32)
        self.dones = np.zeros((capacity, 1), np.float32)
        self.capacity, self.pos, self.full, self.device = capacity, 0, False, device

    def add(self, obs, next_obs, action, reward, done):
        for i in range(obs.shape[0]):
            self.obs[self.pos] = obs[i]
            self.next_obs[self.pos] = next_obs[i]
            self.actions[self.pos] = action[i]
            self.rewards[self.pos] = reward[i]
            self.dones[self.pos] = done[i]
            self.pos = (self.pos + 1) % self.capacity
            self.full = self.full or self.pos == 0

    def sample(self, batch_size: int):
        idx = np.random.randint(0, self.capacity if self.full else self.pos, size=batch_size)
        as_t = lambda a: torch.as_tensor(a[idx]).to(self.device)  # noqa: E731
        return as_t(self.obs), as_t(self.actions), as_t(self.next_obs), as_t(self.dones), as_t(self.rewards)


def _linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def cleanrl_dqn(config, timed_steps: int, device: torch.device, seed: int = 0, env_id: str = "CartPole-v1") -> dict:
    """CleanRL dqn.py's loop: ``config.learning_starts`` untimed steps, then ``timed_steps`` timed ones.

    The clock runs only in the learning phase (a gradient step every
    ``train_frequency`` env steps), where funrl's cost per step is the same as
    always; epsilon follows CleanRL's schedule from ``learning_starts`` on, so
    most actions there are still random (no forward pass): the most favourable
    window for the baseline.

    Returns:
      dict with ``seconds`` and ``env_steps`` of the timed window.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    envs = _sync_vector_env(env_id, config.num_envs)
    obs_shape = envs.single_observation_space.shape
    n_actions = int(envs.single_action_space.n)
    q_network = CleanRLQNetwork(int(np.prod(obs_shape)), n_actions, config.hidden_sizes).to(device)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=config.learning_rate)
    target_network = CleanRLQNetwork(int(np.prod(obs_shape)), n_actions, config.hidden_sizes).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = _ReplayBuffer(config.buffer_size, obs_shape, device)
    obs, _ = envs.reset(seed=seed)
    total = config.learning_starts + timed_steps
    t0 = None
    for global_step in range(total + 1):
        if global_step == config.learning_starts + 1:
            t0 = _clock(device)
        epsilon = _linear_schedule(
            config.start_e, config.end_e, config.exploration_fraction * config.total_timesteps, global_step
        )
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs).to(device))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs.copy()
        for idx, trunc in enumerate(truncations):
            if trunc:
                real_next_obs[idx] = infos["final_obs"][idx]
        rb.add(obs, real_next_obs, actions, rewards, terminations)
        obs = next_obs
        if global_step > config.learning_starts:
            if global_step % config.train_frequency == 0:
                b_obs, b_actions, b_next_obs, b_dones, b_rewards = rb.sample(config.batch_size)
                with torch.no_grad():
                    target_max, _ = target_network(b_next_obs).max(dim=1)
                    td_target = b_rewards.flatten() + config.gamma * target_max * (1 - b_dones.flatten())
                old_val = q_network(b_obs).gather(1, b_actions).squeeze()
                loss = torch.nn.functional.mse_loss(td_target, old_val)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if global_step % config.target_network_frequency == 0:
                for target_param, q_param in zip(target_network.parameters(), q_network.parameters()):
                    target_param.data.copy_(config.tau * q_param.data + (1.0 - config.tau) * target_param.data)
    seconds = _clock(device) - t0
    envs.close()
    return {"seconds": seconds, "env_steps": timed_steps * config.num_envs}


# ====================================================================== driver
def _best_threads(run_fn, thread_options) -> dict:
    """Run ``run_fn()`` (returns sps) once per torch thread count; keep the fastest."""
    tried = {}
    for n in thread_options:
        with using_threads(n):
            tried[n] = run_fn()
    best = max(tried, key=tried.get)
    return {"sps": tried[best], "threads": best, "sps_by_threads": {str(k): v for k, v in tried.items()}}


def _ppo_section(args, device) -> dict:
    from funrl.algorithms import ppo

    config = ppo.Config(**args.ppo_overrides)
    section = {"config": dataclasses.asdict(config), "steps_per_update_per_seed": config.batch_size}

    episodes = []

    def baseline_sps():
        res = cleanrl_ppo(config, args.baseline_updates + 1, device)
        episodes[:] = res["episode_returns"]
        return config.batch_size * args.baseline_updates / sum(res["times"][1:])  # first iteration is warm-up

    print(f"[ppo] CleanRL-style baseline: {args.baseline_updates} timed updates x {config.batch_size} env steps", flush=True)
    base = _best_threads(baseline_sps, args.baseline_threads)
    base.update(
        updates_timed=args.baseline_updates,
        env_steps_timed=args.baseline_updates * config.batch_size,
        note="single seed; S seeds run one after another at this rate, so the ratio at S is funrl's aggregate rate / this",
        mean_return_last_10_episodes=float(np.mean(episodes[-10:])) if episodes else None,
    )
    section["baseline"] = base
    print(f"[ppo]   {base['sps']:,.0f} env-steps/s with {base['threads']} thread(s) {base['sps_by_threads']}", flush=True)
    rows = []
    for S in args.seeds:
        for compile in args.modes:
            updates = args.updates if compile else min(args.updates, args.eager_updates.get(S, args.updates))
            label = "compiled" if compile else "eager"
            tried = {}
            for n in args.threads:
                print(f"[ppo] funrl {label} S={S}, {n} thread(s): {updates} timed updates", flush=True)
                with using_threads(n):
                    tried[n] = time_funrl(ppo, config, S, compile, updates, device)
                print(f"[ppo]   {tried[n]['sps']:,.0f} env-steps/s", flush=True)
            best = max(tried, key=lambda n: tried[n]["sps"])
            row = dict(tried[best], threads=best, sps_by_threads={str(n): r["sps"] for n, r in tried.items()})
            if compile:
                row["compile_s_by_threads"] = {str(n): r["compile_s"] for n, r in tried.items()}
            if not compile and updates < args.updates:
                row["note"] = f"eager timed updates capped at {updates} (of {args.updates}) to bound the run time"
            row["ratio_vs_baseline"] = row["sps"] / base["sps"]
            row["per_core_ratio"] = (row["sps"] / best) / (base["sps"] / base["threads"])
            rows.append(row)
            print(f"[ppo]   best: {_row_text(row)}", flush=True)
    section["rows"] = rows
    best64 = [r for r in rows if r["seeds"] == 64 and r["mode"] == "compiled"]
    if best64:
        ratio, per_core = best64[0]["ratio_vs_baseline"], best64[0]["per_core_ratio"]
        section["target"] = {"ratio_at_64_seeds": TARGET_RATIO_AT_64, "measured": ratio,
                             "met": ratio >= TARGET_RATIO_AT_64, "per_core_at_64_seeds": TARGET_PER_CORE_AT_64,
                             "per_core_measured": per_core, "per_core_met": per_core >= TARGET_PER_CORE_AT_64}
    return section


def _main_job_section(args, device) -> dict:
    """``funrl train`` end to end (cold and warm Inductor cache) vs the CleanRL-style loop, one seed x 500k."""
    import subprocess
    import tempfile

    from funrl.algorithms import ppo

    config = ppo.Config()
    updates = MAIN_JOB_STEPS // config.batch_size
    base_threads = args.ppo_baseline_threads

    print(f"[main job] CleanRL-style loop: 1 seed x {updates * config.batch_size:,} env steps, "
          f"{base_threads} thread(s)", flush=True)
    with using_threads(base_threads):
        t0 = time.perf_counter()
        res = cleanrl_ppo(config, updates, device)
        base_wall = time.perf_counter() - t0
    section = {"env_steps_per_seed": updates * config.batch_size,
               "baseline": {"wall_s": base_wall, "threads": base_threads,
                            "mean_return_last_10_episodes": float(np.mean(res["episode_returns"][-10:]))}}
    print(f"[main job]   {base_wall:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(Path(tmp) / "inductor"))
        env.pop("OMP_NUM_THREADS", None)  # the CLI's own thread choice
        for cell in ("cold", "warm"):
            out = Path(tmp) / cell
            cmd = [sys.executable, "-m", "funrl", "train", "--no-progress", "--out", str(out)]
            if MAIN_JOB_STEPS != 500_000:  # a smoke run of this section
                cmd += ["--total-steps", str(MAIN_JOB_STEPS)]
            print(f"[main job] funrl train ({cell} cache)", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                section[cell] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            summary = json.loads((out / "summary.json").read_text())
            section[cell] = {"wall_s": wall, "vs_baseline_wall": wall / base_wall,
                             "iqm_final_return": summary.get("iqm_final_return", summary.get("iqm"))}
            print(f"[main job]   {wall:.1f} s ({wall / base_wall:.2f}x the loop's one seed)", flush=True)
    warm, cold = section.get("warm", {}), section.get("cold", {})
    if "wall_s" in warm and "wall_s" in cold:
        section["target"] = {"warm_below_baseline": warm["wall_s"] < base_wall,
                             "cold_within_1.5x_baseline": cold["wall_s"] <= 1.5 * base_wall}
    return section


def _dqn_section(args, device) -> dict:
    try:
        from funrl.algorithms import dqn
    except Exception as e:  # another helper may still be writing it
        print(f"[dqn] skipped: funrl.algorithms.dqn does not import ({type(e).__name__}: {e})", flush=True)
        return {"skipped": f"funrl.algorithms.dqn does not import: {type(e).__name__}: {e}"}
    config = dqn.Config(**args.dqn_overrides)
    section = {"config": dataclasses.asdict(config), "steps_per_update_per_seed": config.steps_per_update}

    def baseline_sps():
        res = cleanrl_dqn(config, args.dqn_baseline_steps, device)
        return res["env_steps"] / res["seconds"]

    print(
        f"[dqn] CleanRL-style baseline: {config.learning_starts} untimed + {args.dqn_baseline_steps} timed env steps",
        flush=True,
    )
    base = _best_threads(baseline_sps, args.baseline_threads)
    base.update(
        env_steps_timed=args.dqn_baseline_steps * config.num_envs,
        note="timed after learning_starts (a gradient step every train_frequency steps); single seed",
    )
    section["baseline"] = base
    print(f"[dqn]   {base['sps']:,.0f} env-steps/s with {base['threads']} thread(s) {base['sps_by_threads']}", flush=True)
    rows = []
    for S in args.dqn_seeds:
        for compile in args.modes:
            label = "compiled" if compile else "eager"
            updates = args.dqn_updates if compile else max(1, args.dqn_updates // 4)
            print(f"[dqn] funrl {label} S={S}: {updates} timed updates", flush=True)
            row = time_funrl(dqn, config, S, compile, updates, device)
            row["ratio_vs_baseline"] = row["sps"] / base["sps"]
            rows.append(row)
            print(f"[dqn]   {_row_text(row)}", flush=True)
    section["rows"] = rows
    return section


def _row_text(row: dict) -> str:
    extra = f", compile {row['compile_s']:.1f} s" if "compile_s" in row else ""
    return f"{row['sps']:,.0f} env-steps/s ({row['update_s'] * 1e3:.1f} ms/update{extra}), {row['ratio_vs_baseline']:.1f}x baseline"


def _print_table(name: str, section: dict) -> None:
    if "rows" not in section:
        print(f"\n{name}: {section.get('skipped', 'not run')}")
        return
    base = section["baseline"]
    print(f"\n{name} (CartPole-v1, {section['steps_per_update_per_seed']} env steps per update per seed)")
    print(f"CleanRL-style baseline, 1 seed, {base['threads']} thread(s): {base['sps']:,.0f} env-steps/s")
    header = f"{'seeds':>5} | {'mode':>8} | {'env-steps/s':>12} | {'ms/update':>10} | {'compile s':>9} | {'vs baseline':>11}"
    print(header)
    print("-" * len(header))
    for r in section["rows"]:
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else "-"
        print(
            f"{r['seeds']:>5} | {r['mode']:>8} | {r['sps']:>12,.0f} | {r['update_s'] * 1e3:>10.1f} | {comp:>9} | "
            f"{r['ratio_vs_baseline']:>10.1f}x"
        )
    if "target" in section:
        t = section["target"]
        print(f"target >= {t['ratio_at_64_seeds']:.0f}x at 64 seeds: {t['measured']:.1f}x -> {'met' if t['met'] else 'MISSED'}")


def _int_list(text: str) -> list:
    return [int(x) for x in text.split(",") if x.strip()]


def fill_and_check_args(ap, args, defaults: dict, int_lists=(), ints=()) -> None:
    """Set every ``None`` argument from ``defaults``, then check list and int arguments are >= 1.

    Args:
      ap: the ``argparse.ArgumentParser`` (its ``error`` exits with the message).
      args: the parsed namespace, changed in place.
      defaults: name -> value for arguments left ``None`` (quick-mode dependent defaults).
      int_lists: names of comma-separated int list arguments (non-empty, every entry >= 1).
      ints: names of int arguments (>= 1).
    """
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in int_lists:
        if not getattr(args, name) or min(getattr(args, name)) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected comma-separated ints >= 1, got {getattr(args, name)}")
    for name in ints:
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected an int >= 1, got {getattr(args, name)}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): S in {1, 2}, 16-step rollouts")
    ap.add_argument("--threads", type=_int_list, default=None, help="thread counts tried for funrl (default 1,2)")
    ap.add_argument("--main-job", action=argparse.BooleanOptionalAction, default=None,
                    help="time `funrl train` end to end, cold and warm (default: yes, except with --quick)")
    ap.add_argument("--baseline-threads", type=_int_list, default=None, help="thread counts tried for the baseline (default 1,2)")
    ap.add_argument("--seeds", type=_int_list, default=None, help="PPO seed counts (default 1,8,64)")
    ap.add_argument("--dqn-seeds", type=_int_list, default=None, help="DQN seed counts (default 1,8)")
    ap.add_argument("--updates", type=int, default=None, help="timed steady-state PPO updates per cell (default 10)")
    ap.add_argument("--baseline-updates", type=int, default=None, help="timed baseline PPO updates (default 20)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="time compiled funrl cells (default: yes, except with --quick, where compiling costs minutes)")
    ap.add_argument("--no-eager", action="store_true", help="compiled funrl only (no eager cells)")
    ap.add_argument("--no-dqn", action="store_true", help="skip the DQN section")
    ap.add_argument("--device", default="cpu", help="torch device for both sides (default cpu)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/throughput.json; --quick: throughput_quick.json)")
    args = ap.parse_args(argv)
    if args.compile is None:
        args.compile = not args.quick
    if not args.compile and args.no_eager:
        ap.error("--no-compile and --no-eager leave nothing to time")

    q = args.quick
    defaults = {
        "seeds": [1, 2] if q else [1, 8, 64],
        "dqn_seeds": [1, 2] if q else [1, 8],
        "updates": 1 if q else 10,
        "baseline_updates": 1 if q else 20,
        "baseline_threads": [1, 2],
        "threads": [1] if q else [1, 2],
        "main_job": not q,
    }
    fill_and_check_args(ap, args, defaults, int_lists=("seeds", "dqn_seeds", "baseline_threads", "threads"),
                        ints=("updates", "baseline_updates"))
    torch.set_num_threads(args.threads[0])
    device = torch.device(args.device)
    # eager vmap at 64 seeds takes seconds per update: time only a few
    args.eager_updates = {} if q else {64: 3}
    args.modes = [m for m in (True, False) if not (m and not args.compile) and not (not m and args.no_eager)]
    args.ppo_overrides = dict(num_steps=16, update_epochs=2, num_minibatches=2) if q else {}
    args.dqn_overrides = dict(learning_starts=200, buffer_size=1000) if q else {}
    args.dqn_updates = 2 if q else 200
    args.dqn_baseline_steps = 200 if q else 5000

    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cpus, funrl threads {args.threads}, device {device}, "
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )
    t_start = time.perf_counter()
    result = {
        "benchmark": "throughput",
        "quick": q,
        "machine": machine(args.threads[0]),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "device": str(device),
        "funrl_threads_tried": args.threads,
        "baseline_threads_tried": args.baseline_threads,
        "load_average_before": list(load_before),
        "ppo": _ppo_section(args, device),
        "dqn": {"skipped": "--no-dqn"} if args.no_dqn else _dqn_section(args, device),
    }
    if args.main_job:
        args.ppo_baseline_threads = result["ppo"]["baseline"]["threads"]
        result["main_job"] = _main_job_section(args, device)
    result["load_average_after"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - t_start
    _print_table("PPO", result["ppo"])
    _print_table("DQN", result["dqn"])
    if "main_job" in result:
        m = result["main_job"]
        print(f"\nmain job (8 seeds x 500k): cold {m.get('cold', {}).get('wall_s', float('nan')):.1f} s, "
              f"warm {m.get('warm', {}).get('wall_s', float('nan')):.1f} s; CleanRL-style loop, 1 seed x 500k: "
              f"{m['baseline']['wall_s']:.1f} s")
    print(f"\nload average before {load_before[0]:.2f}, after {result['load_average_after'][0]:.2f}; wall {result['wall_s']:.0f} s")

    out_path = args.out or RESULTS / ("throughput_quick.json" if q else "throughput.json")
    from funrl.checkpoint import write_json_atomic

    write_json_atomic(out_path, result)
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
