"""The environment API: pure ``reset``/``step`` over explicit state and params (gymnax 1.0 shape).

An :class:`Environment` is a stateless object.  Everything that changes lives
in a ``state`` pytree (a :func:`funrl.tree.pytree_dataclass` with an int64
``time`` field) and everything that configures the physics lives in a
``params`` pytree of tensors (including ``max_episode_steps``), so both can be
batched with ``torch.func.vmap`` -- e.g. a different pole length per env.

A subclass implements only its dynamics::

    default_params(dtype) -> params
    reset_env(key, params) -> (obs, state)
    step_env(key, state, action, params) -> (obs, state, reward, terminated, info)
    observation_space(params), action_space(params)

and the base class adds time limits and auto-reset in :meth:`Environment.step`.

Auto-reset is *same-step* (gymnax style): when an episode ends, the step that
ends it returns the finished step's ``reward``/``terminated``/``truncated`` but
the observation and state of a fresh reset; the finished step's observation is
in ``info["final_obs"]``.  gymnasium's vector envs use the next-step mode
instead (one extra step with reward 0 after every episode).

Cost of branch-free auto-reset: ``step`` computes a reset (its random draws
and observation) on *every* step and selects it with ``torch.where`` where the
episode is done.  That is what lets a batch of envs with different episode
boundaries run as one vmapped/compiled graph; for CartPole it is most of the
random-number work of a step.  Use ``autoreset=False`` or ``step_env`` when
you do not want it.

Batched helpers: :func:`vmap_reset`, :func:`vmap_step`, and
:func:`make_step_fn` (the compiled fast path: step and auto-reset fused in one
graph).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import torch

from funrl import random as jr
from funrl import tree
from funrl._checks import check_tensor
from funrl.envs import spaces

__all__ = ["Environment", "vmap_reset", "vmap_step", "make_step_fn", "select_tree", "reset_key", "uniform"]

# The auto-reset's key is the step key with both words xor-ed with a fixed
# random mask: free, where fold_in/split would cost one more cipher call per
# env and step (~20% of a CartPole step).  Threefry is a pseudo-random
# function of its key, so the masked key's stream is as good as independent of
# the step key's; it equals some other live key with probability 2**-64.
_RESET_MASK = (0x9E3779B9, 0x7F4A7C15)


def reset_key(key: torch.Tensor) -> torch.Tensor:
    """The key :meth:`Environment.step` gives ``reset_env`` for an auto-reset: ``key ^ mask``.

    Args:
      key: a key ``(2,)``.

    Returns:
      A key ``(2,)``, different from ``key``.
    """
    mask = torch.tensor(_RESET_MASK, dtype=torch.int64, device=key.device)
    return key ^ mask


def _traced(x: torch.Tensor) -> bool:
    """True when values cannot be read: under torch.compile or torch.func transforms."""
    if torch.compiler.is_compiling():
        return True
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))


def _words(key: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The ``n`` words of ``funrl.random.bits(key, (n,))`` as separate scalar tensors.

    Same cipher calls and word order as ``funrl.random`` (counters ``(0, i)``,
    first words then second words), but one scalar-counter call per counter
    instead of one call on a counter vector.  Under ``vmap`` that keeps every
    intermediate shaped ``(N,)``, which Inductor vectorises over the batch;
    the vector form gives ``(N, 2)`` intermediates whose size-2 inner axis
    Inductor vectorises (badly) instead -- measured 2.3x slower for a
    4-number reset draw at N = 16384.
    """
    m = (n + 1) // 2
    zero = torch.zeros((), dtype=torch.int64, device=key.device)
    first, second = [], []
    for i in range(m):
        y0, y1 = jr.threefry_2x32(key, zero, zero + i)
        first.append(y0)
        second.append(y1)
    return (first + second)[:n]


def uniform(key: torch.Tensor, n: int, dtype: torch.dtype, minval, maxval) -> torch.Tensor:
    """``funrl.random.uniform(key, (n,), dtype, minval, maxval)``, bit for bit, faster under vmap/compile.

    For the few numbers an env draws per reset/step (see :func:`_words`).

    Args:
      key: a key ``(2,)``.
      n: number of draws (small Python int).
      dtype: float32 or float64.
      minval, maxval: floats or tensors broadcastable to ``(n,)``.

    Returns:
      ``dtype`` tensor ``(n,)`` in ``[minval, maxval)``.
    """
    if dtype == torch.float64:
        w = _words(key, 2 * n)
        hi = torch.stack(w[:n])
        lo_w = torch.stack(w[n:])
        u = (((hi & 0x1FFFFF) << 32) | lo_w).to(torch.float64) * (2.0**-53)
    elif dtype == torch.float32:
        u = (torch.stack(_words(key, n)) >> 8).to(torch.float32) * (2.0**-24)
    else:
        return jr.uniform(key, (n,), dtype, minval, maxval)
    lo = torch.as_tensor(minval, dtype=dtype, device=key.device)
    hi_t = torch.as_tensor(maxval, dtype=dtype, device=key.device)
    out = lo + u * (hi_t - lo)
    return torch.maximum(lo, torch.minimum(out, torch.nextafter(hi_t, lo)))


def _dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides, including its size-1 axes (``contiguous()`` ignores those)."""
    want, acc = [], 1
    for size in reversed(x.shape):
        want.append(acc)
        acc *= max(size, 1)
    if tuple(x.stride()) == tuple(reversed(want)):
        return x
    return x.clone(memory_format=torch.contiguous_format)


def select_tree(pred: torch.Tensor, on_true: Any, on_false: Any) -> Any:
    """Leaf-wise ``torch.where(pred, on_true, on_false)``: :func:`funrl.tree.where` (kept under this name for env code)."""
    return tree.where(pred, on_true, on_false)


class Environment:
    """Base class of funrl environments (stateless; all state is in arguments).

    Subclasses implement :meth:`default_params`, :meth:`reset_env`,
    :meth:`step_env`, :meth:`observation_space` and :meth:`action_space`.
    Conventions for subclasses:

    * ``params`` is a pytree_dataclass of tensors in the env's float dtype
      (integers such as ``max_episode_steps`` as int64 tensors of shape ``()``).
      Derived quantities (total mass, ...) are computed in ``step_env`` from
      the params so that overriding one constant stays consistent.
    * ``state`` is a pytree_dataclass with an int64 ``time`` field of shape
      ``()``; ``reset_env`` sets it to 0 and ``step_env`` returns ``state.time
      + 1`` (the base class re-imposes that, so an env cannot get it wrong).
    * ``reset_env``/``step_env`` are pure and branch-free (``torch.where``,
      no ``.item()``), create tensors on the device of their inputs and
      compute in the params' dtype.
    * ``step_env`` does no truncation and no auto-reset and returns ``info``
      as a dict of tensors (possibly empty).
    """

    # ------------------------------------------------------------ to implement
    def default_params(self, dtype: torch.dtype = torch.float32):
        """The default params (pytree_dataclass of tensors; floats in ``dtype``, on CPU)."""
        raise NotImplementedError

    def reset_env(self, key: torch.Tensor, params) -> tuple[torch.Tensor, Any]:
        """Start an episode: ``(obs, state)`` from a key ``(2,)``."""
        raise NotImplementedError

    def step_env(self, key: torch.Tensor, state, action: torch.Tensor, params):
        """One transition without time limit or reset.

        Returns:
          ``(obs, state, reward, terminated, info)``: reward a float tensor ``()``
          in the params dtype, terminated a bool tensor ``()``, info a dict of tensors.
        """
        raise NotImplementedError

    def observation_space(self, params) -> spaces.Space:
        """The space of one observation (for unbatched ``params``)."""
        raise NotImplementedError

    def action_space(self, params=None) -> spaces.Space:
        """The space of one action (for unbatched ``params``)."""
        raise NotImplementedError

    # ------------------------------------------------------------ metadata
    @property
    def name(self) -> str:
        """The environment's name (its registry id when made by :func:`funrl.envs.make`)."""
        spec = getattr(self, "spec", None)
        return spec.id if spec is not None else type(self).__name__

    @property
    def num_actions(self) -> int:
        """Number of discrete actions (Discrete action spaces only)."""
        space = self.action_space(self.default_params())
        if not isinstance(space, spaces.Discrete):
            raise AttributeError(f"{self.name}: num_actions is defined only for Discrete action spaces, not {space!r}")
        return space.n

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------ provided API
    def _resolve_params(self, params, key: torch.Tensor):
        if params is not None:
            return params
        dev = key.device
        cache = self.__dict__.setdefault("_default_params_cache", {})
        if dev not in cache:
            cache[dev] = tree.map(
                lambda x: x.to(dev) if isinstance(x, torch.Tensor) else x,
                self.default_params(torch.float32),
            )
        return cache[dev]

    def reset(self, key: torch.Tensor, params=None) -> tuple[torch.Tensor, Any]:
        """Start an episode.

        Args:
          key: a funrl key, int64 ``(2,)``.
          params: env params (default: ``default_params(torch.float32)`` on ``key``'s device).

        Returns:
          ``(obs, state)``.
        """
        key = jr._check_key(key, "key")
        return self.reset_env(key, self._resolve_params(params, key))

    def step(
        self,
        key: torch.Tensor,
        state,
        action,
        params=None,
        autoreset: bool = True,
    ):
        """One step with time limit and (by default) same-step auto-reset.

        Args:
          key: a funrl key, int64 ``(2,)``; used by the dynamics and (through
            :func:`reset_key`) by the auto-reset.
          state: the env state (with an int64 ``time`` field).
          action: Discrete envs: an integer tensor of shape ``()`` (a Python
            int is accepted in eager code); Box envs: a float tensor of the
            action space's shape.
          params: env params (default: ``default_params(torch.float32)``).
          autoreset: replace the state by a fresh reset when the episode ends.

        Returns:
          ``(obs, state, reward, terminated, truncated, info)``.  ``truncated``
          is ``state.time >= params.max_episode_steps`` after the step,
          whether or not the step also terminated (as gymnasium's
          ``TimeLimit``).  When ``terminated | truncated`` and ``autoreset``,
          ``obs``/``state`` come from ``reset_env(reset_key(key), params)``
          while ``reward``, ``terminated``, ``truncated`` and ``info`` belong to
          the finished step; ``info["final_obs"]`` is always the observation
          the step produced (equal to ``obs`` when the episode goes on).

        Raises:
          TypeError/ValueError: wrong action dtype or shape; an out-of-range
            discrete action in eager, unbatched code.  Under ``vmap`` or
            ``torch.compile`` values cannot be inspected: discrete actions are
            then clamped into range (``[start, start + n - 1]``) instead.
        """
        key = jr._check_key(key, "key")
        params = self._resolve_params(params, key)
        if not hasattr(state, "time"):
            raise TypeError(
                f"state: expected an env state (a pytree_dataclass with a 'time' field), got {type(state).__name__}"
            )
        action = self._validate_action(action, params, key.device)
        obs_st, state_st, reward, terminated, info = self.step_env(key, state, action, params)
        # one step elapsed, whatever step_env did with the counter
        state_st = dataclasses.replace(state_st, time=state.time + 1)
        truncated = state_st.time >= params.max_episode_steps
        info = dict(info)
        info["final_obs"] = obs_st
        if not autoreset:
            return obs_st, state_st, reward, terminated, truncated, info
        done = terminated | truncated
        obs_re, state_re = self.reset_env(reset_key(key), params)
        state_out = select_tree(done, state_re, state_st)
        obs_out = torch.where(done, obs_re, obs_st)
        return obs_out, state_out, reward, terminated, truncated, info

    # ------------------------------------------------------------ validation
    def _validate_action(self, action, params, device) -> torch.Tensor:
        space = self.action_space(params)
        if isinstance(space, spaces.Discrete):
            if isinstance(action, (int,)) and not isinstance(action, bool):
                action = torch.tensor(action, dtype=torch.int64, device=device)
            check_tensor(action, "action")
            if action.is_floating_point() or action.dtype == torch.bool or action.is_complex():
                raise TypeError(
                    f"action: expected an integer tensor for the Discrete({space.n}) action space of "
                    f"{self.name}, got dtype {action.dtype}"
                )
            if action.shape != ():
                raise ValueError(
                    f"action: expected shape () for the Discrete({space.n}) action space of {self.name}, "
                    f"got shape {tuple(action.shape)} (batch with torch.func.vmap / funrl.envs.vmap_step)"
                )
            lo, hi = space.start, space.start + space.n - 1
            if not _traced(action):
                v = int(action)
                if not lo <= v <= hi:
                    raise ValueError(
                        f"action: expected an int in [{lo}, {hi}] for {self.name}, got {v}"
                    )
            # under vmap/compile the check above cannot run: clamp instead of indexing garbage
            return torch.clamp(action, lo, hi).to(torch.int64)
        if isinstance(space, spaces.MultiDiscrete):
            check_tensor(action, "action")
            if action.is_floating_point() or action.dtype == torch.bool:
                raise TypeError(f"action: expected an integer tensor for {space!r}, got dtype {action.dtype}")
            if tuple(action.shape) != space.shape:
                raise ValueError(f"action: expected shape {space.shape} for {space!r}, got {tuple(action.shape)}")
            nv = space.nvec.to(action.device)
            if not _traced(action) and not bool(((action >= 0) & (action < nv)).all()):
                raise ValueError(f"action: expected entries in [0, nvec) with nvec={nv.tolist()}, got {action.tolist()}")
            return torch.minimum(torch.clamp(action, min=0), nv - 1).to(torch.int64)
        if isinstance(space, spaces.Box):
            if isinstance(action, (int, float, list, tuple)) and not isinstance(action, bool):
                action = torch.as_tensor(action, dtype=space.dtype, device=device)
            check_tensor(action, "action")
            if space.dtype.is_floating_point and not action.is_floating_point():
                raise TypeError(
                    f"action: expected a floating-point tensor for the {space!r} action space of {self.name}, "
                    f"got dtype {action.dtype}"
                )
            if tuple(action.shape) != space.shape:
                raise ValueError(
                    f"action: expected shape {space.shape} for the action space of {self.name}, "
                    f"got shape {tuple(action.shape)} (batch with torch.func.vmap / funrl.envs.vmap_step)"
                )
            return action
        return action


# ---------------------------------------------------------------- batching
def _param_dim(batched_params: bool):
    return 0 if batched_params else None


def vmap_reset(env: Environment, keys: torch.Tensor, params=None, batched_params: bool = False):
    """Reset a batch of envs: ``vmap(env.reset)``.

    Args:
      env: the environment.
      keys: int64 ``(N, 2)``, one key per env.
      params: params shared by all envs (default params if None), or, with
        ``batched_params=True``, params whose leaves have a leading axis N.

    Returns:
      ``(obs, states)`` with a leading axis N (row-major leaves).
    """
    check_tensor(keys, "keys")
    if keys.dtype != torch.int64 or keys.ndim != 2 or keys.shape[-1] != 2:
        raise ValueError(f"keys: expected an int64 tensor of shape (N, 2), got {keys.dtype} {tuple(keys.shape)}")
    if params is None:
        params = env._resolve_params(None, keys[0])
    out = torch.func.vmap(env.reset, in_dims=(0, _param_dim(batched_params)))(keys, params)
    # vmap leaves views with odd strides (columns of one draw, expanded
    # zeros); compiled steps guard on strides and scan carries must match them
    # exactly, so hand out row-major leaves
    return tree.map(_dense, out)


def vmap_step(
    env: Environment,
    keys: torch.Tensor,
    states,
    actions,
    params=None,
    batched_params: bool = False,
    autoreset: bool = True,
):
    """Step a batch of envs: ``vmap(env.step)``.

    Args:
      env: the environment.
      keys: int64 ``(N, 2)``.
      states: batched states (leading axis N).
      actions: batched actions, ``(N,)`` int64 or ``(N, *action_shape)`` float.
      params, batched_params: as in :func:`vmap_reset`.
      autoreset: as in :meth:`Environment.step`.

    Returns:
      ``(obs, states, reward, terminated, truncated, info)`` with a leading axis N.
      Discrete actions are clamped into range (values cannot be checked under vmap).
    """
    check_tensor(keys, "keys")
    if keys.dtype != torch.int64 or keys.ndim != 2 or keys.shape[-1] != 2:
        raise ValueError(f"keys: expected an int64 tensor of shape (N, 2), got {keys.dtype} {tuple(keys.shape)}")
    if params is None:
        params = env._resolve_params(None, keys[0])
    fn = functools.partial(env.step, autoreset=autoreset)
    out = torch.func.vmap(fn, in_dims=(0, 0, 0, _param_dim(batched_params)))(keys, states, actions, params)
    return tree.map(_dense, out)


def make_step_fn(
    env: Environment,
    params=None,
    compile: bool = True,
    batched_params: bool = False,
    autoreset: bool = True,
) -> Callable:
    """A batched ``step(keys, states, actions)`` with step and auto-reset fused (the fast path).

    Args:
      env: the environment.
      params: params for every env (default params if None); with
        ``batched_params=True`` a leading axis N on every leaf.
      compile: compile ``vmap(env.step)`` with :func:`funrl.jit` (one graph;
        the first call compiles, a few seconds).  False returns the eager vmap.
      batched_params: see above.
      autoreset: as in :meth:`Environment.step`.

    Returns:
      ``step(keys, states, actions) -> (obs, states, reward, terminated,
      truncated, info)``, all with a leading axis N.  Params are passed to
      the compiled graph as inputs (not baked in as constants).
    """
    if params is None:
        params = env.default_params(torch.float32)
    in_dims = (0, 0, 0, _param_dim(batched_params))
    fn = functools.partial(env.step, autoreset=autoreset)

    def batched(keys, states, actions, p):
        return torch.func.vmap(fn, in_dims=in_dims)(keys, states, actions, p)

    if compile:
        from funrl.compile import jit

        batched = jit(batched)

    def step(keys, states, actions):
        return batched(keys, states, actions, params)

    step.__doc__ = f"Batched, {'compiled ' if compile else ''}step of {env.name}: (keys, states, actions) -> step outputs."
    return step
