"""Sequence-level losses for RL fine-tuning of language models (GRPO, RLOO, PPO-RLHF).

Pure functions of tensors in rlax style.  A batch holds ``B`` completions of
at most ``L`` tokens over a vocabulary of ``V``; a bool ``mask`` of shape
``[B, L]`` (or ``[..., L]``) is ``True`` at real completion tokens and
``False`` at padding (and at prompt tokens, which are not optimised).

Every function is safe against garbage at masked positions: logits, log-probs,
advantages or token ids there may be anything (``inf``, ``nan``, huge values,
out-of-range ids) and change neither the outputs nor the gradients, because
inputs are replaced by harmless values with ``torch.where`` *before* any
arithmetic (a single ``where`` on the output alone would still send
``0 * nan = nan`` into the backward pass).  No function reads a tensor value in
Python, so all of them work under ``torch.func.vmap``, ``torch.func.grad`` and
``torch.compile``; argument checks look only at dtypes and shapes.

Advantages: :func:`group_relative_advantages` (GRPO, "DeepSeekMath", Shao et al.
2024; Dr. GRPO, Liu et al. 2025) and :func:`leave_one_out_advantages` (RLOO,
Ahmadian et al. 2024).  Losses: :func:`token_clipped_surrogate_loss` (PPO/GRPO/DAPO
token-level clipped surrogate) aggregated by :func:`masked_aggregate`.  KL control:
:func:`kl_divergence_estimate` (k1/k2/k3 of Schulman's "Approximating KL
Divergence", http://joschu.net/blog/kl-approx.html),
:func:`kl_divergence_from_logits` (exact per-token KL) and
:func:`kl_penalized_rewards` (KL in the reward, Ziegler et al. 2019).
Formulas were checked against TRL 1.16 (``GRPOTrainer._compute_advantages`` /
``_compute_loss``, ``RLOOTrainer``, ``trl.trainer.utils.nanstd``).
"""

from __future__ import annotations

import torch

from funrl._checks import check_dtype, check_float, check_int, check_positive, check_rank, check_tensor

__all__ = [
    "sequence_log_probs",
    "masked_sum",
    "masked_mean",
    "masked_whiten",
    "masked_entropy",
    "kl_divergence_estimate",
    "kl_divergence_from_logits",
    "group_relative_advantages",
    "leave_one_out_advantages",
    "masked_aggregate",
    "token_clipped_surrogate_loss",
    "token_clip_fraction",
    "kl_penalized_rewards",
]

_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")
_NORMALIZE = ("group", "batch", "none")
_ESTIMATORS = ("k1", "k2", "k3")


# ----------------------------------------------------------------------------- checks and helpers
def _check_mask(mask, shape, ref: str, name: str = "mask") -> torch.Tensor:
    """``mask`` must be a bool tensor of ``shape`` (the relevant shape of argument ``ref``)."""
    check_tensor(mask, name)
    check_dtype(mask, torch.bool, name)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (from {ref}), got {tuple(mask.shape)}")
    return mask


def _check_like(x, ref_tensor, name: str, ref: str) -> torch.Tensor:
    """``x`` must be a float tensor of the same shape as ``ref_tensor``."""
    check_float(x, name)
    if x.shape != ref_tensor.shape:
        raise ValueError(f"{name}: expected shape {tuple(ref_tensor.shape)} (the shape of {ref}), got {tuple(x.shape)}")
    return x


def _check_choice(value, choices, name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def _check_epsilon(value, name: str) -> None:
    if isinstance(value, torch.Tensor):
        check_float(value, name)
    else:
        check_positive(value, name, allow_zero=True)


def _zero_where_not(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` else an exact 0 (and a zero gradient, even if ``x`` is nan there)."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """``sqrt(v)`` for ``v >= 0`` whose gradient at ``v == 0`` is 0 instead of ``inf * 0 = nan``."""
    positive = v > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, v, torch.ones_like(v))), torch.zeros_like(v))


def _p_log_p_terms(log_p: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``p * other`` with the convention ``0 * anything = 0`` (also for ``-inf`` logits), in value and gradient."""
    p = torch.exp(log_p)
    positive = p > 0
    return p * torch.where(positive, other, torch.zeros_like(other))


# ----------------------------------------------------------------------------- masked reductions
def masked_sum(x: torch.Tensor, mask: torch.Tensor, axis: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Sum of ``x`` over the entries where ``mask`` is True.

    Args:
      x: float ``[...]``.
      mask: bool, the shape of ``x``.
      axis: ``None`` (all axes), an axis or a tuple of axes.

    Returns:
      float: a scalar for ``axis=None``, else ``x`` reduced over ``axis``.
      Masked entries contribute exactly 0 whatever their value (also inf/nan).
    """
    check_float(x, "x")
    _check_mask(mask, x.shape, "x")
    masked = _zero_where_not(mask, x)
    return masked.sum() if axis is None else masked.sum(dim=axis)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, axis: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True; 0 where there are none.

    Args:
      x: float ``[...]``.
      mask: bool, the shape of ``x``.
      axis: ``None`` (all axes), an axis or a tuple of axes.

    Returns:
      float: a scalar for ``axis=None``, else ``x`` reduced over ``axis``.  An
      empty selection gives exactly 0 (never nan): the count is clamped to 1.
    """
    total = masked_sum(x, mask, axis)
    count = mask.sum() if axis is None else mask.sum(dim=axis)
    return total / torch.clamp(count, min=1).to(x.dtype)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Whiten ``x`` with the mean and variance of its real entries (TRL's ``masked_whiten``).

    ``(x - mean) / sqrt(var + eps)`` with ``mean`` and ``var`` taken over all
    entries where ``mask`` is True.  As in TRL's ``masked_whiten`` (its PPO
    trainer's helper, ``masked_var(..., unbiased=True)``; no longer shipped in
    TRL 1.16) the variance is the *unbiased* one, with Bessel's correction: ``sum((x - mean)**2) / (n - 1)`` for ``n`` real entries.  With
    ``n <= 1`` the variance is taken as 0 (TRL raises for ``n == 0`` and divides
    by zero for ``n == 1``), so a single real entry whitens to 0.

    Args:
      x: float ``[...]`` (e.g. per-token advantages ``[B, L]``).
      mask: bool, the shape of ``x``.
      shift_mean: ``False`` adds the mean back after scaling (TRL's behaviour:
        the result keeps the mean and gets unit variance).
      eps: added to the variance.

    Returns:
      float, the shape of ``x``; exactly 0 at masked entries.
    """
    check_float(x, "x")
    _check_mask(mask, x.shape, "x")
    check_positive(eps, "eps", allow_zero=True)
    n = mask.sum().to(x.dtype)
    mean = masked_sum(x, mask) / torch.clamp(n, min=1)
    centered = _zero_where_not(mask, x - mean)
    var = torch.sum(centered * centered) / torch.clamp(n - 1, min=1)
    whitened = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_where_not(mask, whitened)


# ----------------------------------------------------------------------------- per-token quantities
def sequence_log_probs(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities ``log softmax(logits)[token]`` of completions.

    Computed as ``logits[token] - logsumexp(logits)`` (no second ``[..., L, V]``
    tensor of log-probs).  Logits at masked positions are replaced by 0 and token
    ids there by 0 *before* indexing, so garbage (inf/nan logits, out-of-range
    or negative ids) at padding neither raises nor leaks nan into values or
    gradients.  Out-of-range ids at *real* positions still raise (``gather``'s
    bounds check), as they are bugs.

    Args:
      logits: float ``[..., L, V]``; ``logits[..., t, :]`` scores token ``t``
        (already shifted: the model's prediction for the token at ``t``).
      tokens: integer ``[..., L]`` token ids in ``[0, V)`` at real positions.
      mask: bool ``[..., L]``, True at real completion tokens.

    Returns:
      float ``[..., L]``, exactly 0 where ``mask`` is False.
    """
    check_float(logits, "logits")
    if logits.ndim < 2:
        raise ValueError(f"logits: expected rank >= 2 ([..., L, V]), got shape {tuple(logits.shape)}")
    check_int(tokens, "tokens")
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"tokens: expected shape {tuple(logits.shape[:-1])} (logits' shape without V), got {tuple(tokens.shape)}"
        )
    _check_mask(mask, tokens.shape, "tokens")
    safe_logits = _zero_where_not(mask.unsqueeze(-1), logits)
    safe_tokens = torch.where(mask, tokens, torch.zeros_like(tokens)).long()  # gather wants int64 (or int32)
    picked = torch.gather(safe_logits, -1, safe_tokens.unsqueeze(-1)).squeeze(-1)
    return _zero_where_not(mask, picked - torch.logsumexp(safe_logits, dim=-1))


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token entropy ``H(softmax(logits)) = -sum_v p_v log p_v``, 0 where masked.

    ``-inf`` logits at real positions (banned tokens) are fine: ``0 log 0 = 0``
    in value and gradient.  Garbage logits at masked positions never give nan.

    Args:
      logits: float ``[..., L, V]``.
      mask: bool ``[..., L]``.

    Returns:
      float ``[..., L]``, exactly 0 where ``mask`` is False.
    """
    check_float(logits, "logits")
    if logits.ndim < 1:
        raise ValueError(f"logits: expected rank >= 1 ([..., V]), got shape {tuple(logits.shape)}")
    _check_mask(mask, logits.shape[:-1], "logits")
    log_p = torch.log_softmax(_zero_where_not(mask.unsqueeze(-1), logits), dim=-1)
    return _zero_where_not(mask, -torch.sum(_p_log_p_terms(log_p, log_p), dim=-1))


def kl_divergence_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || ref)`` from the log-probs of tokens sampled from ``pi``.

    With ``log r = ref_logp - logp`` (Schulman, "Approximating KL Divergence",
    http://joschu.net/blog/kl-approx.html):

    * ``k1 = -log r = logp - ref_logp``: unbiased, high variance, can be < 0;
    * ``k2 = (log r)**2 / 2``: biased (its expectation is not the KL), low variance;
    * ``k3 = (r - 1) - log r``: unbiased *per token* (``E_{x~p}[q/p - 1 - log q/p]
      = KL(p || q)``) and >= 0; GRPO's ``beta`` term (DeepSeekMath, TRL).

    For sequences sampled from ``pi``, the sum over tokens of k1 and of k3 are
    both unbiased for the sequence-level ``KL(pi || ref)`` (the per-token terms
    are unbiased given the prefix; the chain rule adds them up).

    **As a differentiable loss term the estimators do not give the KL's gradient.**
    With the sampled tokens held constant and the gradient flowing only through
    ``logp`` (as when ``beta * k3`` is added to the GRPO loss; cf. verl PR 2953,
    OpenRLHF PRs 1101/1309), ``grad k3 = (1 - ref/pi)(x) grad log pi(x)``, whose
    expectation under ``x ~ pi`` is ``-sum_x ref(x) grad log pi(x) =
    grad KL(ref || pi)``: for one token it is exactly the gradient of the
    *reverse* KL, not of ``KL(pi || ref)``.  For sequences the expected gradient
    of ``sum_t k3_t`` is ``sum_t E_{x_<t ~ pi}[grad KL(ref(.|x_<t) || pi(.|x_<t))]``
    with the prefix distribution held fixed, which is the gradient of neither
    sequence-level KL.  ``k1`` as a loss has expected gradient 0; ``k2`` as a
    loss has, per token, exactly ``grad KL(pi || ref)`` (again prefix held
    fixed).  An unbiased gradient of the sequence-level ``KL(pi || ref)`` is the
    score-function form ``E_pi[(sum_t k1_t) grad log pi(seq)]`` (put k1 in the
    reward, :func:`kl_penalized_rewards`, or use
    ``sum_t k1_t.detach() * sum_t logp_t``).  All of these statements are
    checked by exact enumeration in ``tests/test_sequence_losses.py``.

    Args:
      logp: float ``[..., L]`` log-probs under ``pi`` of the sampled tokens.
      ref_logp: float ``[..., L]`` log-probs under the reference of the same tokens.
      estimator: ``"k1"``, ``"k2"`` or ``"k3"``.
      mask: optional bool ``[..., L]``; masked entries give 0 (garbage there
        never leaks nan into values or gradients).

    Returns:
      float ``[..., L]``.
    """
    check_float(logp, "logp")
    _check_like(ref_logp, logp, "ref_logp", "logp")
    _check_choice(estimator, _ESTIMATORS, "estimator")
    if mask is not None:
        _check_mask(mask, logp.shape, "logp")
        log_r = _zero_where_not(mask, ref_logp - logp)
    else:
        log_r = ref_logp - logp
    if estimator == "k1":
        kl = -log_r
    elif estimator == "k2":
        kl = 0.5 * log_r * log_r
    else:
        kl = torch.expm1(log_r) - log_r  # expm1: no cancellation of r - 1 for r near 1
    return kl if mask is None else _zero_where_not(mask, kl)


def kl_divergence_from_logits(
    logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact per-token ``KL(softmax(logits) || softmax(ref_logits))`` over the whole vocabulary.

    ``sum_v p_v (log p_v - log q_v)`` with ``0 log 0 = 0``; a token with
    ``p_v > 0 = q_v`` gives ``+inf`` (the true value).

    Args:
      logits: float ``[..., L, V]`` of the policy ``pi``.
      ref_logits: float ``[..., L, V]`` of the reference.
      mask: optional bool ``[..., L]``; masked entries give 0.

    Returns:
      float ``[..., L]``.
    """
    check_float(logits, "logits")
    if logits.ndim < 1:
        raise ValueError(f"logits: expected rank >= 1 ([..., V]), got shape {tuple(logits.shape)}")
    _check_like(ref_logits, logits, "ref_logits", "logits")
    if mask is not None:
        _check_mask(mask, logits.shape[:-1], "logits")
        logits = _zero_where_not(mask.unsqueeze(-1), logits)
        ref_logits = _zero_where_not(mask.unsqueeze(-1), ref_logits)
    log_p = torch.log_softmax(logits, dim=-1)
    log_q = torch.log_softmax(ref_logits, dim=-1)
    kl = torch.sum(_p_log_p_terms(log_p, log_p - log_q), dim=-1)
    return kl if mask is None else _zero_where_not(mask, kl)


# ----------------------------------------------------------------------------- advantages
def _check_group(rewards) -> int:
    check_float(rewards, "rewards")
    if rewards.ndim < 1 or rewards.shape[-1] < 2:
        raise ValueError(
            f"rewards: expected shape [..., G] with G >= 2 completions per prompt, got {tuple(rewards.shape)}"
        )
    return rewards.shape[-1]


def _group_centered(rewards: torch.Tensor) -> torch.Tensor:
    """``r - mean_group(r)``, exactly 0 when all rewards of a group are equal.

    Shifting by the group's first reward before averaging makes equal rewards
    give exact zeros (``mean([0.1] * 3) != 0.1`` in floating point).
    """
    shifted = rewards - rewards[..., :1]
    return shifted - shifted.mean(dim=-1, keepdim=True)


def group_relative_advantages(rewards: torch.Tensor, normalize: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages: each reward minus its group's mean, optionally scaled.

    ``rewards[..., i]`` is the reward of completion ``i`` of the ``G`` sampled
    for one prompt ("DeepSeekMath", Shao et al. 2024, https://arxiv.org/abs/2402.03300).

    * ``"group"``: ``(r - mean_group) / (std_group + eps)`` with the unbiased
      (``N - 1``) standard deviation, as TRL (``scale_rewards="group"``, its
      ``nanstd`` applies Bessel's correction) and DeepSeekMath;
    * ``"batch"``: ``(r - mean_group) / (std + eps)`` with the unbiased std of
      *all* elements of ``rewards`` (TRL's ``scale_rewards="batch"``; under
      ``vmap`` "all" means all of the per-example slice);
    * ``"none"``: ``r - mean_group`` (Dr. GRPO, Liu et al. 2025, "Understanding
      R1-Zero-Like Training", https://arxiv.org/abs/2503.20783: dividing by the
      std up-weights groups that are nearly all right or all wrong).

    When all ``G`` rewards of a group are equal its advantages are exactly 0
    (with every ``normalize``), so such groups add nothing to the loss.  The
    gradient w.r.t. ``rewards`` is finite there too.

    Args:
      rewards: float ``[..., G]``, ``G >= 2``.
      normalize: ``"group"``, ``"batch"`` or ``"none"``.
      eps: added to the std (TRL's 1e-4).

    Returns:
      float ``[..., G]``.
    """
    g = _check_group(rewards)
    _check_choice(normalize, _NORMALIZE, "normalize")
    check_positive(eps, "eps", allow_zero=True)
    centered = _group_centered(rewards)
    if normalize == "none":
        return centered
    if normalize == "group":
        std = _safe_sqrt(torch.sum(centered * centered, dim=-1, keepdim=True) / (g - 1))
    else:
        flat = rewards.reshape(-1)
        dev = flat - flat.mean()
        std = _safe_sqrt(torch.sum(dev * dev) / (flat.shape[0] - 1))
    return centered / (std + eps)


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO advantages ``A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean(r))``.

    REINFORCE with the leave-one-out baseline: "Buy 4 REINFORCE Samples, Get a
    Baseline for Free!" (Kool et al. 2019) and "Back to Basics: Revisiting
    REINFORCE Style Optimization for Learning from Human Feedback in LLMs"
    (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740); TRL's ``RLOOTrainer``
    computes the same baseline ``(sum - r_i) / (G - 1)``.  The baseline of
    completion ``i`` does not depend on ``r_i``, so the policy gradient stays
    unbiased.  Equal rewards give exactly 0.

    Args:
      rewards: float ``[..., G]``, ``G >= 2``.

    Returns:
      float ``[..., G]``.
    """
    g = _check_group(rewards)
    return _group_centered(rewards) * (g / (g - 1))


# ----------------------------------------------------------------------------- token-level losses
def _check_batch(per_token, mask, name: str) -> None:
    check_rank(per_token, 2, name)
    check_float(per_token, name)
    _check_mask(mask, per_token.shape, name)


def masked_aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean", max_tokens: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss over a batch of sequences to a scalar (the GRPO-family choices).

    * ``"token_mean"``: ``sum(real tokens) / #real tokens`` in the batch (DAPO, Yu
      et al. 2025; TRL ``loss_type="bnpo"``).  Every token weighs the same, so a
      long sequence weighs more than a short one; the normaliser depends on the
      batch's lengths, so the scale of a token's gradient varies from batch to batch.
    * ``"sequence_mean"``: mean over each sequence's tokens, then mean over the
      ``B`` sequences (original GRPO; TRL ``loss_type="grpo"``).  Every sequence
      weighs the same, so each token of a short sequence weighs more: a length
      bias that favours short correct answers (positive advantage, large
      per-token push) and lets wrong answers grow long (negative advantage
      diluted over many tokens), as Dr. GRPO (Liu et al. 2025) points out.
    * ``"constant"``: ``sum(real tokens) / (B * max_tokens)`` (Dr. GRPO; TRL
      ``loss_type="dr_grpo"``).  A constant normaliser: no length bias, every
      token's gradient has a batch-independent scale; the loss is smaller for
      batches of short sequences.

    Sequences without real tokens contribute 0 to every aggregation (and still
    count among the ``B`` of ``"sequence_mean"`` and ``"constant"``, as in TRL);
    an empty batch gives 0, never nan.

    Args:
      per_token: float ``[B, L]``.
      mask: bool ``[B, L]``.
      aggregation: ``"token_mean"``, ``"sequence_mean"`` or ``"constant"``.
      max_tokens: the normaliser of ``"constant"`` (the maximum completion
        length); defaults to ``L``.

    Returns:
      float scalar.
    """
    _check_batch(per_token, mask, "per_token")
    _check_choice(aggregation, _AGGREGATIONS, "aggregation")
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence_mean":
        return masked_mean(per_token, mask, axis=-1).mean()
    if max_tokens is None:
        max_tokens = per_token.shape[-1]
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens: expected an int, got {type(max_tokens).__name__}")
    check_positive(max_tokens, "max_tokens")
    return masked_sum(per_token, mask) / (per_token.shape[0] * max_tokens)


def _surrogate_inputs(logp, old_logp, advantages, mask, epsilon_low, epsilon_high):
    """Checks; returns the masked log-ratio, per-token advantages and clipping bounds."""
    _check_batch(logp, mask, "logp")
    _check_like(old_logp, logp, "old_logp", "logp")
    check_float(advantages, "advantages")
    if tuple(advantages.shape) not in (tuple(logp.shape[:1]), tuple(logp.shape)):
        raise ValueError(
            f"advantages: expected shape {tuple(logp.shape[:1])} (one per sequence) or {tuple(logp.shape)} "
            f"(per token, the shape of logp), got {tuple(advantages.shape)}"
        )
    _check_epsilon(epsilon_low, "epsilon_low")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    _check_epsilon(epsilon_high, "epsilon_high")
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    log_ratio = _zero_where_not(mask, logp - old_logp.detach())
    low, high = 1 - epsilon_low, 1 + epsilon_high
    if isinstance(low, torch.Tensor) != isinstance(high, torch.Tensor):  # torch.clamp takes two numbers or two tensors
        low, high = (b if isinstance(b, torch.Tensor) else logp.new_tensor(b) for b in (low, high))
    return log_ratio, _zero_where_not(mask, advantages), low, high


def token_clipped_surrogate_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float | torch.Tensor = 0.2,
    epsilon_high: float | torch.Tensor | None = None,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Token-level PPO clipped surrogate, as in GRPO, DAPO and TRL's ``GRPOTrainer``.

    Per real token ``t`` of sequence ``b``, with ``ratio = exp(logp - old_logp)``
    (``old_logp`` detached: the behaviour policy is a constant)::

        loss_bt = -min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A)

    then reduced by :func:`masked_aggregate`.  "Proximal Policy Optimization
    Algorithms" (Schulman et al. 2017); ``epsilon_high > epsilon_low`` is DAPO's
    "clip-higher" (Yu et al. 2025, https://arxiv.org/abs/2503.14476).

    Args:
      logp: float ``[B, L]`` log-probs of the sampled tokens under the policy
        being optimised (gradients flow through these).
      old_logp: float ``[B, L]`` log-probs under the policy that sampled them.
      advantages: float ``[B]`` (one per sequence, broadcast over its tokens:
        GRPO/RLOO) or ``[B, L]`` (per token: PPO with GAE).
      mask: bool ``[B, L]``.
      epsilon_low: lower clipping radius (a float or a float tensor of shape ``()``).
      epsilon_high: upper clipping radius; defaults to ``epsilon_low``.
      aggregation, max_tokens: see :func:`masked_aggregate`.

    Returns:
      float scalar.
    """
    log_ratio, adv, low, high = _surrogate_inputs(logp, old_logp, advantages, mask, epsilon_low, epsilon_high)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, min=low, max=high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    return masked_aggregate(per_token, mask, aggregation, max_tokens)


def token_clip_fraction(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float | torch.Tensor = 0.2,
    epsilon_high: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Fraction of real tokens whose clipped term is the one the surrogate's ``min`` selects.

    A token counts when clipping binds strictly: ``ratio > 1 + epsilon_high``
    with ``A > 0``, or ``ratio < 1 - epsilon_low`` with ``A < 0`` (TRL's
    ``clip_ratio/region_mean``).  Those tokens get no gradient from
    :func:`token_clipped_surrogate_loss`.

    Args:
      same as :func:`token_clipped_surrogate_loss`.

    Returns:
      float scalar in ``[0, 1]`` (0 for a batch without real tokens); no gradient.
    """
    log_ratio, adv, low, high = _surrogate_inputs(logp, old_logp, advantages, mask, epsilon_low, epsilon_high)
    ratio = torch.exp(log_ratio.detach())
    clipped = ((ratio > high) & (adv > 0)) | ((ratio < low) & (adv < 0))
    return masked_mean(clipped.to(logp.dtype), mask)


def kl_penalized_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    coef: float | torch.Tensor,
    estimator: str = "k1",
) -> torch.Tensor:
    """PPO-RLHF per-token rewards: a KL penalty at every token, the score at the last one.

    ``r_t = -coef * kl_t`` at every real token (``kl_t`` from
    :func:`kl_divergence_estimate`), plus ``scores[b]`` at the *last* real token
    of sequence ``b`` ("Fine-Tuning Language Models from Human Preferences",
    Ziegler et al. 2019; TRL's ``PPOTrainer``).  KL *in the reward*, with k1,
    makes the return-to-go carry the future KL, so the policy gradient of the
    reward-plus-penalty is the exact gradient of ``E[score] - coef *
    KL(pi || ref)`` at sequence level; contrast GRPO, which puts KL *in the
    loss* as ``beta * masked_aggregate(k3)`` (see :func:`kl_divergence_estimate`
    for what that term's gradient is).

    The rewards are data for the RL update: pass detached log-probs (or detach
    the result), since gradients flow through as written.  "Last real token" is
    the last True of each mask row (holes allowed).  A sequence without real
    tokens gets all-zero rewards: its score is dropped.

    Args:
      scores: float ``[...]`` (usually ``[B]``), one sequence-level score each.
      logp: float ``[..., L]`` log-probs of the sampled tokens under the policy.
      ref_logp: float ``[..., L]`` under the reference policy.
      mask: bool ``[..., L]``.
      coef: KL coefficient (``>= 0`` float or a float tensor).
      estimator: ``"k1"`` (default, as TRL), ``"k2"`` or ``"k3"``.

    Returns:
      float ``[..., L]``, 0 at masked positions.
    """
    check_float(logp, "logp")
    if logp.ndim < 1:
        raise ValueError(f"logp: expected rank >= 1 ([..., L]), got shape {tuple(logp.shape)}")
    check_float(scores, "scores")
    if scores.shape != logp.shape[:-1]:
        raise ValueError(
            f"scores: expected shape {tuple(logp.shape[:-1])} (logp's shape without L), got {tuple(scores.shape)}"
        )
    _check_epsilon(coef, "coef")
    kl = kl_divergence_estimate(logp, ref_logp, estimator, mask)
    positions = torch.arange(logp.shape[-1], device=logp.device)
    last = torch.amax(torch.where(mask, positions, -1), dim=-1, keepdim=True)  # -1: no real token
    is_last = mask & (positions == last)
    return -coef * kl + _zero_where_not(is_last, scores.unsqueeze(-1).expand_as(logp))
