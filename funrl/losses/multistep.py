"""Multistep return targets and V-trace for one sequence (rlax's ``multistep`` and ``vtrace``).

Each function takes ONE trajectory of length ``T`` (time on axis 0) and returns
per-step targets, advantages or errors; batch over sequences with
``torch.func.vmap``.  Names, argument order, defaults and gradient stopping
follow rlax: the return estimators (``lambda_returns``, ``discounted_returns``,
``n_step_bootstrapped_returns``, GAE, the general off-policy returns and
``importance_corrected_td_errors``) default to ``stop_target_gradients=False``;
the V-trace errors, which are TD errors, default to ``True``.

Time convention (Sutton & Barto, as in rlax): ``r_t[i]`` and ``discount_t[i]``
are the reward and discount received on the transition from step ``i`` to
``i+1``; ``v_t[i]`` is the value of the state reached at ``i+1``; ``v_tm1[i]``
the value of the state at ``i``.  A discount of 0 ends an episode and cuts every
recursion exactly there.

How the backward recursions are computed
----------------------------------------
Every estimator here is a first-order linear recursion run backwards in time::

    G[t] = a[t] + b[t] * G[t+1]

i.e. ``G[t]`` is the composition of affine maps ``x -> a[t] + b[t] x`` applied
to a bootstrap value.  rlax writes a Python loop over ``t``; under
``torch.compile`` such a loop is unrolled ``T`` times and compile time grows
with ``T`` (measured: a 128-step backward loop took minutes to compile).  Here
the maps are composed by recursive doubling (a Hillis-Steele scan): after step
``j`` each position holds the composition of the next ``2**j`` maps, so
``ceil(log2 T)`` steps of a few shifted elementwise products give the whole
recursion.  Only multiplications and additions are used, so zero discounts are
exact (no logarithms), float64 stays float64, and gradients are those of the
recursion.  Measured against a dense ``T x T`` matrix of cumulative products
and against a Python loop over time: see ``benchmarks/bench_losses.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from funrl._checks import check_float, check_in_range, check_int, check_rank
from funrl.losses.base import batched_index, maybe_stop_gradient

__all__ = [
    "lambda_returns",
    "discounted_returns",
    "n_step_bootstrapped_returns",
    "importance_corrected_td_errors",
    "truncated_generalized_advantage_estimation",
    "general_off_policy_returns_from_action_values",
    "general_off_policy_returns_from_q_and_v",
    "VTraceOutput",
    "vtrace",
    "leaky_vtrace",
    "vtrace_td_error_and_advantage",
    "leaky_vtrace_td_error_and_advantage",
]


# ----------------------------------------------------------------------------- checks
def _check_float_seq(**named) -> int:
    """Each argument: float rank-1 tensor; all of one length ``T >= 1``; returns ``T``."""
    first = None
    for name, x in named.items():
        check_rank(x, 1, name)
        check_float(x, name)
        if first is None:
            first = (name, x)
            if x.shape[0] < 1:
                raise ValueError(f"{name}: expected at least one time step, got shape {tuple(x.shape)}")
        elif x.shape != first[1].shape:
            raise ValueError(
                f"{name}: expected shape {tuple(first[1].shape)} (the shape of {first[0]}), got {tuple(x.shape)}"
            )
    return first[1].shape[0]


def _check_length(x, length: int, name: str, ref: str) -> None:
    if x.shape[0] != length:
        raise ValueError(
            f"{name}: expected {length} time steps along axis 0 ({ref}), got shape {tuple(x.shape)}"
        )


def _check_mixing(value, name: str, length: int | None, low=0.0, high=1.0):
    """A mixing/clipping parameter: a Python number in ``[low, high]``, a float
    tensor of shape ``()``, or (when ``length`` is given) a float tensor ``[length]``."""
    if isinstance(value, torch.Tensor):
        check_float(value, name)
        ranks = (0,) if length is None else (0, 1)
        check_rank(value, ranks, name)
        if value.ndim == 1 and value.shape[0] != length:
            raise ValueError(f"{name}: expected shape () or ({length},), got {tuple(value.shape)}")
        return value
    return check_in_range(value, low, high, name)


def _check_threshold(value, name: str):
    """A clipping threshold: a Python number > 0 or a float tensor of shape ()."""
    if isinstance(value, torch.Tensor):
        check_float(value, name)
        check_rank(value, 0, name)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number or a float tensor, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    return value


def _minimum(x: torch.Tensor, bound) -> torch.Tensor:
    """``min(x, bound)`` for a Python-number or tensor bound (keeps ``x``'s dtype)."""
    if isinstance(bound, torch.Tensor):
        return torch.minimum(x, bound.to(x.dtype))
    return torch.clamp(x, max=bound)


# ----------------------------------------------------------------------------- recursion
def _shift(x: torch.Tensor, d: int, fill: float) -> torch.Tensor:
    """``y[..., t] = x[..., t + d]``, with ``fill`` past the end (``d`` a Python int >= 0)."""
    length = x.shape[-1]
    if d == 0:
        return x
    if d >= length:
        return torch.full_like(x, fill)
    return F.pad(x[..., d:], (0, d), value=fill)


def _compose_window(a: torch.Tensor, b: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Compose ``n`` consecutive affine maps ``x -> a[s] + b[s] x`` starting at every ``t``.

    Returns ``(A, B)`` with ``A[t] + B[t] x = f_t(f_{t+1}(... f_{t+n-1}(x)))``,
    where maps past the end of the sequence are the identity.  Binary
    decomposition of ``n`` over windows of length ``2**j`` built by doubling:
    ``O(T log n)`` work, ``ceil(log2 n)`` unrolled steps under compile.
    """
    # Under vmap over the env axis of (T, N) tensors (how funrl's PPO/A2C call
    # GAE) time is the strided axis; contiguous() makes the physical batch
    # time-contiguous so the shifted products stream memory (measured 4x faster
    # eager at T=128, N=1024; a no-op for sequence-major inputs).
    a, b = a.contiguous(), b.contiguous()
    length = a.shape[-1]
    if n >= length:
        # Maps past the end are identities, so any window >= T gives the full
        # suffix; a power of two needs no extra compositions.
        n = 1 << max(length - 1, 0).bit_length()
    acc_a = acc_b = None
    offset = 0
    win_a, win_b, span = a, b, 1
    while True:
        if n & span:
            if acc_a is None:
                acc_a, acc_b = win_a, win_b  # offset is 0 for the lowest set bit
            else:
                acc_a = acc_a + acc_b * _shift(win_a, offset, 0.0)
                acc_b = acc_b * _shift(win_b, offset, 1.0)
            offset += span
        if 2 * span > n:
            return acc_a, acc_b
        win_a = win_a + win_b * _shift(win_a, span, 0.0)
        win_b = win_b * _shift(win_b, span, 1.0)
        span *= 2


def _backward_recursion(a: torch.Tensor, b: torch.Tensor, bootstrap) -> torch.Tensor:
    """``G[t] = a[t] + b[t] * G[t+1]`` for ``t = T-1 .. 0`` with ``G[T] = bootstrap``."""
    length = a.shape[-1]
    acc_a, acc_b = _compose_window(a, b, 1 << max(length - 1, 0).bit_length())
    if isinstance(bootstrap, (int, float)) and bootstrap == 0:
        return acc_a
    return acc_a + acc_b * bootstrap


# ----------------------------------------------------------------------------- returns
def lambda_returns(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    lambda_: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Truncated, bootstrapped lambda-returns of one trajectory.

    ``G[t] = r_t[t] + discount_t[t] * ((1 - lambda[t]) * v_t[t] + lambda[t] * G[t+1])``,
    with ``G[T] = v_t[T-1]`` (so the last return bootstraps on the last value).
    ``lambda_ = 1`` gives discounted returns bootstrapped on ``v_t[-1]``,
    ``lambda_ = 0`` the one-step targets ``r_t + discount_t * v_t``.  With
    ``v_t = max_a q_t`` this is the Q(lambda) target, with ``v_t = q_t[a_t]`` the
    Sarsa(lambda) target; a per-step ``lambda_`` (e.g. ``min(1, rho)``) gives
    off-policy corrections.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node74.html).

    Args:
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T (0 at episode ends).
      v_t: float ``[T]`` state values at times 1..T.
      lambda_: mixing parameter: a number in [0, 1], a float tensor ``()`` or ``[T]``.
      stop_target_gradients: detach the returns (default False, as in rlax).

    Returns:
      float ``[T]`` returns at times 0..T-1.
    """
    length = _check_float_seq(r_t=r_t, discount_t=discount_t, v_t=v_t)
    lambda_ = _check_mixing(lambda_, "lambda_", length)
    a = r_t + discount_t * ((1 - lambda_) * v_t)
    returns = _backward_recursion(a, discount_t * lambda_, v_t[-1:])
    return maybe_stop_gradient(returns, stop_target_gradients)


def discounted_returns(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Discounted returns ``G[t] = r_t[t] + discount_t[t] * G[t+1]`` of one trajectory.

    The return after the last step bootstraps on ``v_t`` (a scalar) or on
    ``v_t[-1]`` (a sequence, as in rlax: only its last entry is used).  Pass
    ``v_t = 0`` for Monte-Carlo returns of complete episodes.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node61.html).

    Args:
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      v_t: float ``()`` bootstrap value or ``[T]`` values at times 1..T.
      stop_target_gradients: detach the returns (default False).

    Returns:
      float ``[T]`` returns at times 0..T-1.
    """
    length = _check_float_seq(r_t=r_t, discount_t=discount_t)
    check_rank(v_t, (0, 1), "v_t")
    check_float(v_t, "v_t")
    if v_t.ndim == 1:
        _check_length(v_t, length, "v_t", "the length of r_t")
        v_t = v_t[-1:]
    returns = _backward_recursion(r_t, discount_t, v_t)
    return maybe_stop_gradient(returns, stop_target_gradients)


def n_step_bootstrapped_returns(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    n: int,
    lambda_t: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Strided n-step bootstrapped returns of one trajectory.

    The lambda-return recursion iterated ``n`` times from each step; with
    ``lambda_t = 1``::

        G[t] = r_t[t] + discount_t[t] * (r_t[t+1] + ... + discount_t[t+n-1] * v_t[t+n-1])

    Windows that run past the end are truncated and bootstrap on ``v_t[-1]``,
    so ``n >= T`` gives ``discounted_returns(r_t, discount_t, v_t)``.

    Args:
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      v_t: float ``[T]`` values to bootstrap from at times 1..T.
      n: Python int >= 1, steps of reward accumulated before bootstrapping.
      lambda_t: number in [0, 1] or float tensor ``()`` / ``[T]``.
      stop_target_gradients: detach the returns (default False).

    Returns:
      float ``[T]`` n-step returns at times 0..T-1.
    """
    length = _check_float_seq(r_t=r_t, discount_t=discount_t, v_t=v_t)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected a Python int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    lambda_t = _check_mixing(lambda_t, "lambda_t", length)
    a = r_t + discount_t * ((1 - lambda_t) * v_t)
    acc_a, acc_b = _compose_window(a, discount_t * lambda_t, n)
    # The window from t ends at min(t + n - 1, T - 1); its last map bootstraps there.
    ends = torch.clamp(torch.arange(length, device=v_t.device) + (n - 1), max=length - 1)
    returns = acc_a + acc_b * v_t.index_select(-1, ends)
    return maybe_stop_gradient(returns, stop_target_gradients)


def importance_corrected_td_errors(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    rho_tm1: torch.Tensor,
    lambda_: float | torch.Tensor,
    values: torch.Tensor,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Multistep TD errors with per-decision importance sampling.

    ``error[t] = rho_tm1[t] * delta(rho, lambda)[t]`` where
    ``delta(rho, lambda)[t] = delta[t] + discount_t[t] * rho_tm1[t+1] * lambda[t] * delta(rho, lambda)[t+1]``
    and ``delta[t] = r_t[t] + discount_t[t] * values[t+1] - values[t]``.

    See "A new Q(lambda) with interim forward view and Monte Carlo equivalence"
    by Sutton et al. (http://proceedings.mlr.press/v32/sutton14.html).

    Args:
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      rho_tm1: float ``[T]`` importance ratios pi/mu at times 0..T-1.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      values: float ``[T+1]`` state values at times 0..T.
      stop_target_gradients: if True, gradients flow only into ``values[:-1]``
        (as ``-1`` per error), never through the implied targets.

    Returns:
      float ``[T]`` errors.
    """
    length = _check_float_seq(r_t=r_t, discount_t=discount_t, rho_tm1=rho_tm1)
    check_rank(values, 1, "values")
    check_float(values, "values")
    _check_length(values, length + 1, "values", "one more than the length of r_t")
    lambda_ = _check_mixing(lambda_, "lambda_", length)
    v_tm1, v_t = values[:-1], values[1:]
    rho_t = _shift(rho_tm1, 1, 1.0)  # the last entry is never used: it multiplies G[T] = 0
    delta = r_t + discount_t * v_t - v_tm1
    errors = rho_tm1 * _backward_recursion(delta, discount_t * rho_t * lambda_, 0.0)
    if isinstance(stop_target_gradients, bool) and not stop_target_gradients:
        return errors
    return maybe_stop_gradient(errors + v_tm1, stop_target_gradients) - v_tm1


def truncated_generalized_advantage_estimation(
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    lambda_: float | torch.Tensor,
    values: torch.Tensor,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Truncated generalized advantage estimates (GAE) of one trajectory.

    ``A[t] = delta[t] + discount_t[t] * lambda[t] * A[t+1]``, ``A[T] = 0``, with
    ``delta[t] = r_t[t] + discount_t[t] * values[t+1] - values[t]``.  ``lambda_ = 1``
    gives discounted returns bootstrapped on ``values[-1]`` minus ``values[:-1]``;
    ``lambda_ = 0`` the one-step TD errors.  Value targets are ``A + values[:-1]``.

    See "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation" by Schulman et al. (https://arxiv.org/abs/1506.02438).

    Args:
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T (``gamma * (1 - done)``).
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      values: float ``[T+1]`` state values at times 0..T.
      stop_target_gradients: detach the advantages (default False).

    Returns:
      float ``[T]`` advantages at times 0..T-1.
    """
    length = _check_float_seq(r_t=r_t, discount_t=discount_t)
    check_rank(values, 1, "values")
    check_float(values, "values")
    _check_length(values, length + 1, "values", "one more than the length of r_t")
    lambda_ = _check_mixing(lambda_, "lambda_", length)
    delta = r_t + discount_t * values[1:] - values[:-1]
    advantages = _backward_recursion(delta, discount_t * lambda_, 0.0)
    return maybe_stop_gradient(advantages, stop_target_gradients)


def general_off_policy_returns_from_action_values(
    q_t: torch.Tensor,
    a_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    c_t: torch.Tensor,
    pi_t: torch.Tensor,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Off-policy returns under a target policy from action values.

    ``G[t] = r_t[t] + discount_t[t] * (E_pi q_t[t] - c_t[t] * q_t[t, a_t[t]] + c_t[t] * G[t+1])``
    with the last step bootstrapping on ``E_pi q_t[T-1]`` alone.  The trace
    coefficients choose the algorithm: importance sampling ``c = pi/mu``,
    Q(lambda) (Harutyunyan et al.) ``c = lambda``, Tree-Backup ``c = pi(a)``,
    Retrace ``c = lambda * min(1, pi/mu)``.

    See "Safe and Efficient Off-Policy Reinforcement Learning" by Munos et al.
    (https://arxiv.org/abs/1606.02647).

    Args:
      q_t: float ``[T, A]`` action values at times 1..T.
      a_t: integer ``[T]`` actions taken at times 1..T, in ``[0, A)``.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      c_t: float ``[T]`` trace coefficients at times 1..T (the last is unused).
      pi_t: float ``[T, A]`` target-policy probabilities at times 1..T.
      stop_target_gradients: detach the returns (default False).

    Returns:
      float ``[T]`` returns at times 0..T-1.
    """
    check_rank(q_t, 2, "q_t")
    check_float(q_t, "q_t")
    length = _check_float_seq(r_t=r_t, discount_t=discount_t, c_t=c_t)
    check_rank(a_t, 1, "a_t")
    check_int(a_t, "a_t")
    _check_length(a_t, length, "a_t", "the length of r_t")
    _check_length(q_t, length, "q_t", "the length of r_t")
    check_rank(pi_t, 2, "pi_t")
    check_float(pi_t, "pi_t")
    if pi_t.shape != q_t.shape:
        raise ValueError(f"pi_t: expected shape {tuple(q_t.shape)} (the shape of q_t), got {tuple(pi_t.shape)}")
    exp_q_t = torch.sum(pi_t * q_t, dim=-1)
    q_a_t = batched_index(q_t, a_t)[:-1]
    return general_off_policy_returns_from_q_and_v(
        q_a_t, exp_q_t, r_t, discount_t, c_t[:-1], stop_target_gradients
    )


def general_off_policy_returns_from_q_and_v(
    q_t: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    c_t: torch.Tensor,
    stop_target_gradients: bool = False,
) -> torch.Tensor:
    """Off-policy returns from action values of the taken actions and state values.

    For a window of ``K`` transitions::

        G[K-1] = r_t[K-1] + discount_t[K-1] * v_t[K-1]
        G[t]   = r_t[t] + discount_t[t] * (v_t[t] - c_t[t] * q_t[t] + c_t[t] * G[t+1])

    See "Safe and Efficient Off-Policy Reinforcement Learning" by Munos et al.
    (https://arxiv.org/abs/1606.02647).

    Args:
      q_t: float ``[K-1]`` target-policy values of the taken actions at times 1..K-1.
      v_t: float ``[K]`` target-policy state values at times 1..K.
      r_t: float ``[K]`` rewards at times 1..K.
      discount_t: float ``[K]`` discounts at times 1..K.
      c_t: float ``[K-1]`` trace coefficients at times 1..K-1.
      stop_target_gradients: detach the returns (default False).

    Returns:
      float ``[K]`` returns at times 0..K-1.
    """
    length = _check_float_seq(v_t=v_t, r_t=r_t, discount_t=discount_t)
    for name, x in (("q_t", q_t), ("c_t", c_t)):
        check_rank(x, 1, name)
        check_float(x, name)
        _check_length(x, length - 1, name, "one less than the length of r_t")
    # The last step bootstraps on v_t alone: padding q and c with 0 gives
    # a = r + discount * v, b = 0 there.
    q_t = F.pad(q_t, (0, 1), value=0.0)
    c_t = F.pad(c_t, (0, 1), value=0.0)
    a = r_t + discount_t * (v_t - c_t * q_t)
    returns = _backward_recursion(a, discount_t * c_t, 0.0)
    return maybe_stop_gradient(returns, stop_target_gradients)


# ----------------------------------------------------------------------------- V-trace
class VTraceOutput(NamedTuple):
    """V-trace errors, policy-gradient advantages and Q estimates, each float ``[T]``."""

    errors: torch.Tensor
    pg_advantage: torch.Tensor
    q_estimate: torch.Tensor


def _check_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold):
    length = _check_float_seq(v_tm1=v_tm1, v_t=v_t, r_t=r_t, discount_t=discount_t, rho_tm1=rho_tm1)
    lambda_ = _check_mixing(lambda_, "lambda_", length)
    _check_threshold(clip_rho_threshold, "clip_rho_threshold")
    return length, lambda_


def _vtrace_errors(v_tm1, v_t, r_t, discount_t, c_tm1, clipped_rho_tm1, stop_target_gradients):
    td_errors = clipped_rho_tm1 * (r_t + discount_t * v_t - v_tm1)
    errors = _backward_recursion(td_errors, discount_t * c_tm1, 0.0)
    if isinstance(stop_target_gradients, bool) and not stop_target_gradients:
        return errors
    # Gradients must reach only the predictions v_tm1, not the values used to
    # bootstrap: stop the implied targets errors + v_tm1, then subtract again.
    return maybe_stop_gradient(errors + v_tm1, stop_target_gradients) - v_tm1


def vtrace(
    v_tm1: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    rho_tm1: torch.Tensor,
    lambda_: float | torch.Tensor = 1.0,
    clip_rho_threshold: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """V-trace errors ``v_s - v_tm1`` from clipped importance ratios.

    ``error[t] = rho_bar[t] * delta[t] + discount_t[t] * c[t] * error[t+1]`` with
    ``delta[t] = r_t[t] + discount_t[t] * v_t[t] - v_tm1[t]``,
    ``rho_bar = min(clip_rho_threshold, rho_tm1)`` and ``c = lambda * min(1, rho_tm1)``.
    With ``rho = 1`` and ``lambda = 1`` the targets ``error + v_tm1`` are the
    discounted returns bootstrapped on ``v_t[-1]``.

    See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
    Actor-Learner Architectures" by Espeholt et al. (https://arxiv.org/abs/1802.01561).

    Args:
      v_tm1: float ``[T]`` values at times 0..T-1.
      v_t: float ``[T]`` values at times 1..T.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      rho_tm1: float ``[T]`` importance ratios pi/mu of the actions at times 0..T-1.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      clip_rho_threshold: number > 0 (or float tensor ``()``) clipping the ratios.
      stop_target_gradients: gradients only into ``v_tm1`` (default True).

    Returns:
      float ``[T]`` V-trace errors.
    """
    _, lambda_ = _check_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold)
    c_tm1 = torch.clamp(rho_tm1, max=1.0) * lambda_
    clipped_rho_tm1 = _minimum(rho_tm1, clip_rho_threshold)
    return _vtrace_errors(v_tm1, v_t, r_t, discount_t, c_tm1, clipped_rho_tm1, stop_target_gradients)


def leaky_vtrace(
    v_tm1: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    rho_tm1: torch.Tensor,
    alpha_: float | torch.Tensor = 1.0,
    lambda_: float | torch.Tensor = 1.0,
    clip_rho_threshold: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Leaky V-trace errors: V-trace with ratios mixed with unclipped ones.

    Both the trace coefficients and the clipped ratios become
    ``(1 - alpha_) * rho + alpha_ * min(threshold, rho)``; ``alpha_ = 1`` is
    V-trace, ``alpha_ = 0`` per-decision importance sampling.

    See "Self-Tuning Deep Reinforcement Learning" by Zahavy et al.
    (https://arxiv.org/abs/2002.12928).

    Args:
      v_tm1, v_t, r_t, discount_t, rho_tm1: float ``[T]``, as in :func:`vtrace`.
      alpha_: mixing parameter in [0, 1] (number or float tensor ``()``).
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      clip_rho_threshold: number > 0 (or float tensor ``()``).
      stop_target_gradients: gradients only into ``v_tm1`` (default True).

    Returns:
      float ``[T]`` leaky V-trace errors.
    """
    _, lambda_ = _check_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold)
    alpha_ = _check_mixing(alpha_, "alpha_", None)
    c_tm1 = ((1 - alpha_) * rho_tm1 + alpha_ * torch.clamp(rho_tm1, max=1.0)) * lambda_
    clipped_rho_tm1 = (1 - alpha_) * rho_tm1 + alpha_ * _minimum(rho_tm1, clip_rho_threshold)
    return _vtrace_errors(v_tm1, v_t, r_t, discount_t, c_tm1, clipped_rho_tm1, stop_target_gradients)


def _vtrace_output(errors, v_tm1, v_t, r_t, discount_t, lambda_, pg_rho_tm1) -> VTraceOutput:
    targets_tm1 = errors + v_tm1
    lambda_ = torch.ones_like(discount_t) * lambda_
    # The Q estimate bootstraps on the next V-trace target, mixed with the
    # next value by lambda; the last step bootstraps on v_t[-1].
    q_bootstrap = torch.cat(
        [lambda_[:-1] * targets_tm1[1:] + (1 - lambda_[:-1]) * v_tm1[1:], v_t[-1:]], dim=-1
    )
    q_estimate = r_t + discount_t * q_bootstrap
    return VTraceOutput(errors=errors, pg_advantage=pg_rho_tm1 * (q_estimate - v_tm1), q_estimate=q_estimate)


def vtrace_td_error_and_advantage(
    v_tm1: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    rho_tm1: torch.Tensor,
    lambda_: float | torch.Tensor = 1.0,
    clip_rho_threshold: float | torch.Tensor = 1.0,
    clip_pg_rho_threshold: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = True,
) -> VTraceOutput:
    """V-trace errors and the IMPALA policy-gradient advantages.

    ``q_estimate[t] = r_t[t] + discount_t[t] * (lambda * target[t+1] + (1 - lambda) * v_tm1[t+1])``
    (``v_t[-1]`` at the last step), where ``target = errors + v_tm1``, and
    ``pg_advantage = min(clip_pg_rho_threshold, rho_tm1) * (q_estimate - v_tm1)``.
    As in rlax, ``stop_target_gradients`` detaches the V-trace targets only: the
    last Q estimate bootstraps on ``v_t[-1]`` with its gradient, and
    ``pg_advantage`` carries gradients into ``v_tm1``; policy-gradient losses
    usually detach the advantage themselves.

    See "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
    Actor-Learner Architectures" by Espeholt et al. (https://arxiv.org/abs/1802.01561).

    Args:
      v_tm1, v_t, r_t, discount_t, rho_tm1: float ``[T]``, as in :func:`vtrace`.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      clip_rho_threshold: number > 0 clipping the ratios of the value errors.
      clip_pg_rho_threshold: number > 0 clipping the ratios of the advantages.
      stop_target_gradients: gradients only into ``v_tm1`` (default True).

    Returns:
      :class:`VTraceOutput` ``(errors, pg_advantage, q_estimate)``, each float ``[T]``.
    """
    _, lambda_ = _check_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold)
    _check_threshold(clip_pg_rho_threshold, "clip_pg_rho_threshold")
    errors = vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold, stop_target_gradients)
    pg_rho_tm1 = _minimum(rho_tm1, clip_pg_rho_threshold)
    return _vtrace_output(errors, v_tm1, v_t, r_t, discount_t, lambda_, pg_rho_tm1)


def leaky_vtrace_td_error_and_advantage(
    v_tm1: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    rho_tm1: torch.Tensor,
    alpha: float | torch.Tensor = 1.0,
    lambda_: float | torch.Tensor = 1.0,
    clip_rho_threshold: float | torch.Tensor = 1.0,
    clip_pg_rho_threshold: float | torch.Tensor = 1.0,
    stop_target_gradients: bool = True,
) -> VTraceOutput:
    """Leaky V-trace errors and policy-gradient advantages.

    As :func:`vtrace_td_error_and_advantage` with :func:`leaky_vtrace` errors and
    advantage ratios ``(1 - alpha) * rho + alpha * min(clip_pg_rho_threshold, rho)``.
    (rlax spells this argument ``alpha``, and :func:`leaky_vtrace`'s ``alpha_``.)

    See "Self-Tuning Deep Reinforcement Learning" by Zahavy et al.
    (https://arxiv.org/abs/2002.12928).

    Args:
      v_tm1, v_t, r_t, discount_t, rho_tm1: float ``[T]``, as in :func:`vtrace`.
      alpha: mixing parameter in [0, 1] (number or float tensor ``()``).
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      clip_rho_threshold: number > 0 clipping the ratios of the value errors.
      clip_pg_rho_threshold: number > 0 clipping the ratios of the advantages.
      stop_target_gradients: gradients only into ``v_tm1`` (default True).

    Returns:
      :class:`VTraceOutput` ``(errors, pg_advantage, q_estimate)``, each float ``[T]``.
    """
    _, lambda_ = _check_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, clip_rho_threshold)
    _check_threshold(clip_pg_rho_threshold, "clip_pg_rho_threshold")
    alpha = _check_mixing(alpha, "alpha", None)
    errors = leaky_vtrace(
        v_tm1, v_t, r_t, discount_t, rho_tm1, alpha, lambda_, clip_rho_threshold, stop_target_gradients
    )
    pg_rho_tm1 = (1 - alpha) * rho_tm1 + alpha * _minimum(rho_tm1, clip_pg_rho_threshold)
    return _vtrace_output(errors, v_tm1, v_t, r_t, discount_t, lambda_, pg_rho_tm1)
