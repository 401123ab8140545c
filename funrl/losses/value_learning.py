"""State- and action-value learning TD errors (rlax's ``value_learning``).

Single-transition functions (``td_learning``, ``sarsa``, ``q_learning``, ...)
take one transition: scalars have shape ``()`` and action values shape ``[A]``.
Sequence functions (``td_lambda``, ``sarsa_lambda``, ``q_lambda``, ``retrace``)
take one trajectory with time on axis 0.  Batch either with ``torch.func.vmap``.
All return TD errors ``target - prediction`` (not squared losses: apply
``funrl.losses.base.l2_loss`` or ``huber_loss``), with the target detached by
default (``stop_target_gradients=True``, as in rlax), so the gradient of
``0.5 * error**2`` w.r.t. the prediction is ``-error``.

Actions are integer indices in ``[0, A)``.  Indexing goes through
``torch.gather``: an out-of-range action raises a RuntimeError in eager CPU
mode (also under vmap) and a device-side assert on CUDA; actions are never
checked by value (that cannot run under vmap or torch.compile).  Action-value
arguments must all have the same number of actions ``A`` (checked on shapes).
The distributional (categorical, quantile) variants live in
``funrl.losses.distributional``.
"""

from __future__ import annotations

import torch

from funrl._checks import check_float, check_int, check_rank
from funrl.losses import multistep
from funrl.losses.base import batched_index, maybe_stop_gradient
from funrl.losses.multistep import _check_mixing

__all__ = [
    "td_learning",
    "td_lambda",
    "sarsa",
    "expected_sarsa",
    "sarsa_lambda",
    "q_learning",
    "double_q_learning",
    "persistent_q_learning",
    "qv_learning",
    "qv_max",
    "q_lambda",
    "retrace",
    "retrace_continuous",
]


def _check(specs) -> None:
    """``specs``: ``(name, tensor, rank, kind)`` with kind ``"float"`` or ``"int"``."""
    for name, x, rank, kind in specs:
        check_rank(x, rank, name)
        (check_float if kind == "float" else check_int)(x, name)


def _check_same_shape(ref_name, ref, **others) -> None:
    for name, x in others.items():
        if x.shape != ref.shape:
            raise ValueError(
                f"{name}: expected shape {tuple(ref.shape)} (the shape of {ref_name}), got {tuple(x.shape)}"
            )


def _check_actions(ref_name, ref, **others) -> None:
    """Every tensor in ``others`` has as many actions (last axis) as ``ref``."""
    num_actions = ref.shape[-1]
    for name, x in others.items():
        if x.shape[-1] != num_actions:
            raise ValueError(
                f"{name}: expected {num_actions} actions on the last axis (as {ref_name}, shape "
                f"{tuple(ref.shape)}), got shape {tuple(x.shape)}"
            )


def _check_time(ref_name, ref, **others) -> int:
    """Every tensor in ``others`` has ``ref``'s length along axis 0 (>= 1)."""
    length = ref.shape[0]
    if length < 1:
        raise ValueError(f"{ref_name}: expected at least one time step, got shape {tuple(ref.shape)}")
    for name, x in others.items():
        if x.shape[0] != length:
            raise ValueError(
                f"{name}: expected {length} time steps along axis 0 (the length of {ref_name}), "
                f"got shape {tuple(x.shape)}"
            )
    return length


def _td_error(target_tm1, prediction_tm1, stop_target_gradients):
    return maybe_stop_gradient(target_tm1, stop_target_gradients) - prediction_tm1


# ----------------------------------------------------------------------------- state values
def td_learning(
    v_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """TD(0) error ``r_t + discount_t * v_t - v_tm1``.

    See "Learning to Predict by the Methods of Temporal Differences" by Sutton
    (https://link.springer.com/article/10.1023/A:1022633531479).

    Args:
      v_tm1: float ``()`` value of the state at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t (0 at an episode end).
      v_t: float ``()`` value of the state at time t.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check([("v_tm1", v_tm1, 0, "float"), ("r_t", r_t, 0, "float"), ("discount_t", discount_t, 0, "float"),
            ("v_t", v_t, 0, "float")])
    return _td_error(r_t + discount_t * v_t, v_tm1, stop_target_gradients)


def td_lambda(
    v_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    lambda_: float | torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """TD(lambda) errors ``lambda_returns(r_t, discount_t, v_t, lambda_) - v_tm1``.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node74.html).

    Args:
      v_tm1: float ``[T]`` values at times 0..T-1.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      v_t: float ``[T]`` values at times 1..T.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      stop_target_gradients: detach the targets (default True).

    Returns:
      float ``[T]`` TD(lambda) errors.
    """
    _check([("v_tm1", v_tm1, 1, "float"), ("r_t", r_t, 1, "float"), ("discount_t", discount_t, 1, "float"),
            ("v_t", v_t, 1, "float")])
    _check_same_shape("v_tm1", v_tm1, r_t=r_t, discount_t=discount_t, v_t=v_t)
    target_tm1 = multistep.lambda_returns(r_t, discount_t, v_t, lambda_)
    return _td_error(target_tm1, v_tm1, stop_target_gradients)


# ----------------------------------------------------------------------------- action values, one step
def _check_transition(q_tm1, a_tm1, r_t, discount_t, extra):
    _check([("q_tm1", q_tm1, 1, "float"), ("a_tm1", a_tm1, 0, "int"), ("r_t", r_t, 0, "float"),
            ("discount_t", discount_t, 0, "float")] + extra)


def sarsa(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    a_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """SARSA error ``r_t + discount_t * q_t[a_t] - q_tm1[a_tm1]``.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node64.html).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t: float ``[A]`` action values at time t.
      a_t: integer ``()`` action taken at time t.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(q_tm1, a_tm1, r_t, discount_t, [("q_t", q_t, 1, "float"), ("a_t", a_t, 0, "int")])
    _check_actions("q_tm1", q_tm1, q_t=q_t)
    target_tm1 = r_t + discount_t * batched_index(q_t, a_t)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def expected_sarsa(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    probs_a_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Expected SARSA error ``r_t + discount_t * sum_a probs_a_t[a] q_t[a] - q_tm1[a_tm1]``.

    See "A Theoretical and Empirical Analysis of Expected Sarsa" by van Seijen,
    van Hasselt, Whiteson and Wiering (https://ieeexplore.ieee.org/document/4927542).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t: float ``[A]`` action values at time t.
      probs_a_t: float ``[A]`` target-policy probabilities at time t.
      stop_target_gradients: detach the target (including ``probs_a_t``; default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(q_tm1, a_tm1, r_t, discount_t, [("q_t", q_t, 1, "float"), ("probs_a_t", probs_a_t, 1, "float")])
    _check_actions("q_tm1", q_tm1, q_t=q_t)
    _check_same_shape("q_t", q_t, probs_a_t=probs_a_t)
    target_tm1 = r_t + discount_t * torch.sum(q_t * probs_a_t, dim=-1)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def q_learning(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Q-learning error ``r_t + discount_t * max_a q_t[a] - q_tm1[a_tm1]``.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node65.html).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t: float ``[A]`` action values at time t (e.g. from a target network).
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(q_tm1, a_tm1, r_t, discount_t, [("q_t", q_t, 1, "float")])
    _check_actions("q_tm1", q_tm1, q_t=q_t)
    target_tm1 = r_t + discount_t * torch.amax(q_t, dim=-1)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def double_q_learning(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t_value: torch.Tensor,
    q_t_selector: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Double Q-learning error ``r_t + discount_t * q_t_value[argmax q_t_selector] - q_tm1[a_tm1]``.

    Ties in ``q_t_selector`` pick the first maximal action (as ``jnp.argmax``).
    No gradient ever flows into ``q_t_selector`` (the argmax is piecewise constant).

    See "Double Q-learning" by van Hasselt
    (https://papers.nips.cc/paper/3964-double-q-learning.pdf) and "Deep
    Reinforcement Learning with Double Q-learning" by van Hasselt, Guez and
    Silver (https://arxiv.org/abs/1509.06461).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t_value: float ``[A]`` action values at time t that evaluate the action.
      q_t_selector: float ``[A]`` action values at time t that select the action.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(
        q_tm1, a_tm1, r_t, discount_t,
        [("q_t_value", q_t_value, 1, "float"), ("q_t_selector", q_t_selector, 1, "float")],
    )
    _check_actions("q_tm1", q_tm1, q_t_value=q_t_value)
    _check_same_shape("q_t_value", q_t_value, q_t_selector=q_t_selector)
    target_tm1 = r_t + discount_t * batched_index(q_t_value, torch.argmax(q_t_selector, dim=-1))
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def persistent_q_learning(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    action_gap_scale: float | torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Persistent Q-learning error (the action-gap increasing operator).

    The target ``r_t + discount_t * ((1 - s) * max_a q_t[a] + s * q_t[a_tm1])``
    with ``s = action_gap_scale`` repeats the previous action's value partly.

    See "Increasing the Action Gap: New Operators for Reinforcement Learning" by
    Bellemare, Ostrovski, Guez et al. (https://arxiv.org/abs/1512.04860).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t: float ``[A]`` action values at time t.
      action_gap_scale: number in [0, 1] or float tensor ``()``.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(q_tm1, a_tm1, r_t, discount_t, [("q_t", q_t, 1, "float")])
    _check_same_shape("q_tm1", q_tm1, q_t=q_t)
    action_gap_scale = _check_mixing(action_gap_scale, "action_gap_scale", None)
    corrected_q_t = (1 - action_gap_scale) * torch.amax(q_t, dim=-1) + action_gap_scale * batched_index(q_t, a_tm1)
    target_tm1 = r_t + discount_t * corrected_q_t
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def qv_learning(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """QV-learning error ``r_t + discount_t * v_t - q_tm1[a_tm1]`` (Q bootstraps on a state value).

    See "Two Novel On-policy Reinforcement Learning Algorithms based on
    TD(lambda)-methods" by Wiering and van Hasselt
    (https://ieeexplore.ieee.org/abstract/document/4220845).

    Args:
      q_tm1: float ``[A]`` action values at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      v_t: float ``()`` state value at time t.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check_transition(q_tm1, a_tm1, r_t, discount_t, [("v_t", v_t, 0, "float")])
    return _td_error(r_t + discount_t * v_t, batched_index(q_tm1, a_tm1), stop_target_gradients)


def qv_max(
    v_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """QVMAX error ``r_t + discount_t * max_a q_t[a] - v_tm1`` (V bootstraps on greedy Q).

    See "The QV Family Compared to Other Reinforcement Learning Algorithms" by
    Wiering and van Hasselt (2009).

    Args:
      v_tm1: float ``()`` state value at time t-1.
      r_t: float ``()`` reward at time t.
      discount_t: float ``()`` discount at time t.
      q_t: float ``[A]`` action values at time t.
      stop_target_gradients: detach the target (default True).

    Returns:
      float ``()`` TD error.
    """
    _check([("v_tm1", v_tm1, 0, "float"), ("r_t", r_t, 0, "float"), ("discount_t", discount_t, 0, "float"),
            ("q_t", q_t, 1, "float")])
    return _td_error(r_t + discount_t * torch.amax(q_t, dim=-1), v_tm1, stop_target_gradients)


# ----------------------------------------------------------------------------- action values, sequences
def _check_q_sequence(q_tm1, a_tm1, r_t, discount_t, q_t):
    _check([("q_tm1", q_tm1, 2, "float"), ("a_tm1", a_tm1, 1, "int"), ("r_t", r_t, 1, "float"),
            ("discount_t", discount_t, 1, "float"), ("q_t", q_t, 2, "float")])
    length = _check_time("q_tm1", q_tm1, a_tm1=a_tm1, r_t=r_t, discount_t=discount_t, q_t=q_t)
    _check_actions("q_tm1", q_tm1, q_t=q_t)
    return length


def sarsa_lambda(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    a_t: torch.Tensor,
    lambda_: float | torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """SARSA(lambda) errors: lambda-returns bootstrapped on ``q_t[a_t]``, minus ``q_tm1[a_tm1]``.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node77.html).

    Args:
      q_tm1: float ``[T, A]`` action values at times 0..T-1.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      q_t: float ``[T, A]`` action values at times 1..T.
      a_t: integer ``[T]`` actions at times 1..T.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      stop_target_gradients: detach the targets (default True).

    Returns:
      float ``[T]`` TD errors.
    """
    _check_q_sequence(q_tm1, a_tm1, r_t, discount_t, q_t)
    _check([("a_t", a_t, 1, "int")])
    _check_time("q_tm1", q_tm1, a_t=a_t)
    target_tm1 = multistep.lambda_returns(r_t, discount_t, batched_index(q_t, a_t), lambda_)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def q_lambda(
    q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_t: torch.Tensor,
    lambda_: float | torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Peng's (scalar ``lambda_``) or Watkins' (per-step ``lambda_``) Q(lambda) errors.

    Lambda-returns bootstrapped on ``max_a q_t``, minus ``q_tm1[a_tm1]``.  For
    Watkins' Q(lambda) pass ``lambda_ * (a_t == argmax q_t)`` per step.

    See "Reinforcement Learning: An Introduction" by Sutton and Barto
    (http://incompleteideas.net/book/ebook/node78.html).

    Args:
      q_tm1: float ``[T, A]`` action values at times 0..T-1.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      q_t: float ``[T, A]`` action values at times 1..T.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      stop_target_gradients: detach the targets (default True).

    Returns:
      float ``[T]`` TD errors.
    """
    _check_q_sequence(q_tm1, a_tm1, r_t, discount_t, q_t)
    target_tm1 = multistep.lambda_returns(r_t, discount_t, torch.amax(q_t, dim=-1), lambda_)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def retrace(
    q_tm1: torch.Tensor,
    q_t: torch.Tensor,
    a_tm1: torch.Tensor,
    a_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    pi_t: torch.Tensor,
    mu_t: torch.Tensor,
    lambda_: float | torch.Tensor,
    eps: float = 1e-8,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Retrace errors: off-policy returns with traces ``lambda * min(1, pi(a_t) / mu(a_t))``.

    See "Safe and Efficient Off-Policy Reinforcement Learning" by Munos et al.
    (https://arxiv.org/abs/1606.02647).

    Args:
      q_tm1: float ``[T, A]`` action values at times 0..T-1.
      q_t: float ``[T, A]`` action values at times 1..T.
      a_tm1: integer ``[T]`` actions at times 0..T-1.
      a_t: integer ``[T]`` actions at times 1..T.
      r_t: float ``[T]`` rewards at times 1..T.
      discount_t: float ``[T]`` discounts at times 1..T.
      pi_t: float ``[T, A]`` target-policy probabilities at times 1..T.
      mu_t: float ``[T]`` behaviour-policy probabilities of ``a_t``.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[T]``.
      eps: number >= 0 added to ``mu_t`` before dividing.
      stop_target_gradients: detach the targets (default True).

    Returns:
      float ``[T]`` TD errors.
    """
    _check_q_sequence(q_tm1, a_tm1, r_t, discount_t, q_t)
    _check([("a_t", a_t, 1, "int"), ("pi_t", pi_t, 2, "float"), ("mu_t", mu_t, 1, "float")])
    length = _check_time("q_tm1", q_tm1, a_t=a_t, mu_t=mu_t)
    _check_same_shape("q_t", q_t, pi_t=pi_t)
    lambda_ = _check_mixing(lambda_, "lambda_", length)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps: expected a number >= 0, got {eps!r}")
    pi_a_t = batched_index(pi_t, a_t)
    c_t = torch.clamp(pi_a_t / (mu_t + eps), max=1.0) * lambda_
    target_tm1 = multistep.general_off_policy_returns_from_action_values(q_t, a_t, r_t, discount_t, c_t, pi_t)
    return _td_error(target_tm1, batched_index(q_tm1, a_tm1), stop_target_gradients)


def retrace_continuous(
    q_tm1: torch.Tensor,
    q_t: torch.Tensor,
    v_t: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    log_rhos: torch.Tensor,
    lambda_: float | torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Retrace errors for continuous actions, from log importance weights.

    Traces ``lambda * min(1, exp(log_rhos))``; targets from
    :func:`funrl.losses.multistep.general_off_policy_returns_from_q_and_v`.

    See "Safe and Efficient Off-Policy Reinforcement Learning" by Munos et al.
    (https://arxiv.org/abs/1606.02647).

    Args:
      q_tm1: float ``[K]`` values of the taken actions at times 0..K-1.
      q_t: float ``[K-1]`` values of the taken actions at times 1..K-1.
      v_t: float ``[K]`` target-policy state values at times 1..K.
      r_t: float ``[K]`` rewards at times 1..K.
      discount_t: float ``[K]`` discounts at times 1..K.
      log_rhos: float ``[K-1]`` log pi/mu of the taken actions at times 1..K-1.
      lambda_: number in [0, 1] or float tensor ``()`` / ``[K-1]``.
      stop_target_gradients: detach the targets (default True).

    Returns:
      float ``[K]`` TD errors.
    """
    _check([("q_tm1", q_tm1, 1, "float"), ("q_t", q_t, 1, "float"), ("v_t", v_t, 1, "float"),
            ("r_t", r_t, 1, "float"), ("discount_t", discount_t, 1, "float"), ("log_rhos", log_rhos, 1, "float")])
    length = _check_time("q_tm1", q_tm1, v_t=v_t, r_t=r_t, discount_t=discount_t)
    lambda_ = _check_mixing(lambda_, "lambda_", length - 1)
    if log_rhos.shape[0] != length - 1:
        raise ValueError(f"log_rhos: expected shape ({length - 1},) (one less than q_tm1), got {tuple(log_rhos.shape)}")
    c_t = torch.clamp(torch.exp(log_rhos), max=1.0) * lambda_
    target_tm1 = multistep.general_off_policy_returns_from_q_and_v(q_t, v_t, r_t, discount_t, c_t)
    return _td_error(target_tm1, q_tm1, stop_target_gradients)
