"""Probe environments: tiny environments with known answers, for debugging RL agents.

After Andy Jones, "Debugging RL, without the agonizing pain" (2021): each probe
isolates one piece of an agent (the value regression, the use of the
observation, discounting, the policy gradient's sign, the handling of time
limits), so a bug in that piece gives visibly wrong values or a policy that
prefers the wrong action within a few hundred updates, where a full benchmark
would only learn slowly.

Every probe has one float32 observation ``[s]`` and a state ``(s, time)``
(:class:`ProbeState`); most start at ``s = 0``.  Discrete probes have two
actions (``Discrete(2)``); continuous ones a ``Box(-1, 1, (1,))`` action.  The
action-independent probes (:class:`ConstantReward`, :class:`ObservationReward`,
:class:`TwoStep`, :class:`Alternating`) take ``continuous=True`` for the Box
action space.  Known answers, with discount ``gamma``:

=========================  ==============================================  ==========================
probe                      isolates                                        answer
=========================  ==============================================  ==========================
``ConstantReward``         the value target and its sign                   ``V(0) = 1``
``ObservationReward``      the network's use of its input                  ``V(s) = s`` for s = +-1
``ActionReward``           the policy gradient / ``Q[a]`` indexing          ``Q(0) = [-1, 1]``, pick 1
``ContinuousBandit``       the actor's ascent direction (Box actions)      best action ``0.5``
``TwoStep``                discounting and terminal bootstraps             ``V(0) = gamma, V(1) = 1``
``Alternating``            bootstrapping through a time limit              ``V(0) = 1 / (1 - gamma^2)``
``CoinFlipBandit``         reading the observation to choose the action    ``pi(a = [s > 0] | s) = 1``
=========================  ==============================================  ==========================

Probes are ordinary :class:`~funrl.envs.core.Environment` objects: pure,
vmappable, with the base class's time limit (``max_episode_steps``) and
same-step auto-reset.  Make them directly (``env = TwoStep(); params =
env.default_params()``).  They compute in float32 whatever ``dtype`` is
passed to ``default_params`` (their params hold no floats).

A new probe subclasses :class:`Probe` and defines ``transition(key, s, a) ->
(reward, s_next, terminated)`` (and ``start(key)`` for a start other than 0).
"""

from __future__ import annotations

import math

import torch

from funrl import random as jr
from funrl.envs import spaces
from funrl.envs.core import Environment
from funrl.tree import pytree_dataclass

__all__ = [
    "ProbeParams",
    "ProbeState",
    "Probe",
    "ConstantReward",
    "ObservationReward",
    "ActionReward",
    "ContinuousBandit",
    "TwoStep",
    "Alternating",
    "CoinFlipBandit",
]


@pytree_dataclass
class ProbeParams:
    """``max_episode_steps``: int64 ``()``."""

    max_episode_steps: torch.Tensor


@pytree_dataclass
class ProbeState:
    """``s``: float32 ``()``, the observation's one value; ``time``: int64 ``()``."""

    s: torch.Tensor
    time: torch.Tensor


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


def _check_finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return float(value)


def _coin_flip(key: torch.Tensor) -> torch.Tensor:
    """``s = +1`` or ``-1`` with probability 1/2 each, float32 ``()``."""
    return torch.where(jr.bernoulli(key, 0.5), 1.0, -1.0)


class Probe(Environment):
    """Base probe: observation ``[s]`` in ``[-2, 2]``, ``Discrete(2)`` or ``Box(-1, 1, (1,))`` actions.

    Subclasses define :meth:`transition` and optionally :meth:`start`.  Class
    attributes: ``horizon`` (the default ``max_episode_steps``, 100) and
    ``continuous`` (False: two discrete actions; True: a Box action whose one
    entry :meth:`transition` receives as a float ``()``).
    """

    horizon: int = 100
    continuous: bool = False
    observation_bound: float = 2.0

    def _set_args(self, **args) -> None:
        self._args = args

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_args", {}).items())
        return f"{type(self).__name__}({args})"

    def default_params(self, dtype: torch.dtype = torch.float32) -> ProbeParams:
        """``max_episode_steps = horizon`` (the probe is float32 whatever ``dtype``)."""
        return ProbeParams(max_episode_steps=torch.tensor(self.horizon, dtype=torch.int64))

    def observation_space(self, params) -> spaces.Box:
        """``Box(-b, b, (1,))`` with ``b = observation_bound`` (2, or 1 for :class:`CoinFlipBandit`)."""
        return spaces.Box(-self.observation_bound, self.observation_bound, (1,))

    def action_space(self, params=None) -> spaces.Space:
        """``Box(-1, 1, (1,))`` when ``continuous``, else ``Discrete(2)``."""
        if self.continuous:
            return spaces.Box(-1.0, 1.0, (1,))
        return spaces.Discrete(2)

    def start(self, key: torch.Tensor) -> torch.Tensor:
        """The first ``s`` of an episode (float32 ``()``): 0."""
        return torch.zeros((), dtype=torch.float32, device=key.device)

    def transition(self, key: torch.Tensor, s: torch.Tensor, a: torch.Tensor):
        """``(reward, s_next, terminated)`` for the action ``a`` (int64 ``()``, or float ``()`` if continuous)."""
        raise NotImplementedError

    def reset_env(self, key, params):
        """``([s], state)`` with ``s = start(key)``."""
        s = self.start(key)
        return s[None], ProbeState(s=s, time=torch.zeros((), dtype=torch.int64, device=key.device))

    def step_env(self, key, state, action, params):
        """One :meth:`transition` (a continuous action's one entry is passed as ``a``)."""
        a = action[0] if self.continuous else action
        reward, s_next, terminated = self.transition(key, state.s, a)
        return s_next[None], ProbeState(s=s_next, time=state.time + 1), reward, terminated, {}


class ConstantReward(Probe):
    """One step from ``s = 0`` with reward ``reward`` (default 1), whatever the action.

    Isolates the value regression: ``V(0) = Q(0, a) = reward``.  A wrong sign,
    a broken loss or a bootstrap past the terminal step shows as another value.
    A large ``reward`` (e.g. 100) makes TD errors large enough to tell a Huber
    loss from a squared one.

    Args:
      reward: the one reward (finite number).
      continuous: ``Box(-1, 1, (1,))`` actions instead of ``Discrete(2)``.
    """

    def __init__(self, reward: float = 1.0, continuous: bool = False):
        self.reward = _check_finite(reward, "reward")
        self.continuous = _check_bool(continuous, "continuous")
        self._set_args(reward=self.reward, continuous=self.continuous)

    def transition(self, key, s, a):
        return self.reward * torch.ones_like(s), s, torch.ones_like(s, dtype=torch.bool)


class ObservationReward(Probe):
    """One step from ``s = +1`` or ``-1`` (probability 1/2 each) with reward ``s``.

    Isolates the network's use of its input: ``V(s) = Q(s, a) = s``; a critic
    that ignores the observation learns 0 for both.

    Args:
      continuous: ``Box(-1, 1, (1,))`` actions instead of ``Discrete(2)``.
    """

    def __init__(self, continuous: bool = False):
        self.continuous = _check_bool(continuous, "continuous")
        self._set_args(continuous=self.continuous)

    def start(self, key):
        return _coin_flip(key)

    def transition(self, key, s, a):
        return s, s, torch.ones_like(s, dtype=torch.bool)


class ActionReward(Probe):
    """One step from ``s = 0``, reward +1 for action 1 and -1 for action 0 (two discrete actions).

    Isolates the policy gradient's sign and the indexing of ``Q[a]``:
    ``Q(0) = [-1, 1]``, the optimal policy takes action 1, and a policy with
    ``pi(1) = p`` has ``V(0) = 2 p - 1``.
    """

    def transition(self, key, s, a):
        return torch.where(a == 1, 1.0, -1.0), s, torch.ones_like(s, dtype=torch.bool)


class ContinuousBandit(Probe):
    """One step from ``s = 0`` with a ``Box(-1, 1, (1,))`` action ``a`` and reward ``-(a - target)^2``.

    Isolates the direction of the actor's (or the Gaussian policy's) update:
    the best action is ``target`` (default 0.5) and ``Q(0, a) = -(a -
    target)^2``; a sign error in the actor's gradient drives the action to a
    bound instead.

    Args:
      target: the best action, in ``[-1, 1]``.
    """

    continuous = True

    def __init__(self, target: float = 0.5):
        self.target = _check_finite(target, "target")
        if not -1.0 <= self.target <= 1.0:
            raise ValueError(f"target: expected a number in [-1, 1] (the action bounds), got {target}")
        self._set_args(target=self.target)

    def transition(self, key, s, a):
        return -((a - self.target) ** 2), s, torch.ones_like(s, dtype=torch.bool)


class TwoStep(Probe):
    """``s = 0`` then ``s = 1``; reward 0 then 1; the second step terminates.

    Isolates discounting and the terminal bootstrap: ``V(0) = Q(0, a) =
    gamma`` and ``V(1) = Q(1, a) = 1``.  No discount gives ``V(0) = 1``; a
    bootstrap past the terminal step raises ``V(1)``.

    Args:
      continuous: ``Box(-1, 1, (1,))`` actions instead of ``Discrete(2)``.
    """

    def __init__(self, continuous: bool = False):
        self.continuous = _check_bool(continuous, "continuous")
        self._set_args(continuous=self.continuous)

    def transition(self, key, s, a):
        second = s > 0.5
        return second.to(torch.float32), torch.ones_like(s), second


class Alternating(Probe):
    """``s`` alternates 0, 1, 0, ... with reward ``1 - s``; never terminates, truncated after ``horizon`` steps.

    Isolates bootstrapping through a time limit.  Bootstrapping from the real
    next observation at truncation gives the infinite-horizon values ``V(0) =
    1 / (1 - g^2)`` and ``V(1) = g / (1 - g^2)`` (4/3 and 2/3 at ``g = 0.5``).
    Treating truncation as termination lowers ``V(0)`` (with horizon 3 and
    ``g = 0.5``: states 0 at t = 0 and t = 2 return 1.25 and 1, so ``V(0) ~
    1.125``, ``V(1) = 0.5``); bootstrapping from the auto-reset's observation
    (``s = 0``) instead of the final one (``s = 1``) raises it (``~1.6``).

    Args:
      horizon: ``max_episode_steps`` (default 3).
      continuous: ``Box(-1, 1, (1,))`` actions instead of ``Discrete(2)``.
    """

    def __init__(self, horizon: int = 3, continuous: bool = False):
        if isinstance(horizon, bool) or not isinstance(horizon, int):
            raise TypeError(f"horizon: expected an int, got {type(horizon).__name__}")
        if horizon < 1:
            raise ValueError(f"horizon: expected an int >= 1, got {horizon}")
        self.horizon = horizon
        self.continuous = _check_bool(continuous, "continuous")
        self._set_args(horizon=horizon, continuous=self.continuous)

    def transition(self, key, s, a):
        return 1.0 - s, 1.0 - s, torch.zeros_like(s, dtype=torch.bool)


class CoinFlipBandit(Probe):
    """One-step episodes with ``s = +1`` or ``-1`` at random, two actions and rewards in {0, 1}.

    ``reward`` picks what the reward depends on:

    * ``"constant"``: 1 always -- ``V(+-1) = 1`` (the value target without bootstrap);
    * ``"action"``: 1 for action 1, 0 for action 0 -- the policy must prefer action 1 in both states;
    * ``"obs_action"``: 1 when the action is ``[s > 0]`` (1 for ``s = +1``, 0 for ``s = -1``) --
      the policy must read its observation: ``pi(1 | +1) = pi(0 | -1) = 1``.

    The observation lies in ``[-1, 1]`` and ``max_episode_steps`` is 1.  The
    step's own next observation (``info["final_obs"]``) is a fresh coin flip
    from the step key.

    Args:
      reward: ``"constant"``, ``"action"`` or ``"obs_action"``.
    """

    horizon = 1
    observation_bound = 1.0
    REWARDS = ("constant", "action", "obs_action")

    def __init__(self, reward: str):
        if reward not in self.REWARDS:
            raise ValueError(f"reward: expected one of {', '.join(map(repr, self.REWARDS))}, got {reward!r}")
        self.mode = reward
        self._set_args(reward=reward)

    def start(self, key):
        return _coin_flip(key)

    def transition(self, key, s, a):
        if self.mode == "action":
            reward = (a == 1).float()
        elif self.mode == "constant":
            reward = torch.ones((), device=s.device)
        else:
            reward = (a == (s > 0).long()).float()
        return reward, _coin_flip(key), torch.ones((), dtype=torch.bool, device=s.device)
