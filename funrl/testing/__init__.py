"""Testing helpers for users' own property tests.

* assertions (need only torch): :func:`assert_bellman_expectation`,
  :func:`assert_bellman_optimality`, :func:`assert_contraction`,
  :func:`assert_policy_improvement`;
* hypothesis strategies in :mod:`funrl.testing.strategies` (``finite_mdps``,
  ``discounts``, ``stochastic_policies``, ``deterministic_policies``,
  ``state_value_tables``, ``action_value_tables``, ``trajectories``, ``keys``,
  and the ``MDP``/``Trajectory`` tuples), also reachable as attributes of this
  package.  They are imported on first use, so ``funrl`` and the assertions work
  without ``hypothesis`` installed; using a strategy without it raises an
  ``ImportError`` saying ``pip install hypothesis`` (or ``funrl[test]``).
"""

from __future__ import annotations

import importlib

from funrl.testing.assertions import (
    assert_bellman_expectation,
    assert_bellman_optimality,
    assert_contraction,
    assert_policy_improvement,
)

_STRATEGIES = (
    "MDP",
    "Trajectory",
    "finite_mdps",
    "discounts",
    "stochastic_policies",
    "deterministic_policies",
    "state_value_tables",
    "action_value_tables",
    "trajectories",
    "keys",
)

__all__ = [
    "assert_bellman_expectation",
    "assert_bellman_optimality",
    "assert_contraction",
    "assert_policy_improvement",
    "strategies",
    *_STRATEGIES,
]


def __getattr__(name: str):
    if name == "strategies":
        return importlib.import_module("funrl.testing.strategies")
    if name in _STRATEGIES:
        return getattr(importlib.import_module("funrl.testing.strategies"), name)
    raise AttributeError(f"module 'funrl.testing' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
