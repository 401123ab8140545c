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
"""

from __future__ import annotations

from typing import Callable

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
        if kwargs.get("backend", "inductor") != "inductor":
            return torch.compile(f, fullgraph=fullgraph, dynamic=dynamic, **kwargs)
        return torch.compile(f, fullgraph=fullgraph, dynamic=dynamic, options=opts, **kwargs)

    return wrap if fn is None else wrap(fn)
