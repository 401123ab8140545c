"""What PPO, A2C and REINFORCE share: the actor-critic policy and the rollout.

:func:`policy` turns :func:`funrl.algorithms.networks.actor_critic` into a
policy over the env's action space, as a :mod:`funrl.distributions`
distribution (``Categorical`` for ``Discrete``, a diagonal ``Normal`` with a
state-independent log-std for ``Box``, CleanRL's ``ppo_continuous_action.py``).

:func:`make_rollout` gives one rollout of ``num_steps`` env steps as a thin
piece and a loop: the step piece reads the params and returns only the
transition and what it changes (env state, observation, key), and the
``num_steps`` transitions are stacked once at the end.  Writing step ``t``
into a ``[T, E]`` buffer carried in the state instead costs O(T^2) memory
traffic per rollout (every step rewrites the whole buffer with
``torch.where``) and drags the optimizer state through every call.

Shapes: ``E`` envs per seed, ``T`` steps per rollout; a :class:`Transition`
from one step has leaves ``[E, ...]``, a stacked trajectory ``[T, E, ...]``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch

from funrl import distributions as dx
from funrl import random as jr
from funrl.algorithms import networks
from funrl.algorithms.common import lift_pieces, stack_steps
from funrl.envs import spaces

__all__ = ["Policy", "Transition", "policy", "make_rollout"]


class Policy(NamedTuple):
    """An actor-critic policy for one env (see :func:`policy`).

    Attributes:
      init: ``init(key) -> params`` (``{"actor", "critic"[, "log_std"]}``).
      dist: ``dist(params, obs [N, ...]) -> Categorical | Normal`` with batch shape ``[N]``.
      value: ``value(params, obs [N, ...]) -> [N]`` (needs the critic).
      to_env: ``to_env(action [N, ...])``: the action the env takes (a ``Box`` action clipped to its bounds).
      mode: ``mode(params, obs [N, ...])``: the greedy (``Discrete``) or mean (``Box``) action, for evaluation.
      discrete: the action space is ``Discrete``.
    """

    init: Callable
    dist: Callable
    value: Callable
    to_env: Callable
    mode: Callable
    discrete: bool


class Transition(NamedTuple):
    """One env step of every env: leaves ``[E, ...]`` (``[T, E, ...]`` once stacked).

    ``log_prob`` and ``value`` are those of the policy that acted (zeros where
    the algorithm asked for none); ``done`` is ``terminated | truncated``;
    ``final_value`` is ``V(final observation)`` where the episode was
    truncated and not terminated (0 elsewhere, and everywhere unless
    ``bootstrap_truncation``); the ``episode_*`` leaves are
    :class:`funrl.envs.wrappers.LogWrapper`'s report (valid where ``episode_done``).
    """

    obs: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    final_value: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    episode_done: torch.Tensor


def policy(env, env_params, hidden_sizes, activation: str, network="", critic: bool = True,
           log_std_init: float = 0.0, algo: str = "PPO", discrete_only: bool = False) -> Policy:
    """The actor-critic :class:`Policy` of ``env``'s action space.

    Args:
      env, env_params: a funrl env (its observation and action spaces size the networks).
      hidden_sizes, activation, network: :func:`funrl.algorithms.networks.actor_critic`'s.
      critic: include the critic's params (REINFORCE without a baseline has none).
      log_std_init: the initial log-std of a ``Box`` policy (one per action dimension).
      algo: the algorithm's name, for errors.
      discrete_only: the algorithm handles ``Discrete`` action spaces only.

    Raises:
      ValueError: the action space is neither ``Discrete`` nor ``Box`` (or not ``Discrete`` with ``discrete_only``).
    """
    act_space = env.action_space(env_params)
    discrete = isinstance(act_space, spaces.Discrete)
    if not discrete and (discrete_only or not isinstance(act_space, spaces.Box)):
        want = "a Discrete" if discrete_only else "a Discrete or Box"
        raise ValueError(f"env: {algo} needs {want} action space, got {act_space!r} for {getattr(env, 'name', env)}")
    act_dim = act_space.n if discrete else int(math.prod(act_space.shape))
    obs_shape = env.observation_space(env_params).shape
    actor, critic_net = networks.actor_critic(obs_shape, act_dim, hidden_sizes, activation, network)

    def init(key):
        ka, kc = jr.split(key)
        params = {"actor": actor.init(ka)}
        if critic:
            params["critic"] = critic_net.init(kc)
        if not discrete:
            params["log_std"] = torch.full((act_dim,), float(log_std_init), device=key.device)
        return params

    def dist(params, obs):
        out = actor.apply(params["actor"], obs)
        if discrete:
            return dx.Categorical(out)
        return dx.Normal(out, torch.exp(params["log_std"]).expand_as(out))

    def value(params, obs):
        return critic_net.apply(params["critic"], obs).squeeze(-1)

    def to_env(action):
        if discrete:
            return action
        low, high = act_space.low.to(action), act_space.high.to(action)
        return torch.clamp(action, low.reshape(-1), high.reshape(-1)).reshape((action.shape[0],) + act_space.shape)

    def mode(params, obs):
        return to_env(dist(params, obs).mode())

    return Policy(init, dist, value, to_env, mode, discrete)


def make_rollout(pol: Policy, env, env_params, num_envs: int, num_steps: int, lift: Callable,
                 value: bool = True, bootstrap_truncation: bool = False) -> Callable:
    """``rollout(params, env_state, obs, key) -> (traj, env_state, obs, key)``: ``num_steps`` steps of ``num_envs`` envs.

    Args:
      pol: the acting :class:`Policy`.
      env: a funrl env wrapped in :class:`funrl.envs.wrappers.LogWrapper`; ``env_params`` its params.
      num_envs, num_steps: ``E`` and ``T``.
      lift: the algorithm's lift (:mod:`funrl.algorithms.common`): the step runs as one
        per-seed piece, and ``lift(stack_steps)`` stacks the T steps (a copy, never compiled).
      value: record ``V(obs)`` in the transitions (else zeros).
      bootstrap_truncation: record ``final_value`` (SB3's time-limit bootstrap).

    Returns:
      The rollout glue, for one seed or a seed batch (whatever ``lift`` gives):
      ``traj`` is a :class:`Transition` with leaves ``[T, E, ...]`` per seed.
    """
    env_step = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))

    def step(params, env_state, obs_tm1, key):
        key, k_step = jr.split(key)
        k_act, k_env = jr.split(k_step)
        action, log_prob = pol.dist(params, obs_tm1).sample_and_log_prob(k_act)
        v = pol.value(params, obs_tm1) if value else torch.zeros_like(log_prob)
        obs, env_state, reward, terminated, truncated, info = env_step(
            jr.split(k_env, num_envs), env_state, pol.to_env(action), env_params
        )
        final_value = torch.zeros_like(log_prob)
        if bootstrap_truncation:
            final_value = torch.where(truncated & ~terminated, pol.value(params, info["final_obs"]), final_value)
        transition = Transition(
            obs=obs_tm1,
            action=action,
            log_prob=log_prob.detach(),
            value=v.detach(),
            reward=reward.to(torch.float32),
            done=terminated | truncated,
            final_value=final_value.detach(),
            episode_return=info["returned_episode_returns"].to(torch.float32),
            episode_length=info["returned_episode_lengths"].to(torch.float32),
            episode_done=info["returned_episode"],
        )
        return transition, env_state, obs, key

    # stack_steps: [T, E, ...] per seed, stacked where the lift keeps the seed axis
    step_l, stack_l = lift_pieces(lift, step, stack_steps)

    def rollout(params, env_state, obs, key) -> tuple[Transition, Any, torch.Tensor, torch.Tensor]:
        transitions = []
        for _ in range(num_steps):
            transition, env_state, obs, key = step_l(params, env_state, obs, key)
            transitions.append(transition)
        return stack_l(transitions), env_state, obs, key

    return rollout
