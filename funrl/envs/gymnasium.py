"""Bridges between funrl environments and gymnasium 1.x vector environments.

* :func:`to_gymnasium` exposes a funrl env as a ``gymnasium.vector.VectorEnv``
  (numpy in, numpy out; same-step auto-reset with gymnasium's ``final_obs`` /
  ``final_info`` info keys, or gymnasium's default next-step auto-reset), for
  gymnasium tooling and baselines.
* :func:`to_gymnasium_env` exposes ONE funrl env as a ``gymnasium.Env`` (it
  passes ``gymnasium.utils.env_checker.check_env``), with ``rgb_array``
  rendering for the classic-control envs (:mod:`funrl.envs.rendering`).
* :func:`from_gymnasium` drives a gymnasium vector env from torch with funrl's
  conventions (same-step auto-reset, ``info["final_obs"]``), whatever the
  vector env's own auto-reset mode.

Both are stateful, CPU-synchronising objects: they are not pure and do not
vmap or compile (the funrl env inside :func:`to_gymnasium` still runs as one
vmapped -- optionally compiled -- call per step).
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import torch

import gymnasium
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from funrl import random as jr
from funrl import tree
from funrl.envs import spaces
from funrl.envs.core import Environment, make_step_fn

__all__ = ["FunrlEnv", "to_gymnasium_env", "FunrlVectorEnv", "to_gymnasium", "GymnasiumVectorEnv", "from_gymnasium"]


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _check_num_envs(num_envs) -> int:
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs: expected an int >= 1, got {num_envs!r}")
    return int(num_envs)


def _fresh_seed() -> int:
    # OS entropy, not torch's global generator: funrl never touches it
    return secrets.randbits(63)


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed: expected an int or None, got {type(seed).__name__}")


def _check_autoreset_mode(mode) -> AutoresetMode:
    """``mode`` as an AutoresetMode: SAME_STEP or NEXT_STEP (or their values ``"SameStep"``/``"NextStep"``)."""
    allowed = (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP)
    try:
        got = AutoresetMode(mode)
    except ValueError:
        got = None
    if got not in allowed:
        raise ValueError(f"autoreset_mode: expected AutoresetMode.SAME_STEP or AutoresetMode.NEXT_STEP, got {mode!r}")
    return got


# ---------------------------------------------------------------- funrl -> gymnasium
class FunrlVectorEnv(VectorEnv):
    """A funrl environment as a ``gymnasium.vector.VectorEnv`` (built by :func:`to_gymnasium`).

    Follows gymnasium 1.x's vector API in one of two auto-reset modes,
    reported in ``metadata["autoreset_mode"]`` as gymnasium's own vector envs
    and wrappers expect:

    * ``AutoresetMode.SAME_STEP`` (the default): a step that ends an episode
      returns that step's reward/terminated/truncated and the next episode's
      first observation; ``infos["final_obs"]`` is an object array holding
      the final observation of each finished env (``None`` elsewhere) with
      mask ``infos["_final_obs"]``, and ``infos["final_info"]`` holds the
      finished step's infos (mask ``infos["_final_info"]``).  The funrl env's
      own info entries (e.g. from :class:`~funrl.envs.wrappers.EpisodeStatistics`)
      appear as ``infos[k]`` with mask ``infos["_k"]`` for envs that go on,
      and under ``final_info`` for envs that finished, as gymnasium's
      ``SyncVectorEnv`` reports them.
    * ``AutoresetMode.NEXT_STEP`` (gymnasium's default; needed by e.g.
      ``gymnasium.wrappers.vector.NormalizeObservation``): a step that ends
      an episode returns that step's own observation, reward and flags; the
      env's next step ignores its action and returns the next episode's first
      observation with reward 0 and terminated/truncated False.  The funrl
      env's info entries appear as ``infos[k]`` with mask ``infos["_k"]``
      for the envs that stepped (not those that reset).  The next episode's
      first state is drawn by the step that ends the episode (with the key
      same-step mode would use) and delivered one step later; the delivering
      step still consumes a split of the key stream.

    Randomness: ``reset(seed=s)`` sets the key to ``funrl.random.key(s)``.
    Every full reset and every step then does ``ks = split(key, num_envs +
    1)``, keeps ``ks[0]`` as the next key and hands ``ks[1:]`` to
    ``vmap(env.reset)`` / ``vmap(env.step)``, so a run can be replayed with
    funrl directly.
    """

    def __init__(
        self,
        env: Environment,
        params=None,
        num_envs: int = 1,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        compile: bool = False,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ):
        if not isinstance(env, Environment):
            raise TypeError(f"env: expected a funrl.envs.Environment, got {type(env).__name__}")
        self.num_envs = _check_num_envs(num_envs)
        _check_seed(seed)
        self.autoreset_mode = _check_autoreset_mode(autoreset_mode)
        self.device = torch.device(device)
        if params is None:
            params = env.default_params(torch.float32)
        self.env = env
        self.params = tree.map(lambda x: x.to(self.device) if isinstance(x, torch.Tensor) else x, params)
        self.single_observation_space = env.observation_space(self.params).to_gymnasium()
        self.single_action_space = env.action_space(self.params).to_gymnasium()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._funrl_action_space = env.action_space(self.params)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.render_mode = None
        self._seed = seed
        self._key = None
        self._states = None
        self._resetting = np.zeros(self.num_envs, dtype=np.bool_)  # NEXT_STEP: envs whose next step resets
        self._step = make_step_fn(env, self.params, compile=compile)
        self._reset = torch.func.vmap(env.reset, in_dims=(0, None))

    def _next_keys(self) -> torch.Tensor:
        ks = jr.split(self._key, self.num_envs + 1)
        self._key = ks[0]
        return ks[1:]

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``).

        Args:
          seed: None (keep the current key stream; the first reset uses the
            constructor's seed or OS entropy), an int (key ``key(seed)``), or a
            list of ``num_envs`` ints (env ``i`` resets from ``key(seed[i])``
            and the stream continues from ``key(seed[0])``).
          options: None or ``{"reset_mask": bool array (num_envs,)}`` to reset
            only some envs (the others keep their state and observation).

        Returns:
          ``(obs, infos)``: numpy observations batched on axis 0, ``{}``.
        """
        super().reset(seed=seed if isinstance(seed, (int, np.integer)) else None)
        mask = None
        if options:
            unknown = set(options) - {"reset_mask"}
            if unknown:
                raise ValueError(f"options: unknown keys {sorted(unknown)}; supported: 'reset_mask'")
            mask = np.asarray(options["reset_mask"])
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(
                    f"options['reset_mask']: expected a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} of shape {mask.shape}"
                )
            if self._states is None:
                raise RuntimeError("reset: a reset_mask needs a previous full reset")
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"seed: expected a list of {self.num_envs} ints, got length {len(seed)}")
            keys = torch.stack([jr.key(int(s), device=self.device) for s in seed])
            self._key = jr.fold_in(keys[0], self.num_envs)
        else:
            if seed is not None:
                self._key = jr.key(int(seed), device=self.device)
            elif self._key is None:
                self._key = jr.key(self._seed if self._seed is not None else _fresh_seed(), device=self.device)
            keys = self._next_keys()
        obs, states = self._reset(keys, self.params)
        if mask is not None:
            m = torch.as_tensor(mask, device=self.device)
            states = tree.map(lambda new, old: torch.where(m.reshape((-1,) + (1,) * (new.ndim - 1)), new, old), states, self._states)
            obs = torch.where(m.reshape((-1,) + (1,) * (obs.ndim - 1)), obs, self._obs)
        self._states, self._obs = states, obs
        self._resetting = np.zeros(self.num_envs, dtype=np.bool_) if mask is None else self._resetting & ~mask
        return _to_numpy(obs), {}

    def step(self, actions):
        """Step every env with ``actions`` (numpy or torch, shape ``(num_envs, *action_shape)``).

        Returns:
          ``(obs, rewards, terminations, truncations, infos)`` as numpy arrays
          with a leading ``num_envs`` axis (rewards float64, flags bool), in
          the env's ``autoreset_mode`` (see :class:`FunrlVectorEnv`).
        """
        if self._states is None:
            raise RuntimeError("step: call reset() before step()")
        space = self._funrl_action_space
        act = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
        want = (self.num_envs, *space.shape)
        if tuple(act.shape) != want:
            raise ValueError(f"actions: expected shape {want}, got {tuple(act.shape)}")
        act = act.to(device=self.device, dtype=space.dtype)
        out = self._step(self._next_keys(), self._states, act)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            return self._next_step_outputs(*out)
        obs, states, reward, terminated, truncated, info = out
        self._states, self._obs = states, obs
        done = _to_numpy(terminated | truncated)
        infos: dict[str, Any] = {}
        extra = {k: _to_numpy(v) for k, v in info.items() if k != "final_obs"}
        going_on = ~done
        for k, v in extra.items():
            infos[k] = np.where(going_on.reshape((-1,) + (1,) * (v.ndim - 1)), v, np.zeros_like(v))
            infos[f"_{k}"] = going_on.copy()
        if done.any():
            final = _to_numpy(info["final_obs"])
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = final[i]
            final_info: dict[str, Any] = {}
            for k, v in extra.items():
                final_info[k] = np.where(done.reshape((-1,) + (1,) * (v.ndim - 1)), v, np.zeros_like(v))
                final_info[f"_{k}"] = done.copy()
            infos["final_obs"], infos["_final_obs"] = final_obs, done.copy()
            infos["final_info"], infos["_final_info"] = final_info, done.copy()
        return (
            _to_numpy(obs),
            _to_numpy(reward).astype(np.float64),
            _to_numpy(terminated).astype(np.bool_),
            _to_numpy(truncated).astype(np.bool_),
            infos,
        )

    def _next_step_outputs(self, obs, states, reward, terminated, truncated, info):
        """NEXT_STEP results from the same-step step of every env (all tensors with a leading axis N).

        Envs in ``self._resetting`` keep their pending reset (state and first
        observation, drawn by the step that ended their episode) and report
        reward 0 and flags False; the others report the step's own
        observation (``info["final_obs"]``) and keep the same-step state,
        a fresh reset where their episode just ended.
        """
        n = self.num_envs
        resetting = torch.as_tensor(self._resetting, device=self.device)

        def col(m, x):  # m (N,) broadcast against x (N, ...)
            return m.reshape((-1,) + (1,) * (x.ndim - 1))

        self._states = tree.map(lambda old, new: torch.where(col(resetting, new), old, new), self._states, states)
        obs_out = torch.where(col(resetting, obs), self._obs, info["final_obs"])
        self._obs = torch.where(col(resetting, obs), self._obs, obs)
        stepped = ~self._resetting
        term = _to_numpy(terminated).astype(np.bool_) & stepped
        trunc = _to_numpy(truncated).astype(np.bool_) & stepped
        rew = np.where(stepped, _to_numpy(reward).astype(np.float64), 0.0)
        infos: dict[str, Any] = {}
        for k, v in info.items():
            if k != "final_obs":
                v = _to_numpy(v)
                infos[k] = np.where(stepped.reshape((n,) + (1,) * (v.ndim - 1)), v, np.zeros_like(v))
                infos[f"_{k}"] = stepped.copy()
        self._resetting = term | trunc
        return _to_numpy(obs_out), rew, term, trunc, infos

    def close_extras(self, **kwargs) -> None:
        """Drop the env states (nothing else to release)."""
        self._states = None

    def __repr__(self) -> str:
        return f"FunrlVectorEnv({self.env.name}, num_envs={self.num_envs})"


def to_gymnasium(
    env: Environment,
    params=None,
    num_envs: int = 1,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    compile: bool = False,
    autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
) -> FunrlVectorEnv:
    """Wrap a funrl env as a gymnasium 1.x vector env.

    gymnasium 1.4 has no checker for vector envs (``gymnasium.utils.env_checker``
    checks single ``gymnasium.Env`` objects only); for one env as a
    ``gymnasium.Env`` use :func:`to_gymnasium_env`.

    Args:
      env: a funrl :class:`~funrl.envs.core.Environment` (wrappers included).
      params: env params shared by all envs (default: ``env.default_params()``).
      num_envs: number of parallel envs (>= 1).
      seed: seed of the key stream used by a first ``reset()`` without seed.
      device: torch device the env runs on; inputs/outputs are numpy.
      compile: compile the batched step with :func:`funrl.jit` (a few seconds
        on the first step; worth it for long runs).
      autoreset_mode: ``gymnasium.vector.AutoresetMode.SAME_STEP`` (default,
        funrl's own convention) or ``AutoresetMode.NEXT_STEP`` (gymnasium's
        default, required by gymnasium's vector observation wrappers such as
        ``gymnasium.wrappers.vector.NormalizeObservation``); see
        :class:`FunrlVectorEnv`.

    Returns:
      A :class:`FunrlVectorEnv`.  Not pure: it holds the states and the key.

    Raises:
      TypeError: ``env`` is not a funrl env, ``seed`` not an int.
      ValueError: ``num_envs < 1``; an ``autoreset_mode`` other than the two above.
    """
    return FunrlVectorEnv(env, params, num_envs, seed, device, compile, autoreset_mode)


# ---------------------------------------------------------------- one funrl env -> gymnasium.Env
class FunrlEnv(gymnasium.Env):
    """One funrl environment as a ``gymnasium.Env`` (built by :func:`to_gymnasium_env`).

    ``reset``/``step`` follow gymnasium's single-env API: numpy observations
    of the observation space's dtype, a Python float reward, Python bool
    flags, no auto-reset (call ``reset`` after ``terminated or truncated``;
    stepping on is the funrl env's ``step(..., autoreset=False)``).  The
    time limit is the params' ``max_episode_steps`` and is reported as
    ``truncated``, as gymnasium's ``TimeLimit`` does.  ``info`` holds the
    funrl env's own info entries as numpy arrays.

    Randomness: ``reset(seed=s)`` sets the key to ``funrl.random.key(s)``;
    every reset and step splits it (``key, sub = split(key)``) and hands
    ``sub`` to the funrl env, so an episode can be replayed in funrl.
    ``reset(seed=s)`` also seeds ``self.np_random`` (unused by funrl) as
    gymnasium's checker expects.

    Rendering: with ``render_mode="rgb_array"``, :meth:`render` returns the
    current state drawn by :func:`funrl.envs.rendering.render_frame`
    (classic-control envs only; numpy, no pygame).
    """

    def __init__(self, env: Environment, params=None, seed: int | None = None, device: str | torch.device = "cpu", render_mode: str | None = None):
        if not isinstance(env, Environment):
            raise TypeError(f"env: expected a funrl.envs.Environment, got {type(env).__name__}")
        _check_seed(seed)
        from funrl.envs import rendering

        modes = ["rgb_array"] if rendering.renderable(env) else []
        if render_mode is not None and render_mode not in modes:
            raise ValueError(f"render_mode: expected None or one of {modes} for {env.name}, got {render_mode!r}")
        self.device = torch.device(device)
        if params is None:
            params = env.default_params(torch.float32)
        self.env = env
        self.params = tree.map(lambda x: x.to(self.device) if isinstance(x, torch.Tensor) else x, params)
        self.observation_space = env.observation_space(self.params).to_gymnasium()
        self.action_space = env.action_space(self.params).to_gymnasium()
        self._funrl_action_space = env.action_space(self.params)
        fps = rendering.RENDER_FPS.get(type(getattr(env, "unwrapped", env)).__name__, 30)
        self.metadata = {"render_modes": modes, "render_fps": fps}
        self.render_mode = render_mode
        self._seed = seed
        self._key = None
        self._state = None

    def _sub_key(self) -> torch.Tensor:
        self._key, sub = jr.split(self._key, 2)
        return sub

    def _obs(self, obs: torch.Tensor):
        if isinstance(self.observation_space, gymnasium.spaces.Discrete):
            return int(obs)  # as gymnasium's tabular envs
        # a fresh array every call (gymnasium's checker rejects shared buffers)
        return np.array(_to_numpy(obs), dtype=self.observation_space.dtype, copy=True)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode.

        Args:
          seed: None (continue the key stream; the first reset uses the
            constructor's seed or OS entropy) or an int (key ``key(seed)``).
          options: None or ``{}`` (no options are supported).

        Returns:
          ``(obs, info)``: a numpy observation ``obs_shape`` and ``{}``.
        """
        _check_seed(seed)
        if options:
            raise ValueError(f"options: expected None or {{}}, got keys {sorted(options)}")
        super().reset(seed=None if seed is None else int(seed))
        if seed is not None:
            self._key = jr.key(int(seed), device=self.device)
        elif self._key is None:
            self._key = jr.key(self._seed if self._seed is not None else _fresh_seed(), device=self.device)
        obs, self._state = self.env.reset(self._sub_key(), self.params)
        return self._obs(obs), {}

    def step(self, action):
        """One step without auto-reset.

        Args:
          action: an element of ``action_space`` (an int / numpy integer for
            Discrete, a numpy array of the Box's shape), or a torch tensor.

        Returns:
          ``(obs, reward, terminated, truncated, info)``: numpy observation,
          Python float, Python bools, dict of numpy arrays.
        """
        if self._state is None:
            raise RuntimeError("step: call reset() before step()")
        space = self._funrl_action_space
        act = action if isinstance(action, torch.Tensor) else torch.as_tensor(np.asarray(action))
        if tuple(act.shape) != tuple(space.shape):
            raise ValueError(f"action: expected shape {tuple(space.shape)}, got {tuple(act.shape)}")
        act = act.to(device=self.device, dtype=space.dtype)
        obs, self._state, reward, terminated, truncated, info = self.env.step(
            self._sub_key(), self._state, act, self.params, autoreset=False
        )
        extra = {k: _to_numpy(v).copy() for k, v in info.items() if k != "final_obs"}
        return self._obs(obs), float(reward), bool(terminated), bool(truncated), extra

    def render(self):
        """The current state as an ``rgb_array`` frame, uint8 ``(H, W, 3)``; None without a render mode.

        Raises:
          RuntimeError: called before :meth:`reset` with ``render_mode="rgb_array"``.
        """
        if self.render_mode is None:
            gymnasium.logger.warn(
                f"render: {self.env.name} was made without a render_mode; "
                "use funrl.envs.to_gymnasium_env(env, render_mode='rgb_array')"
            )
            return None
        if self._state is None:
            raise RuntimeError("render: call reset() before render()")
        from funrl.envs.rendering import render_frame

        return render_frame(self.env, self._state, self.params)

    def __repr__(self) -> str:
        return f"FunrlEnv({self.env.name})"


def to_gymnasium_env(
    env: Environment,
    params=None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    render_mode: str | None = None,
) -> FunrlEnv:
    """Wrap ONE funrl env as a ``gymnasium.Env`` (for a vector env see :func:`to_gymnasium`).

    The result passes ``gymnasium.utils.env_checker.check_env``.

    Args:
      env: a funrl :class:`~funrl.envs.core.Environment` (wrappers included).
      params: env params (default: ``env.default_params()``), unbatched.
      seed: seed of the key stream used by a first ``reset()`` without seed.
      device: torch device the env runs on; inputs/outputs are numpy.
      render_mode: None or ``"rgb_array"`` (CartPole, Pendulum, MountainCar,
        MountainCarContinuous and Acrobot only).

    Returns:
      A :class:`FunrlEnv`.  Not pure: it holds the state and the key.

    Raises:
      TypeError: ``env`` is not a funrl env, ``seed`` not an int.
      ValueError: a ``render_mode`` the env does not support.
    """
    return FunrlEnv(env, params, seed, device, render_mode)


# ---------------------------------------------------------------- gymnasium -> funrl
def _supports_reset_mask(vector_env) -> bool:
    base = getattr(vector_env, "unwrapped", vector_env)
    return isinstance(base, (gymnasium.vector.SyncVectorEnv, gymnasium.vector.AsyncVectorEnv))


class GymnasiumVectorEnv:
    """A gymnasium vector env driven with torch tensors and funrl's same-step convention.

    Built by :func:`from_gymnasium`.  NOT pure, not vmappable, not
    compilable: it steps the gymnasium env on the CPU and converts arrays.

    Whatever ``vector_env.metadata["autoreset_mode"]``, :meth:`step` behaves as
    funrl's :meth:`Environment.step`: on a step that ends an episode it
    returns that step's reward and flags, the next episode's first
    observation, and ``info["final_obs"]`` (always present; equal to ``obs``
    for envs that go on).

    * ``SAME_STEP`` envs: ``final_obs`` is read from gymnasium's infos.
    * ``NEXT_STEP`` and ``DISABLED`` envs: finished envs are reset right away
      with ``reset(options={"reset_mask": done})``, so gymnasium's extra
      zero-reward reset step never happens.  That needs a vector env whose
      ``reset`` supports ``reset_mask`` (gymnasium's ``SyncVectorEnv`` and
      ``AsyncVectorEnv``; custom ones such as the ``vector_entry_point``
      ``CartPoleVectorEnv`` do not -- build those with
      ``vectorization_mode="sync"``).

    Attributes:
      num_envs, single_observation_space, single_action_space (funrl spaces),
      autoreset_mode, vector_env (the gymnasium env).
    """

    def __init__(self, vector_env, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if not isinstance(vector_env, VectorEnv):
            raise TypeError(f"vector_env: expected a gymnasium.vector.VectorEnv, got {type(vector_env).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
        mode = vector_env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if not isinstance(mode, AutoresetMode):
            mode = AutoresetMode(mode)
        if mode != AutoresetMode.SAME_STEP and not _supports_reset_mask(vector_env):
            raise TypeError(
                f"vector_env: {type(vector_env).__name__} uses {mode} auto-reset and its reset() does not "
                "support options={'reset_mask': ...}, which same-step semantics need; build it with "
                "gymnasium.make_vec(..., vectorization_mode='sync') (or 'async'), or with "
                "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"
            )
        self.vector_env = vector_env
        self.autoreset_mode = mode
        self.num_envs = int(vector_env.num_envs)
        self.device = torch.device(device)
        self.dtype = dtype
        self.single_observation_space = spaces.from_gymnasium_space(vector_env.single_observation_space)
        self.single_action_space = spaces.from_gymnasium_space(vector_env.single_action_space)
        self._obs_float = self.single_observation_space.dtype.is_floating_point
        self._started = False

    def _obs(self, x) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(x), device=self.device)
        return t.to(self.dtype) if self._obs_float else t.to(torch.int64)

    def reset(self, seed: int | None = None, options: dict | None = None) -> torch.Tensor:
        """Reset every env; returns the observations, a tensor ``(num_envs, *obs_shape)``."""
        obs, _ = self.vector_env.reset(seed=seed, options=options)
        self._started = True
        return self._obs(obs)

    def step(self, actions: torch.Tensor):
        """Step every env.

        Args:
          actions: tensor ``(num_envs, *action_shape)`` (integers for discrete
            spaces), or anything ``numpy.asarray`` accepts.

        Returns:
          ``(obs, reward, terminated, truncated, info)``: tensors with a leading
          ``num_envs`` axis (reward in ``dtype``, flags bool); ``info`` has
          ``"final_obs"`` (tensor like ``obs``) and ``"infos"`` (gymnasium's raw
          info dict of the step).
        """
        if not self._started:
            raise RuntimeError("step: call reset() before step()")
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions: expected a leading axis of {self.num_envs} envs, got shape {actions.shape}")
        if isinstance(self.vector_env.single_action_space, gymnasium.spaces.Discrete):
            actions = actions.astype(self.vector_env.single_action_space.dtype)
        obs, reward, terminated, truncated, infos = self.vector_env.step(actions)
        done = np.logical_or(terminated, truncated)
        obs_t = self._obs(obs)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            final = np.array(obs, copy=True)
            if "_final_obs" in infos:
                for i in np.flatnonzero(infos["_final_obs"]):
                    final[i] = infos["final_obs"][i]
            final_t = self._obs(final)
        else:
            final_t = obs_t
            if done.any():
                reset_obs, _ = self.vector_env.reset(options={"reset_mask": done.copy()})
                mask = torch.as_tensor(done, device=self.device).reshape((-1,) + (1,) * (obs_t.ndim - 1))
                obs_t = torch.where(mask, self._obs(reset_obs), obs_t)
        info = {"final_obs": final_t, "infos": infos}
        return (
            obs_t,
            torch.as_tensor(np.asarray(reward), device=self.device).to(self.dtype),
            torch.as_tensor(np.asarray(terminated, dtype=np.bool_), device=self.device),
            torch.as_tensor(np.asarray(truncated, dtype=np.bool_), device=self.device),
            info,
        )

    def close(self) -> None:
        """Close the gymnasium env."""
        self.vector_env.close()

    def __repr__(self) -> str:
        return f"GymnasiumVectorEnv({self.vector_env!r}, autoreset_mode={self.autoreset_mode.name})"


def from_gymnasium(vector_env, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> GymnasiumVectorEnv:
    """Drive a ``gymnasium.vector.VectorEnv`` with torch tensors and same-step auto-reset.

    Args:
      vector_env: e.g. ``gymnasium.make_vec("CartPole-v1", 8, vectorization_mode="sync")``.
      device: where returned tensors live.
      dtype: float dtype of float observations and rewards.

    Returns:
      A :class:`GymnasiumVectorEnv` with ``reset(seed) -> obs`` and
      ``step(actions) -> (obs, reward, terminated, truncated, info)``.  It is
      NOT pure: not vmappable, not compilable, CPU-side.

    Raises:
      TypeError: not a gymnasium vector env, or a NEXT_STEP/DISABLED env that
        cannot reset single sub-envs (see :class:`GymnasiumVectorEnv`).
    """
    return GymnasiumVectorEnv(vector_env, device, dtype)
