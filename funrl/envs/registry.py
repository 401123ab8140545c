"""``make(env_id)``: gymnasium ids to funrl environments and params.

Entries are lazy (module path, class name, constructor kwargs, param
defaults) so ``import funrl.envs`` imports no environment module.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from typing import Any

__all__ = ["EnvSpec", "register", "make", "spec", "list_envs"]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """A registry entry.

    Attributes:
      id: the gymnasium-style id, e.g. ``"CartPole-v1"``.
      module: module path of the env class (imported on :func:`make`).
      cls: class name in that module.
      kwargs: constructor keyword arguments.
      params: param overrides applied on top of ``default_params`` (e.g. ``max_episode_steps``).
      reward_threshold: gymnasium's reward threshold (None if it has none).
    """

    id: str
    module: str
    cls: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)
    reward_threshold: float | None = None

    @property
    def max_episode_steps(self) -> int | None:
        """The registered time limit, if the entry sets one."""
        return self.params.get("max_episode_steps")


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    env_id: str,
    module: str,
    cls: str,
    kwargs: dict | None = None,
    params: dict | None = None,
    reward_threshold: float | None = None,
) -> None:
    """Add (or replace) a registry entry; the module is imported only by :func:`make`."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"env_id: expected a non-empty str, got {env_id!r}")
    _REGISTRY[env_id] = EnvSpec(env_id, module, cls, dict(kwargs or {}), dict(params or {}), reward_threshold)


def list_envs() -> list[str]:
    """Sorted registered ids."""
    return sorted(_REGISTRY)


def spec(env_id: str) -> EnvSpec:
    """The registry entry of ``env_id``; ValueError (with close matches) if unknown."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id: expected a str, got {type(env_id).__name__}")
    if env_id not in _REGISTRY:
        close = difflib.get_close_matches(env_id, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"env_id: unknown environment {env_id!r}.{hint} Known ids: {', '.join(list_envs())}")
    return _REGISTRY[env_id]


def _constructor_args(cls) -> set[str]:
    sig = inspect.signature(cls.__init__)
    return {
        n
        for n, p in sig.parameters.items()
        if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _check_param_range(k, v, cls, env_id: str) -> None:
    """Overrides of positive params (and ``max_episode_steps``) must be in range (all values of a batch)."""
    import torch

    if torch._C._functorch.is_functorch_wrapped_tensor(v) or v.numel() == 0:
        return  # values under vmap/grad cannot be read
    if k == "max_episode_steps" or k in getattr(cls, "POSITIVE_PARAMS", ()):
        bad, want = ~(v > 0), "> 0"
    elif k in getattr(cls, "NONNEGATIVE_PARAMS", ()):
        bad, want = ~(v >= 0), ">= 0"
    else:
        return
    if bad.any():
        got = v[bad].flatten()[0].item()
        raise ValueError(f"{k}: expected a value {want} for {env_id}, got {got}")


def _override(params, overrides: dict, valid_extra: set[str], env_id: str, cls=None):
    import torch

    fields = {f.name for f in dataclasses.fields(params)}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        valid = sorted(fields | valid_extra)
        close = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        hints = "; ".join(f"{k!r} (did you mean {c[0]!r}?)" if c else repr(k) for k, c in close.items())
        raise ValueError(
            f"{env_id}: unknown parameter override(s) {hints}. Valid names: {', '.join(valid)}"
        )
    new, batch_sizes = {}, {}
    for k, v in overrides.items():
        old = getattr(params, k)
        if isinstance(old, torch.Tensor):
            if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
                raise TypeError(f"{k}: expected a number or a tensor, got {type(v).__name__}")
            if isinstance(v, float) and not old.is_floating_point():
                if v != int(v):
                    raise ValueError(f"{k}: expected an integer, got {v}")
                v = int(v)
            v = torch.as_tensor(v, dtype=old.dtype, device=old.device).clone()
            _check_param_range(k, v, cls, env_id)
            if v.shape != old.shape:
                if v.ndim != old.ndim + 1 or v.shape[1:] != old.shape or v.shape[0] < 1:
                    raise ValueError(
                        f"{k}: expected shape {tuple(old.shape)}, or (N, *{tuple(old.shape)}) for one value "
                        f"per env, got {tuple(v.shape)}"
                    )
                batch_sizes[k] = v.shape[0]
            new[k] = v
        else:
            new[k] = v
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"{env_id}: batched overrides must share their leading size N, got {batch_sizes}")
    if batch_sizes:
        # One override with a leading axis N batches the whole params pytree: the
        # other leaves are repeated N times so vmap(in_dims=0) applies to every leaf.
        n = next(iter(batch_sizes.values()))
        for f in dataclasses.fields(params):
            old = getattr(params, f.name)
            if f.name not in batch_sizes and isinstance(old, torch.Tensor):
                base = new.get(f.name, old)
                new[f.name] = base.unsqueeze(0).expand(n, *base.shape).clone()
    return dataclasses.replace(params, **new)


def make(env_id: str, dtype=None, **overrides: Any):
    """Make an environment and its default params.

    Args:
      env_id: a registered id (see :func:`list_envs`), e.g. ``"CartPole-v1"``.
      dtype: float dtype of params, states and observations (float32 or float64; None: float32).
      **overrides: keyword arguments of the env class's constructor (e.g.
        ``map_name="8x8"``) go to the constructor; the rest replace param
        fields (e.g. ``length=0.7``, ``max_episode_steps=100``) and may be
        numbers or tensors.  A tensor with one extra leading axis N (one value
        per env, e.g. ``length=torch.linspace(0.25, 1.0, N)``) batches the
        params: every other leaf is repeated N times, ready for
        :func:`funrl.envs.vmap_step` with ``batched_params=True``.

    ``env_id = "gymnasium:<ID>"`` makes any installed gymnasium env a funrl
    env stepped on the host (:mod:`funrl.envs.gymnasium_env`; not vmapped or
    compiled end to end); its ``overrides`` go to ``gymnasium.make``.

    Returns:
      ``(env, params)``.

    Raises:
      ValueError: unknown id (close matches suggested), unknown override name
        (valid names listed), or an override out of range: ``max_episode_steps``
        and the env's ``POSITIVE_PARAMS`` (e.g. CartPole's ``length``) must be
        > 0, its ``NONNEGATIVE_PARAMS`` >= 0 (every value of a batched override).
    """
    # torch is imported here, not at the top: `funrl envs` lists the registry without it
    import torch

    if isinstance(env_id, str) and env_id.startswith("gymnasium:"):
        from funrl.envs.gymnasium_env import make_gymnasium

        return make_gymnasium(env_id, torch.float32 if dtype is None else dtype, **overrides)
    s = spec(env_id)
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype: expected a torch floating dtype, got {dtype!r}")
    cls = getattr(importlib.import_module(s.module), s.cls)
    ctor = _constructor_args(cls)
    kwargs = dict(s.kwargs)
    param_over = dict(s.params)
    for k, v in overrides.items():
        if k in ctor:
            kwargs[k] = v
        else:
            param_over[k] = v
    env = cls(**kwargs)
    env.spec = s
    params = env.default_params(dtype)
    params = _override(params, param_over, ctor, env_id, cls)
    return env, params


_CC = "funrl.envs."
register("CartPole-v0", _CC + "cartpole", "CartPole", params={"max_episode_steps": 200}, reward_threshold=195.0)
register("CartPole-v1", _CC + "cartpole", "CartPole", params={"max_episode_steps": 500}, reward_threshold=475.0)
register("Pendulum-v1", _CC + "pendulum", "Pendulum", params={"max_episode_steps": 200})
register("MountainCar-v0", _CC + "mountain_car", "MountainCar", params={"max_episode_steps": 200}, reward_threshold=-110.0)
register(
    "MountainCarContinuous-v0",
    _CC + "mountain_car",
    "MountainCarContinuous",
    params={"max_episode_steps": 999},
    reward_threshold=90.0,
)
register("Acrobot-v1", _CC + "acrobot", "Acrobot", params={"max_episode_steps": 500}, reward_threshold=-100.0)
# tabular envs (funrl/envs/tabular.py).  gymnasium 1.4 names CliffWalking-v1
# and Taxi-v4; their default (non-slippery, non-rainy) dynamics equal v0/v3.
_TAB = _CC + "tabular"
register(
    "FrozenLake-v1",
    _TAB,
    "FrozenLake",
    kwargs={"map_name": "4x4", "is_slippery": True},
    params={"max_episode_steps": 100},
    reward_threshold=0.70,
)
register(
    "FrozenLake8x8-v1",
    _TAB,
    "FrozenLake",
    kwargs={"map_name": "8x8", "is_slippery": True},
    params={"max_episode_steps": 200},
    reward_threshold=0.85,
)
register("CliffWalking-v0", _TAB, "CliffWalking")
register("CliffWalking-v1", _TAB, "CliffWalking")
register("Taxi-v3", _TAB, "Taxi", params={"max_episode_steps": 200}, reward_threshold=8.0)
register("Taxi-v4", _TAB, "Taxi", params={"max_episode_steps": 200}, reward_threshold=8.0)

del _CC, _TAB
