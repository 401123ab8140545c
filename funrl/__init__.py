"""funrl: functional, JAX-style reinforcement learning for PyTorch.

Submodules are imported on first use (``funrl.random``, ``funrl.tree``,
``funrl.nn``, ``funrl.optim``, ``funrl.distributions``, ``funrl.envs``,
``funrl.losses``, ``funrl.dp``, ``funrl.algorithms``, ...), so ``import funrl``
stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "random", "tree", "nn", "optim", "distributions", "envs", "losses", "dp",
    "algorithms", "testing", "stats", "checkpoint", "cli", "distributed", "compile", "ops", "transfer",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"funrl.{name}")
    if name == "jit":
        from funrl.compile import jit

        return jit
    if name == "run":
        from funrl.runner import run

        return run
    raise AttributeError(f"module 'funrl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | {"jit", "run"})
