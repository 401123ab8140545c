"""One env step of an off-policy algorithm, shared by DQN, DDPG, TD3 and SAC.

An off-policy algorithm acts in its envs one step at a time and learns from a
replay buffer.  The acting side is the same for all of them, only the policy
differs, so it is written once here:

* :class:`Actor`: what acting carries between steps (env state, last
  observation, key, env-step counter) and nothing else;
* :func:`env_step`: act with a given policy, step the vmapped envs, return the
  new :class:`Actor`, the transitions and the episode info.  It reads no
  params but the policy's and no optimizer or replay state, so a compiled
  rollout piece built on it takes and returns only what acting touches;
* :func:`store`: add an update's transitions to the replay buffer, in step
  order, with one out-of-place copy of the buffer per update (not per step;
  the result is the same as adding them one step at a time);
* :func:`collect`: the glue's loop over a lifted env-step piece;
* :func:`episode_summary`: the update's episode metrics from the steps' infos;
* :func:`adam_optimizer`: the Adam these algorithms use, built inside a piece
  from the seed's own learning-rate tensor (PureJaxRL style), behind
  ``Config.freeze`` and ``Config.skip_nonfinite``.

Pieces stay per-seed pure functions passed through a ``lift``
(:mod:`funrl.algorithms.common`); :func:`collect` is batch-agnostic glue.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import replay
from funrl.algorithms.common import episode_metrics, step_size, with_finite_guard, with_frozen

__all__ = [
    "Actor",
    "StepInfo",
    "env_step",
    "store",
    "collect",
    "actor_of",
    "with_actor",
    "fields_of",
    "episode_summary",
    "adam_optimizer",
]

TRANSITION_KEYS = ("obs", "action", "reward", "next_obs", "terminated")


class Actor(NamedTuple):
    """The acting side of one seed: its envs, their last observation, its key and step counter."""

    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    global_step: torch.Tensor  #: int64 (): env steps taken by this seed (all envs)


class StepInfo(NamedTuple):
    """What one env step reports for the update's episode metrics (shapes [num_envs])."""

    episode_return: torch.Tensor  #: float32: the return of the episode that ended (valid where episode_done)
    episode_length: torch.Tensor  #: float32: its length
    episode_done: torch.Tensor  #: bool: an episode ended at this step


def env_step(policy: Callable, env, env_params, actor: Actor, num_keys: int = 1):
    """Act with ``policy``, step every env once, return the new actor, the transitions and the episode info.

    The actor's key is split into ``num_keys + 2``: the first is carried on,
    the next ``num_keys`` go to the policy, the last is split over the envs.

    Args:
      policy: ``policy(keys, obs) -> action``: ``keys`` a list of ``num_keys``
        funrl keys, ``obs`` the envs' observations ``[E, *obs_shape]``,
        ``action`` what the envs take, ``[E, *act_shape]``.
      env: an env with ``LogWrapper``'s info (``returned_episode*``) and
        ``final_obs`` in its info (funrl's auto-reset); stepped with ``vmap``.
      env_params: its params (shared by the envs).
      actor: the acting state, ``actor.obs`` ``[E, *obs_shape]``.
      num_keys: keys the policy draws from (int >= 1).

    Returns:
      ``(actor, transition, info)``: the next :class:`Actor` (``global_step + E``);
      ``transition`` a dict ``obs [E, *obs_shape]``, ``action`` (the policy's),
      ``reward`` float32 ``[E]``, ``next_obs`` the real next observation
      (``info["final_obs"]``, not the auto-reset one, where an episode ended),
      ``terminated`` bool ``[E]`` (truncation is not stored: it bootstraps);
      ``info`` a :class:`StepInfo`.

    Raises:
      TypeError / ValueError: bad ``policy``, ``actor``, ``num_keys`` or action shape.
    """
    if not callable(policy):
        raise TypeError(f"policy: expected a callable policy(keys, obs) -> action, got {type(policy).__name__}")
    if not isinstance(actor, Actor):
        raise TypeError(f"actor: expected an off_policy.Actor, got {type(actor).__name__}")
    if isinstance(num_keys, bool) or not isinstance(num_keys, int) or num_keys < 1:
        raise ValueError(f"num_keys: expected an int >= 1, got {num_keys!r}")
    E = actor.obs.shape[0]
    key, *policy_keys, k_env = jr.split(actor.key, num_keys + 2)
    action = policy(policy_keys, actor.obs)
    if not isinstance(action, torch.Tensor) or action.ndim < 1 or action.shape[0] != E:
        got = tuple(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
        raise ValueError(f"policy: expected an action with a leading axis of num_envs={E}, got {got}")
    obs, env_state, reward, terminated, _, info = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))(
        jr.split(k_env, E), actor.env_state, action, env_params
    )
    transition = {
        "obs": actor.obs,
        "action": action,
        "reward": reward.to(torch.float32),
        "next_obs": info["final_obs"],  # obs is already the auto-reset one where an episode ended
        "terminated": terminated,
    }
    step_info = StepInfo(
        episode_return=info["returned_episode_returns"].to(torch.float32),
        episode_length=info["returned_episode_lengths"].to(torch.float32),
        episode_done=info["returned_episode"],
    )
    return Actor(env_state=env_state, obs=obs, key=key, global_step=actor.global_step + E), transition, step_info


def store(buffer: replay.ReplayState, transitions: list, layout: Callable | None = None) -> replay.ReplayState:
    """Add an update's transitions to ``buffer`` in step order (step 0's envs first), out of place.

    One :func:`funrl.algorithms.replay.add` for the whole update: a functional
    add copies the buffer, so once per update rather than once per step; the
    buffer then holds what per-step adds would have left (``add`` keeps the
    last ``capacity`` items of a batch, as if added one by one).

    Args:
      buffer: the replay buffer.
      transitions: a non-empty list (one per env step) of :func:`env_step`'s
        transition dicts, leaves ``[E, ...]``.
      layout: optional ``layout(transition) -> item batch``, applied to the
        merged ``[steps * E, ...]`` transitions to give the buffer's item layout
        (e.g. flattened observations); None stores them as they are.

    Returns:
      The new :class:`~funrl.algorithms.replay.ReplayState`.
    """
    if not isinstance(transitions, (list, tuple)) or not transitions:
        raise ValueError(f"transitions: expected a non-empty list of env_step transitions, got {transitions!r:.80}")
    if layout is not None and not callable(layout):
        raise TypeError(f"layout: expected a callable or None, got {type(layout).__name__}")
    merged = tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree.stack(list(transitions)))
    return replay.add(buffer, merged if layout is None else layout(merged))


def collect(step: Callable, actor: Actor, num_steps: int, *args):
    """Run a (lifted) env-step piece ``num_steps`` times: the glue of an off-policy update.

    Args:
      step: ``step(actor, *args) -> (actor, transition, info)``, e.g. a lifted
        piece built on :func:`env_step`.
      actor: the acting state (one seed or a seed batch, as ``step`` expects).
      num_steps: steps to take (int >= 1).
      *args: passed to every call (params, hyper-parameters: read, not changed).

    Returns:
      ``(actor, transitions, infos)``: the last actor and two lists of ``num_steps`` entries.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
    transitions, infos = [], []
    for _ in range(num_steps):
        actor, transition, info = step(actor, *args)
        transitions.append(transition)
        infos.append(info)
    return actor, transitions, infos


def actor_of(state) -> Actor:
    """The acting part of a flat state with fields ``env_state``, ``obs``, ``key``, ``global_step`` (DDPG, TD3, SAC)."""
    missing = [f for f in Actor._fields if not hasattr(state, f)]
    if missing:
        raise TypeError(f"state: expected a state with the fields {list(Actor._fields)}, "
                        f"{type(state).__name__} lacks {missing}")
    return Actor(env_state=state.env_state, obs=state.obs, key=state.key, global_step=state.global_step)


def with_actor(state, actor: Actor):
    """``state`` (a NamedTuple) with its acting fields from ``actor``: the inverse of :func:`actor_of`."""
    if not isinstance(actor, Actor):
        raise TypeError(f"actor: expected an off_policy.Actor, got {type(actor).__name__}")
    return state._replace(**actor._asdict())


def fields_of(state, fields: tuple) -> dict:
    """The ``fields`` of ``state`` as a dict: what a learning piece reads (and returns, changed).

    The glue hands a piece only these, and puts back what it returns with
    ``state._replace(**changed)``.
    """
    missing = [f for f in fields if not hasattr(state, f)]
    if missing:
        raise TypeError(f"state: {type(state).__name__} has no field(s) {missing}")
    return {f: getattr(state, f) for f in fields}


def episode_summary(step_infos: list) -> dict:
    """The update's episode metrics from its steps' :class:`StepInfo` (see ``common.episode_metrics``).

    Returns:
      dict ``episode_return``, ``episode_length`` (means over the episodes that
      ended, 0 if none) and ``episodes`` (their count): scalars.
    """
    if not isinstance(step_infos, (list, tuple)) or not step_infos or not all(isinstance(i, StepInfo) for i in step_infos):
        raise ValueError(f"step_infos: expected a non-empty list of StepInfo, got {step_infos!r:.80}")
    traj = tree.stack(list(step_infos))  # leaves [steps, E]
    return episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)


def adam_optimizer(learning_rate, freeze_mask=None, skip_nonfinite: int = 0, *, eps: float = 1e-8,
                   max_grad_norm: float | None = None) -> optim.GradientTransformation:
    """Adam ending in ``scale_by_learning_rate(step_size(learning_rate))``, behind freeze and the finite guard.

    Built inside a piece from the seed's own learning-rate tensor, so a vmapped
    seed batch holds one rate per seed (no ``-lr * u`` by hand; numerically the
    same: ``u * (-1.0 * lr)``).  The state does not hold the rate, so ``init``
    may be called with any rate.

    Args:
      learning_rate: float tensor ``()`` (the seed's) or a number > 0.
      freeze_mask: ``common.freeze_mask``'s result for these params (None: nothing frozen).
      skip_nonfinite: ``Config.skip_nonfinite`` (0: off).
      eps: Adam's epsilon.
      max_grad_norm: clip the global gradient norm first (None: off).

    Returns:
      ``with_finite_guard(with_frozen(chain([clip,] scale_by_adam, scale_by_learning_rate), mask))``.
    """
    parts = [] if max_grad_norm is None else [optim.clip_by_global_norm(max_grad_norm)]
    parts += [optim.scale_by_adam(eps=eps), optim.scale_by_learning_rate(step_size(learning_rate))]
    return with_finite_guard(with_frozen(optim.chain(*parts), freeze_mask), skip_nonfinite)
