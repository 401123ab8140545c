"""Pendulum swing-up (gymnasium ``Pendulum-v1``), pure torch.

Copies gymnasium 1.x's ``PendulumEnv`` including how numpy treats the action:
gymnasium's action is a float32 array, so the clipped torque ``u`` stays
float32 and ``0.001 * u**2`` and ``3 / (m l^2) * u`` are computed in float32
before joining the float64 state.  Here the action's own dtype plays that
role: pass a float32 action (the action space's dtype is float32, as in
gymnasium) to reproduce gymnasium in a float64 env, or an action in the params
dtype to keep all arithmetic in that dtype.
"""

from __future__ import annotations

import math

import torch

from funrl.envs import spaces
from funrl.envs.core import Environment, uniform
from funrl.tree import pytree_dataclass

__all__ = ["Pendulum", "PendulumState", "PendulumParams", "angle_normalize"]


@pytree_dataclass
class PendulumState:
    """``theta`` (0 = upright), ``theta_dot``: float ``()``; ``time``: int64 ``()``."""

    theta: torch.Tensor
    theta_dot: torch.Tensor
    time: torch.Tensor


@pytree_dataclass
class PendulumParams:
    """gymnasium's constants (float ``()``) and ``max_episode_steps`` (int64 ``()``)."""

    max_speed: torch.Tensor
    max_torque: torch.Tensor
    dt: torch.Tensor
    g: torch.Tensor
    m: torch.Tensor
    l: torch.Tensor  # noqa: E741 - gymnasium's name
    max_episode_steps: torch.Tensor


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """Wrap angles into ``[-pi, pi)``: ``((x + pi) mod 2 pi) - pi`` (floor modulo, as numpy's ``%``)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


class Pendulum(Environment):
    """Swing a pendulum up and hold it with a bounded torque.

    Observation: ``[cos theta, sin theta, theta_dot]`` in the params dtype.
    Action: float ``(1,)`` torque, clipped to ``[-max_torque, max_torque]``.
    Reward: ``-(angle_normalize(theta)**2 + 0.1 theta_dot**2 + 0.001 u**2)``.
    Never terminates (episodes end by the time limit, 200 steps).
    Reset: ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``.
    """

    #: params that must be > 0 (checked by ``funrl.envs.make`` on overrides)
    POSITIVE_PARAMS = ("max_speed", "max_torque", "dt", "m", "l")

    def default_params(self, dtype: torch.dtype = torch.float32) -> PendulumParams:
        """gymnasium's constants (``g = 10``) in ``dtype``; ``max_episode_steps`` 200."""

        def f(v):
            return torch.tensor(v, dtype=dtype)

        return PendulumParams(
            max_speed=f(8.0),
            max_torque=f(2.0),
            dt=f(0.05),
            g=f(10.0),
            m=f(1.0),
            l=f(1.0),
            max_episode_steps=torch.tensor(200, dtype=torch.int64),
        )

    def _obs(self, s: PendulumState) -> torch.Tensor:
        return torch.stack([torch.cos(s.theta), torch.sin(s.theta), s.theta_dot])

    def reset_env(self, key, params: PendulumParams):
        """``(obs (3,), state)``: ``theta ~ U(-pi, pi)``, ``theta_dot ~ U(-1, 1)``."""
        dtype = params.g.dtype
        high = torch.tensor([math.pi, 1.0], dtype=dtype, device=key.device)
        u = uniform(key, 2, dtype, -high, high)
        state = PendulumState(
            theta=u[0], theta_dot=u[1], time=torch.zeros((), dtype=torch.int64, device=key.device)
        )
        return self._obs(state), state

    def step_env(self, key, state: PendulumState, action, params: PendulumParams):
        """One Euler step (``key`` is unused).  Arithmetic on the torque runs in ``action.dtype``."""
        p = params
        th, thdot = state.theta, state.theta_dot
        dtype = th.dtype
        adt = action.dtype
        u = torch.clamp(action, -p.max_torque.to(adt), p.max_torque.to(adt))[0]
        costs = angle_normalize(th) ** 2 + 0.1 * thdot**2 + (0.001 * (u**2)).to(dtype)
        # gymnasium: 3*g/(2*l) is a Python float times sin(th) (float64); 3/(m l^2) * u stays in u's dtype
        u_term = ((3.0 / (p.m * p.l**2)).to(adt) * u).to(dtype)
        newthdot = thdot + (3 * p.g / (2 * p.l) * torch.sin(th) + u_term) * p.dt
        newthdot = torch.clamp(newthdot, -p.max_speed, p.max_speed)
        newth = th + newthdot * p.dt
        new = PendulumState(theta=newth, theta_dot=newthdot, time=state.time + 1)
        terminated = torch.zeros((), dtype=torch.bool, device=th.device)
        return self._obs(new), new, -costs, terminated, {}

    def observation_space(self, params: PendulumParams) -> spaces.Box:
        """Box ``[-1, -1, -max_speed]`` to ``[1, 1, max_speed]``."""
        one = torch.ones((), dtype=params.g.dtype, device=params.g.device)
        high = torch.stack([one, one, params.max_speed])
        return spaces.Box(-high, high, (3,), params.g.dtype)

    def action_space(self, params=None) -> spaces.Box:
        """Box ``[-max_torque, max_torque]`` of shape ``(1,)``, float32 as in gymnasium."""
        mt = params.max_torque if params is not None else torch.tensor(2.0)
        return spaces.Box(-mt, mt, (1,), torch.float32)
