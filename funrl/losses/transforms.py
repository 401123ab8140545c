"""Elementwise value transforms and transformed (non-linear) Bellman targets.

The transforms follow rlax's ``transforms.py`` (squashing functions and their
inverses, two-hot encodings); the ``transformed_*`` targets follow rlax's
``nonlinear_bellman.py``: a target ``h(G(h^-1(v)))`` where ``G`` is a multistep
return and ``(h, h^-1)`` a :class:`TxPair`.  See "Observe and Look Further:
Achieving Consistent Performance on Atari" by Pohlen et al.
(https://arxiv.org/abs/1805.11593) and "General non-linear Bellman equations" by
van Hasselt et al. (https://arxiv.org/abs/1907.03687).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from funrl import ops
from funrl._checks import check_float, check_int, check_rank, check_same_shape
from funrl.losses.base import batched_index, maybe_stop_gradient

__all__ = [
    "identity",
    "sigmoid",
    "logit",
    "signed_logp1",
    "signed_expm1",
    "signed_hyperbolic",
    "signed_parabolic",
    "power",
    "transform_to_2hot",
    "transform_from_2hot",
    "TxPair",
    "IDENTITY_PAIR",
    "SIGNED_LOGP1_PAIR",
    "SIGNED_HYPERBOLIC_PAIR",
    "transformed_lambda_returns",
    "transformed_n_step_returns",
    "transformed_general_off_policy_returns_from_action_values",
    "transformed_q_lambda",
    "transformed_retrace",
    "transformed_n_step_q_learning",
]


def _check_eps(eps, name="eps"):
    if isinstance(eps, torch.Tensor):
        check_float(eps, name)
    elif isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{name}: expected a float or a float tensor, got {type(eps).__name__}")
    elif eps < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {eps}")


def identity(x: torch.Tensor) -> torch.Tensor:
    """Identity transform.  ``x``: float tensor, any shape; returns ``x``."""
    check_float(x, "x")
    return x


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Sigmoid ``1 / (1 + exp(-x))``, inverse of :func:`logit`.  Float tensor in, same shape out."""
    check_float(x, "x")
    return ops.sigmoid(x)


def logit(x: torch.Tensor) -> torch.Tensor:
    """Logit ``log(x / (1 - x))``, inverse of :func:`sigmoid`.

    Args:
      x: float tensor with values in ``(0, 1)`` (0 and 1 map to -inf and inf).

    Returns:
      float tensor of ``x``'s shape.
    """
    check_float(x, "x")
    return torch.logit(x)


def signed_logp1(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)``, inverse of :func:`signed_expm1`.  Float tensor, same shape out."""
    check_float(x, "x")
    return torch.sign(x) * torch.log1p(torch.abs(x))


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * (exp(|x|) - 1)``, inverse of :func:`signed_logp1`.  Float tensor, same shape out."""
    check_float(x, "x")
    return torch.sign(x) * torch.expm1(torch.abs(x))


def signed_hyperbolic(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """R2D2's value squashing ``h(x) = sign(x) * (sqrt(|x| + 1) - 1) + eps * x``.

    Inverse of :func:`signed_parabolic` (same ``eps``).  See Pohlen et al.
    (https://arxiv.org/abs/1805.11593).

    Args:
      x: float tensor, any shape.
      eps: the linear term's coefficient ``>= 0``.

    Returns:
      float tensor of ``x``'s shape.
    """
    check_float(x, "x")
    _check_eps(eps)
    # sign(x) * (sqrt(|x|+1) - 1) == x / (sqrt(|x|+1) + 1): no cancellation near
    # zero, and the gradient at exactly 0 is 1/2 + eps rather than sign's 0.
    return x / (torch.sqrt(torch.abs(x) + 1.0) + 1.0) + eps * x


def signed_parabolic(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Inverse of :func:`signed_hyperbolic`: ``h^-1(x) = sign(x) * (z**2 - 1)``,
    ``z = (sqrt(1 + 4 eps (eps + 1 + |x|)) - 1) / (2 eps)``.

    Args:
      x: float tensor, any shape.
      eps: the same coefficient as in :func:`signed_hyperbolic`, ``>= 0``.

    Returns:
      float tensor of ``x``'s shape.
    """
    check_float(x, "x")
    _check_eps(eps)
    abs_x = torch.abs(x)
    # z - 1 rewritten as 2|x| / (1 + 2 eps + sqrt(1 + 4 eps (1 + eps + |x|))):
    # the textbook form divides a difference of two ~1/(2 eps) numbers by 2 eps,
    # losing ~3 digits in float32 at eps=1e-3, and is undefined at eps=0.
    w = 2.0 * abs_x / (1.0 + 2.0 * eps + torch.sqrt(1.0 + 4.0 * eps * (1.0 + eps + abs_x)))
    return torch.sign(x) * w * (w + 2.0)


def power(x: torch.Tensor, p: float) -> torch.Tensor:
    """Power transform ``sign(x) * ((|x| / q + 1)**p - 1) / q`` with ``q = sqrt(p)``.

    ``power(power(x, p), 1 / p) == x``.

    Args:
      x: float tensor, any shape.
      p: exponent ``> 0``.

    Returns:
      float tensor of ``x``'s shape.
    """
    check_float(x, "x")
    if isinstance(p, torch.Tensor):
        check_float(p, "p")
        q = torch.sqrt(p)
    else:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p: expected a float, got {type(p).__name__}")
        if p <= 0:
            raise ValueError(f"p: expected a number > 0, got {p}")
        q = p**0.5
    return torch.sign(x) * (ops.power(torch.abs(x) / q + 1.0, p) - 1.0) / q


def _check_bins(min_value, max_value, num_bins):
    for name, v in (("min_value", min_value), ("max_value", max_value)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name}: expected a float, got {type(v).__name__}")
    if not max_value > min_value:
        raise ValueError(f"max_value: expected a value > min_value = {min_value}, got {max_value}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}")


def transform_to_2hot(scalar: torch.Tensor, min_value: float, max_value: float, num_bins: int) -> torch.Tensor:
    """Encode scalars as "two-hot" probabilities on ``linspace(min_value, max_value, num_bins)``.

    Each scalar (clipped to ``[min_value, max_value]``) puts its mass on the two
    neighbouring bins so that the expectation over the support equals the
    scalar exactly: :func:`transform_from_2hot` inverts it on the support's range.
    The weights are exact linear interpolation (rlax adds 1e-5 to a divisor,
    which biases the decoded value by up to ~1e-5 relative to a bin width).
    Gradients flow into ``scalar`` through the interpolation weights.

    Args:
      scalar: float tensor of any shape ``[...]``.
      min_value: lowest bin value.
      max_value: highest bin value ``> min_value``.
      num_bins: number of bins ``>= 2``.

    Returns:
      float ``[..., num_bins]`` probabilities (non-negative, summing to 1).
    """
    check_float(scalar, "scalar")
    _check_bins(min_value, max_value, num_bins)
    scalar = torch.clamp(scalar, min_value, max_value)
    position = (scalar - min_value) / (max_value - min_value) * (num_bins - 1)
    lower = torch.clamp(torch.floor(position), 0, num_bins - 2)
    frac = (position - lower).unsqueeze(-1)
    bins = torch.arange(num_bins, dtype=scalar.dtype, device=scalar.device)
    lower = lower.unsqueeze(-1)
    return (bins == lower).to(scalar.dtype) * (1.0 - frac) + (bins == lower + 1).to(scalar.dtype) * frac


def transform_from_2hot(probs: torch.Tensor, min_value: float, max_value: float, num_bins: int) -> torch.Tensor:
    """Expected value of categorical probabilities on ``linspace(min_value, max_value, num_bins)``.

    Args:
      probs: float ``[..., num_bins]`` probabilities.
      min_value: lowest bin value.
      max_value: highest bin value ``> min_value``.
      num_bins: number of bins ``>= 2``.

    Returns:
      float ``[...]``.
    """
    check_float(probs, "probs")
    _check_bins(min_value, max_value, num_bins)
    if probs.ndim == 0 or probs.shape[-1] != num_bins:
        raise ValueError(f"probs: expected shape (..., {num_bins}), got {tuple(probs.shape)}")
    support = torch.linspace(min_value, max_value, num_bins, dtype=probs.dtype, device=probs.device)
    return torch.sum(probs * support, dim=-1)


class TxPair(NamedTuple):
    """A value transform ``apply`` (typically a monotonic squashing function) and its inverse."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    apply_inv: Callable[[torch.Tensor], torch.Tensor]


IDENTITY_PAIR = TxPair(identity, identity)
SIGNED_LOGP1_PAIR = TxPair(signed_logp1, signed_expm1)
SIGNED_HYPERBOLIC_PAIR = TxPair(signed_hyperbolic, signed_parabolic)


def _check_tx_pair(tx_pair):
    if not isinstance(tx_pair, tuple) or len(tx_pair) != 2 or not all(callable(f) for f in tx_pair):
        raise TypeError(f"tx_pair: expected a TxPair(apply, apply_inv) of callables, got {tx_pair!r}")


def _multistep():
    # Imported on use: funrl.losses.multistep is written separately and must not
    # be needed to import the transforms themselves.
    from funrl.losses import multistep

    return multistep


def transformed_lambda_returns(
    tx_pair: TxPair, r_t: torch.Tensor, discount_t: torch.Tensor, v_t: torch.Tensor, lambda_=1.0
) -> torch.Tensor:
    """``tx_pair.apply(lambda_returns(r_t, discount_t, tx_pair.apply_inv(v_t), lambda_))``.

    Args:
      tx_pair: the value transform and its inverse.
      r_t, discount_t, v_t: float ``[T]`` rewards, discounts, values at times 1..T.
      lambda_: mixing parameter, a float or float ``[T]``.

    Returns:
      float ``[T]`` transformed lambda returns.
    """
    _check_tx_pair(tx_pair)
    check_float(v_t, "v_t")
    return tx_pair.apply(_multistep().lambda_returns(r_t, discount_t, tx_pair.apply_inv(v_t), lambda_))


def transformed_n_step_returns(
    tx_pair: TxPair, r_t: torch.Tensor, discount_t: torch.Tensor, v_t: torch.Tensor, n: int
) -> torch.Tensor:
    """``tx_pair.apply(n_step_bootstrapped_returns(r_t, discount_t, tx_pair.apply_inv(v_t), n))``.

    Args:
      tx_pair: the value transform and its inverse.
      r_t, discount_t, v_t: float ``[T]`` rewards, discounts, bootstrap values at times 1..T.
      n: number of steps before bootstrapping.

    Returns:
      float ``[T]`` transformed n-step returns.
    """
    _check_tx_pair(tx_pair)
    check_float(v_t, "v_t")
    return tx_pair.apply(_multistep().n_step_bootstrapped_returns(r_t, discount_t, tx_pair.apply_inv(v_t), n))


def transformed_general_off_policy_returns_from_action_values(
    tx_pair: TxPair,
    q_t: torch.Tensor,
    a_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    c_t: torch.Tensor,
    pi_t: torch.Tensor,
) -> torch.Tensor:
    """General off-policy returns (Retrace, Tree-Backup, ...) on transformed action values.

    ``tx_pair.apply(general_off_policy_returns_from_action_values(tx_pair.apply_inv(q_t), ...))``.

    Args:
      tx_pair: the value transform and its inverse.
      q_t: float ``[T, A]`` (transformed) action values at times 1..T.
      a_t: integer ``[T]`` actions; r_t, discount_t, c_t: float ``[T]``;
      pi_t: float ``[T, A]`` target-policy probabilities.

    Returns:
      float ``[T]`` transformed returns.
    """
    _check_tx_pair(tx_pair)
    check_float(q_t, "q_t")
    returns = _multistep().general_off_policy_returns_from_action_values(
        tx_pair.apply_inv(q_t), a_t, r_t, discount_t, c_t, pi_t
    )
    return tx_pair.apply(returns)


def _check_seq(specs):
    for name, x, rank, kind in specs:
        check_rank(x, rank, name)
        (check_float if kind == "float" else check_int)(x, name)


def _check_time(reference_name, reference, **others):
    t = reference.shape[0]
    for name, x in others.items():
        if x.ndim >= 1 and x.shape[0] != t:
            raise ValueError(
                f"{name}: expected {t} time steps (the length of {reference_name} {tuple(reference.shape)}), "
                f"got shape {tuple(x.shape)}"
            )


def transformed_q_lambda(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    lambda_,
    stop_target_gradients: bool = True,
    tx_pair: TxPair = IDENTITY_PAIR,
) -> torch.Tensor:
    """Transformed Peng's/Watkins' Q(lambda) TD errors.

    See "General non-linear Bellman equations" by van Hasselt et al.
    (https://arxiv.org/abs/1907.03687).

    Args:
      q_tm1: float ``[T, A]`` Q-values at times 0..T-1.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      q_t: float ``[T, A]`` Q-values at times 1..T.
      lambda_: mixing parameter, float or float ``[T]``.
      stop_target_gradients: stop gradients into the targets.
      tx_pair: value transform and inverse.

    Returns:
      float ``[T]`` TD errors ``target - q_tm1[a_tm1]``.
    """
    _check_seq([("q_tm1", q_tm1, 2, "float"), ("a_tm1", a_tm1, 1, "int"), ("r_t", r_t, 1, "float"),
                ("discount_t", discount_t, 1, "float"), ("q_t", q_t, 2, "float")])
    _check_time("q_tm1", q_tm1, a_tm1=a_tm1, r_t=r_t, discount_t=discount_t, q_t=q_t)
    check_same_shape({"q_t": q_t, "q_tm1": q_tm1}, reference="q_tm1")
    qa_tm1 = batched_index(q_tm1, a_tm1)
    v_t = torch.amax(q_t, dim=-1)
    target_tm1 = transformed_lambda_returns(tx_pair, r_t, discount_t, v_t, lambda_)
    target_tm1 = maybe_stop_gradient(target_tm1, stop_target_gradients)
    return target_tm1 - qa_tm1


def transformed_retrace(
    q_tm1: torch.Tensor,
    q_t: torch.Tensor,
    a_tm1: torch.Tensor,
    a_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    pi_t: torch.Tensor,
    mu_t: torch.Tensor,
    lambda_: float,
    eps: float = 1e-8,
    stop_target_gradients: bool = True,
    tx_pair: TxPair = IDENTITY_PAIR,
) -> torch.Tensor:
    """Transformed Retrace TD errors (R2D2).

    See "Recurrent Experience Replay in Distributed Reinforcement Learning" by
    Kapturowski et al. (https://openreview.net/pdf?id=r1lyTjAqYX).

    Args:
      q_tm1: float ``[T, A]`` Q-values at times 0..T-1.
      q_t: float ``[T, A]`` Q-values at times 1..T.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      a_t: integer ``[T]`` actions at times 1..T.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      pi_t: float ``[T, A]`` target-policy probabilities at times 1..T.
      mu_t: float ``[T]`` behaviour probabilities of ``a_t``.
      lambda_: scalar mixing parameter.
      eps: added to ``mu_t`` before dividing.
      stop_target_gradients: stop gradients into the targets.
      tx_pair: value transform and inverse.

    Returns:
      float ``[T]`` TD errors.
    """
    _check_seq([("q_tm1", q_tm1, 2, "float"), ("q_t", q_t, 2, "float"), ("a_tm1", a_tm1, 1, "int"),
                ("a_t", a_t, 1, "int"), ("r_t", r_t, 1, "float"), ("discount_t", discount_t, 1, "float"),
                ("pi_t", pi_t, 2, "float"), ("mu_t", mu_t, 1, "float")])
    _check_time("q_tm1", q_tm1, q_t=q_t, a_tm1=a_tm1, a_t=a_t, r_t=r_t, discount_t=discount_t,
                pi_t=pi_t, mu_t=mu_t)
    check_same_shape({"q_t": q_t, "pi_t": pi_t, "q_tm1": q_tm1}, reference="q_tm1")
    pi_a_t = batched_index(pi_t, a_t)
    c_t = torch.clamp(pi_a_t / (mu_t + eps), max=1.0) * lambda_
    target_tm1 = transformed_general_off_policy_returns_from_action_values(
        tx_pair, q_t, a_t, r_t, discount_t, c_t, pi_t
    )
    target_tm1 = maybe_stop_gradient(target_tm1, stop_target_gradients)
    return target_tm1 - batched_index(q_tm1, a_tm1)


def transformed_n_step_q_learning(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    target_q_t: torch.Tensor,
    a_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    n: int,
    stop_target_gradients: bool = True,
    tx_pair: TxPair = IDENTITY_PAIR,
) -> torch.Tensor:
    """Transformed n-step Q-learning TD errors.

    The bootstrap value is ``target_q_t[a_t]``: pass ``a_t = argmax(target_q_t)``
    for Q-learning or ``argmax(q_t)`` of the online network for double
    Q-learning.  See "Recurrent Experience Replay in Distributed Reinforcement
    Learning" by Kapturowski et al. (https://openreview.net/pdf?id=r1lyTjAqYX).

    Args:
      q_tm1: float ``[T, A]`` Q-values at times 0..T-1.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      target_q_t: float ``[T, A]`` target-network Q-values at times 1..T.
      a_t: integer ``[T]`` actions used to bootstrap at times 1..T.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      n: number of steps before bootstrapping (``>= 1``).
      stop_target_gradients: stop gradients into the targets.
      tx_pair: value transform and inverse.

    Returns:
      float ``[T]`` TD errors.
    """
    _check_seq([("q_tm1", q_tm1, 2, "float"), ("target_q_t", target_q_t, 2, "float"),
                ("a_tm1", a_tm1, 1, "int"), ("a_t", a_t, 1, "int"), ("r_t", r_t, 1, "float"),
                ("discount_t", discount_t, 1, "float")])
    _check_time("q_tm1", q_tm1, target_q_t=target_q_t, a_tm1=a_tm1, a_t=a_t, r_t=r_t, discount_t=discount_t)
    if target_q_t.shape[1] != q_tm1.shape[1]:
        raise ValueError(
            f"target_q_t: expected shape {tuple(q_tm1.shape)} (the shape of q_tm1), got {tuple(target_q_t.shape)}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    v_t = batched_index(target_q_t, a_t)
    target_tm1 = transformed_n_step_returns(tx_pair, r_t, discount_t, v_t, n)
    target_tm1 = maybe_stop_gradient(target_tm1, stop_target_gradients)
    return target_tm1 - batched_index(q_tm1, a_tm1)
