"""Hypothesis strategies that generate RL objects as torch tensors, for property tests.

Each function returns a ``hypothesis`` ``SearchStrategy``.  Sizes may be given
as ints or as integer strategies.  Generated tensors are finite, free of
subnormal numbers, and probability rows are normalised in float64 then fixed up
in the target dtype so they sum to 1 within a couple of ulps.

* :func:`finite_mdps` -> :class:`MDP` ``(P, R, gamma)``
* :func:`discounts`, :func:`stochastic_policies`, :func:`deterministic_policies`,
  :func:`state_value_tables`, :func:`action_value_tables`
* :func:`trajectories` -> :class:`Trajectory` (rewards, discounts with zeros at
  episode ends, values, actions, q-values, target and behaviour probabilities)
* :func:`keys` -> funrl keys (``funrl.random.key``)

Example: check that your own policy-evaluation routine satisfies the Bellman
expectation equation on every small MDP hypothesis can think of::

    from hypothesis import given, settings, strategies as st
    from funrl.testing import strategies as fst
    from funrl.testing import assert_bellman_expectation

    @settings(max_examples=50, deadline=None)
    @given(st.data())
    def test_my_evaluator(data):
        mdp = data.draw(fst.finite_mdps())
        S, A = mdp.R.shape
        pi = data.draw(fst.stochastic_policies(S, A))
        v = my_policy_evaluation(mdp.P, mdp.R, mdp.gamma, pi)   # yours
        assert_bellman_expectation(v, mdp.P, mdp.R, mdp.gamma, pi, atol=1e-8)

Needs ``hypothesis`` (``pip install hypothesis`` or ``pip install 'funrl[test]'``);
the rest of funrl does not.
"""

from __future__ import annotations

from typing import NamedTuple

try:
    import hypothesis.extra.numpy as hnp
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    raise ImportError(
        "funrl.testing.strategies needs the 'hypothesis' package: "
        "pip install hypothesis  (or: pip install 'funrl[test]')"
    ) from exc

import numpy as np
import torch

__all__ = [
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
]

_MAX_WEIGHT = 8  # probabilities are ratios of small integers: exact, never subnormal


class MDP(NamedTuple):
    """A finite MDP: ``P [..., S, A, S]`` (row-stochastic), ``R [..., S, A]``, ``gamma`` (float in [0, 1))."""

    P: torch.Tensor
    R: torch.Tensor
    gamma: float


class Trajectory(NamedTuple):
    """A length-``T`` stretch of experience with everything off-policy losses need.

    Attributes:
      r_t: ``[T]`` rewards.
      discount_t: ``[T]`` discounts: ``gamma``, or 0 where an episode ended at step ``t``.
      values: ``[T + 1]`` state values ``v(x_0), ..., v(x_T)`` (``values[1:]`` are
        the bootstrap values ``v_t`` of rlax-style losses).
      actions: ``int64 [T]`` actions taken at steps ``0..T-1``.
      q_values: ``[T + 1, A]`` action values.
      target_probs: ``[T + 1, A]`` target policy ``pi(. | x_t)``, strictly positive.
      behaviour_probs: ``[T + 1, A]`` behaviour policy ``mu(. | x_t)``, strictly positive.
      target_log_probs: ``[T]`` ``log pi(actions[t] | x_t)``.
      behaviour_log_probs: ``[T]`` ``log mu(actions[t] | x_t)``.
    """

    r_t: torch.Tensor
    discount_t: torch.Tensor
    values: torch.Tensor
    actions: torch.Tensor
    q_values: torch.Tensor
    target_probs: torch.Tensor
    behaviour_probs: torch.Tensor
    target_log_probs: torch.Tensor
    behaviour_log_probs: torch.Tensor


# ----------------------------------------------------------------------------- helpers
def _as_strategy(value, name: str, minimum: int = 1):
    if isinstance(value, st.SearchStrategy):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int or a hypothesis strategy of ints, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return st.just(value)


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _check_range(rng, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in rng)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (low, high) of numbers, got {rng!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name}: expected finite low <= high, got {rng!r}")
    return lo, hi


def _check_batch_shape(batch_shape) -> tuple[int, ...]:
    if not isinstance(batch_shape, (tuple, list)) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_shape
    ):
        raise ValueError(f"batch_shape: expected a tuple of positive ints, got {batch_shape!r}")
    return tuple(batch_shape)


def _bounded_floats(draw, shape, lo: float, hi: float, dtype: torch.dtype) -> torch.Tensor:
    width = 32 if dtype == torch.float32 else 64
    if width == 32:  # hypothesis wants float32 bounds; round them inwards
        lo32, hi32 = np.float32(lo), np.float32(hi)
        lo32 = lo32 if lo32 >= lo else np.nextafter(lo32, np.float32(np.inf))
        hi32 = hi32 if hi32 <= hi else np.nextafter(hi32, np.float32(-np.inf))
        if lo32 > hi32:
            raise ValueError(f"range: no float32 value lies in [{lo!r}, {hi!r}]")
        lo, hi = float(lo32), float(hi32)
    elements = st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)
    # fill=nothing: draw every entry, rather than hypothesis's default of mostly one fill value
    x = draw(hnp.arrays(np.float32 if width == 32 else np.float64, shape, elements=elements, fill=st.nothing()))
    # Tiny normals (1e-300, 1e-38) become subnormal after one multiplication by gamma or
    # a probability; flush them, staying inside [lo, hi] (which then contains 0).
    scale = max(abs(lo), abs(hi), 1.0)
    x = np.where(np.abs(x) < 1e-6 * scale, 0.0, x) if lo <= 0.0 <= hi else x
    return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)


def _normalise(weights: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Rows of non-negative integer weights -> exactly normalised probability rows."""
    w = weights.astype(np.float64)
    w = np.where(w.sum(-1, keepdims=True) == 0, 1.0, w)  # an all-zero row becomes uniform
    p = torch.as_tensor(w / w.sum(-1, keepdims=True), dtype=dtype)
    # Put the rounding error on the largest entry (>= 1/n, so it stays positive),
    # computed in the target dtype so rows sum to 1 there.
    j = p.argmax(-1, keepdim=True)
    largest = torch.zeros_like(p).scatter(-1, j, 1.0).bool()
    others = torch.where(largest, torch.zeros_like(p), p).sum(-1, keepdim=True)
    return torch.where(largest, 1 - others, p)


def _prob_rows(draw, shape, n: int, dtype: torch.dtype, min_weight: int = 0) -> torch.Tensor:
    w = draw(hnp.arrays(np.int64, tuple(shape) + (n,), elements=st.integers(min_weight, _MAX_WEIGHT), fill=st.nothing()))
    return _normalise(w, dtype)


# -------------------------------------------------------------------------- strategies
def discounts(min_value: float = 0.0, max_value: float = 0.99) -> st.SearchStrategy:
    """Discount factors: Python floats in ``[min_value, max_value]``, ``max_value < 1``.

    Values below ``1e-6`` are drawn as exactly 0 (tiny discounts only produce subnormals).
    """
    lo, hi = _check_range((min_value, max_value), "min_value, max_value")
    if lo < 0 or hi >= 1:
        raise ValueError(f"max_value: expected 0 <= min_value <= max_value < 1, got ({min_value}, {max_value})")
    base = st.floats(lo, hi, allow_nan=False, allow_subnormal=False)
    return base.map(lambda g: 0.0 if g < 1e-6 and lo <= 0.0 else g)


@st.composite
def _finite_mdps(draw, num_states, num_actions, reward_range, dtype, deterministic, terminal_states, gamma, batch_shape):
    S = draw(num_states)
    A = draw(num_actions)
    lo, hi = reward_range
    shape = batch_shape + (S, A)
    if deterministic:
        nxt = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, S - 1)))
        P = torch.nn.functional.one_hot(torch.as_tensor(nxt), S).to(dtype)
    else:
        P = _prob_rows(draw, shape, S, dtype)
    R = _bounded_floats(draw, shape, lo, hi, dtype)
    if terminal_states:
        terminal = torch.as_tensor(draw(hnp.arrays(np.bool_, batch_shape + (S,))))
        absorbing = torch.eye(S, dtype=dtype).unsqueeze(-2).expand(S, A, S)
        P = torch.where(terminal[..., None, None], absorbing, P)
        R = torch.where(terminal[..., None], torch.zeros((), dtype=dtype), R)
    return MDP(P.contiguous(), R.contiguous(), float(draw(gamma)))


def finite_mdps(
    num_states=st.integers(1, 6),
    num_actions=st.integers(1, 4),
    reward_range: tuple[float, float] = (-1.0, 1.0),
    dtype: torch.dtype = torch.float64,
    deterministic: bool = False,
    terminal_states: bool = False,
    gamma=None,
    batch_shape: tuple[int, ...] = (),
) -> st.SearchStrategy:
    """Small finite MDPs as :class:`MDP` ``(P, R, gamma)``.

    Args:
      num_states, num_actions: ints or integer strategies (>= 1).
      reward_range: ``(low, high)`` bounds of ``R`` (inclusive).
      dtype: ``torch.float32`` or ``torch.float64``.
      deterministic: one-hot transitions (each ``(s, a)`` has one successor).
      terminal_states: mark a drawn subset of states terminal: absorbing
        (``P[s, a] = e_s``) with zero reward.
      gamma: strategy of discounts (default :func:`discounts`).
      batch_shape: leading MDP axes (all MDPs share ``S``, ``A`` and ``gamma``).

    Returns:
      Strategy of :class:`MDP`: ``P [*batch_shape, S, A, S]`` row-stochastic with
      probabilities that are ratios of integers up to 8 (many exact zeros),
      ``R [*batch_shape, S, A]`` in ``reward_range``, ``gamma`` a float in [0, 1).
    """
    return _finite_mdps(
        _as_strategy(num_states, "num_states"),
        _as_strategy(num_actions, "num_actions"),
        _check_range(reward_range, "reward_range"),
        _check_dtype(dtype),
        bool(deterministic),
        bool(terminal_states),
        discounts() if gamma is None else gamma,
        _check_batch_shape(batch_shape),
    )


@st.composite
def _stochastic_policies(draw, num_states, num_actions, dtype, batch_shape, min_weight):
    S, A = draw(num_states), draw(num_actions)
    return _prob_rows(draw, batch_shape + (S,), A, dtype, min_weight)


def stochastic_policies(
    num_states,
    num_actions,
    dtype: torch.dtype = torch.float64,
    batch_shape: tuple[int, ...] = (),
    strictly_positive: bool = False,
) -> st.SearchStrategy:
    """Stochastic policies ``pi [*batch_shape, S, A]`` (rows sum to 1).

    Probabilities are ratios of small integers, so exact zeros and one-hot rows
    occur unless ``strictly_positive``.
    """
    return _stochastic_policies(
        _as_strategy(num_states, "num_states"),
        _as_strategy(num_actions, "num_actions"),
        _check_dtype(dtype),
        _check_batch_shape(batch_shape),
        1 if strictly_positive else 0,
    )


@st.composite
def _deterministic_policies(draw, num_states, num_actions, dtype, one_hot, batch_shape):
    S, A = draw(num_states), draw(num_actions)
    a = torch.as_tensor(draw(hnp.arrays(np.int64, batch_shape + (S,), elements=st.integers(0, A - 1))))
    return torch.nn.functional.one_hot(a, A).to(dtype) if one_hot else a


def deterministic_policies(
    num_states,
    num_actions,
    dtype: torch.dtype = torch.float64,
    one_hot: bool = True,
    batch_shape: tuple[int, ...] = (),
) -> st.SearchStrategy:
    """Deterministic policies: one-hot ``[*batch_shape, S, A]`` in ``dtype``, or
    ``int64 [*batch_shape, S]`` actions if ``one_hot=False``."""
    return _deterministic_policies(
        _as_strategy(num_states, "num_states"),
        _as_strategy(num_actions, "num_actions"),
        _check_dtype(dtype),
        bool(one_hot),
        _check_batch_shape(batch_shape),
    )


@st.composite
def _tables(draw, sizes, value_range, dtype, batch_shape):
    shape = batch_shape + tuple(draw(s) for s in sizes)
    return _bounded_floats(draw, shape, *value_range, dtype)


def state_value_tables(
    num_states,
    value_range: tuple[float, float] = (-10.0, 10.0),
    dtype: torch.dtype = torch.float64,
    batch_shape: tuple[int, ...] = (),
) -> st.SearchStrategy:
    """State-value tables ``v [*batch_shape, S]`` with entries in ``value_range``."""
    return _tables(
        (_as_strategy(num_states, "num_states"),),
        _check_range(value_range, "value_range"),
        _check_dtype(dtype),
        _check_batch_shape(batch_shape),
    )


def action_value_tables(
    num_states,
    num_actions,
    value_range: tuple[float, float] = (-10.0, 10.0),
    dtype: torch.dtype = torch.float64,
    batch_shape: tuple[int, ...] = (),
) -> st.SearchStrategy:
    """Action-value tables ``q [*batch_shape, S, A]`` with entries in ``value_range``."""
    return _tables(
        (_as_strategy(num_states, "num_states"), _as_strategy(num_actions, "num_actions")),
        _check_range(value_range, "value_range"),
        _check_dtype(dtype),
        _check_batch_shape(batch_shape),
    )


@st.composite
def _trajectories(draw, T, num_actions, with_episode_ends, gamma, reward_range, value_range, dtype):
    T, A = draw(T), draw(num_actions)
    g = float(draw(gamma))
    r_t = _bounded_floats(draw, (T,), *reward_range, dtype)
    if with_episode_ends:
        ends = torch.as_tensor(draw(hnp.arrays(np.bool_, (T,))))
    else:
        ends = torch.zeros(T, dtype=torch.bool)
    discount_t = torch.where(ends, torch.zeros((), dtype=dtype), torch.full((), g, dtype=dtype))
    values = _bounded_floats(draw, (T + 1,), *value_range, dtype)
    q_values = _bounded_floats(draw, (T + 1, A), *value_range, dtype)
    target = _prob_rows(draw, (T + 1,), A, dtype, min_weight=1)
    behaviour = _prob_rows(draw, (T + 1,), A, dtype, min_weight=1)
    actions = torch.as_tensor(draw(hnp.arrays(np.int64, (T,), elements=st.integers(0, A - 1))))
    taken = actions.unsqueeze(-1)
    return Trajectory(
        r_t=r_t,
        discount_t=discount_t,
        values=values,
        actions=actions,
        q_values=q_values,
        target_probs=target,
        behaviour_probs=behaviour,
        target_log_probs=target[:-1].gather(-1, taken).squeeze(-1).log(),
        behaviour_log_probs=behaviour[:-1].gather(-1, taken).squeeze(-1).log(),
    )


def trajectories(
    T=st.integers(1, 10),
    num_actions=st.integers(1, 4),
    with_episode_ends: bool = True,
    gamma=None,
    reward_range: tuple[float, float] = (-1.0, 1.0),
    value_range: tuple[float, float] = (-10.0, 10.0),
    dtype: torch.dtype = torch.float64,
) -> st.SearchStrategy:
    """Trajectories as :class:`Trajectory` for return, TD and off-policy loss tests.

    Args:
      T: length (int or strategy, >= 1).
      num_actions: number of actions (int or strategy, >= 1).
      with_episode_ends: if True, a drawn subset of steps end an episode
        (``discount_t = 0`` there); otherwise ``discount_t == gamma`` everywhere.
      gamma: strategy of discounts (default :func:`discounts`).
      reward_range, value_range: bounds of rewards and of values / q-values.
      dtype: ``torch.float32`` or ``torch.float64``.

    Target and behaviour probabilities are strictly positive (ratios of integers
    1..8), so log-probabilities and importance ratios are finite.
    """
    return _trajectories(
        _as_strategy(T, "T"),
        _as_strategy(num_actions, "num_actions"),
        bool(with_episode_ends),
        discounts() if gamma is None else gamma,
        _check_range(reward_range, "reward_range"),
        _check_range(value_range, "value_range"),
        _check_dtype(dtype),
    )


def keys() -> st.SearchStrategy:
    """funrl keys: ``int64`` tensors of shape ``(2,)`` from ``funrl.random.key(seed)``."""
    from funrl.random import key

    return st.integers(0, 2**63 - 1).map(key)
