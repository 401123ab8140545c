"""Any installed gymnasium environment as a funrl :class:`~funrl.envs.core.Environment` (``"gymnasium:ID"``).

``funrl.envs.make("gymnasium:LunarLander-v3")`` returns a :class:`GymnasiumEnv`
whose ``reset``/``step`` have funrl's signatures, so every funrl algorithm
trains on it unchanged (``funrl train dqn --env gymnasium:LunarLander-v3``).
Its dynamics are gymnasium's own env, stepped on the host:

* The state holds a *handle* (int64), naming one gymnasium env copy, plus the
  copy's step count, its last observation and the episode's ``time``.  The
  copies live in a registry owned by the :class:`GymnasiumEnv` object:
  every ``reset`` makes new copies, one per element of its batch.
* ``reset`` and ``step`` call two custom ops (``torch.ops.funrl.gymnasium_reset``
  and ``funrl.gymnasium_step``) with a ``vmap`` rule that flattens every batch
  axis into one list of copies: under ``vmap(vmap(env.step))`` (seeds x envs),
  one call steps all the copies one after another on the host.  So the
  algorithms' ``vmap`` code runs as is, but it is NOT one vectorised or
  compiled graph: the env step is an opaque host call, and ``funrl train``
  runs these envs eagerly (:attr:`GymnasiumEnv.COMPILE` is False).  The ops
  have fake implementations, so ``funrl.jit`` can trace the code around them
  (``benchmarks/lunarlander.py --compile`` measures that experiment).
* Randomness: every reset of a copy -- the first and each auto-reset -- is
  ``gymnasium_env.reset(seed=seed_from_key(k))`` with ``k`` the funrl key of
  the reset (``reset_key(key)`` of the step for auto-resets, as funrl's own
  envs), which also reseeds the copy's ``np_random``; a run is reproducible
  from its seed.
* Auto-reset is funrl's same-step mode: a step that ends an episode returns
  that step's reward and flags, the next episode's first observation, and the
  finished step's observation in ``info["final_obs"]``.  The time limit is
  gymnasium's own ``TimeLimit`` (its ``truncated``); ``max_episode_steps`` in
  the params only reports it.  gymnasium's ``info`` dicts are dropped.

A state can be stepped once.  Stepping a state whose copy has moved on or
does not exist (a state stepped twice, one restored from a checkpoint into a
new :class:`GymnasiumEnv`; detected by the copy's step count differing from
the state's ``steps``) cannot continue that episode: the step ends it
as *truncated* (reward 0, ``final_obs`` = the state's observation, the action
ignored) and starts a new episode on the copy, seeded from ``reset_key(key)``.
That is what a resumed ``funrl train`` run does on its first step: gymnasium
envs' internal state cannot be checkpointed, so a resumed run is reproducible
(the same checkpoint resumes to the same numbers) but not bit-identical to an
uninterrupted run.
"""

from __future__ import annotations

import difflib
import itertools
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from funrl import random as jr
from funrl import tree
from funrl.envs import spaces
from funrl.envs.core import Environment, reset_key

__all__ = ["PREFIX", "GymnasiumEnv", "GymnasiumState", "GymnasiumParams", "make_gymnasium", "seed_from_key"]

#: ``funrl.envs.make`` hands ids starting with this to :func:`make_gymnasium`.
PREFIX = "gymnasium:"

#: The extras gymnasium needs for some env families, and the funrl extra that installs them.
_EXTRAS = {"box2d": 'pip install "funrl[box2d]"  (or: pip install "gymnasium[box2d]")'}


def seed_from_key(key: Tensor) -> int:
    """The gymnasium seed of a reset with funrl key ``key``: its two 32-bit words as one int.

    Args:
      key: a funrl key, int64 ``(2,)`` (concrete: not under vmap or compile).

    Returns:
      ``(key[0] << 32) | key[1]`` (each word taken modulo ``2**32``), an int in ``[0, 2**64)``.
    """
    key = jr._check_key(key, "key")
    return _seeds(key)[0]


@tree.pytree_dataclass
class GymnasiumState:
    """One env copy's state (leaves shaped ``()`` unbatched; ``obs`` the observation shape).

    Attributes:
      handle: int64, which gymnasium env copy of the registry.
      steps: int64, steps the copy has taken since it was made (never reset):
        a step checks it against the copy's own count to detect a stale state.
      obs: the last observation (the step's ``final_obs`` when a stale state is truncated).
      time: int64, steps in the current episode (funrl's convention; 0 after a reset).
    """

    handle: Tensor
    steps: Tensor
    obs: Tensor
    time: Tensor


@tree.pytree_dataclass
class GymnasiumParams:
    """Params of a :class:`GymnasiumEnv`: only the time limit, reported (gymnasium's ``TimeLimit`` applies it).

    Attributes:
      max_episode_steps: int64 ``()``, the gymnasium spec's limit (``2**31 - 1`` if it has none).
    """

    max_episode_steps: Tensor


# ---------------------------------------------------------------- the copies, on the host
class _Copies:
    """The gymnasium env copies of one :class:`GymnasiumEnv`, by handle, with their step counts."""

    def __init__(self, env_id: str, kwargs: dict, obs_space: spaces.Space, act_space: spaces.Space,
                 gym_obs_space, gym_act_space):
        self.env_id, self.kwargs = env_id, dict(kwargs)
        self.obs_space, self.act_space = obs_space, act_space
        self.gym_obs_space, self.gym_act_space = gym_obs_space, gym_act_space
        self.envs: dict[int, Any] = {}
        self.steps: dict[int, int] = {}
        self.next_handle = 0
        self.token = next(_TOKENS)
        _REGISTRIES[self.token] = self

    def _make(self, handle: int):
        import gymnasium

        self.envs[handle] = env = gymnasium.make(self.env_id, **self.kwargs)
        self.steps[handle] = 0
        self.next_handle = max(self.next_handle, handle + 1)
        return env

    def _obs(self, obs) -> np.ndarray:
        return np.asarray(obs).reshape(self.obs_space.shape)

    def _action(self, a: np.ndarray):
        if isinstance(self.act_space, spaces.Discrete):
            return int(a)
        return np.asarray(a, dtype=self.gym_act_space.dtype).reshape(self.gym_act_space.shape)

    def reset(self, seeds: list[int]) -> tuple[list[np.ndarray], list[int]]:
        """New copies, one per seed, each reset with its seed: ``(observations, handles)``."""
        obs, handles = [], []
        for s in seeds:
            h = self.next_handle
            o, _ = self._make(h).reset(seed=s)
            obs.append(self._obs(o))
            handles.append(h)
        return obs, handles

    def step(self, handles, steps, actions, reset_seeds, last_obs, autoreset: bool):
        """Step copy ``handles[i]`` with ``actions[i]``; lists of obs, rewards, flags and final obs."""
        out = ([], [], [], [], [])
        for h, n, a, s, last in zip(handles, steps, actions, reset_seeds, last_obs):
            env = self.envs.get(h)
            if env is None or self.steps[h] != n:
                # the copy is not where this state left it (checkpoint, stale or foreign state):
                # end that episode as truncated and start a new one
                env = env if env is not None else self._make(h)
                o, _ = env.reset(seed=s)
                self.steps[h] = n + 1
                for lst, v in zip(out, (self._obs(o), 0.0, False, True, last)):
                    lst.append(v)
                continue
            o, r, term, trunc, _ = env.step(self._action(a))
            self.steps[h] = n + 1
            final = self._obs(o)
            if autoreset and (term or trunc):
                o, _ = env.reset(seed=s)
            for lst, v in zip(out, (self._obs(o), float(r), bool(term), bool(trunc), final)):
                lst.append(v)
        return out

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()
        self.steps.clear()


_TOKENS = itertools.count()
# token -> registry; the GymnasiumEnv holds the only strong reference, so dropping the env frees its copies
_REGISTRIES: "weakref.WeakValueDictionary[int, _Copies]" = weakref.WeakValueDictionary()


def _registry(token: int) -> _Copies:
    copies = _REGISTRIES.get(token)
    if copies is None:
        raise RuntimeError(f"gymnasium env registry {token} is gone (its GymnasiumEnv was garbage-collected)")
    return copies


def _seeds(keys: Tensor) -> list[int]:
    k = keys.detach().to("cpu").reshape(-1, 2).tolist()
    # funrl's words are unsigned 32-bit; masking keeps a hand-made negative word a valid (>= 0) seed
    return [((hi & 0xFFFFFFFF) << 32) | (lo & 0xFFFFFFFF) for hi, lo in k]


def _stack(arrays: list[np.ndarray], batch: tuple, like_shape: tuple, dtype: torch.dtype, device) -> Tensor:
    if not arrays:
        return torch.empty(batch + like_shape, dtype=dtype, device=device)
    return torch.from_numpy(np.stack(arrays)).to(device=device, dtype=dtype).reshape(batch + like_shape)


# ---------------------------------------------------------------- the custom ops
# Both ops take tensors with any number of leading batch axes (the handles' shape); their
# vmap rules move the vmapped axis to the front, so nested vmaps end in one call with every axis.
@torch.library.custom_op("funrl::gymnasium_reset", mutates_args=())
def _reset_op(token: int, keys: Tensor, obs_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``keys [*B, 2]`` -> ``(obs [*B, *obs_shape], handles [*B])``: new copies, reset with ``seed_from_key``."""
    copies = _registry(token)
    batch = tuple(keys.shape[:-1])
    obs, handles = copies.reset(_seeds(keys))
    return (
        _stack(obs, batch, copies.obs_space.shape, obs_dtype, keys.device),
        torch.tensor(handles, dtype=torch.int64, device=keys.device).reshape(batch),
    )


@_reset_op.register_fake
def _reset_fake(token, keys, obs_dtype):
    copies = _registry(token)
    batch = tuple(keys.shape[:-1])
    return keys.new_empty(batch + copies.obs_space.shape, dtype=obs_dtype), keys.new_empty(batch, dtype=torch.int64)


def _to_front(info, x, dim):
    return x.movedim(dim, 0) if dim is not None else x.expand(info.batch_size, *x.shape)


@_reset_op.register_vmap
def _reset_vmap(info, in_dims, token, keys, obs_dtype):
    return _reset_op(token, _to_front(info, keys, in_dims[1]), obs_dtype), (0, 0)


@torch.library.custom_op("funrl::gymnasium_step", mutates_args=())
def _step_op(
    token: int, handles: Tensor, steps: Tensor, actions: Tensor, reset_keys: Tensor, last_obs: Tensor, autoreset: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One step of copies ``handles [*B]``: ``(obs, reward float64 [*B], terminated, truncated, final_obs)``."""
    copies = _registry(token)
    batch = tuple(handles.shape)
    n = handles.numel()
    obs_shape = tuple(last_obs.shape[len(batch):])
    dev = handles.device
    obs, rew, term, trunc, final = copies.step(
        handles.detach().to("cpu").reshape(-1).tolist(),
        steps.detach().to("cpu").reshape(-1).tolist(),
        list(actions.detach().to("cpu").reshape((n,) + tuple(actions.shape[len(batch):])).numpy()),
        _seeds(reset_keys),
        list(last_obs.detach().to("cpu").reshape((n,) + obs_shape).numpy()),
        autoreset,
    )
    return (
        _stack(obs, batch, obs_shape, last_obs.dtype, dev),
        torch.tensor(rew, dtype=torch.float64, device=dev).reshape(batch),
        torch.tensor(term, dtype=torch.bool, device=dev).reshape(batch),
        torch.tensor(trunc, dtype=torch.bool, device=dev).reshape(batch),
        _stack(final, batch, obs_shape, last_obs.dtype, dev),
    )


@_step_op.register_fake
def _step_fake(token, handles, steps, actions, reset_keys, last_obs, autoreset):
    flags = handles.new_empty(handles.shape, dtype=torch.bool)
    return (torch.empty_like(last_obs), handles.new_empty(handles.shape, dtype=torch.float64), flags,
            torch.empty_like(flags), torch.empty_like(last_obs))


@_step_op.register_vmap
def _step_vmap(info, in_dims, token, handles, steps, actions, reset_keys, last_obs, autoreset):
    args = [_to_front(info, x, d) for x, d in zip((handles, steps, actions, reset_keys, last_obs), in_dims[1:6])]
    return _step_op(token, *args, autoreset), (0, 0, 0, 0, 0)


# ---------------------------------------------------------------- the Environment
def _float_space(space: spaces.Space, dtype: torch.dtype) -> spaces.Space:
    """Float boxes in the env's dtype (as funrl's own envs); other spaces as they are."""
    if isinstance(space, spaces.Box) and space.dtype.is_floating_point:
        return spaces.Box(space.low, space.high, space.shape, dtype)
    return space


class GymnasiumEnv(Environment):
    """A gymnasium env id as a funrl Environment, stepped on the host (see the module docstring).

    Made by :func:`make_gymnasium` / ``funrl.envs.make("gymnasium:ID", **kwargs)``.

    Attributes:
      gymnasium_id: the gymnasium id (without the ``gymnasium:`` prefix).
      kwargs: keyword arguments every copy is made with (``gymnasium.make(gymnasium_id, **kwargs)``).
      dtype: float dtype of float observations, float action boxes and rewards.
      COMPILE: False: the env's steps run on the host and cannot be traced by ``torch.compile``.
    """

    COMPILE = False

    def __init__(self, gymnasium_id: str, kwargs: dict, dtype: torch.dtype, probe):
        self.gymnasium_id = gymnasium_id
        self.kwargs = dict(kwargs)
        self.dtype = dtype
        limit = probe.spec.max_episode_steps if probe.spec is not None else None
        self._max_episode_steps = int(limit) if limit is not None else 2**31 - 1
        obs_space = _convert_space(probe.observation_space, gymnasium_id, "observation")
        act_space = _convert_space(probe.action_space, gymnasium_id, "action")
        self._obs_space = _float_space(obs_space, dtype)
        self._act_space = _float_space(act_space, dtype)
        self._copies = _Copies(gymnasium_id, kwargs, self._obs_space, self._act_space,
                               probe.observation_space, probe.action_space)

    @property
    def name(self) -> str:
        """``"gymnasium:<id>"``."""
        return PREFIX + self.gymnasium_id

    def __repr__(self) -> str:
        return f"GymnasiumEnv({self.gymnasium_id!r})"

    @property
    def num_copies(self) -> int:
        """gymnasium env copies made so far (one per element of every ``reset`` batch)."""
        return len(self._copies.envs)

    def copy(self, handle) -> Any:
        """The gymnasium env copy with this handle (an int or an int64 tensor ``()``); for inspection and tests."""
        h = int(handle)
        if h not in self._copies.envs:
            raise KeyError(f"handle: no gymnasium env copy {h} in this {self!r} (it has {self.num_copies})")
        return self._copies.envs[h]

    def close(self) -> None:
        """Close and forget every copy (states made before then start new episodes when stepped)."""
        self._copies.close()

    def default_params(self, dtype: torch.dtype = torch.float32) -> GymnasiumParams:
        """The params: ``max_episode_steps`` of the gymnasium spec (``dtype`` is unused: no float params)."""
        return GymnasiumParams(max_episode_steps=torch.tensor(self._max_episode_steps, dtype=torch.int64))

    def observation_space(self, params=None) -> spaces.Space:
        """gymnasium's observation space as a funrl space (float boxes in the env's dtype)."""
        return self._obs_space

    def action_space(self, params=None) -> spaces.Space:
        """gymnasium's action space as a funrl space (float boxes in the env's dtype)."""
        return self._act_space

    def _obs_dtype(self) -> torch.dtype:
        space = self._obs_space
        return self.dtype if space.dtype.is_floating_point else space.dtype

    def reset_env(self, key: Tensor, params) -> tuple[Tensor, GymnasiumState]:
        """A new gymnasium env copy, reset with ``seed=seed_from_key(key)``: ``(obs, state)``."""
        obs, handle = torch.ops.funrl.gymnasium_reset(self._copies.token, key, self._obs_dtype())
        zero = torch.zeros_like(handle)
        return obs, GymnasiumState(handle=handle, steps=zero, obs=obs, time=zero.clone())

    def step_env(self, key, state, action, params):
        """Not available: gymnasium's env applies its own time limit; use ``step(..., autoreset=False)``."""
        raise NotImplementedError(
            f"{self!r}: gymnasium envs step with their own TimeLimit; call "
            "step(key, state, action, params, autoreset=False) for a step without auto-reset"
        )

    def step(self, key: Tensor, state, action, params=None, autoreset: bool = True):
        """One step of the state's gymnasium copy, with funrl's same-step auto-reset.

        Args:
          key: a funrl key ``(2,)``; the auto-reset (or the reset of a stale
            state) is seeded with ``seed_from_key(reset_key(key))``.
          state: a :class:`GymnasiumState` from this env's ``reset``/``step``.
          action: as :meth:`Environment.step` (Discrete: int64 ``()``; Box: the
            box's shape).
          params: unused beyond the time limit it reports.
          autoreset: start the next episode when this one ends (default).

        Returns:
          ``(obs, state, reward, terminated, truncated, info)`` with reward in
          the env's dtype and ``info = {"final_obs": ...}``, as funrl's envs.
          A stale state (see the module docstring) gives reward 0,
          ``truncated`` True and ``final_obs = state.obs``.
        """
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        if not isinstance(state, GymnasiumState):
            raise TypeError(f"state: expected a GymnasiumState (from this env's reset), got {type(state).__name__}")
        action = self._validate_action(action, params, key.device)
        obs, reward, terminated, truncated, final_obs = torch.ops.funrl.gymnasium_step(
            self._copies.token, state.handle, state.steps, action, reset_key(key), state.obs, bool(autoreset)
        )
        time = state.time + 1
        if autoreset:
            time = torch.where(terminated | truncated, torch.zeros_like(time), time)
        new = GymnasiumState(handle=state.handle, steps=state.steps + 1, obs=obs, time=time)
        return obs, new, reward.to(self.dtype), terminated, truncated, {"final_obs": final_obs}


def _convert_space(space, env_id: str, what: str) -> spaces.Space:
    try:
        return spaces.from_gymnasium_space(space)
    except TypeError:
        raise TypeError(
            f"{PREFIX}{env_id}: its {what} space {space} is not supported: funrl trains on Box, Discrete and "
            "MultiDiscrete spaces (wrap the env, e.g. with gymnasium.wrappers.FlattenObservation, and register "
            "the wrapped env with gymnasium.register under a new id)"
        ) from None


def _missing_dependency(env_id: str, error: Exception) -> ImportError:
    text = str(error)
    hint = next((how for extra, how in _EXTRAS.items() if extra in text.lower()), None)
    how = f"; install it with: {hint}" if hint else ""
    return ImportError(f"env: {PREFIX}{env_id} needs a package that is not installed ({text}){how}")


def make_gymnasium(env_id: str, dtype: torch.dtype = torch.float32, **kwargs) -> tuple[GymnasiumEnv, GymnasiumParams]:
    """A gymnasium env id as a funrl env: ``(GymnasiumEnv, params)``.

    Args:
      env_id: a gymnasium id (``"LunarLander-v3"``; a ``"gymnasium:"`` prefix is accepted).
      dtype: float dtype of float observations, float action boxes and rewards.
      **kwargs: passed to ``gymnasium.make`` for every copy (e.g.
        ``max_episode_steps=200``, ``continuous=True``; on the command line ``--env-set``).

    Returns:
      ``(env, params)``.

    Raises:
      ValueError: gymnasium has no such id (close matches suggested), or
        ``gymnasium.make`` rejects ``kwargs``.
      ImportError: the env needs an extra that is not installed (the message
        names the pip command, e.g. ``pip install "funrl[box2d]"``).
      TypeError: an observation or action space other than Box, Discrete or
        MultiDiscrete; a ``dtype`` other than float32/float64.
    """
    import gymnasium

    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id: expected a gymnasium id such as 'LunarLander-v3', got {env_id!r}")
    gid = env_id[len(PREFIX):] if env_id.startswith(PREFIX) else env_id
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    try:
        probe = gymnasium.make(gid, **kwargs)
    except gymnasium.error.DependencyNotInstalled as e:
        raise _missing_dependency(gid, e) from None
    except gymnasium.error.Error as e:  # NameNotFound, VersionNotFound, NamespaceNotFound, ...
        if gid in gymnasium.registry:
            raise ValueError(f"env: gymnasium.make({gid!r}) failed: {e}") from None
        close = difflib.get_close_matches(gid, list(gymnasium.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ValueError(
            f"env: gymnasium has no environment {gid!r} ({e}).{hint} `python -c \"import gymnasium; "
            f"gymnasium.pprint_registry()\"` lists the installed ones"
        ) from None
    except ImportError as e:
        raise _missing_dependency(gid, e) from None
    except TypeError as e:
        raise ValueError(f"env_params: gymnasium.make({gid!r}, **{kwargs!r}) rejected them: {e}") from None
    try:
        env = GymnasiumEnv(gid, kwargs, dtype, probe)
    finally:
        probe.close()
    return env, env.default_params(dtype)
