"""CartPole (gymnasium ``CartPole-v1``/``-v0``), pure torch.

Physics, thresholds, reward and reset distribution follow gymnasium 1.x's
``CartPoleEnv`` operation for operation, so in float64 a step matches it to
rounding (torch's and numpy's sin/cos differ by at most an ULP).  gymnasium
keeps its state in float64 and returns float32 observations; funrl keeps
state and observations in the params dtype.

Stepping an already terminated state is undefined in gymnasium (it returns
reward 0 with a warning); here it returns the normal reward -- with
auto-reset that state is never stepped.
"""

from __future__ import annotations

import math

import torch

from funrl.envs import spaces
from funrl.envs.core import Environment, uniform
from funrl.tree import pytree_dataclass

__all__ = ["CartPole", "CartPoleState", "CartPoleParams"]


@pytree_dataclass
class CartPoleState:
    """``x, x_dot, theta, theta_dot``: float ``()``; ``time``: int64 ``()``."""

    x: torch.Tensor
    x_dot: torch.Tensor
    theta: torch.Tensor
    theta_dot: torch.Tensor
    time: torch.Tensor


@pytree_dataclass
class CartPoleParams:
    """Physical constants (float ``()``, gymnasium's names) and ``max_episode_steps`` (int64 ``()``).

    ``length`` is half the pole's length, as in gymnasium.
    """

    gravity: torch.Tensor
    masscart: torch.Tensor
    masspole: torch.Tensor
    length: torch.Tensor
    force_mag: torch.Tensor
    tau: torch.Tensor
    theta_threshold_radians: torch.Tensor
    x_threshold: torch.Tensor
    max_episode_steps: torch.Tensor


class CartPole(Environment):
    """Balance a pole on a cart by pushing left (0) or right (1).

    Args:
      sutton_barto_reward: reward 0 per step and -1 on termination (gymnasium's option).
      kinematics_integrator: ``"euler"`` (gymnasium's default) or
        ``"semi-implicit euler"``.

    Observation: ``[x, x_dot, theta, theta_dot]`` in the params dtype.
    Action: int64 ``()`` in ``{0, 1}``.  Reward 1 per step (including the
    terminating one).  Terminates when ``|x| > x_threshold`` or ``|theta| >
    theta_threshold_radians``.  Reset: each state variable ~ U(-0.05, 0.05).
    """

    #: params that must be > 0 (checked by ``funrl.envs.make`` on overrides)
    POSITIVE_PARAMS = ("masscart", "masspole", "length", "force_mag", "tau", "theta_threshold_radians", "x_threshold")

    def __init__(self, sutton_barto_reward: bool = False, kinematics_integrator: str = "euler"):
        if kinematics_integrator not in ("euler", "semi-implicit euler"):
            raise ValueError(
                "kinematics_integrator: expected 'euler' or 'semi-implicit euler', "
                f"got {kinematics_integrator!r}"
            )
        self.sutton_barto_reward = bool(sutton_barto_reward)
        self.kinematics_integrator = kinematics_integrator

    def default_params(self, dtype: torch.dtype = torch.float32) -> CartPoleParams:
        """gymnasium's constants in ``dtype``; ``max_episode_steps`` 500 (v1)."""

        def f(v):
            return torch.tensor(v, dtype=dtype)

        return CartPoleParams(
            gravity=f(9.8),
            masscart=f(1.0),
            masspole=f(0.1),
            length=f(0.5),
            force_mag=f(10.0),
            tau=f(0.02),
            theta_threshold_radians=f(12 * 2 * math.pi / 360),
            x_threshold=f(2.4),
            max_episode_steps=torch.tensor(500, dtype=torch.int64),
        )

    def _obs(self, s: CartPoleState) -> torch.Tensor:
        return torch.stack([s.x, s.x_dot, s.theta, s.theta_dot])

    def reset_env(self, key, params: CartPoleParams):
        """``(obs (4,), state)`` with every variable ~ U(-0.05, 0.05)."""
        dtype = params.gravity.dtype
        u = uniform(key, 4, dtype, -0.05, 0.05)
        state = CartPoleState(
            x=u[0],
            x_dot=u[1],
            theta=u[2],
            theta_dot=u[3],
            time=torch.zeros((), dtype=torch.int64, device=key.device),
        )
        return self._obs(state), state

    def step_env(self, key, state: CartPoleState, action, params: CartPoleParams):
        """Euler step of gymnasium's cart-pole equations (``key`` is unused)."""
        p = params
        force = torch.where(action == 1, p.force_mag, -p.force_mag)
        total_mass = p.masspole + p.masscart
        polemass_length = p.masspole * p.length
        costheta = torch.cos(state.theta)
        sintheta = torch.sin(state.theta)
        temp = (force + polemass_length * torch.square(state.theta_dot) * sintheta) / total_mass
        thetaacc = (p.gravity * sintheta - costheta * temp) / (
            p.length * (4.0 / 3.0 - p.masspole * torch.square(costheta) / total_mass)
        )
        xacc = temp - polemass_length * thetaacc * costheta / total_mass
        x, x_dot, theta, theta_dot = state.x, state.x_dot, state.theta, state.theta_dot
        if self.kinematics_integrator == "euler":
            x = x + p.tau * x_dot
            x_dot = x_dot + p.tau * xacc
            theta = theta + p.tau * theta_dot
            theta_dot = theta_dot + p.tau * thetaacc
        else:
            x_dot = x_dot + p.tau * xacc
            x = x + p.tau * x_dot
            theta_dot = theta_dot + p.tau * thetaacc
            theta = theta + p.tau * theta_dot
        terminated = (
            (x < -p.x_threshold)
            | (x > p.x_threshold)
            | (theta < -p.theta_threshold_radians)
            | (theta > p.theta_threshold_radians)
        )
        if self.sutton_barto_reward:
            reward = torch.where(terminated, -1.0, 0.0).to(x.dtype)
        else:
            reward = torch.ones_like(x)
        new = CartPoleState(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=state.time + 1)
        return self._obs(new), new, reward, terminated, {}

    def observation_space(self, params: CartPoleParams) -> spaces.Box:
        """Box with gymnasium's bounds ``[2 x_threshold, inf, 2 theta_threshold, inf]``."""
        inf = torch.tensor(math.inf, dtype=params.gravity.dtype, device=params.gravity.device)
        high = torch.stack([params.x_threshold * 2, inf, params.theta_threshold_radians * 2, inf])
        return spaces.Box(-high, high, (4,), params.gravity.dtype)

    def action_space(self, params=None) -> spaces.Discrete:
        """Discrete(2): 0 pushes left, 1 pushes right."""
        return spaces.Discrete(2)
