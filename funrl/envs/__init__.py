"""Pure, batched environments (gymnax-style API on torch).

``make(env_id)`` returns ``(env, params)``; ``env.reset(key, params)`` and
``env.step(key, state, action, params)`` are pure functions that vmap and
compile.  Importing this package imports no environment module (nor torch): entries are
loaded by :func:`make`, and the tabular/gymnasium helpers on first attribute
access.  :mod:`funrl.envs.probes` holds probe environments with known answers
for debugging agents.
"""

from __future__ import annotations

import importlib

# the registry imports torch only in make(): `funrl envs` lists ids without it; the rest is lazy too
from funrl.envs.registry import EnvSpec, list_envs, make, register, spec

__all__ = [
    "make",
    "list_envs",
    "register",
    "spec",
    "EnvSpec",
    "Environment",
    "spaces",
    "vmap_reset",
    "vmap_step",
    "make_step_fn",
    "select_tree",
    # lazy
    "FiniteMDP",
    "random_mdp",
    "to_gymnasium",
    "to_gymnasium_env",
    "from_gymnasium",
    "wrappers",
]

_LAZY = {
    "Environment": ("funrl.envs.core", "Environment"),
    "make_step_fn": ("funrl.envs.core", "make_step_fn"),
    "select_tree": ("funrl.envs.core", "select_tree"),
    "vmap_reset": ("funrl.envs.core", "vmap_reset"),
    "vmap_step": ("funrl.envs.core", "vmap_step"),
    "FiniteMDP": ("funrl.envs.tabular", "FiniteMDP"),
    "random_mdp": ("funrl.envs.tabular", "random_mdp"),
    "to_gymnasium": ("funrl.envs.gymnasium", "to_gymnasium"),
    "to_gymnasium_env": ("funrl.envs.gymnasium", "to_gymnasium_env"),
    "from_gymnasium": ("funrl.envs.gymnasium", "from_gymnasium"),
}
_LAZY_MODULES = {
    "spaces", "core", "wrappers", "tabular", "gymnasium", "gymnasium_env", "rendering", "cartpole", "pendulum",
    "mountain_car", "acrobot", "probes",
}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"funrl.envs.{name}")
    raise AttributeError(f"module 'funrl.envs' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)
