"""Evaluate trained policies: run each seed's greedy/mean policy for whole episodes.

Not meant for vmap/compile over training: this is reporting code with a Python
loop over time that stops when every episode has ended.
"""

from __future__ import annotations

import os

import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import stats, tree

__all__ = ["evaluate_policy", "evaluate_run"]


def evaluate_policy(act, states, env, env_params, episodes: int, key: torch.Tensor) -> torch.Tensor:
    """Undiscounted returns of ``episodes`` episodes per seed.

    Args:
      act: ``act(state, key, obs[K, ...]) -> actions[K, ...]`` for one seed.
      states: batched training states (leaves with a leading seed axis S).
      env, env_params: the environment.
      episodes: K, episodes per seed (run in parallel).
      key: a key ``(2,)``.

    Returns:
      float64 ``[S, K]`` returns.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected an int >= 1, got {episodes!r}")
    S = tree.leaves(states)[0].shape[0]
    K = episodes
    reset = torch.func.vmap(torch.func.vmap(env.reset, in_dims=(0, None)), in_dims=(0, None))
    step = torch.func.vmap(torch.func.vmap(env.step, in_dims=(0, 0, 0, None)), in_dims=(0, 0, 0, None))
    act_all = torch.func.vmap(act, in_dims=(0, 0, 0))
    k_reset, key = jr.split(key)
    obs, env_state = reset(jr.split(k_reset, S * K).reshape(S, K, 2), env_params)
    returns = torch.zeros(S, K, dtype=torch.float64)
    alive = torch.ones(S, K, dtype=torch.bool)
    limit = int(env_params.max_episode_steps) if hasattr(env_params, "max_episode_steps") else 10_000
    with torch.no_grad():
        for t in range(limit + 1):
            key, k_act, k_env = jr.split(jr.fold_in(key, t), 3)
            actions = act_all(states, jr.split(k_act, S), obs)
            obs, env_state, reward, terminated, truncated, _ = step(
                jr.split(k_env, S * K).reshape(S, K, 2), env_state, actions, env_params
            )
            returns += reward.double() * alive
            alive &= ~(terminated | truncated)
            if not bool(alive.any()):
                break
    return returns


def evaluate_run(directory: str, episodes: int = 10, seed: int = 12345) -> dict:
    """Evaluate the final checkpoint of a results folder (what ``funrl eval`` prints).

    Returns:
      dict with ``per_seed`` (list of {seed, mean, std, episodes}), ``returns``
      (float64 ``[S, K]``), ``summary`` (IQM/CI over the per-seed means) and
      ``update`` / ``num_updates``: the update count of the checkpoint evaluated, of the whole run.
    """
    from funrl.algorithms import resolve_config
    from funrl.algorithms.common import Driver, seed_keys
    from funrl.results import read_config_json

    cfg = read_config_json(os.path.join(directory, "config.json"))

    module, env_id, config = resolve_config(cfg["algo"], cfg["env"], None, cfg["config"])
    make_env = getattr(module, "make_env", funrl.envs.make)
    env, env_params = make_env(env_id, **(cfg.get("env_params") or {}))
    template = Driver(module.make_algorithm, config, env, env_params, compile=False).init(seed_keys(cfg["seed"], cfg["seeds"]))
    manager = ckpt.CheckpointManager(os.path.join(directory, "checkpoints"))
    update, saved, _ = manager.load()
    states = tree.unflatten(tree.structure(template), tree.leaves(saved["state"]))
    if hasattr(module, "evaluate"):  # LM algorithms: rewards of greedy completions, one prompt per "episode"
        returns = module.evaluate(config, env, env_params, states, episodes, jr.key(seed))
    else:
        act = module.evaluation_policy(config, env, env_params)
        returns = evaluate_policy(act, states, env, env_params, episodes, jr.key(seed))
    per_seed = [
        {"seed": i, "mean": float(r.mean()), "std": float(r.std(unbiased=False)), "episodes": episodes}
        for i, r in enumerate(returns)
    ]
    return {"per_seed": per_seed, "returns": returns, "summary": stats.summarize(returns.mean(1).numpy()),
            "update": update, "num_updates": cfg.get("num_updates")}
