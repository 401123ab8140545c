"""Pure, composable environment wrappers (gymnax / PureJaxRL style).

A wrapper is itself an :class:`~funrl.envs.core.Environment` around another
one.  Stateless wrappers (:class:`ClipAction`, :class:`RescaleAction`,
:class:`FlattenObservation`, :class:`TransformObservation`,
:class:`TransformReward`) pass the inner state through unchanged.  Stateful
ones (:class:`EpisodeStatistics`, :class:`NormalizeObservation`,
:class:`NormalizeReward`, :class:`FrameStack`) keep their statistics in a state dataclass that
holds the inner state in ``env_state``; everything stays a pytree of tensors,
so a wrapped env vmaps and compiles like a bare one.

Auto-reset: a wrapper's ``step`` calls the inner ``step`` (which auto-resets
on the same step) and then updates its own statistics from that step's
``reward``, ``terminated``, ``truncated`` and ``info["final_obs"]``, so they
always see the finished episode before the reset.  Observation wrappers map
both the returned observation and ``info["final_obs"]``.

Statistics live in the state, so they are *per environment*: under ``vmap``
each env has its own running mean, like gymnasium's single-env wrappers
(gymnasium's vector wrappers share one set of statistics across the batch;
:func:`running_mean_std_update` merges a whole batch for that use).  A fresh
``reset`` starts fresh statistics; auto-resets keep them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from funrl import random as jr
from funrl import tree
from funrl._checks import check_tensor
from funrl.envs import spaces
from funrl.envs.core import Environment

__all__ = [
    "Wrapper",
    "RunningMeanStd",
    "running_mean_std_init",
    "running_mean_std_update",
    "EpisodeStatistics",
    "EpisodeStatisticsState",
    "LogWrapper",
    "NormalizeObservation",
    "NormalizeObservationState",
    "NormalizeReward",
    "NormalizeRewardState",
    "ClipAction",
    "RescaleAction",
    "FlattenObservation",
    "TransformObservation",
    "TransformReward",
    "FrameStack",
    "FrameStackState",
]


# ---------------------------------------------------------------- running statistics
@tree.pytree_dataclass
class RunningMeanStd:
    """Running mean and (population) variance of a stream of tensors.

    Attributes:
      mean, var: float tensors of the item shape.
      count: float64 ``()``, the (pseudo-)count of items seen.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor


def running_mean_std_init(
    shape=(), dtype: torch.dtype = torch.float32, device=None, epsilon: float = 1e-4
) -> RunningMeanStd:
    """Initial statistics as gymnasium's ``RunningMeanStd``: mean 0, var 1, count ``epsilon``.

    Args:
      shape: item shape.
      dtype: float dtype of ``mean`` and ``var``.
      device: where the tensors live.
      epsilon: initial pseudo-count (> 0; it keeps the first update finite).

    Returns:
      A :class:`RunningMeanStd`.
    """
    return RunningMeanStd(
        mean=torch.zeros(shape, dtype=dtype, device=device),
        var=torch.ones(shape, dtype=dtype, device=device),
        count=torch.tensor(float(epsilon), dtype=torch.float64, device=device),
    )


def running_mean_std_update(stats: RunningMeanStd, batch: torch.Tensor) -> RunningMeanStd:
    """Merge a batch of items into the statistics (Chan et al.'s parallel algorithm).

    Args:
      stats: current :class:`RunningMeanStd` with item shape ``I``.
      batch: float tensor ``(B, *I)`` of ``B >= 1`` new items.

    Returns:
      Updated statistics (``mean``/``var`` keep their dtype), equal to
      gymnasium's ``RunningMeanStd.update(batch)``.
    """
    check_tensor(batch, "batch")
    if batch.ndim != stats.mean.ndim + 1 or tuple(batch.shape[1:]) != tuple(stats.mean.shape):
        raise ValueError(
            f"batch: expected shape (B, {', '.join(map(str, stats.mean.shape))}) for items of shape "
            f"{tuple(stats.mean.shape)}, got {tuple(batch.shape)}"
        )
    dtype = stats.mean.dtype
    x = batch.to(dtype)
    n = batch.shape[0]
    batch_mean = x.mean(0)
    batch_var = x.var(0, correction=0)
    count = stats.count
    total = count + n
    # ratios in float64 (the count may be large), applied in the stats dtype
    w_new = (n / total).to(dtype)
    w_cross = (count * n / total).to(dtype)
    count_d = count.to(dtype)
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * w_new
    m2 = stats.var * count_d + batch_var * n + delta * delta * w_cross
    var = m2 / total.to(dtype)
    return RunningMeanStd(mean=mean, var=var, count=total)


def _update_one(stats: RunningMeanStd, x: torch.Tensor) -> RunningMeanStd:
    return running_mean_std_update(stats, x.unsqueeze(0))


# Initial wrapper fields are built from the key (or obs) with *_like rather than
# torch.zeros(()): under vmap they are then real batched tensors, not stride-0
# broadcasts, so a compiled step fed with vmap_reset's output does not recompile
# on its second call when the strides change.
def _zeros_like_key(key: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros_like(key[0], dtype=dtype)


def _stats_like(key: torch.Tensor, zeros: torch.Tensor) -> RunningMeanStd:
    """gymnasium's initial statistics (mean 0, var 1, count 1e-4) shaped like ``zeros``."""
    return RunningMeanStd(
        mean=zeros,
        var=torch.ones_like(zeros),
        count=torch.full_like(key[0], 1e-4, dtype=torch.float64),
    )


def _float_dtype_of(params, default: torch.dtype = torch.float32) -> torch.dtype:
    """The first floating dtype among the params' leaves (the env's dtype)."""
    for leaf in tree.leaves(params):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf.dtype
    return default


# ---------------------------------------------------------------- base wrapper
class Wrapper(Environment):
    """Base class: an environment that delegates to ``env``.

    Subclasses override :meth:`reset` and/or :meth:`step` (the pure,
    auto-resetting API) rather than ``reset_env``/``step_env``.  Attributes
    not found on the wrapper (``P``, ``num_states``, ``spec``, ...) are looked
    up on the wrapped env.

    Args:
      env: the :class:`~funrl.envs.core.Environment` to wrap.
    """

    def __init__(self, env: Environment):
        if not isinstance(env, Environment):
            raise TypeError(f"env: expected a funrl.envs.Environment, got {type(env).__name__}")
        self.env = env

    def __getattr__(self, name: str):
        # only reached when normal lookup fails; guard against recursion before __init__
        env = self.__dict__.get("env")
        if env is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return getattr(env, name)

    @property
    def unwrapped(self) -> Environment:
        """The innermost (non-wrapper) environment."""
        env = self.env
        while isinstance(env, Wrapper):
            env = env.env
        return env

    @property
    def name(self) -> str:
        """The wrapped env's name."""
        return self.env.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"

    # ---------------------------------------------------------------- delegation
    def default_params(self, dtype: torch.dtype = torch.float32):
        """The wrapped env's default params."""
        return self.env.default_params(dtype)

    def observation_space(self, params=None) -> spaces.Space:
        """The wrapped env's observation space."""
        return self.env.observation_space(params)

    def action_space(self, params=None) -> spaces.Space:
        """The wrapped env's action space."""
        return self.env.action_space(params)

    def reset(self, key: torch.Tensor, params=None):
        """``(obs, state)`` of the wrapped env (subclasses transform them)."""
        key = jr._check_key(key, "key")
        return self.env.reset(key, self._resolve_params(params, key))

    def step(self, key: torch.Tensor, state, action, params=None, autoreset: bool = True):
        """The wrapped env's step (subclasses transform it); see :meth:`Environment.step`."""
        key = jr._check_key(key, "key")
        return self.env.step(key, state, action, self._resolve_params(params, key), autoreset=autoreset)

    def reset_env(self, key: torch.Tensor, params):
        """Same as :meth:`reset` (wrappers have no separate raw reset)."""
        return self.reset(key, params)

    def step_env(self, key, state, action, params):
        """Not available on wrappers: use ``step(key, state, action, params, autoreset=False)``."""
        raise NotImplementedError(
            f"{type(self).__name__}: wrappers implement step(); call "
            "step(key, state, action, params, autoreset=False) for a step without auto-reset"
        )


# ---------------------------------------------------------------- episode statistics
@tree.pytree_dataclass
class EpisodeStatisticsState:
    """State of :class:`EpisodeStatistics`.

    Attributes:
      env_state: the wrapped env's state.
      episode_return, episode_length: running totals of the current episode.
      returned_episode_return, returned_episode_length: totals of the last
        finished episode (0 until one finishes).
    """

    env_state: Any
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    returned_episode_return: torch.Tensor
    returned_episode_length: torch.Tensor

    @property
    def time(self) -> torch.Tensor:
        """The wrapped env's step counter."""
        return self.env_state.time


class EpisodeStatistics(Wrapper):
    """Track episode returns and lengths in the state (PureJaxRL's ``LogWrapper``).

    ``info`` of every step gains (shapes ``()``, batch with vmap):

    * ``returned_episode_returns``: return of the last finished episode
      (including this step's reward when this step ends one),
    * ``returned_episode_lengths``: its length (int64),
    * ``returned_episode``: bool, an episode ended on this step
      (``terminated | truncated``).

    Mean episodic return of a batch of steps:
    ``(info["returned_episode_returns"] * info["returned_episode"]).sum() /
    info["returned_episode"].sum()``.  Returns are accumulated in the
    params' float dtype.

    Args:
      env: the env to wrap.
    """

    def reset(self, key: torch.Tensor, params=None):
        """``(obs, EpisodeStatisticsState)`` with zeroed statistics."""
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state = self.env.reset(key, params)
        dtype = _float_dtype_of(params)
        # four distinct tensors: aliased leaves would make a compiled step guard on identity
        zf, zi = _zeros_like_key(key, dtype), _zeros_like_key(key, torch.int64)
        return obs, EpisodeStatisticsState(env_state, zf, zi, zf.clone(), zi.clone())

    def step(self, key: torch.Tensor, state: EpisodeStatisticsState, action, params=None, autoreset: bool = True):
        """Step the wrapped env and update the episode totals; see the class docstring."""
        if not isinstance(state, EpisodeStatisticsState):
            raise TypeError(f"state: expected an EpisodeStatisticsState (from this wrapper's reset), got {type(state).__name__}")
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params, autoreset=autoreset
        )
        done = terminated | truncated
        ret = (state.episode_return + reward).to(state.episode_return.dtype)
        length = state.episode_length + 1
        new = EpisodeStatisticsState(
            env_state=env_state,
            episode_return=torch.where(done, torch.zeros_like(ret), ret),
            episode_length=torch.where(done, torch.zeros_like(length), length),
            returned_episode_return=torch.where(done, ret, state.returned_episode_return),
            returned_episode_length=torch.where(done, length, state.returned_episode_length),
        )
        info = dict(info)
        info["returned_episode_returns"] = new.returned_episode_return
        info["returned_episode_lengths"] = new.returned_episode_length
        info["returned_episode"] = done
        return obs, new, reward, terminated, truncated, info


#: PureJaxRL's name for :class:`EpisodeStatistics`.
LogWrapper = EpisodeStatistics


# ---------------------------------------------------------------- observation normalisation
@tree.pytree_dataclass
class NormalizeObservationState:
    """State of :class:`NormalizeObservation`: ``env_state`` and the running ``obs_stats``."""

    env_state: Any
    obs_stats: RunningMeanStd

    @property
    def time(self) -> torch.Tensor:
        """The wrapped env's step counter."""
        return self.env_state.time


class NormalizeObservation(Wrapper):
    """Normalise observations by a running mean and variance (gymnasium's ``NormalizeObservation``).

    ``obs -> (obs - mean) / sqrt(var + epsilon)``, optionally clipped to
    ``[-clip, clip]``, where the statistics (gymnasium's ``RunningMeanStd``:
    initial mean 0, var 1, count 1e-4) are updated with every observation
    *before* it is normalised: the reset observation, then each step's
    observation.  On an auto-reset step they take the final observation
    (which normalises ``info["final_obs"]``) and then the reset observation
    (which normalises the returned ``obs``) -- the same stream a gymnasium
    env wrapped in ``NormalizeObservation`` sees, so the statistics match it.

    Args:
      env: env with a float (or integer) Box observation space.
      epsilon: added to the variance (> 0; default 1e-8 as gymnasium).
      clip: clip normalised observations to ``[-clip, clip]`` (default: no clip).
      update: update the statistics (False freezes them, e.g. for evaluation
        with statistics taken from a training state).

    Observations come out in the stats dtype: the obs dtype when it is
    floating, float32 otherwise.
    """

    def __init__(self, env: Environment, epsilon: float = 1e-8, clip: float | None = None, update: bool = True):
        super().__init__(env)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon: expected a number > 0, got {epsilon!r}")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
            raise ValueError(f"clip: expected a number > 0 or None, got {clip!r}")
        space = env.observation_space(env.default_params())
        if not isinstance(space, spaces.Box):
            raise TypeError(f"env: NormalizeObservation needs a Box observation space, got {space!r}")
        self.epsilon = float(epsilon)
        self.clip = None if clip is None else float(clip)
        self.update = bool(update)

    def observation_space(self, params=None) -> spaces.Box:
        """``Box(-inf, inf)`` (or ``[-clip, clip]``) of the wrapped shape."""
        inner = self.env.observation_space(params)
        bound = math.inf if self.clip is None else self.clip
        dtype = inner.dtype if inner.dtype.is_floating_point else torch.float32
        return spaces.Box(-bound, bound, inner.shape, dtype)

    def _normalize(self, stats: RunningMeanStd, obs: torch.Tensor) -> torch.Tensor:
        out = (obs.to(stats.mean.dtype) - stats.mean) / torch.sqrt(stats.var + self.epsilon)
        if self.clip is not None:
            out = torch.clamp(out, -self.clip, self.clip)
        return out

    def _observe(self, stats: RunningMeanStd, obs: torch.Tensor) -> RunningMeanStd:
        return _update_one(stats, obs) if self.update else stats

    def reset(self, key: torch.Tensor, params=None):
        """``(normalised obs, NormalizeObservationState)`` with fresh statistics."""
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state = self.env.reset(key, params)
        dtype = obs.dtype if obs.is_floating_point() else torch.float32
        stats = self._observe(_stats_like(key, torch.zeros_like(obs, dtype=dtype)), obs)
        return self._normalize(stats, obs), NormalizeObservationState(env_state, stats)

    def step(self, key: torch.Tensor, state: NormalizeObservationState, action, params=None, autoreset: bool = True):
        """Step, update the statistics and normalise ``obs`` and ``info["final_obs"]``."""
        if not isinstance(state, NormalizeObservationState):
            raise TypeError(f"state: expected a NormalizeObservationState (from this wrapper's reset), got {type(state).__name__}")
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params, autoreset=autoreset
        )
        final_obs = info["final_obs"]
        stats_final = self._observe(state.obs_stats, final_obs)
        if autoreset:
            # the reset obs is a second observation only where the episode ended
            stats = tree.where(terminated | truncated, self._observe(stats_final, obs), stats_final)
        else:
            stats = stats_final
        info = dict(info)
        info["final_obs"] = self._normalize(stats_final, final_obs)
        return self._normalize(stats, obs), NormalizeObservationState(env_state, stats), reward, terminated, truncated, info


# ---------------------------------------------------------------- reward normalisation
@tree.pytree_dataclass
class NormalizeRewardState:
    """State of :class:`NormalizeReward`: ``env_state``, the ``discounted_return`` accumulator and ``return_stats``."""

    env_state: Any
    discounted_return: torch.Tensor
    return_stats: RunningMeanStd

    @property
    def time(self) -> torch.Tensor:
        """The wrapped env's step counter."""
        return self.env_state.time


class NormalizeReward(Wrapper):
    """Scale rewards by the running std of a discounted return (gymnasium's ``NormalizeReward``).

    Each step: ``G <- G * gamma * (1 - terminated) + reward``; the running
    statistics of ``G`` are updated; the reward becomes ``reward /
    sqrt(var(G) + epsilon)`` (not centred, as gymnasium/baselines).  As in
    gymnasium, ``G`` is kept across truncations and auto-resets.

    Args:
      env: the env to wrap.
      gamma: discount of the accumulator, in ``[0, 1]`` (default 0.99).
      epsilon: added to the variance (> 0; default 1e-8).
      update: update the statistics (False freezes them).
    """

    def __init__(self, env: Environment, gamma: float = 0.99, epsilon: float = 1e-8, update: bool = True):
        super().__init__(env)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
            raise ValueError(f"gamma: expected a number in [0, 1], got {gamma!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon: expected a number > 0, got {epsilon!r}")
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        self.update = bool(update)

    def reset(self, key: torch.Tensor, params=None):
        """``(obs, NormalizeRewardState)`` with a zero accumulator and fresh statistics."""
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state = self.env.reset(key, params)
        zero = _zeros_like_key(key, _float_dtype_of(params))
        return obs, NormalizeRewardState(env_state, zero, _stats_like(key, zero.clone()))

    def step(self, key: torch.Tensor, state: NormalizeRewardState, action, params=None, autoreset: bool = True):
        """Step and return the scaled reward."""
        if not isinstance(state, NormalizeRewardState):
            raise TypeError(f"state: expected a NormalizeRewardState (from this wrapper's reset), got {type(state).__name__}")
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, params, autoreset=autoreset
        )
        dtype = state.discounted_return.dtype
        keep = self.gamma * (1 - terminated.to(dtype))
        g = state.discounted_return * keep + reward.to(dtype)
        stats = _update_one(state.return_stats, g) if self.update else state.return_stats
        scaled = (reward.to(dtype) / torch.sqrt(stats.var + self.epsilon)).to(reward.dtype)
        return obs, NormalizeRewardState(env_state, g, stats), scaled, terminated, truncated, info


# ---------------------------------------------------------------- stateless action wrappers
def _box_action_space(env: Environment, who: str) -> spaces.Box:
    space = env.action_space(env.default_params())
    if not isinstance(space, spaces.Box):
        raise TypeError(f"env: {who} needs a Box action space, got {space!r}")
    return space


def _as_action(action, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(action, (int, float, list, tuple)) and not isinstance(action, bool):
        return torch.as_tensor(action, dtype=dtype, device=device)
    return check_tensor(action, "action")


class ClipAction(Wrapper):
    """Clip continuous actions into the wrapped env's Box bounds (gymnasium's ``ClipAction``).

    The wrapper's action space is the unbounded Box of the same shape.

    Args:
      env: env with a Box action space.
    """

    def __init__(self, env: Environment):
        super().__init__(env)
        _box_action_space(env, "ClipAction")

    def action_space(self, params=None) -> spaces.Box:
        """``Box(-inf, inf)`` of the wrapped action shape."""
        inner = self.env.action_space(params)
        return spaces.Box(-math.inf, math.inf, inner.shape, inner.dtype)

    def step(self, key, state, action, params=None, autoreset: bool = True):
        """Step with ``clamp(action, low, high)``."""
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        inner = self.env.action_space(params)
        action = _as_action(action, inner.dtype, key.device)
        lo = inner.low.to(device=action.device, dtype=action.dtype)
        hi = inner.high.to(device=action.device, dtype=action.dtype)
        return self.env.step(key, state, torch.clamp(action, lo, hi), params, autoreset=autoreset)


class RescaleAction(Wrapper):
    """Affinely map actions from ``[min_action, max_action]`` onto the wrapped env's Box bounds.

    ``a_env = low + (high - low) * (a - min_action) / (max_action - min_action)``
    (gymnasium's ``RescaleAction``).  Actions outside ``[min_action,
    max_action]`` map outside the env's bounds: wrap with :class:`ClipAction`
    (``ClipAction(RescaleAction(env))`` clips to ``[min_action, max_action]``
    first) to prevent that.

    Args:
      env: env with a bounded Box action space (finite low and high).
      min_action, max_action: the new bounds, numbers or tensors of the action
        shape, ``min_action < max_action`` elementwise (default -1, 1).
    """

    def __init__(self, env: Environment, min_action=-1.0, max_action=1.0):
        super().__init__(env)
        inner = _box_action_space(env, "RescaleAction")
        if not bool(torch.isfinite(inner.low).all() & torch.isfinite(inner.high).all()):
            raise ValueError(f"env: RescaleAction needs finite action bounds, got {inner!r}")
        lo = torch.as_tensor(min_action, dtype=torch.float64)
        hi = torch.as_tensor(max_action, dtype=torch.float64)
        try:
            lo = torch.broadcast_to(lo, inner.shape).clone()
            hi = torch.broadcast_to(hi, inner.shape).clone()
        except RuntimeError as e:
            raise ValueError(
                f"min_action, max_action: expected numbers or tensors broadcastable to the action shape "
                f"{inner.shape}, got shapes {tuple(lo.shape)} and {tuple(hi.shape)}"
            ) from e
        if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()) or not bool((lo < hi).all()):
            raise ValueError(
                f"min_action, max_action: expected finite bounds with min_action < max_action, got "
                f"{lo.tolist()} and {hi.tolist()}"
            )
        self.min_action = lo
        self.max_action = hi

    def action_space(self, params=None) -> spaces.Box:
        """``Box(min_action, max_action)`` in the wrapped dtype."""
        inner = self.env.action_space(params)
        return spaces.Box(self.min_action, self.max_action, inner.shape, inner.dtype)

    def step(self, key, state, action, params=None, autoreset: bool = True):
        """Step with the action mapped onto the env's bounds."""
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        inner = self.env.action_space(params)
        action = _as_action(action, inner.dtype, key.device)
        if not action.is_floating_point():
            raise TypeError(f"action: expected a floating-point tensor, got dtype {action.dtype}")
        dt, dev = action.dtype, action.device
        lo, hi = inner.low.to(device=dev, dtype=dt), inner.high.to(device=dev, dtype=dt)
        a_lo, a_hi = self.min_action.to(device=dev, dtype=dt), self.max_action.to(device=dev, dtype=dt)
        mapped = lo + (hi - lo) * ((action - a_lo) / (a_hi - a_lo))
        return self.env.step(key, state, mapped, params, autoreset=autoreset)


# ---------------------------------------------------------------- stateless observation / reward wrappers
class TransformObservation(Wrapper):
    """Apply ``fn`` to every observation (and to ``info["final_obs"]``).

    Args:
      env: the env to wrap.
      fn: a pure, vmappable function of one observation.
      observation_space: the new space, or a function ``params -> space``
        (default: the wrapped env's space, right when ``fn`` keeps it).
    """

    def __init__(self, env: Environment, fn: Callable[[torch.Tensor], torch.Tensor], observation_space=None):
        super().__init__(env)
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        if observation_space is not None and not (isinstance(observation_space, spaces.Space) or callable(observation_space)):
            raise TypeError(
                f"observation_space: expected a funrl space, a function of params or None, got {type(observation_space).__name__}"
            )
        self.fn = fn
        self._space = observation_space

    def observation_space(self, params=None) -> spaces.Space:
        """The given space, or the wrapped env's."""
        if self._space is None:
            return self.env.observation_space(params)
        if isinstance(self._space, spaces.Space):
            return self._space
        return self._space(params)

    def reset(self, key: torch.Tensor, params=None):
        """``(fn(obs), state)``."""
        obs, state = super().reset(key, params)
        return self.fn(obs), state

    def step(self, key, state, action, params=None, autoreset: bool = True):
        """Step with ``fn`` applied to ``obs`` and ``info["final_obs"]``."""
        obs, state, reward, terminated, truncated, info = super().step(key, state, action, params, autoreset)
        info = dict(info)
        info["final_obs"] = self.fn(info["final_obs"])
        return self.fn(obs), state, reward, terminated, truncated, info


class FlattenObservation(TransformObservation):
    """Flatten observations to 1-D (gymnasium's ``FlattenObservation``).

    Box observations are reshaped to ``(prod(shape),)``; a ``Discrete(n)``
    observation becomes its int64 one-hot vector of length ``n`` (as
    ``gymnasium.spaces.flatten``).

    Args:
      env: env with a Box or Discrete observation space.
    """

    def __init__(self, env: Environment):
        if not isinstance(env, Environment):
            raise TypeError(f"env: expected a funrl.envs.Environment, got {type(env).__name__}")
        space = env.observation_space(env.default_params())
        if isinstance(space, spaces.Discrete):
            n, start = space.n, space.start

            def fn(obs):
                return torch.nn.functional.one_hot(obs.to(torch.int64) - start, n).to(torch.int64)

            def flat_space(params):
                return spaces.Box(0, 1, (self.env.observation_space(params).n,), torch.int64)

        elif isinstance(space, spaces.Box):

            def fn(obs):
                return obs.reshape(-1)

            def flat_space(params):
                inner = self.env.observation_space(params)
                return spaces.Box(inner.low.reshape(-1), inner.high.reshape(-1), (math.prod(inner.shape),), inner.dtype)

        else:
            raise TypeError(f"env: FlattenObservation needs a Box or Discrete observation space, got {space!r}")
        super().__init__(env, fn, flat_space)


class TransformReward(Wrapper):
    """Apply ``fn`` to every reward (e.g. ``lambda r: torch.clamp(r, -1, 1)``).

    Args:
      env: the env to wrap.
      fn: a pure, vmappable function of one reward tensor ``()``.
    """

    def __init__(self, env: Environment, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(env)
        if not callable(fn):
            raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
        self.fn = fn

    def step(self, key, state, action, params=None, autoreset: bool = True):
        """Step with ``fn(reward)``."""
        obs, state, reward, terminated, truncated, info = super().step(key, state, action, params, autoreset)
        return obs, state, self.fn(reward), terminated, truncated, info


# ---------------------------------------------------------------- frame stacking
@tree.pytree_dataclass
class FrameStackState:
    """State of :class:`FrameStack`: ``env_state`` and the last ``frames`` ``[num_stack, *obs_shape]``."""

    env_state: Any
    frames: torch.Tensor

    @property
    def time(self) -> torch.Tensor:
        """The wrapped env's step counter."""
        return self.env_state.time


class FrameStack(Wrapper):
    """The last ``num_stack`` observations, oldest first (gymnasium's ``FrameStackObservation``).

    ``obs [*obs_shape] -> [num_stack, *obs_shape]``.  A new episode (``reset``
    or an auto-reset) starts with its first observation after ``num_stack - 1``
    padding frames: copies of that observation (``padding="reset"``,
    gymnasium's default) or zeros (``padding="zero"``).  On the step that ends
    an episode, ``info["final_obs"]`` is the stack ending in the final
    observation (what gymnasium's wrapper returns from that step) and ``obs``
    is the new episode's padded stack (what its ``reset`` returns).

    Args:
      env: env with a Box observation space.
      num_stack: frames kept (int >= 1).
      padding: ``"reset"`` or ``"zero"``.
    """

    def __init__(self, env: Environment, num_stack: int, padding: str = "reset"):
        super().__init__(env)
        if isinstance(num_stack, bool) or not isinstance(num_stack, int) or num_stack < 1:
            raise ValueError(f"num_stack: expected an int >= 1, got {num_stack!r}")
        if padding not in ("reset", "zero"):
            raise ValueError(f"padding: expected 'reset' or 'zero', got {padding!r}")
        space = env.observation_space(env.default_params())
        if not isinstance(space, spaces.Box):
            raise TypeError(f"env: FrameStack needs a Box observation space, got {space!r}")
        self.num_stack = num_stack
        self.padding = padding

    def observation_space(self, params=None) -> spaces.Box:
        """The wrapped Box repeated ``num_stack`` times along a new leading axis."""
        inner = self.env.observation_space(params)
        shape = (self.num_stack, *inner.shape)
        return spaces.Box(inner.low.expand(shape), inner.high.expand(shape), shape, inner.dtype)

    def _fresh(self, obs: torch.Tensor) -> torch.Tensor:
        pad = obs if self.padding == "reset" else torch.zeros_like(obs)
        return torch.stack([pad] * (self.num_stack - 1) + [obs])

    @staticmethod
    def _push(frames: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([frames[1:], obs[None].to(frames.dtype)])

    def reset(self, key: torch.Tensor, params=None):
        """``(stacked obs, FrameStackState)``: the first observation after its padding."""
        key = jr._check_key(key, "key")
        obs, env_state = self.env.reset(key, self._resolve_params(params, key))
        frames = self._fresh(obs)
        return frames, FrameStackState(env_state, frames)

    def step(self, key: torch.Tensor, state: FrameStackState, action, params=None, autoreset: bool = True):
        """Step and push the new observation; an auto-reset starts a fresh stack (see the class docstring)."""
        if not isinstance(state, FrameStackState):
            raise TypeError(f"state: expected a FrameStackState (from this wrapper's reset), got {type(state).__name__}")
        key = jr._check_key(key, "key")
        obs, env_state, reward, terminated, truncated, info = self.env.step(
            key, state.env_state, action, self._resolve_params(params, key), autoreset=autoreset
        )
        final = self._push(state.frames, info["final_obs"])
        frames = self._push(state.frames, obs)
        if autoreset:
            frames = torch.where(terminated | truncated, self._fresh(obs), frames)
        info = dict(info)
        info["final_obs"] = final
        return frames, FrameStackState(env_state, frames), reward, terminated, truncated, info
