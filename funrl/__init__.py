"""funrl: functional, JAX-style reinforcement learning for PyTorch.

Submodules are imported on first use (``funrl.random``, ``funrl.tree``,
``funrl.nn``, ``funrl.optim``, ``funrl.distributions``, ``funrl.envs``,
``funrl.losses``, ``funrl.dp``, ``funrl.algorithms``, ``funrl.lm``, ...), so ``import funrl``
stays cheap.

Reproducibility contract (README, "Reproducibility"): keys, random draws,
element-wise computation and whole training runs are bit for bit -- row *i* of
``torch.func.vmap(train)(keys)`` equals ``train(keys[i])`` on any CPU, because
a single seed is computed as a batch of one through the same batched kernels
(``funrl.algorithms.common.one_seed_lift``) and ``funrl.ops`` avoids element-wise
kernels whose result depends on an element's position.  A function with
matrix products called unbatched vs under ``vmap``, compiled vs eager code, and
different machines or thread counts agree only up to floating-point
reassociation.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "random", "tree", "nn", "optim", "distributions", "envs", "losses", "dp",
    "algorithms", "testing", "stats", "checkpoint", "cli", "distributed", "compile", "ops", "transfer",
    "lm", "runner", "results", "evaluation", "plotting", "sweeps",
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
