"""Evaluate trained policies: run each seed's greedy/mean policy for whole episodes.

Not meant for vmap/compile over training: this is reporting code with a Python
loop over time that stops when every episode has ended.
"""

from __future__ import annotations


import torch

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
    from funrl.results import load_trained

    run = load_trained(directory)
    cfg, module, config, env, env_params, update, states = (
        run.cfg, run.module, run.config, run.env, run.env_params, run.update, run.states)
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
