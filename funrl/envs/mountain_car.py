"""Mountain car, discrete (``MountainCar-v0``) and continuous (``MountainCarContinuous-v0``), pure torch.

Both follow gymnasium 1.x operation for operation.  Known dtype quirks of
gymnasium that funrl does *not* copy: ``MountainCarContinuous`` stores its
state as float32 after every step but as float64 after a reset, and
``MountainCar`` keeps float64.  funrl keeps the state in the params dtype
throughout.  What *is* copied for the continuous car: the clipped force times
``power`` is computed in the action's dtype (gymnasium's action is a float32
array), and the reward's action penalty uses the unclipped action.
"""

from __future__ import annotations

import torch

from funrl.envs import spaces
from funrl.envs.core import Environment, uniform
from funrl.tree import pytree_dataclass

__all__ = [
    "MountainCar",
    "MountainCarContinuous",
    "MountainCarState",
    "MountainCarParams",
    "MountainCarContinuousParams",
]


@pytree_dataclass
class MountainCarState:
    """``position``, ``velocity``: float ``()``; ``time``: int64 ``()``."""

    position: torch.Tensor
    velocity: torch.Tensor
    time: torch.Tensor


@pytree_dataclass
class MountainCarParams:
    """gymnasium's ``MountainCarEnv`` constants (float ``()``) and ``max_episode_steps``."""

    min_position: torch.Tensor
    max_position: torch.Tensor
    max_speed: torch.Tensor
    goal_position: torch.Tensor
    goal_velocity: torch.Tensor
    force: torch.Tensor
    gravity: torch.Tensor
    max_episode_steps: torch.Tensor


@pytree_dataclass
class MountainCarContinuousParams:
    """gymnasium's ``Continuous_MountainCarEnv`` constants and ``max_episode_steps``.

    ``gravity`` is the 0.0025 that gymnasium writes inline.
    """

    min_action: torch.Tensor
    max_action: torch.Tensor
    min_position: torch.Tensor
    max_position: torch.Tensor
    max_speed: torch.Tensor
    goal_position: torch.Tensor
    goal_velocity: torch.Tensor
    power: torch.Tensor
    gravity: torch.Tensor
    max_episode_steps: torch.Tensor


def _reset(key, dtype) -> tuple[torch.Tensor, MountainCarState]:
    pos = uniform(key, 1, dtype, -0.6, -0.4)[0]
    state = MountainCarState(
        position=pos,
        velocity=torch.zeros((), dtype=dtype, device=key.device),
        time=torch.zeros((), dtype=torch.int64, device=key.device),
    )
    return _obs(state), state


def _obs(s: MountainCarState) -> torch.Tensor:
    return torch.stack([s.position, s.velocity])


def _obs_space(params) -> spaces.Box:
    low = torch.stack([params.min_position, -params.max_speed])
    high = torch.stack([params.max_position, params.max_speed])
    return spaces.Box(low, high, (2,), params.max_speed.dtype)


class MountainCar(Environment):
    """Drive an under-powered car up a hill: push left (0), nothing (1), right (2).

    Observation: ``[position, velocity]``.  Reward -1 per step.  Terminates when
    ``position >= goal_position`` and ``velocity >= goal_velocity``.
    Reset: ``position ~ U(-0.6, -0.4)``, ``velocity = 0``.
    """

    #: params that must be > 0 (checked by ``funrl.envs.make`` on overrides)
    POSITIVE_PARAMS = ("max_speed", "force")

    def default_params(self, dtype: torch.dtype = torch.float32) -> MountainCarParams:
        """gymnasium's constants in ``dtype``; ``max_episode_steps`` 200."""

        def f(v):
            return torch.tensor(v, dtype=dtype)

        return MountainCarParams(
            min_position=f(-1.2),
            max_position=f(0.6),
            max_speed=f(0.07),
            goal_position=f(0.5),
            goal_velocity=f(0.0),
            force=f(0.001),
            gravity=f(0.0025),
            max_episode_steps=torch.tensor(200, dtype=torch.int64),
        )

    def reset_env(self, key, params: MountainCarParams):
        """``(obs (2,), state)``."""
        return _reset(key, params.max_speed.dtype)

    def step_env(self, key, state: MountainCarState, action, params: MountainCarParams):
        """One step of gymnasium's update (``key`` is unused)."""
        p = params
        position, velocity = state.position, state.velocity
        velocity = velocity + ((action - 1).to(velocity.dtype) * p.force + torch.cos(3 * position) * (-p.gravity))
        velocity = torch.clamp(velocity, -p.max_speed, p.max_speed)
        position = position + velocity
        position = torch.clamp(position, p.min_position, p.max_position)
        velocity = torch.where((position == p.min_position) & (velocity < 0), torch.zeros_like(velocity), velocity)
        terminated = (position >= p.goal_position) & (velocity >= p.goal_velocity)
        reward = torch.full_like(position, -1.0)
        new = MountainCarState(position=position, velocity=velocity, time=state.time + 1)
        return _obs(new), new, reward, terminated, {}

    def observation_space(self, params: MountainCarParams) -> spaces.Box:
        """Box ``[min_position, -max_speed]`` to ``[max_position, max_speed]``."""
        return _obs_space(params)

    def action_space(self, params=None) -> spaces.Discrete:
        """Discrete(3): accelerate left, don't accelerate, accelerate right."""
        return spaces.Discrete(3)


class MountainCarContinuous(Environment):
    """Mountain car with a continuous force in ``[min_action, max_action]``.

    Observation: ``[position, velocity]``.  Reward ``100 * terminated - 0.1 *
    a**2`` with the *unclipped* action ``a`` (as gymnasium).  Terminates when
    ``position >= goal_position`` (0.45) and ``velocity >= goal_velocity``.
    Reset: ``position ~ U(-0.6, -0.4)``, ``velocity = 0``.
    """

    #: params that must be > 0 (checked by ``funrl.envs.make`` on overrides)
    POSITIVE_PARAMS = ("max_speed", "power")

    def default_params(self, dtype: torch.dtype = torch.float32) -> MountainCarContinuousParams:
        """gymnasium's constants in ``dtype``; ``max_episode_steps`` 999."""

        def f(v):
            return torch.tensor(v, dtype=dtype)

        return MountainCarContinuousParams(
            min_action=f(-1.0),
            max_action=f(1.0),
            min_position=f(-1.2),
            max_position=f(0.6),
            max_speed=f(0.07),
            goal_position=f(0.45),
            goal_velocity=f(0.0),
            power=f(0.0015),
            gravity=f(0.0025),
            max_episode_steps=torch.tensor(999, dtype=torch.int64),
        )

    def reset_env(self, key, params: MountainCarContinuousParams):
        """``(obs (2,), state)``."""
        return _reset(key, params.max_speed.dtype)

    def step_env(self, key, state: MountainCarState, action, params: MountainCarContinuousParams):
        """One step of gymnasium's update (``key`` is unused).  ``force * power`` runs in ``action.dtype``."""
        p = params
        dtype = state.position.dtype
        adt = action.dtype
        position, velocity = state.position, state.velocity
        force = torch.clamp(action[0], p.min_action.to(adt), p.max_action.to(adt))
        velocity = velocity + ((force * p.power.to(adt)).to(dtype) - p.gravity * torch.cos(3 * position))
        velocity = torch.clamp(velocity, -p.max_speed, p.max_speed)
        position = position + velocity
        position = torch.clamp(position, p.min_position, p.max_position)
        velocity = torch.where((position == p.min_position) & (velocity < 0), torch.zeros_like(velocity), velocity)
        terminated = (position >= p.goal_position) & (velocity >= p.goal_velocity)
        a = action[0].to(dtype)
        reward = torch.where(terminated, 100.0, 0.0).to(dtype) - a**2 * 0.1
        new = MountainCarState(position=position, velocity=velocity, time=state.time + 1)
        return _obs(new), new, reward, terminated, {}

    def observation_space(self, params: MountainCarContinuousParams) -> spaces.Box:
        """Box ``[min_position, -max_speed]`` to ``[max_position, max_speed]``."""
        return _obs_space(params)

    def action_space(self, params=None) -> spaces.Box:
        """Box ``[min_action, max_action]`` of shape ``(1,)``, float32 as in gymnasium."""
        if params is None:
            lo, hi = torch.tensor(-1.0), torch.tensor(1.0)
        else:
            lo, hi = params.min_action, params.max_action
        return spaces.Box(lo, hi, (1,), torch.float32)
