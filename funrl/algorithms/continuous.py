"""Continuous-control helpers shared by DDPG, TD3 and SAC: the action box, exploration, the deterministic actor.

What lives here is what those three algorithms share and nothing else:

* the action box: :class:`BoxSpec` / :func:`box_spec` (sizes and bounds,
  checked), :func:`action_scale` / :func:`action_bias`, :func:`clip_actions`,
  :func:`uniform_actions`;
* acting: :func:`warmup_actions` (uniform actions before ``learning_starts``,
  CleanRL's ``action_space.sample()``), :func:`deterministic_policy` (DDPG's and
  TD3's noisy actor, the ``policy`` argument of
  :func:`funrl.algorithms.off_policy.env_step`) and :func:`deterministic_env_step`
  (DDPG's and TD3's whole env-step piece);
* learning: :func:`dpg_actor_loss` (the deterministic policy gradient of DDPG and TD3);
* storage: :func:`replay_item` (one transition of the replay buffer) and
  :func:`transition_layout` (an env step's transitions in that layout);
* :func:`deterministic_evaluation_policy` (the greedy actor of DDPG and TD3) and
  :func:`check_continuous_config` (the Config checks the three share).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from funrl import nn
from funrl import random as jr
from funrl.algorithms import networks, off_policy
from funrl.algorithms.common import check_hidden_sizes
from funrl.envs import spaces
from funrl.losses.exploration import add_gaussian_noise
from funrl.losses.policy_gradients import dpg_loss

__all__ = [
    "BoxSpec",
    "box_spec",
    "flat_obs",
    "action_scale",
    "action_bias",
    "clip_actions",
    "uniform_actions",
    "warmup_actions",
    "deterministic_policy",
    "deterministic_env_step",
    "dpg_actor_loss",
    "replay_item",
    "transition_layout",
    "deterministic_evaluation_policy",
    "check_continuous_config",
]


class BoxSpec(NamedTuple):
    """What the networks need to know about a continuous-action env."""

    obs_dim: int  #: flattened observation size
    act_dim: int  #: flattened action size
    act_shape: tuple  #: the env's action shape
    low: torch.Tensor  #: float32 [act_dim] lower action bound
    high: torch.Tensor  #: float32 [act_dim] upper action bound
    obs_shape: tuple = ()  #: the env's observation shape (what a custom network's actor receives)


def box_spec(env, env_params) -> BoxSpec:
    """Sizes and bounds of a continuous-action env.

    Raises:
      ValueError: the action space is not a bounded ``Box`` (DDPG, TD3 and SAC
        squash actions into the box with tanh).
    """
    act_space = env.action_space(env_params)
    if not isinstance(act_space, spaces.Box) or not act_space.dtype.is_floating_point:
        raise ValueError(f"env: expected a continuous (float Box) action space, got {act_space!r} for {env.name}")
    low = act_space.low.reshape(-1).to(torch.float32)
    high = act_space.high.reshape(-1).to(torch.float32)
    # (meta tensors carry no values to check: funrl's device-placement test runs algorithms on them)
    if low.device.type != "meta" and not bool(torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError(f"env: expected a bounded action space (finite low and high), got {act_space!r} for {env.name}")
    obs_dim = int(math.prod(env.observation_space(env_params).shape))
    obs_shape = tuple(env.observation_space(env_params).shape)
    return BoxSpec(obs_dim, int(math.prod(act_space.shape)), tuple(act_space.shape), low, high, obs_shape)


def _check_spec(spec) -> None:
    if not isinstance(spec, BoxSpec):
        raise TypeError(f"spec: expected a BoxSpec (from box_spec(env, env_params)), got {type(spec).__name__}")


def _check_actions(actions: torch.Tensor, spec: BoxSpec, name: str = "actions") -> None:
    if not isinstance(actions, torch.Tensor) or not actions.is_floating_point() or actions.ndim != 2 \
            or actions.shape[1] != spec.act_dim:
        got = (actions.dtype, tuple(actions.shape)) if isinstance(actions, torch.Tensor) else type(actions).__name__
        raise ValueError(f"{name}: expected a float tensor [N, act_dim={spec.act_dim}], got {got}")


def flat_obs(obs: torch.Tensor) -> torch.Tensor:
    """``[N, *obs_shape] -> float32 [N, obs_dim]``."""
    if not isinstance(obs, torch.Tensor) or obs.ndim < 1:
        got = tuple(obs.shape) if isinstance(obs, torch.Tensor) else type(obs).__name__
        raise ValueError(f"obs: expected a tensor [N, *obs_shape], got {got}")
    return obs.reshape(obs.shape[0], -1).to(torch.float32)


def action_scale(spec: BoxSpec, device=None) -> torch.Tensor:
    """Half the box's width, ``(high - low) / 2``: float32 ``[act_dim]`` (CleanRL's ``action_scale``)."""
    _check_spec(spec)
    return (spec.high - spec.low).to(device) / 2


def action_bias(spec: BoxSpec, device=None) -> torch.Tensor:
    """The box's centre, ``(high + low) / 2``: float32 ``[act_dim]`` (CleanRL's ``action_bias``)."""
    _check_spec(spec)
    return (spec.high + spec.low).to(device) / 2


def clip_actions(action: torch.Tensor, spec: BoxSpec) -> torch.Tensor:
    """Clamp ``[N, act_dim]`` actions into the box."""
    _check_spec(spec)
    _check_actions(action, spec, "action")
    return torch.clamp(action, spec.low.to(action.device), spec.high.to(action.device))


def uniform_actions(key: torch.Tensor, spec: BoxSpec, n: int) -> torch.Tensor:
    """``n`` uniformly random actions in the box: float32 ``[n, act_dim]`` (CleanRL's ``action_space.sample()``)."""
    _check_spec(spec)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    return jr.uniform(key, (n, spec.act_dim), torch.float32, spec.low.to(key.device), spec.high.to(key.device))


def warmup_actions(key: torch.Tensor, actions: torch.Tensor, spec: BoxSpec, explore: torch.Tensor) -> torch.Tensor:
    """Uniformly random actions where ``explore`` (before ``learning_starts``), else ``actions``.

    Branch-free: both are computed and ``torch.where`` picks, so one graph
    serves every step.

    Args:
      key: a funrl key ``(2,)`` for the uniform actions.
      actions: float32 ``[N, act_dim]``, the policy's.
      spec: the action box.
      explore: bool tensor ``()`` (usually ``global_step < learning_starts``).

    Returns:
      float32 ``[N, act_dim]``.
    """
    _check_spec(spec)
    _check_actions(actions, spec)
    if not isinstance(explore, torch.Tensor) or explore.dtype != torch.bool:
        raise TypeError(f"explore: expected a bool tensor, got {getattr(explore, 'dtype', type(explore).__name__)}")
    return torch.where(explore, uniform_actions(key, spec, actions.shape[0]), actions)


def deterministic_policy(actor: nn.Model, spec: BoxSpec, actor_params, exploration_noise,
                         explore: torch.Tensor) -> Callable:
    """DDPG's and TD3's acting policy, for :func:`funrl.algorithms.off_policy.env_step` (``num_keys=2``).

    ``act([k_noise, k_random], obs [N, *obs_shape]) -> action [N, *act_shape]``:
    the actor's action plus Gaussian noise of ``exploration_noise`` times the
    action scale, clipped to the box; uniform actions where ``explore``.

    Args:
      actor: the deterministic actor (``networks.deterministic_actor``).
      spec: the action box.
      actor_params: the actor's params.
      exploration_noise: float or float tensor ``()``, in units of the action scale.
      explore: bool tensor ``()``: act uniformly at random (before learning starts).
    """
    _check_spec(spec)

    def act(keys, obs):
        k_noise, k_random = keys
        x = flat_obs(obs)
        noisy = clip_actions(add_gaussian_noise(k_noise, actor.apply(actor_params, x),
                                                action_scale(spec, x.device) * exploration_noise), spec)
        return warmup_actions(k_random, noisy, spec, explore).reshape((obs.shape[0],) + spec.act_shape)

    return act


def deterministic_env_step(actor: nn.Model, spec: BoxSpec, env, env_params, learning_starts: int) -> Callable:
    """DDPG's and TD3's env-step piece: ``step(acting, actor_params, exploration_noise) -> (acting, transition, info)``.

    :func:`deterministic_policy` (uniform actions while ``acting.global_step <
    learning_starts``) through :func:`funrl.algorithms.off_policy.env_step`.  A
    per-seed piece: pass it through the algorithm's ``lift``.

    Args:
      actor: the deterministic actor; spec: the action box.
      env, env_params: the ``LogWrapper``-ed env and its params.
      learning_starts: env steps of uniform actions (int >= 0).
    """
    _check_spec(spec)
    if isinstance(learning_starts, bool) or not isinstance(learning_starts, int) or learning_starts < 0:
        raise ValueError(f"learning_starts: expected an int >= 0, got {learning_starts!r}")

    def rollout_step(acting: off_policy.Actor, actor_params, exploration_noise):
        explore = acting.global_step < learning_starts
        policy = deterministic_policy(actor, spec, actor_params, exploration_noise, explore)
        return off_policy.env_step(policy, env, env_params, acting, num_keys=2)

    return rollout_step


def dpg_actor_loss(actor: nn.Model, critic: nn.Model, actor_params, critic_params,
                   obs: torch.Tensor):
    """DDPG's and TD3's actor loss, ``-Q(s, actor(s))`` averaged over the batch, and its metrics.

    The gradient w.r.t. the actor's params is CleanRL's; the loss is written
    with :func:`funrl.losses.policy_gradients.dpg_loss` on ``dQ/da`` at the
    actor's action (so the critic's params get no gradient through it).

    Args:
      actor, critic: ``networks.deterministic_actor`` / ``networks.continuous_q_network``.
      actor_params, critic_params: their params (TD3: the first critic's).
      obs: float32 ``[B, obs_dim]``.

    Returns:
      ``(loss (), {"actor_loss": -mean Q(s, actor(s))})``, for ``torch.func.grad(..., has_aux=True)``.
    """
    if not isinstance(obs, torch.Tensor) or obs.ndim != 2:
        raise ValueError(f"obs: expected a float tensor [B, obs_dim], got {getattr(obs, 'shape', type(obs).__name__)}")
    a = actor.apply(actor_params, obs)
    dqda, q_sum = torch.func.grad_and_value(lambda act: critic.apply(critic_params, obs, act).sum())(a.detach())
    # dpg_loss is elementwise without dqda_clipping, so one call on the flattened
    # batch equals the per-sample losses (and skips a vmap)
    loss = dpg_loss(a.reshape(-1), dqda.reshape(-1)).sum() / obs.shape[0]
    return loss, {"actor_loss": -q_sum / obs.shape[0]}


def replay_item(spec: BoxSpec, key: torch.Tensor) -> dict:
    """One stored transition (zeros on ``key``'s device): the layout of DDPG's, TD3's and SAC's buffers.

    Built with ``key.new_zeros`` so that under ``vmap`` every seed gets a
    buffer of its own rather than a stride-0 broadcast of one.
    """
    _check_spec(spec)
    f32 = torch.float32
    return {
        "obs": key.new_zeros((spec.obs_dim,), dtype=f32),
        "action": key.new_zeros((spec.act_dim,), dtype=f32),
        "reward": key.new_zeros((), dtype=f32),
        "next_obs": key.new_zeros((spec.obs_dim,), dtype=f32),
        "terminated": key.new_zeros((), dtype=torch.bool),
    }


def transition_layout(transition: dict) -> dict:
    """Transitions ``[N, ...]`` from :func:`funrl.algorithms.off_policy.env_step` in :func:`replay_item`'s layout.

    Observations flattened to float32 ``[N, obs_dim]``, actions to ``[N, act_dim]``;
    reward and ``terminated`` as they are.  The ``layout`` of :func:`funrl.algorithms.off_policy.store`.
    """
    missing = sorted({"obs", "action", "reward", "next_obs", "terminated"} - set(transition))
    if missing:
        raise ValueError(f"transition: expected the keys of off_policy.env_step's transition, missing {missing}")
    a = transition["action"]
    return {
        "obs": flat_obs(transition["obs"]),
        "action": a.reshape(a.shape[0], -1),
        "reward": transition["reward"],
        "next_obs": flat_obs(transition["next_obs"]),
        "terminated": transition["terminated"],
    }


def deterministic_evaluation_policy(config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions[K, *action_shape]``: the deterministic actor, no noise.

    DDPG's and TD3's ``evaluation_policy``; ``state.params["actor"]`` holds the actor.
    """
    spec = box_spec(env, env_params)
    actor = networks.deterministic_actor(spec, config.hidden_sizes, config.network)

    def act(state, key, obs):
        a = actor.apply(state.params["actor"], flat_obs(obs))
        return a.reshape((obs.shape[0],) + spec.act_shape)

    return act


def check_continuous_config(config) -> None:
    """Checks shared by DDPG, TD3 and SAC configs (fields every one of them has).

    ``learning_starts`` an int >= 0; ``hidden_sizes`` any sequence of positive
    ints (a saved ``config.json`` gives a list), stored as a tuple; ``network``
    valid; ``exploration_noise``, ``policy_noise``, ``noise_clip`` (where the
    Config has them) numbers >= 0.

    Raises:
      ValueError: naming the field, what was expected and what was given.
    """
    ls = config.learning_starts
    if isinstance(ls, bool) or not isinstance(ls, int) or ls < 0:
        raise ValueError(f"config.learning_starts: expected an int >= 0, got {ls!r}")
    check_hidden_sizes(config)
    object.__setattr__(config, "hidden_sizes", tuple(config.hidden_sizes))  # frozen dataclass
    networks.check_network(config)
    for name in ("exploration_noise", "policy_noise", "noise_clip"):
        v = getattr(config, name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"config.{name}: expected a number >= 0, got {v!r}")
