"""Distributional value learning for one transition (rlax's categorical and quantile losses).

Categorical (C51) losses represent a return distribution by probabilities on a
fixed support of atoms; quantile (QR-DQN) losses by the locations of fixed
quantiles.  Each function handles one transition; batch with
``torch.func.vmap``.  ``stop_target_gradients=True`` by default, as in rlax.
"""

from __future__ import annotations

import torch

from funrl._checks import check_float, check_int, check_rank, check_same_shape
from funrl.losses.base import huber_loss, maybe_stop_gradient

__all__ = [
    "categorical_l2_project",
    "categorical_cross_entropy",
    "categorical_td_learning",
    "categorical_q_learning",
    "categorical_double_q_learning",
    "quantile_regression_loss",
    "quantile_q_learning",
    "quantile_expected_sarsa",
]


def _check(specs):
    """``specs``: (name, tensor, rank, kind) with kind 'float' or 'int'."""
    for name, x, rank, kind in specs:
        check_rank(x, rank, name)
        (check_float if kind == "float" else check_int)(x, name)


def _select_row(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``x[i]`` for ``x`` of shape ``[A, N]`` and an integer index of shape ``()``."""
    return torch.gather(x, 0, i.long().reshape(1, 1).expand(1, x.shape[1])).squeeze(0)


def _select_column(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``x[:, i]`` for ``x`` of shape ``[N, A]`` and an integer index of shape ``()``."""
    return torch.gather(x, 1, i.long().reshape(1, 1).expand(x.shape[0], 1)).squeeze(1)


def categorical_l2_project(z_p: torch.Tensor, probs: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Project a categorical distribution ``(z_p, probs)`` onto the support ``z_q``.

    The projection minimises the Cramér (L2 between CDFs) distance: each atom of
    ``p`` (clipped to ``[z_q[0], z_q[-1]]``) splits its mass between its two
    neighbouring atoms of ``z_q`` in proportion to proximity.  It preserves total
    mass, and the mean whenever ``z_p`` lies inside ``[z_q[0], z_q[-1]]``.

    See "A Distributional Perspective on Reinforcement Learning" by Bellemare,
    Dabney and Munos (https://arxiv.org/abs/1707.06887).

    Args:
      z_p: float ``[Kp]`` support of ``p`` (any order).
      probs: float ``[Kp]`` probabilities of ``p``.
      z_q: float ``[Kq]`` target support, strictly increasing (not checked:
        repeated atoms get no mass from the side of the repeat).

    Returns:
      float ``[Kq]`` probabilities on ``z_q``.
    """
    _check([("z_p", z_p, 1, "float"), ("probs", probs, 1, "float"), ("z_q", z_q, 1, "float")])
    check_same_shape({"probs": probs, "z_p": z_p}, reference="z_p")
    z_p = torch.minimum(torch.maximum(z_p, z_q[0]), z_q[-1])
    # gap to the next atom above / below each z_q[i]; the outermost atoms have
    # no neighbour on the outside, which the wrap-around of roll makes negative.
    d_pos = torch.roll(z_q, -1) - z_q
    d_neg = z_q - torch.roll(z_q, 1)
    # Guard the division itself (not only the result) so no inf reaches autograd.
    inv_pos = torch.where(d_pos > 0, 1.0 / torch.where(d_pos > 0, d_pos, 1.0), 0.0)
    inv_neg = torch.where(d_neg > 0, 1.0 / torch.where(d_neg > 0, d_neg, 1.0), 0.0)
    delta = z_p.unsqueeze(0) - z_q.unsqueeze(1)  # [Kq, Kp]: z_p[j] - z_q[i]
    scaled = torch.where(delta >= 0, delta * inv_pos.unsqueeze(1), -delta * inv_neg.unsqueeze(1))
    weights = torch.clamp(1.0 - scaled, 0.0, 1.0)
    return torch.sum(weights * probs.unsqueeze(0), dim=-1)


def categorical_cross_entropy(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Cross entropy ``-sum(labels * log_softmax(logits))`` of one distribution.

    Args:
      labels: float ``[K]`` target probabilities.
      logits: float ``[K]`` unnormalised log-probabilities.

    Returns:
      float scalar.
    """
    _check([("labels", labels, 1, "float"), ("logits", logits, 1, "float")])
    check_same_shape({"labels": labels, "logits": logits}, reference="logits")
    return -torch.sum(labels * torch.log_softmax(logits, dim=-1))


def categorical_td_learning(
    v_atoms_tm1: torch.Tensor,
    v_logits_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    v_atoms_t: torch.Tensor,
    v_logits_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Categorical TD(0) loss for a state-value distribution.

    The target distribution on atoms ``r_t + discount_t * v_atoms_t`` (with
    probabilities ``softmax(v_logits_t)``) is projected onto ``v_atoms_tm1``;
    the loss is the cross entropy to ``softmax(v_logits_tm1)``.

    See "A Distributional Perspective on Reinforcement Learning" by Bellemare,
    Dabney and Munos (https://arxiv.org/abs/1707.06887).

    Args:
      v_atoms_tm1: float ``[N]`` support at time t-1 (increasing).
      v_logits_tm1: float ``[N]`` logits at time t-1.
      r_t: float ``()`` reward.
      discount_t: float ``()`` discount.
      v_atoms_t: float ``[M]`` support at time t.
      v_logits_t: float ``[M]`` logits at time t.
      stop_target_gradients: stop gradients into the projected target.

    Returns:
      float scalar loss.
    """
    _check([
        ("v_atoms_tm1", v_atoms_tm1, 1, "float"), ("v_logits_tm1", v_logits_tm1, 1, "float"),
        ("r_t", r_t, 0, "float"), ("discount_t", discount_t, 0, "float"),
        ("v_atoms_t", v_atoms_t, 1, "float"), ("v_logits_t", v_logits_t, 1, "float"),
    ])
    check_same_shape({"v_logits_tm1": v_logits_tm1, "v_atoms_tm1": v_atoms_tm1}, reference="v_atoms_tm1")
    check_same_shape({"v_logits_t": v_logits_t, "v_atoms_t": v_atoms_t}, reference="v_atoms_t")
    target_z = r_t + discount_t * v_atoms_t
    target = categorical_l2_project(target_z, torch.softmax(v_logits_t, dim=-1), v_atoms_tm1)
    target = maybe_stop_gradient(target, stop_target_gradients)
    return categorical_cross_entropy(target, v_logits_tm1)


def _check_categorical_q(q_atoms_tm1, q_logits_tm1, a_tm1, r_t, discount_t, q_atoms_t, q_logits_t):
    _check([
        ("q_atoms_tm1", q_atoms_tm1, 1, "float"), ("q_logits_tm1", q_logits_tm1, 2, "float"),
        ("a_tm1", a_tm1, 0, "int"), ("r_t", r_t, 0, "float"), ("discount_t", discount_t, 0, "float"),
        ("q_atoms_t", q_atoms_t, 1, "float"), ("q_logits_t", q_logits_t, 2, "float"),
    ])
    if q_logits_tm1.shape[1] != q_atoms_tm1.shape[0]:
        raise ValueError(
            f"q_logits_tm1: expected shape (*, {q_atoms_tm1.shape[0]}) (one logit per atom of q_atoms_tm1), "
            f"got {tuple(q_logits_tm1.shape)}"
        )
    if tuple(q_logits_t.shape) != (q_logits_tm1.shape[0], q_atoms_t.shape[0]):
        raise ValueError(
            f"q_logits_t: expected shape ({q_logits_tm1.shape[0]}, {q_atoms_t.shape[0]}) "
            f"(actions of q_logits_tm1, atoms of q_atoms_t), got {tuple(q_logits_t.shape)}"
        )


def categorical_q_learning(
    q_atoms_tm1: torch.Tensor,
    q_logits_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_atoms_t: torch.Tensor,
    q_logits_t: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Categorical (C51) Q-learning loss.

    The bootstrap action is greedy w.r.t. the mean of the time-t distributions;
    ties go to the lowest index (``argmax``).

    See "A Distributional Perspective on Reinforcement Learning" by Bellemare,
    Dabney and Munos (https://arxiv.org/abs/1707.06887).

    Args:
      q_atoms_tm1: float ``[N]`` support at time t-1 (increasing).
      q_logits_tm1: float ``[A, N]`` logits per action at time t-1.
      a_tm1: integer ``()`` action taken at time t-1, in ``[0, A)``.
      r_t: float ``()`` reward.
      discount_t: float ``()`` discount.
      q_atoms_t: float ``[M]`` support at time t.
      q_logits_t: float ``[A, M]`` logits per action at time t.
      stop_target_gradients: stop gradients into the projected target.

    Returns:
      float scalar loss.
    """
    _check_categorical_q(q_atoms_tm1, q_logits_tm1, a_tm1, r_t, discount_t, q_atoms_t, q_logits_t)
    target_z = r_t + discount_t * q_atoms_t
    q_t_probs = torch.softmax(q_logits_t, dim=-1)
    q_t_mean = torch.sum(q_t_probs * q_atoms_t.unsqueeze(0), dim=1)
    p_target_z = _select_row(q_t_probs, torch.argmax(q_t_mean))
    target = categorical_l2_project(target_z, p_target_z, q_atoms_tm1)
    target = maybe_stop_gradient(target, stop_target_gradients)
    return categorical_cross_entropy(target, _select_row(q_logits_tm1, a_tm1))


def categorical_double_q_learning(
    q_atoms_tm1: torch.Tensor,
    q_logits_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    q_atoms_t: torch.Tensor,
    q_logits_t: torch.Tensor,
    q_t_selector: torch.Tensor,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Categorical double Q-learning loss: bootstrap action = ``argmax(q_t_selector)``.

    See Bellemare et al. (https://arxiv.org/abs/1707.06887) and "Double
    Q-learning" by van Hasselt (NeurIPS 2010).

    Args:
      q_atoms_tm1: float ``[N]`` support at time t-1 (increasing).
      q_logits_tm1: float ``[A, N]`` logits per action at time t-1.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward.
      discount_t: float ``()`` discount.
      q_atoms_t: float ``[M]`` support at time t.
      q_logits_t: float ``[A, M]`` logits per action at time t (evaluation).
      q_t_selector: float ``[A]`` values used to pick the bootstrap action.
      stop_target_gradients: stop gradients into the projected target.

    Returns:
      float scalar loss.
    """
    _check_categorical_q(q_atoms_tm1, q_logits_tm1, a_tm1, r_t, discount_t, q_atoms_t, q_logits_t)
    _check([("q_t_selector", q_t_selector, 1, "float")])
    if q_t_selector.shape[0] != q_logits_t.shape[0]:
        raise ValueError(
            f"q_t_selector: expected shape ({q_logits_t.shape[0]},) (one value per action), "
            f"got {tuple(q_t_selector.shape)}"
        )
    target_z = r_t + discount_t * q_atoms_t
    p_target_z = torch.softmax(_select_row(q_logits_t, torch.argmax(q_t_selector)), dim=-1)
    target = categorical_l2_project(target_z, p_target_z, q_atoms_tm1)
    target = maybe_stop_gradient(target, stop_target_gradients)
    return categorical_cross_entropy(target, _select_row(q_logits_tm1, a_tm1))


def _check_huber_param(huber_param):
    if isinstance(huber_param, torch.Tensor):
        check_float(huber_param, "huber_param")
    elif isinstance(huber_param, bool) or not isinstance(huber_param, (int, float)):
        raise TypeError(f"huber_param: expected a float or a float tensor, got {type(huber_param).__name__}")
    elif huber_param < 0:
        raise ValueError(f"huber_param: expected a number >= 0, got {huber_param}")


def _quantile_loss_terms(delta, tau, huber_param):
    """Elementwise quantile (Huber) loss ``|tau - 1{delta < 0}| * rho(delta)``."""
    # The indicator is piecewise constant: it has no gradient to stop.
    indicator = (delta < 0).to(delta.dtype)
    weight = torch.abs(tau - indicator)
    if isinstance(huber_param, torch.Tensor):
        loss = torch.where(huber_param > 0, huber_loss(delta, huber_param), torch.abs(delta))
    elif huber_param > 0:
        loss = huber_loss(delta, huber_param)
    else:
        loss = torch.abs(delta)
    return weight * loss


def quantile_regression_loss(
    dist_src: torch.Tensor,
    tau_src: torch.Tensor,
    dist_target: torch.Tensor,
    huber_param: float = 0.0,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """(Huber) quantile regression loss between two quantile-valued distributions.

    ``sum_i mean_j |tau_i - 1{d_ij < 0}| * rho(d_ij)`` with
    ``d_ij = dist_target[j] - dist_src[i]`` and ``rho`` the absolute value
    (``huber_param == 0``) or ``huber_loss(., huber_param)`` (not divided by
    ``huber_param``, as in rlax).

    See "Distributional Reinforcement Learning with Quantile Regression" by
    Dabney et al. (https://arxiv.org/abs/1710.10044).

    Note: rlax's flag only stops the gradient of the indicator, which has none,
    so in rlax ``dist_target`` always receives gradient.  Here
    ``stop_target_gradients=True`` detaches ``dist_target`` as the name says;
    pass False for rlax's behaviour.

    Args:
      dist_src: float ``[N]`` source quantile locations.
      tau_src: float ``[N]`` quantile levels of ``dist_src`` in ``(0, 1)``.
      dist_target: float ``[M]`` target samples or quantile locations.
      huber_param: Huber threshold ``>= 0`` (float or float tensor of shape ``()``).
      stop_target_gradients: stop gradients into ``dist_target``.

    Returns:
      float scalar loss.
    """
    _check([("dist_src", dist_src, 1, "float"), ("tau_src", tau_src, 1, "float"),
            ("dist_target", dist_target, 1, "float")])
    check_same_shape({"tau_src": tau_src, "dist_src": dist_src}, reference="dist_src")
    _check_huber_param(huber_param)
    dist_target = maybe_stop_gradient(dist_target, stop_target_gradients)
    delta = dist_target.unsqueeze(0) - dist_src.unsqueeze(1)  # [N, M]
    loss = _quantile_loss_terms(delta, tau_src.unsqueeze(1), huber_param)
    return torch.sum(torch.mean(loss, dim=-1))


def _check_quantile_q(dist_q_tm1, tau_q_tm1, a_tm1, r_t, discount_t, dist_q_t, name_t="dist_q_t"):
    _check([
        ("dist_q_tm1", dist_q_tm1, 2, "float"), ("tau_q_tm1", tau_q_tm1, 1, "float"),
        ("a_tm1", a_tm1, 0, "int"), ("r_t", r_t, 0, "float"), ("discount_t", discount_t, 0, "float"),
        (name_t, dist_q_t, 2, "float"),
    ])
    if tau_q_tm1.shape[0] != dist_q_tm1.shape[0]:
        raise ValueError(
            f"tau_q_tm1: expected shape ({dist_q_tm1.shape[0]},) (one level per quantile of dist_q_tm1 "
            f"{tuple(dist_q_tm1.shape)}), got {tuple(tau_q_tm1.shape)}"
        )
    if dist_q_t.shape[1] != dist_q_tm1.shape[1]:
        raise ValueError(
            f"{name_t}: expected shape (*, {dist_q_tm1.shape[1]}) (quantiles x actions, same actions as "
            f"dist_q_tm1), got {tuple(dist_q_t.shape)}"
        )


def quantile_q_learning(
    dist_q_tm1: torch.Tensor,
    tau_q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    dist_q_t_selector: torch.Tensor,
    dist_q_t: torch.Tensor,
    huber_param: float = 0.0,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Quantile-regression Q-learning (QR-DQN) loss.

    The bootstrap action is greedy w.r.t. the mean over quantiles of
    ``dist_q_t_selector`` (double-Q style when it comes from another network).

    See "Distributional Reinforcement Learning with Quantile Regression" by
    Dabney et al. (https://arxiv.org/abs/1710.10044).

    Args:
      dist_q_tm1: float ``[N, A]`` quantile locations per action at time t-1.
      tau_q_tm1: float ``[N]`` quantile levels.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward.
      discount_t: float ``()`` discount.
      dist_q_t_selector: float ``[M, A]`` quantiles used to pick the action.
      dist_q_t: float ``[M, A]`` target quantiles at time t.
      huber_param: Huber threshold ``>= 0``.
      stop_target_gradients: stop gradients into the target.

    Returns:
      float scalar loss.
    """
    _check_quantile_q(dist_q_tm1, tau_q_tm1, a_tm1, r_t, discount_t, dist_q_t)
    _check([("dist_q_t_selector", dist_q_t_selector, 2, "float")])
    if dist_q_t_selector.shape[1] != dist_q_tm1.shape[1]:
        raise ValueError(
            f"dist_q_t_selector: expected shape (*, {dist_q_tm1.shape[1]}) (same actions as dist_q_tm1), "
            f"got {tuple(dist_q_t_selector.shape)}"
        )
    dist_qa_tm1 = _select_column(dist_q_tm1, a_tm1)
    a_t = torch.argmax(torch.mean(dist_q_t_selector, dim=0))
    dist_target = r_t + discount_t * _select_column(dist_q_t, a_t)
    dist_target = maybe_stop_gradient(dist_target, stop_target_gradients)
    return quantile_regression_loss(
        dist_qa_tm1, tau_q_tm1, dist_target, huber_param, stop_target_gradients=stop_target_gradients
    )


def quantile_expected_sarsa(
    dist_q_tm1: torch.Tensor,
    tau_q_tm1: torch.Tensor,
    a_tm1: torch.Tensor,
    r_t: torch.Tensor,
    discount_t: torch.Tensor,
    dist_q_t: torch.Tensor,
    probs_a_t: torch.Tensor,
    huber_param: float = 0.0,
    stop_target_gradients: bool = True,
) -> torch.Tensor:
    """Quantile-regression expected SARSA loss: the QR loss to each next action's
    target, weighted by the policy's probabilities ``probs_a_t``.

    Args:
      dist_q_tm1: float ``[N, A]`` quantile locations per action at time t-1.
      tau_q_tm1: float ``[N]`` quantile levels.
      a_tm1: integer ``()`` action taken at time t-1.
      r_t: float ``()`` reward.
      discount_t: float ``()`` discount.
      dist_q_t: float ``[M, A]`` target quantiles at time t.
      probs_a_t: float ``[A]`` action probabilities at time t.
      huber_param: Huber threshold ``>= 0``.
      stop_target_gradients: stop gradients into the target and ``probs_a_t``.

    Returns:
      float scalar loss.
    """
    _check_quantile_q(dist_q_tm1, tau_q_tm1, a_tm1, r_t, discount_t, dist_q_t)
    _check([("probs_a_t", probs_a_t, 1, "float")])
    if probs_a_t.shape[0] != dist_q_t.shape[1]:
        raise ValueError(
            f"probs_a_t: expected shape ({dist_q_t.shape[1]},) (one probability per action), "
            f"got {tuple(probs_a_t.shape)}"
        )
    _check_huber_param(huber_param)
    dist_qa_tm1 = _select_column(dist_q_tm1, a_tm1)  # [N]
    dist_target = maybe_stop_gradient(r_t + discount_t * dist_q_t, stop_target_gradients)  # [M, A]
    probs_a_t = maybe_stop_gradient(probs_a_t, stop_target_gradients)
    delta = dist_target.unsqueeze(0) - dist_qa_tm1.reshape(-1, 1, 1)  # [N, M, A]
    loss = _quantile_loss_terms(delta, tau_q_tm1.reshape(-1, 1, 1), huber_param)
    per_action_loss = torch.sum(torch.mean(loss, dim=1), dim=0)  # [A]
    return torch.sum(per_action_loss * probs_a_t)
