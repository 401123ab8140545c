"""Policy-gradient losses for one sequence of experience (rlax's ``policy_gradients``).

Each function takes one sequence (time on axis 0) and returns a scalar (or, for
``dpg_loss``, a per-dimension) loss whose gradient is the named policy-gradient
update.  Batch over sequences with ``torch.func.vmap``.  Gradient stopping is an
explicit argument, ``use_stop_gradient=True`` by default as in rlax.
"""

from __future__ import annotations

import torch

from funrl._checks import check_float, check_int, check_rank, check_same_shape
from funrl.losses.base import batched_index, l2_loss, maybe_stop_gradient

__all__ = [
    "policy_gradient_loss",
    "entropy_loss",
    "clipped_surrogate_pg_loss",
    "dpg_loss",
    "qpg_loss",
    "rm_loss",
    "rpg_loss",
]


def _check_logits_and_sequences(logits_t, name_logits, **seqs):
    check_rank(logits_t, 2, name_logits)
    check_float(logits_t, name_logits)
    (t,) = logits_t.shape[:1]
    for name, x in seqs.items():
        check_rank(x, 1, name)
        if x.shape[0] != t:
            raise ValueError(
                f"{name}: expected shape ({t},) (the time axis of {name_logits} {tuple(logits_t.shape)}), "
                f"got {tuple(x.shape)}"
            )


def policy_gradient_loss(
    logits_t: torch.Tensor,
    a_t: torch.Tensor,
    adv_t: torch.Tensor,
    w_t: torch.Tensor,
    use_stop_gradient: bool = True,
) -> torch.Tensor:
    """REINFORCE-style policy-gradient loss ``-mean(w_t * adv_t * log pi(a_t))``.

    See "Simple Statistical Gradient-Following Algorithms for Connectionist
    Reinforcement Learning" by Williams (1992).

    Args:
      logits_t: float ``[T, A]`` unnormalised action preferences.
      a_t: integer ``[T]`` actions sampled from ``logits_t``, in ``[0, A)``.
      adv_t: float ``[T]`` advantages of those actions.
      w_t: float ``[T]`` per-timestep weights (e.g. masks).
      use_stop_gradient: stop gradients into ``adv_t``.

    Returns:
      float scalar whose gradient w.r.t. the logits is the policy gradient.
    """
    _check_logits_and_sequences(logits_t, "logits_t", a_t=a_t, adv_t=adv_t, w_t=w_t)
    check_int(a_t, "a_t")
    check_float(adv_t, "adv_t")
    check_float(w_t, "w_t")
    log_pi_a_t = batched_index(torch.log_softmax(logits_t, dim=-1), a_t)
    adv_t = maybe_stop_gradient(adv_t, use_stop_gradient)
    return torch.mean(-log_pi_a_t * adv_t * w_t)


def entropy_loss(logits_t: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
    """Negative mean weighted entropy of softmax policies: ``-mean(w_t * H(pi_t))``.

    Minimising it maximises entropy.  See "Function Optimization using
    Connectionist Reinforcement Learning Algorithms" by Williams and Peng (1991).

    Args:
      logits_t: float ``[T, A]`` unnormalised action preferences.
      w_t: float ``[T]`` per-timestep weights.

    Returns:
      float scalar.
    """
    _check_logits_and_sequences(logits_t, "logits_t", w_t=w_t)
    check_float(w_t, "w_t")
    log_p = torch.log_softmax(logits_t, dim=-1)
    entropy_t = -torch.sum(torch.exp(log_p) * log_p, dim=-1)
    return -torch.mean(entropy_t * w_t)


def _compute_advantages(logits_t, q_t, use_stop_gradient=True):
    """Softmax policy and advantages ``q - sum(pi * q)``; ``q_t`` optionally stopped."""
    policy_t = torch.softmax(logits_t, dim=-1)
    q_t = maybe_stop_gradient(q_t, use_stop_gradient)
    baseline_t = torch.sum(policy_t * q_t, dim=-1, keepdim=True)
    return policy_t, q_t - baseline_t


def _check_logits_q(logits_t, q_t):
    check_rank(logits_t, 2, "logits_t")
    check_rank(q_t, 2, "q_t")
    check_float(logits_t, "logits_t")
    check_float(q_t, "q_t")
    check_same_shape({"q_t": q_t, "logits_t": logits_t}, reference="logits_t")


def qpg_loss(logits_t: torch.Tensor, q_t: torch.Tensor, use_stop_gradient: bool = True) -> torch.Tensor:
    """Q-based policy gradient (QPG) loss ``-mean_t sum_a pi(a) * A(a)``.

    See "Actor-Critic Policy Optimization in Partially Observable Multiagent
    Environments" by Srinivasan, Lanctot et al. (NeurIPS 2018).

    As in rlax, ``q_t`` never receives gradient; ``use_stop_gradient`` controls
    whether the advantages (which depend on the policy through the baseline)
    are treated as constants.

    Args:
      logits_t: float ``[T, A]`` unnormalised action preferences.
      q_t: float ``[T, A]`` action values.
      use_stop_gradient: stop gradients through the advantages.

    Returns:
      float scalar.
    """
    _check_logits_q(logits_t, q_t)
    policy_t, advantage_t = _compute_advantages(logits_t, q_t)
    advantage_t = maybe_stop_gradient(advantage_t, use_stop_gradient)
    return torch.mean(torch.sum(-policy_t * advantage_t, dim=1), dim=0)


def rm_loss(logits_t: torch.Tensor, q_t: torch.Tensor, use_stop_gradient: bool = True) -> torch.Tensor:
    """Regret-matching policy gradient (RMPG) loss ``-mean_t sum_a pi(a) * relu(A(a))``.

    See "Actor-Critic Policy Optimization in Partially Observable Multiagent
    Environments" by Srinivasan, Lanctot et al. (NeurIPS 2018).

    Args:
      logits_t: float ``[T, A]`` unnormalised action preferences.
      q_t: float ``[T, A]`` action values (never differentiated, as in rlax).
      use_stop_gradient: stop gradients through the thresholded regrets.

    Returns:
      float scalar.
    """
    _check_logits_q(logits_t, q_t)
    policy_t, advantage_t = _compute_advantages(logits_t, q_t)
    action_regret_t = maybe_stop_gradient(torch.relu(advantage_t), use_stop_gradient)
    return torch.mean(torch.sum(-policy_t * action_regret_t, dim=1), dim=0)


def rpg_loss(logits_t: torch.Tensor, q_t: torch.Tensor, use_stop_gradient: bool = True) -> torch.Tensor:
    """Regret policy gradient (RPG) loss ``mean_t sum_a relu(A(a))``.

    See "Actor-Critic Policy Optimization in Partially Observable Multiagent
    Environments" by Srinivasan, Lanctot et al. (NeurIPS 2018).

    Args:
      logits_t: float ``[T, A]`` unnormalised action preferences.
      q_t: float ``[T, A]`` action values.
      use_stop_gradient: stop gradients into ``q_t``.

    Returns:
      float scalar (the total regret).
    """
    _check_logits_q(logits_t, q_t)
    _, adv_t = _compute_advantages(logits_t, q_t, use_stop_gradient)
    return torch.mean(torch.sum(torch.relu(adv_t), dim=1), dim=0)


def clipped_surrogate_pg_loss(
    prob_ratios_t: torch.Tensor,
    adv_t: torch.Tensor,
    epsilon: float | torch.Tensor,
    use_stop_gradient: bool = True,
) -> torch.Tensor:
    """PPO's clipped surrogate loss ``-mean(min(r A, clip(r, 1-eps, 1+eps) A))``.

    See "Proximal Policy Optimization Algorithms" by Schulman et al.
    (https://arxiv.org/abs/1707.06347).  ``min`` ignores NaNs (``torch.fmin``)
    as rlax's ``jnp.fmin``.

    Args:
      prob_ratios_t: float ``[T]`` ratios ``pi(a_t|s_t) / pi_old(a_t|s_t)``.
      adv_t: float ``[T]`` advantages.
      epsilon: clipping radius, a Python float ``>= 0`` or a float tensor of
        shape ``()`` (e.g. a vmapped hyper-parameter).
      use_stop_gradient: stop gradients into ``adv_t``.

    Returns:
      float scalar.
    """
    check_rank(prob_ratios_t, 1, "prob_ratios_t")
    check_float(prob_ratios_t, "prob_ratios_t")
    check_rank(adv_t, 1, "adv_t")
    check_float(adv_t, "adv_t")
    check_same_shape({"adv_t": adv_t, "prob_ratios_t": prob_ratios_t}, reference="prob_ratios_t")
    if isinstance(epsilon, torch.Tensor):
        check_float(epsilon, "epsilon")
    elif isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"epsilon: expected a float or a float tensor, got {type(epsilon).__name__}")
    elif epsilon < 0:
        raise ValueError(f"epsilon: expected a number >= 0, got {epsilon}")
    adv_t = maybe_stop_gradient(adv_t, use_stop_gradient)
    eps = torch.as_tensor(epsilon, dtype=prob_ratios_t.dtype, device=prob_ratios_t.device)
    clipped_ratios_t = torch.minimum(torch.maximum(prob_ratios_t, 1.0 - eps), 1.0 + eps)
    clipped_objective = torch.fmin(prob_ratios_t * adv_t, clipped_ratios_t * adv_t)
    return -torch.mean(clipped_objective)


def dpg_loss(
    a_t: torch.Tensor,
    dqda_t: torch.Tensor,
    dqda_clipping: float | None = None,
    use_stop_gradient: bool = True,
) -> torch.Tensor:
    """Deterministic policy gradient (DPG) loss ``0.5 * ((a + dq/da) - a)**2``.

    The target ``a_t + dqda_t`` is a constant (with ``use_stop_gradient``), so the
    gradient of the loss w.r.t. ``a_t`` is ``-dqda_t``: descending it moves the
    action up the critic's gradient.  See "Deterministic Policy Gradient
    Algorithms" by Silver et al. (ICML 2014).

    Args:
      a_t: float ``[D]`` continuous action.
      dqda_t: float ``[D]`` gradient of Q(s, a) w.r.t. ``a`` at ``a_t``.
      dqda_clipping: if given (``> 0``), ``dqda_t`` is rescaled to L2 norm at
        most ``dqda_clipping``.
      use_stop_gradient: stop gradients into the target.

    Returns:
      float ``[D]`` per-dimension loss (rlax's convention; sum or mean it).
    """
    check_rank(a_t, 1, "a_t")
    check_rank(dqda_t, 1, "dqda_t")
    check_float(a_t, "a_t")
    check_float(dqda_t, "dqda_t")
    check_same_shape({"dqda_t": dqda_t, "a_t": a_t}, reference="a_t")
    if dqda_clipping is not None:
        if isinstance(dqda_clipping, torch.Tensor):
            check_float(dqda_clipping, "dqda_clipping")
        elif isinstance(dqda_clipping, bool) or not isinstance(dqda_clipping, (int, float)):
            raise TypeError(f"dqda_clipping: expected a float or None, got {type(dqda_clipping).__name__}")
        elif dqda_clipping <= 0:
            raise ValueError(f"dqda_clipping: expected a number > 0, got {dqda_clipping}")
        max_norm = torch.as_tensor(dqda_clipping, dtype=dqda_t.dtype, device=dqda_t.device)
        norm = torch.sqrt(torch.sum(dqda_t * dqda_t))
        # max_norm / max(norm, max_norm) == min(1, max_norm / norm) without a
        # 0/0 when dqda_t is zero.
        dqda_t = dqda_t * (max_norm / torch.maximum(norm, max_norm))
    target_tm1 = maybe_stop_gradient(dqda_t + a_t, use_stop_gradient)
    return l2_loss(target_tm1 - a_t)
