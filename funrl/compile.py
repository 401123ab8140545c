"""``funrl.jit``: ``torch.compile`` with settings that keep funrl's graphs quick to compile.

funrl's keys are a 20-round integer cipher; Inductor's default fusion folds its
long op chains into huge kernels whose C++ code generation dominates compile
time (tens of seconds for one rollout step).  Realising intermediate buffers
after a few ops (``realize_opcount_threshold=4``) keeps kernels small: measured
~5x faster compiles with equal or faster run time and bit-identical integer
results.  The settings are passed through ``torch.compile(options=...)``, so they
apply only to functions compiled by funrl, never to a user's global config.

Always compile the *vmapped* function (``jit(vmap(f))``): ``vmap(jit(f))``
silently runs eager (PyTorch issue #128711).

Each call of :func:`jit` compiles into a cache of its own.  torch.compile keys
its cache (and its recompile limit, 8 by default) on the Python *code object*;
every ``torch.func.vmap(f)`` returns a wrapper with one shared code object, so
without this, the ninth vmapped function compiled in a process would silently
fall back to eager.
"""

from __future__ import annotations

from typing import Callable

import functools
import types

import torch

__all__ = ["jit", "INDUCTOR_OPTIONS"]

#: Inductor options funrl applies to its own compiles.
INDUCTOR_OPTIONS: dict = {"realize_opcount_threshold": 4}


def jit(fn: Callable | None = None, *, fullgraph: bool = True, dynamic: bool = False, options: dict | None = None, **kwargs):
    """Compile ``fn`` with ``torch.compile`` and funrl's Inductor options.

    Args:
      fn: the function (usually ``torch.func.vmap(f)``); may be omitted to use
        ``@jit(...)`` as a decorator factory.
      fullgraph: fail rather than silently graph-break (default True).
      dynamic: allow dynamic shapes (default False: funrl's shapes are static).
      options: extra Inductor options, merged over :data:`INDUCTOR_OPTIONS`.
      **kwargs: passed to ``torch.compile`` (``backend``, ...).

    Returns:
      The compiled callable; same inputs and outputs as ``fn``.
    """
    opts = {**INDUCTOR_OPTIONS, **(options or {})}

    def wrap(f):
        f = _with_own_cache(f)
        if kwargs.get("backend", "inductor") != "inductor":
            return torch.compile(f, fullgraph=fullgraph, dynamic=dynamic, **kwargs)
        return torch.compile(f, fullgraph=fullgraph, dynamic=dynamic, options=opts, **kwargs)

    return wrap if fn is None else wrap(fn)


def _with_own_cache(f: Callable) -> Callable:
    """A thin wrapper around ``f`` whose code object is new, so it gets its own compile cache."""

    def call(*args, **kwargs):
        return f(*args, **kwargs)

    fresh = types.FunctionType(call.__code__.replace(), call.__globals__, call.__name__, None, call.__closure__)
    return functools.wraps(f)(fresh)
