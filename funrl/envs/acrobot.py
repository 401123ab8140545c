"""Acrobot (gymnasium ``Acrobot-v1``), pure torch.

Copies gymnasium 1.x's ``AcrobotEnv`` with its defaults: the "book" dynamics
(Sutton & Barto), one classic RK4 step of ``dt = 0.2`` (gymnasium's ``rk4``
over ``t = [0, dt]``), joint angles wrapped into ``[-pi, pi]``, velocities
clipped to ``[-4 pi, 4 pi]`` and ``[-9 pi, 9 pi]``, torque noise 0.

gymnasium draws the reset state as float64 and stores it as float32; funrl
copies that rounding (the reset values are float32 numbers, also in a float64
env) and otherwise keeps the params dtype.  gymnasium's ``wrap`` is a
``while`` loop; here it is the equivalent closed form, identical for the usual
single wrap.  The torque-noise draw is made on every step (multiplied by
``torque_noise_max``, 0 by default) because a branch on a param value would
break vmap/compile.
"""

from __future__ import annotations

import math

import torch

from funrl.envs import spaces
from funrl.envs.core import Environment, uniform
from funrl.tree import pytree_dataclass

__all__ = ["Acrobot", "AcrobotState", "AcrobotParams", "wrap", "rk4"]


@pytree_dataclass
class AcrobotState:
    """Joint angles ``theta1, theta2`` and velocities ``dtheta1, dtheta2``: float ``()``; ``time``: int64 ``()``."""

    theta1: torch.Tensor
    theta2: torch.Tensor
    dtheta1: torch.Tensor
    dtheta2: torch.Tensor
    time: torch.Tensor


@pytree_dataclass
class AcrobotParams:
    """gymnasium's class constants (lower-cased; float ``()``) and ``max_episode_steps``.

    ``link_length_2`` is used only for drawing in gymnasium and is kept for
    completeness; ``gravity`` is the 9.8 written inline in gymnasium.
    """

    dt: torch.Tensor
    link_length_1: torch.Tensor
    link_length_2: torch.Tensor
    link_mass_1: torch.Tensor
    link_mass_2: torch.Tensor
    link_com_pos_1: torch.Tensor
    link_com_pos_2: torch.Tensor
    link_moi: torch.Tensor
    max_vel_1: torch.Tensor
    max_vel_2: torch.Tensor
    torque_noise_max: torch.Tensor
    gravity: torch.Tensor
    max_episode_steps: torch.Tensor


def wrap(x: torch.Tensor, m: float, M: float) -> torch.Tensor:
    """Shift ``x`` by multiples of ``M - m`` into ``[m, M]`` like gymnasium's ``wrap`` loop."""
    diff = M - m
    k_down = torch.ceil((x - M) / diff)
    k_up = torch.ceil((m - x) / diff)
    return torch.where(x > M, x - k_down * diff, torch.where(x < m, x + k_up * diff, x))


def rk4(derivs, y0: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """One classic Runge-Kutta-4 step of ``dy/dt = derivs(y)`` over ``[0, dt]`` (gymnasium's ``rk4``).

    Args:
      derivs: function ``y -> dy/dt`` on tensors of ``y0``'s shape.
      y0: the initial state.
      dt: step size (scalar tensor or float).

    Returns:
      The state after ``dt``.
    """
    dt2 = dt / 2.0
    k1 = derivs(y0)
    k2 = derivs(y0 + dt2 * k1)
    k3 = derivs(y0 + dt2 * k2)
    k4 = derivs(y0 + dt * k3)
    return y0 + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


class Acrobot(Environment):
    """Swing the tip of a two-link pendulum above a line by torquing the middle joint.

    Args:
      book_or_nips: ``"book"`` (gymnasium's default dynamics) or ``"nips"``.

    Observation: ``[cos t1, sin t1, cos t2, sin t2, dt1, dt2]``.  Action:
    int64 ``()`` in ``{0, 1, 2}`` for torque -1, 0, +1.  Reward -1 per step, 0
    on the terminating step.  Terminates when ``-cos t1 - cos(t1 + t2) > 1``.
    Reset: all four state variables ~ U(-0.1, 0.1).
    """

    #: params that must be > 0 (checked by ``funrl.envs.make`` on overrides)
    POSITIVE_PARAMS = ("dt", "link_moi")
    #: params that must be >= 0
    NONNEGATIVE_PARAMS = ("torque_noise_max",)

    def __init__(self, book_or_nips: str = "book"):
        if book_or_nips not in ("book", "nips"):
            raise ValueError(f"book_or_nips: expected 'book' or 'nips', got {book_or_nips!r}")
        self.book_or_nips = book_or_nips

    def default_params(self, dtype: torch.dtype = torch.float32) -> AcrobotParams:
        """gymnasium's constants in ``dtype``; ``max_episode_steps`` 500."""

        def f(v):
            return torch.tensor(v, dtype=dtype)

        return AcrobotParams(
            dt=f(0.2),
            link_length_1=f(1.0),
            link_length_2=f(1.0),
            link_mass_1=f(1.0),
            link_mass_2=f(1.0),
            link_com_pos_1=f(0.5),
            link_com_pos_2=f(0.5),
            link_moi=f(1.0),
            max_vel_1=f(4 * math.pi),
            max_vel_2=f(9 * math.pi),
            torque_noise_max=f(0.0),
            gravity=f(9.8),
            max_episode_steps=torch.tensor(500, dtype=torch.int64),
        )

    @staticmethod
    def _obs(s: AcrobotState) -> torch.Tensor:
        return torch.stack(
            [torch.cos(s.theta1), torch.sin(s.theta1), torch.cos(s.theta2), torch.sin(s.theta2), s.dtheta1, s.dtheta2]
        )

    def reset_env(self, key, params: AcrobotParams):
        """``(obs (6,), state)``: each state variable ~ U(-0.1, 0.1), rounded to float32 as gymnasium."""
        dtype = params.dt.dtype
        u = uniform(key, 4, torch.float64 if dtype == torch.float64 else torch.float32, -0.1, 0.1)
        u = u.to(torch.float32).to(dtype)
        state = AcrobotState(
            theta1=u[0], theta2=u[1], dtheta1=u[2], dtheta2=u[3], time=torch.zeros((), dtype=torch.int64, device=key.device)
        )
        return self._obs(state), state

    def _dsdt(self, s: torch.Tensor, a: torch.Tensor, p: AcrobotParams) -> torch.Tensor:
        m1, m2 = p.link_mass_1, p.link_mass_2
        l1 = p.link_length_1
        lc1, lc2 = p.link_com_pos_1, p.link_com_pos_2
        I1 = I2 = p.link_moi
        g = p.gravity
        theta1, theta2, dtheta1, dtheta2 = s[0], s[1], s[2], s[3]
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + I2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        if self.book_or_nips == "nips":
            ddtheta2 = (a + d2 / d1 * phi1 - phi2) / (m2 * lc2**2 + I2 - d2**2 / d1)
        else:
            ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
                m2 * lc2**2 + I2 - d2**2 / d1
            )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack([dtheta1, dtheta2, ddtheta1, ddtheta2])

    def step_env(self, key, state: AcrobotState, action, params: AcrobotParams):
        """One RK4 step of ``dt`` with torque ``action - 1`` (plus ``torque_noise_max`` noise)."""
        p = params
        dtype = state.theta1.dtype
        torque = (action - 1).to(dtype)
        torque = torque + uniform(key, 1, dtype, -1.0, 1.0)[0] * p.torque_noise_max
        s = torch.stack([state.theta1, state.theta2, state.dtheta1, state.dtheta2])
        ns = rk4(lambda y: self._dsdt(y, torque, p), s, p.dt)
        theta1 = wrap(ns[0], -math.pi, math.pi)
        theta2 = wrap(ns[1], -math.pi, math.pi)
        dtheta1 = torch.clamp(ns[2], -p.max_vel_1, p.max_vel_1)
        dtheta2 = torch.clamp(ns[3], -p.max_vel_2, p.max_vel_2)
        new = AcrobotState(theta1=theta1, theta2=theta2, dtheta1=dtheta1, dtheta2=dtheta2, time=state.time + 1)
        terminated = -torch.cos(theta1) - torch.cos(theta2 + theta1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(dtype)
        return self._obs(new), new, reward, terminated, {}

    def observation_space(self, params: AcrobotParams) -> spaces.Box:
        """Box ``[1, 1, 1, 1, max_vel_1, max_vel_2]`` (and its negative)."""
        one = torch.ones((), dtype=params.dt.dtype, device=params.dt.device)
        high = torch.stack([one, one, one, one, params.max_vel_1, params.max_vel_2])
        return spaces.Box(-high, high, (6,), params.dt.dtype)

    def action_space(self, params=None) -> spaces.Discrete:
        """Discrete(3): torque -1, 0, +1."""
        return spaces.Discrete(3)
