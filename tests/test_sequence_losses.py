"""Tests for funrl.losses.sequence (sequence-level losses for RL fine-tuning of language models)."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap
from torch.utils._python_dispatch import TorchDispatchMode

import funrl.losses
from funrl.losses import sequence as S
from helpers import assert_match

F64 = torch.float64
T, Fa = True, False
LN2 = math.log(2.0)


def t64(x):
    return torch.tensor(x, dtype=F64)


def test_exported_from_funrl_losses():
    for name in S.__all__:
        assert getattr(funrl.losses, name) is getattr(S, name)
    assert funrl.losses.sequence is S


# ----------------------------------------------------------------------------- hand-computed fixtures
def test_sequence_log_probs_hand_computed():
    # row 0: uniform over 3 -> log(1/3); row 1: [2, 1, 1]/4 -> token 0 has log(1/2); row 2 is padding
    logits = t64([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [5.0, 1.0, 2.0]])
    tokens = torch.tensor([1, 0, 2])
    mask = torch.tensor([T, T, Fa])
    out = S.sequence_log_probs(logits, tokens, mask)
    torch.testing.assert_close(out, t64([-math.log(3.0), -LN2, 0.0]))
    for dtype in (torch.int32, torch.int16, torch.uint8):  # any integer dtype of token ids
        assert torch.equal(S.sequence_log_probs(logits, tokens.to(dtype), mask), out)


def test_sequence_log_probs_matches_log_softmax_gather():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=g, dtype=F64) * 3
    tokens = torch.randint(0, 7, (2, 4), generator=g)
    mask = torch.tensor([[T, T, T, Fa], [T, Fa, T, T]])
    want = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1) * mask
    torch.testing.assert_close(S.sequence_log_probs(logits, tokens, mask), want)


def test_masked_sum_and_mean_hand_computed():
    x = t64([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[T, Fa, T], [Fa, Fa, Fa]])
    torch.testing.assert_close(S.masked_sum(x, mask), t64(4.0))
    torch.testing.assert_close(S.masked_mean(x, mask), t64(2.0))  # (1 + 3) / 2
    torch.testing.assert_close(S.masked_sum(x, mask, axis=-1), t64([4.0, 0.0]))
    torch.testing.assert_close(S.masked_mean(x, mask, axis=-1), t64([2.0, 0.0]))  # empty row -> 0
    torch.testing.assert_close(S.masked_mean(x, mask, axis=0), t64([1.0, 0.0, 3.0]))
    torch.testing.assert_close(S.masked_mean(x, mask, axis=(0, 1)), t64(2.0))
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert S.masked_mean(x, empty).item() == 0.0


def test_masked_whiten_uses_unbiased_variance():
    x = t64([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([T, T, T, Fa])
    # mean 2, unbiased var ((-1)^2 + 0 + 1^2) / (3 - 1) = 1 (the biased 2/3 would give +-1.2247)
    torch.testing.assert_close(S.masked_whiten(x, mask, eps=0.0), t64([-1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(S.masked_whiten(x, mask, shift_mean=False, eps=0.0), t64([1.0, 2.0, 3.0, 0.0]))
    eps = 1e-2
    torch.testing.assert_close(S.masked_whiten(x, mask, eps=eps), t64([-1.0, 0.0, 1.0, 0.0]) / math.sqrt(1 + eps))
    # one real entry: variance taken as 0 -> whitened to 0, no nan
    one = S.masked_whiten(t64([5.0, 7.0]), torch.tensor([T, Fa]))
    assert torch.equal(one, t64([0.0, 0.0]))


def test_masked_entropy_hand_computed():
    logits = t64([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, float("-inf"), float("-inf")], [1e30, 0, 0, 0]])
    mask = torch.tensor([T, T, Fa])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    torch.testing.assert_close(S.masked_entropy(logits, mask), t64([math.log(4.0), h, 0.0]))


def test_masked_entropy_banned_tokens_have_finite_gradient():
    logits = t64([0.0, 0.0, float("-inf")]).requires_grad_(True)
    h = S.masked_entropy(logits[None], torch.tensor([T]))
    torch.testing.assert_close(h, t64([LN2]))
    (g,) = torch.autograd.grad(h.sum(), logits)
    # H is maximal at the uniform distribution over the two allowed tokens: zero gradient
    assert torch.equal(g, torch.zeros(3, dtype=F64))


def test_kl_divergence_estimate_hand_computed():
    logp = t64([math.log(0.5), math.log(0.5)])
    ref = t64([math.log(0.25), 7.0])
    mask = torch.tensor([T, Fa])
    # log r = log(0.25 / 0.5) = -ln 2, r = 1/2
    torch.testing.assert_close(S.kl_divergence_estimate(logp, ref, "k1", mask), t64([LN2, 0.0]))
    torch.testing.assert_close(S.kl_divergence_estimate(logp, ref, "k2", mask), t64([0.5 * LN2**2, 0.0]))
    torch.testing.assert_close(S.kl_divergence_estimate(logp, ref, "k3", mask), t64([0.5 - 1 + LN2, 0.0]))
    # no mask: every entry is computed; k3 is the default
    torch.testing.assert_close(S.kl_divergence_estimate(logp[:1], ref[:1]), t64([LN2 - 0.5]))


def test_kl_divergence_estimate_k3_is_accurate_near_zero():
    # r - 1 - log r ~ (log r)^2 / 2 for tiny log r; naive exp(x) - 1 - x cancels to 0 in float32
    x = torch.tensor([1e-4], dtype=torch.float32)
    k3 = S.kl_divergence_estimate(torch.zeros(1), x)
    torch.testing.assert_close(k3, torch.tensor([0.5e-8]), rtol=1e-3, atol=0)


def test_kl_divergence_from_logits_hand_computed():
    logits = t64([[0.0, 0.0], [0.0, 0.0]])
    ref = t64([[math.log(3.0), 0.0], [float("nan"), 1.0]])
    # p = [1/2, 1/2], q = [3/4, 1/4]: 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); second row padded
    out = S.kl_divergence_from_logits(logits, ref, torch.tensor([T, Fa]))
    torch.testing.assert_close(out, t64([0.5 * math.log(4.0 / 3.0), 0.0]))
    # p has a zero where q does not: 0 log 0 = 0; KL(uniform||same) = 0
    p0 = t64([[0.0, float("-inf")]])
    torch.testing.assert_close(S.kl_divergence_from_logits(p0, t64([[0.0, 0.0]])), t64([LN2]))


def test_group_relative_advantages_hand_computed():
    r = t64([1.0, 0.0, 0.0, 1.0])
    centered = [0.5, -0.5, -0.5, 0.5]
    std_unbiased = math.sqrt(4 * 0.25 / 3)  # sqrt(1/3); the biased std would be 0.5
    torch.testing.assert_close(
        S.group_relative_advantages(r, "group"), t64([c / (std_unbiased + 1e-4) for c in centered])
    )
    torch.testing.assert_close(S.group_relative_advantages(r, "none"), t64(centered))
    torch.testing.assert_close(S.group_relative_advantages(r, "group", eps=0.0), t64(centered) * math.sqrt(3))


def test_group_relative_advantages_batch_normalisation():
    r = t64([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    flat = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    m = sum(flat) / 8
    std_all = math.sqrt(sum((v - m) ** 2 for v in flat) / 7)  # unbiased, over all 8 rewards
    centered = t64([[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]])  # group means 0.5 and 0.75
    torch.testing.assert_close(S.group_relative_advantages(r, "batch"), centered / (std_all + 1e-4))
    # "group": second group std = sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5
    want = torch.stack([centered[0] / (math.sqrt(1 / 3) + 1e-4), centered[1] / (0.5 + 1e-4)])
    torch.testing.assert_close(S.group_relative_advantages(r, "group"), want)


@pytest.mark.parametrize("normalize", ["group", "batch", "none"])
def test_group_relative_advantages_equal_rewards_are_exactly_zero(normalize):
    r = t64([[0.1, 0.1, 0.1], [0.3, 0.7, 0.2]]).requires_grad_(True)
    a = S.group_relative_advantages(r, normalize)
    assert torch.equal(a[0], torch.zeros(3, dtype=F64))  # mean([0.1] * 3) != 0.1 in floating point
    (g,) = torch.autograd.grad(a.sum() + (a[0] * t64([1.0, 2.0, 3.0])).sum(), r)
    assert torch.isfinite(g).all()
    assert torch.equal(S.leave_one_out_advantages(t64([0.1, 0.1, 0.1])), torch.zeros(3, dtype=F64))


def test_leave_one_out_advantages_hand_computed():
    # r_i - mean of the others: 1 - 11/3, 2 - 10/3, 3 - 9/3, 6 - 6/3
    torch.testing.assert_close(S.leave_one_out_advantages(t64([1.0, 2.0, 3.0, 6.0])), t64([-8 / 3, -4 / 3, 0.0, 4.0]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), g=st.integers(2, 6))
def test_leave_one_out_matches_definition(seed, g):
    r = torch.randn(3, g, generator=torch.Generator().manual_seed(seed), dtype=F64)
    want = torch.stack([r[:, i] - (r.sum(-1) - r[:, i]) / (g - 1) for i in range(g)], -1)
    torch.testing.assert_close(S.leave_one_out_advantages(r), want)
    torch.testing.assert_close(S.group_relative_advantages(r, "none").sum(-1), torch.zeros(3, dtype=F64))


# ----------------------------------------------------------------------------- clipped surrogate
def _surrogate_batch():
    """2 x 3 batch, row 1 has one padded position; ratios chosen so clipping binds on both sides."""
    ratios = [[1.0, 1.5, 0.5], [1.5, 0.5, 1.0]]
    old = t64([[-1.0, -2.0, -0.5], [-1.5, -0.7, float("nan")]])
    logp = old + torch.log(t64(ratios))
    mask = torch.tensor([[T, T, T], [T, T, Fa]])
    adv = t64([1.0, -2.0])
    return logp, old, adv, mask


# eps = 0.2, A = [1, -2]; per-token loss -min(r A, clip(r, 0.8, 1.2) A):
#   row 0 (A=1):  r=1 -> -1; r=1.5 -> -min(1.5, 1.2) = -1.2 (clipped); r=0.5 -> -min(.5, .8) = -.5   sum -2.7
#   row 1 (A=-2): r=1.5 -> -min(-3, -2.4) = 3; r=0.5 -> -min(-1, -1.6) = 1.6 (clipped)            sum  4.6
SURROGATE_EXPECTED = {
    "token_mean": (-2.7 + 4.6) / 5,  # 0.38
    "sequence_mean": (-2.7 / 3 + 4.6 / 2) / 2,  # 0.7
    "constant": (-2.7 + 4.6) / (2 * 3),  # 0.31667
}


@pytest.mark.parametrize("aggregation", list(SURROGATE_EXPECTED))
def test_token_clipped_surrogate_loss_aggregations(aggregation):
    logp, old, adv, mask = _surrogate_batch()
    out = S.token_clipped_surrogate_loss(logp, old, adv, mask, aggregation=aggregation)
    torch.testing.assert_close(out, t64(SURROGATE_EXPECTED[aggregation]))


def test_surrogate_aggregations_differ_and_max_tokens():
    vals = sorted(SURROGATE_EXPECTED.values())
    assert min(b - a for a, b in zip(vals, vals[1:])) > 0.05
    logp, old, adv, mask = _surrogate_batch()
    out = S.token_clipped_surrogate_loss(logp, old, adv, mask, aggregation="constant", max_tokens=4)
    torch.testing.assert_close(out, t64(1.9 / 8))


def test_token_clipped_surrogate_asymmetric_epsilons():
    logp, old, adv, mask = _surrogate_batch()
    # epsilon_high = 0.6: row 0's r=1.5 is inside [0.8, 1.6] -> -1.5; row 0 sums to -3
    out = S.token_clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=0.2, epsilon_high=0.6)
    torch.testing.assert_close(out, t64((-3.0 + 4.6) / 5))
    # epsilon_low = 0.6, epsilon_high = 0.2: row 1's r=0.5 is inside [0.4, 1.2] -> 1; row 1 sums to 4
    out = S.token_clipped_surrogate_loss(logp, old, adv, mask, epsilon_low=0.6, epsilon_high=0.2)
    torch.testing.assert_close(out, t64((-2.7 + 4.0) / 5))


def test_token_clipped_surrogate_gradient():
    logp, old, adv, mask = _surrogate_batch()
    g = grad(S.token_clipped_surrogate_loss)(logp, old, adv, mask)
    # unclipped tokens: d/dlogp (-r A) / 5 = -r A / 5; clipped tokens and padding: 0
    want = t64([[-1.0 / 5, 0.0, -0.5 / 5], [3.0 / 5, 0.0, 0.0]])
    torch.testing.assert_close(g, want)
    # old_logp is a constant
    assert torch.equal(grad(S.token_clipped_surrogate_loss, argnums=1)(logp, old, adv, mask), torch.zeros_like(old))


def test_token_clipped_surrogate_per_token_advantages_match_broadcast():
    logp, old, adv, mask = _surrogate_batch()
    per_token = adv[:, None].expand(2, 3).clone()
    per_token[1, 2] = float("inf")  # padding
    for agg in SURROGATE_EXPECTED:
        assert_match(
            S.token_clipped_surrogate_loss(logp, old, per_token, mask, aggregation=agg),
            S.token_clipped_surrogate_loss(logp, old, adv, mask, aggregation=agg),
        )


def test_token_clip_fraction():
    logp, old, adv, mask = _surrogate_batch()
    # clipped terms selected: row 0 r=1.5 (A>0) and row 1 r=0.5 (A<0): 2 of 5 real tokens
    torch.testing.assert_close(S.token_clip_fraction(logp, old, adv, mask), t64(0.4))
    torch.testing.assert_close(S.token_clip_fraction(logp, old, adv, mask, 0.2, 0.6), t64(0.2))
    torch.testing.assert_close(S.token_clip_fraction(logp, old, adv, mask, 0.6, 0.2), t64(0.2))
    torch.testing.assert_close(S.token_clip_fraction(logp, old, adv, mask, 0.6, 0.6), t64(0.0))
    assert S.token_clip_fraction(logp, old, adv, torch.zeros_like(mask)).item() == 0.0
    # A = 0: both terms are 0, the min does not strictly select the clipped one
    assert S.token_clip_fraction(logp, old, torch.zeros_like(adv), mask).item() == 0.0


def test_masked_aggregate_empty_sequences():
    x = t64([[1.0, 2.0], [float("nan"), float("inf")]])
    mask = torch.tensor([[T, T], [Fa, Fa]])
    torch.testing.assert_close(S.masked_aggregate(x, mask, "token_mean"), t64(1.5))
    torch.testing.assert_close(S.masked_aggregate(x, mask, "sequence_mean"), t64(0.75))  # empty row counts as 0
    torch.testing.assert_close(S.masked_aggregate(x, mask, "constant"), t64(3.0 / 4))
    for agg in ("token_mean", "sequence_mean", "constant"):
        assert S.masked_aggregate(x, torch.zeros_like(mask), agg).item() == 0.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 4), length=st.integers(1, 5), max_tokens=st.integers(1, 8))
def test_masked_aggregate_matches_python_loops(seed, b, length, max_tokens):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, generator=g, dtype=F64)
    mask = torch.rand(b, length, generator=g) < 0.6
    rows = [[x[i, j].item() for j in range(length) if mask[i, j]] for i in range(b)]
    n_real = sum(len(r) for r in rows)
    total = sum(sum(r) for r in rows)
    want = {
        "token_mean": total / n_real if n_real else 0.0,
        "sequence_mean": sum(sum(r) / len(r) if r else 0.0 for r in rows) / b,
        "constant": total / (b * max_tokens),
    }
    for agg, value in want.items():
        torch.testing.assert_close(S.masked_aggregate(x, mask, agg, max_tokens=max_tokens), t64(value))


# ----------------------------------------------------------------------------- KL-penalised rewards
def test_kl_penalized_rewards_hand_computed():
    logp = t64([[-1.0, -2.0, -3.0], [-0.5, 9.0, -1.0], [1.0, 2.0, 3.0]])
    ref = t64([[-1.5, -1.0, float("nan")], [-1.0, float("inf"), -0.5], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[T, T, Fa], [T, Fa, T], [Fa, Fa, Fa]])
    scores = t64([1.0, 2.0, 3.0])
    # k1 = logp - ref: row 0 [0.5, -1], row 1 [0.5, -, -0.5]; coef 0.1
    # score at the last real token (row 1 has a hole); row 2 has none: score dropped
    want = t64([[-0.05, 0.1 + 1.0, 0.0], [-0.05, 0.0, 0.05 + 2.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(S.kl_penalized_rewards(scores, logp, ref, mask, 0.1), want)
    k3 = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]
    got = S.kl_penalized_rewards(scores, logp, ref, mask, 2.0, estimator="k3")
    torch.testing.assert_close(got[0], t64([-2 * k3[0], -2 * k3[1] + 1.0, 0.0]))


# ----------------------------------------------------------------------------- exact enumeration oracle
V = 3


def _tables(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(L, V, V, generator=g, dtype=F64)  # theta[t, previous token] = logits of token t
    theta_ref = torch.randn(L, V, V, generator=g, dtype=F64)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))  # all V**L sequences
    return theta, theta_ref, seqs


def _logits(theta, seqs):
    """Per-position logits ``[N, L, V]`` of an autoregressive table model (token -1 is 0)."""
    prev = torch.cat([torch.zeros_like(seqs[:, :1]), seqs[:, :-1]], dim=1)
    return theta[torch.arange(seqs.shape[1])[None, :], prev]


def _enumerate(theta, theta_ref, seqs):
    mask = torch.ones(seqs.shape, dtype=torch.bool)
    logp = S.sequence_log_probs(_logits(theta, seqs), seqs, mask)
    ref_logp = S.sequence_log_probs(_logits(theta_ref, seqs), seqs, mask)
    return logp, ref_logp


def _seq_kl(theta, theta_ref, seqs):
    """Exact KL(pi || ref) over whole sequences: sum_seq pi(seq) (log pi(seq) - log ref(seq))."""
    logp, ref_logp = _enumerate(theta, theta_ref, seqs)
    lp, lr = logp.sum(-1), ref_logp.sum(-1)
    return torch.sum(torch.exp(lp) * (lp - lr))


def _expect(theta, theta_ref, seqs, fn):
    """E_{seq ~ pi}[fn(logp, ref_logp)] (per-token log-probs ``[N, L]``), the weights pi(seq) held constant.

    Held-constant weights are what a loss on sampled sequences sees: its gradient
    flows only through the log-probs of the (fixed) sampled tokens.
    """
    logp, ref_logp = _enumerate(theta, theta_ref, seqs)
    w = torch.exp(logp.sum(-1)).detach()
    return torch.sum(w * fn(logp, ref_logp))


def _summed(est):
    """Per-sequence sum over tokens of the estimator ``est``."""
    return lambda lp, lr: S.kl_divergence_estimate(lp, lr, est).sum(-1)


def _exact_per_token_kl(theta_p, theta_q, seqs):
    """Per-sequence sum over tokens of the exact KL(p(.|prefix) || q(.|prefix))."""
    return lambda lp, lr: S.kl_divergence_from_logits(_logits(theta_p, seqs), _logits(theta_q, seqs)).sum(-1)


@pytest.mark.parametrize("L", [2, 3])
def test_kl_estimators_expectations_by_enumeration(L):
    theta, theta_ref, seqs = _tables(L)
    logp, _ = _enumerate(theta, theta_ref, seqs)
    torch.testing.assert_close(torch.exp(logp.sum(-1)).sum(), t64(1.0))  # a distribution over sequences
    true_kl = _seq_kl(theta, theta_ref, seqs)
    assert true_kl > 0.3
    for est in ("k1", "k3"):  # unbiased (k3 per token given the prefix; the chain rule adds them)
        torch.testing.assert_close(_expect(theta, theta_ref, seqs, _summed(est)), true_kl)
    assert abs(_expect(theta, theta_ref, seqs, _summed("k2")) - true_kl) > 0.1  # k2 is biased
    exact = _expect(theta, theta_ref, seqs, _exact_per_token_kl(theta, theta_ref, seqs))
    torch.testing.assert_close(exact, true_kl)


def test_k3_is_unbiased_per_token_under_the_exact_conditionals():
    theta, theta_ref, seqs = _tables(3)
    logits, ref_logits = _logits(theta, seqs), _logits(theta_ref, seqs)  # [N, L, V]: every prefix
    log_p, log_q = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    # E_{x ~ p(.|prefix)} k3(x) over the whole vocabulary, at every position of every prefix
    e_k3 = torch.sum(torch.exp(log_p) * S.kl_divergence_estimate(log_p, log_q, "k3"), -1)
    torch.testing.assert_close(e_k3, S.kl_divergence_from_logits(logits, ref_logits))
    e_k2 = torch.sum(torch.exp(log_p) * S.kl_divergence_estimate(log_p, log_q, "k2"), -1)
    assert (e_k2 - S.kl_divergence_from_logits(logits, ref_logits)).abs().max() > 0.05


def _grad(fn, theta):
    theta = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(theta), theta)
    return g


def test_k3_as_a_loss_term_is_the_reverse_kl_gradient_for_one_token():
    theta, theta_ref, seqs = _tables(1)
    g_kl = _grad(lambda th: _seq_kl(th, theta_ref, seqs), theta)
    g_rev = _grad(lambda th: _seq_kl(theta_ref, th, seqs), theta)  # grad of KL(ref || pi)

    def loss_grad(est):  # expected gradient of sum_t k(est)_t used as a loss term
        return _grad(lambda th: _expect(th, theta_ref, seqs, _summed(est)), theta)

    assert (g_kl - g_rev).norm() > 0.3
    torch.testing.assert_close(loss_grad("k3"), g_rev)  # k3 in the loss: gradient of the reverse KL
    assert (loss_grad("k3") - g_kl).norm() > 0.3
    torch.testing.assert_close(loss_grad("k2"), g_kl)  # k2 in the loss: gradient of KL(pi || ref)
    torch.testing.assert_close(loss_grad("k1"), torch.zeros_like(theta))  # k1 in the loss: zero expected gradient


def test_k3_as_a_loss_term_is_biased_for_sequences():
    theta, theta_ref, seqs = _tables(3)
    g_kl = _grad(lambda th: _seq_kl(th, theta_ref, seqs), theta)
    g_rev = _grad(lambda th: _seq_kl(theta_ref, th, seqs), theta)
    g_k3 = _grad(lambda th: _expect(th, theta_ref, seqs, _summed("k3")), theta)
    assert g_kl.norm() > 0.5
    assert (g_k3 - g_kl).norm() > 0.3  # not the gradient of KL(pi || ref) ...
    assert (g_k3 - g_rev).norm() > 0.3  # ... nor of the sequence-level KL(ref || pi)
    # it is the gradient of sum_t E_{prefix ~ pi}[KL(ref(.|prefix) || pi(.|prefix))], prefix distribution frozen
    g_frozen = _grad(lambda th: _expect(th, theta_ref, seqs, _exact_per_token_kl(theta_ref, th, seqs)), theta)
    torch.testing.assert_close(g_k3, g_frozen)
    # the score-function form is exact: E[(sum_t k1) grad log pi(seq)] + E[grad sum_t k1] (the latter is 0)
    def score_function(lp, lr):
        k1 = _summed("k1")(lp, lr)
        return k1.detach() * lp.sum(-1) + k1

    g_sf = _grad(lambda th: _expect(th, theta_ref, seqs, score_function), theta)
    torch.testing.assert_close(g_sf, g_kl)


def test_kl_penalized_rewards_reinforce_gives_the_exact_kl_gradient():
    theta, theta_ref, seqs = _tables(3)
    g_kl = _grad(lambda th: _seq_kl(th, theta_ref, seqs), theta)
    mask = torch.ones(seqs.shape, dtype=torch.bool)
    scores = torch.zeros(seqs.shape[0], dtype=F64)

    def reinforce(lp, lr):  # -return * log pi(seq), rewards treated as data
        rewards = S.kl_penalized_rewards(scores, lp.detach(), lr, mask, coef=1.0)
        return -rewards.sum(-1) * lp.sum(-1)

    torch.testing.assert_close(_grad(lambda th: _expect(th, theta_ref, seqs, reinforce), theta), g_kl)


# ----------------------------------------------------------------------------- garbage at padding
def _batch(seed=0, b=3, length=4, v=5):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    mask = torch.tensor([[T, T, T, Fa], [T, Fa, T, T], [Fa, Fa, Fa, Fa]])
    return dict(
        logits=r(b, length, v) * 2,
        ref_logits=r(b, length, v) * 2,
        tokens=torch.randint(0, v, (b, length), generator=g),
        logp=-r(b, length).abs(),
        old_logp=-r(b, length).abs(),
        ref_logp=-r(b, length).abs(),
        adv=r(b, length),
        x=r(b, length),
        scores=r(b),
    ), mask


def _garbage(inputs, mask):
    out = dict(inputs)
    pad = ~mask
    junk = t64([1e30, float("inf"), float("nan"), float("-inf"), -1e30])
    for k in ("logp", "old_logp", "ref_logp", "adv", "x"):
        fill = junk[torch.arange(mask.numel()).reshape(mask.shape) % 5]
        out[k] = torch.where(pad, fill, inputs[k])
    for k in ("logits", "ref_logits"):
        fill = junk[torch.arange(inputs[k].numel()).reshape(inputs[k].shape) % 5]
        out[k] = torch.where(pad[..., None], fill, inputs[k])
    bad_ids = torch.tensor([99, -7, 5, 10**6])[torch.arange(mask.numel()).reshape(mask.shape) % 4]
    out["tokens"] = torch.where(pad, bad_ids, inputs["tokens"])
    return out


_DIFF = ("logits", "ref_logits", "logp", "ref_logp", "adv", "x")  # old_logp is detached by design


def _all_outputs(inp, mask):
    lp = S.sequence_log_probs(inp["logits"], inp["tokens"], mask)
    outs = {
        "log_probs": lp,
        "entropy": S.masked_entropy(inp["logits"], mask),
        "kl_logits": S.kl_divergence_from_logits(inp["logits"], inp["ref_logits"], mask),
        "sum": S.masked_sum(inp["x"], mask, axis=-1),
        "mean": S.masked_mean(inp["x"], mask),
        "whiten": S.masked_whiten(inp["x"], mask),
        "whiten_keep": S.masked_whiten(inp["x"], mask, shift_mean=False),
        "rewards": S.kl_penalized_rewards(inp["scores"], inp["logp"], inp["ref_logp"], mask, 0.3, "k3"),
        "clipfrac": S.token_clip_fraction(inp["logp"], inp["old_logp"], inp["adv"], mask),
    }
    for est in ("k1", "k2", "k3"):
        outs[est] = S.kl_divergence_estimate(inp["logp"], inp["ref_logp"], est, mask)
    for agg in ("token_mean", "sequence_mean", "constant"):
        outs["agg_" + agg] = S.masked_aggregate(inp["x"], mask, agg)
        outs["ppo_" + agg] = S.token_clipped_surrogate_loss(
            inp["logp"], inp["old_logp"], inp["adv"], mask, aggregation=agg
        )
        outs["ppo_lp_" + agg] = S.token_clipped_surrogate_loss(lp, inp["old_logp"], inp["adv"], mask, 0.1, 0.3, agg)
    return outs


def _outputs_and_grads(inp, mask):
    inp = {k: (v.clone().requires_grad_(True) if k in _DIFF else v) for k, v in inp.items()}
    outs = _all_outputs(inp, mask)
    g = torch.Generator().manual_seed(1)
    total = sum(torch.sum(o * torch.rand(o.shape, generator=g, dtype=F64)) for o in outs.values())
    grads = torch.autograd.grad(total, [inp[k] for k in _DIFF])
    return {k: o.detach() for k, o in outs.items()}, dict(zip(_DIFF, grads))


def test_garbage_at_padding_changes_no_output_and_no_gradient():
    inputs, mask = _batch()
    clean_out, clean_grad = _outputs_and_grads(inputs, mask)
    dirty_out, dirty_grad = _outputs_and_grads(_garbage(inputs, mask), mask)
    for k in clean_out:
        assert torch.isfinite(dirty_out[k]).all(), k
        assert torch.equal(dirty_out[k], clean_out[k]), k
    for k in _DIFF:
        assert torch.isfinite(dirty_grad[k]).all(), k
        assert torch.equal(dirty_grad[k], clean_grad[k]), k
        pad = ~mask if dirty_grad[k].ndim == 2 else (~mask)[..., None].expand_as(dirty_grad[k])
        assert torch.equal(dirty_grad[k][pad], torch.zeros_like(dirty_grad[k][pad])), k
    # every per-token output is exactly 0 at padding, and the gradients are not trivially zero
    for k in ("log_probs", "entropy", "kl_logits", "whiten", "rewards", "k1", "k2", "k3"):
        assert torch.equal(dirty_out[k][~mask], torch.zeros_like(dirty_out[k][~mask])), k
    for k in _DIFF:
        assert clean_grad[k].abs().sum() > 0, k


# ----------------------------------------------------------------------------- vmap, grad, compile
def test_vmap_matches_per_sequence_calls():
    inp, mask = _batch(3)
    per_seq = {
        "log_probs": lambda i, m: S.sequence_log_probs(i["logits"], i["tokens"], m),
        "entropy": lambda i, m: S.masked_entropy(i["logits"], m),
        "kl_logits": lambda i, m: S.kl_divergence_from_logits(i["logits"], i["ref_logits"], m),
        "k3": lambda i, m: S.kl_divergence_estimate(i["logp"], i["ref_logp"], "k3", m),
        "rewards": lambda i, m: S.kl_penalized_rewards(i["scores"], i["logp"], i["ref_logp"], m, 0.5, "k2"),
        "mean": lambda i, m: S.masked_mean(i["x"], m),
        "whiten": lambda i, m: S.masked_whiten(i["x"], m),
    }
    for name, fn in per_seq.items():
        batched = vmap(fn)(inp, mask)
        looped = torch.stack([fn({k: v[b] for k, v in inp.items()}, mask[b]) for b in range(mask.shape[0])])
        assert_match(batched, looped, exact=False)
        if name not in ("mean", "whiten"):  # the batch call computes the same per sequence
            assert_match(batched, fn(inp, mask), exact=False)


def test_vmap_advantages_over_prompts():
    r = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    for fn in (S.leave_one_out_advantages, lambda x: S.group_relative_advantages(x, "group"),
               lambda x: S.group_relative_advantages(x, "none")):
        assert_match(vmap(fn)(r), fn(r), exact=False)
    # "batch" under vmap normalises by each slice's own std, i.e. by its group's std: equals "group"
    by_slice = vmap(lambda x: S.group_relative_advantages(x, "batch"))(r)
    assert_match(by_slice, S.group_relative_advantages(r, "group"), exact=False)


def test_vmap_over_minibatches_and_epsilons():
    logp, old, adv, mask = _surrogate_batch()
    g = torch.Generator().manual_seed(4)
    logps = logp + 0.3 * torch.randn(3, 2, 3, generator=g, dtype=F64)
    for agg in SURROGATE_EXPECTED:
        fn = lambda lp: S.token_clipped_surrogate_loss(lp, old, adv, mask, aggregation=agg)  # noqa: E731
        assert_match(vmap(fn)(logps), torch.stack([fn(x) for x in logps]), exact=False)
    eps = t64([0.1, 0.2, 0.6])
    by_eps = vmap(lambda e: S.token_clipped_surrogate_loss(logp, old, adv, mask, e, e))(eps)
    looped = [S.token_clipped_surrogate_loss(logp, old, adv, mask, e, e) for e in (0.1, 0.2, 0.6)]
    assert_match(by_eps, torch.stack(looped), exact=False)
    torch.testing.assert_close(by_eps[1], t64(SURROGATE_EXPECTED["token_mean"]))
    # a tensor radius on one side and a float on the other
    mixed = vmap(lambda e: S.token_clipped_surrogate_loss(logp, old, adv, mask, 0.2, e))(t64([0.2, 0.6]))
    torch.testing.assert_close(mixed, t64([0.38, (-3.0 + 4.6) / 5]))
    mixed = S.token_clipped_surrogate_loss(logp, old, adv, mask, t64(0.6), 0.2)
    torch.testing.assert_close(mixed, t64((-2.7 + 4.0) / 5))


def test_per_sample_gradients_with_vmap_of_grad():
    inp, mask = _batch(5)

    def loss(logits, tokens, m, a):  # one sequence: REINFORCE-like with an entropy bonus
        lp = S.sequence_log_probs(logits, tokens, m)
        return -S.masked_sum(lp * a, m) - 0.01 * S.masked_mean(S.masked_entropy(logits, m), m)

    args = (inp["logits"], inp["tokens"], mask, inp["adv"])
    per_sample = vmap(grad(loss))(*args)
    looped = torch.stack([grad(loss)(*(x[b] for x in args)) for b in range(mask.shape[0])])
    assert_match(per_sample, looped, exact=False)
    assert torch.equal(per_sample[2], torch.zeros_like(per_sample[2]))  # the empty sequence


def test_compiled_surrogate_matches_eager():
    logp, old, adv, mask = _surrogate_batch()

    def loss(lp):
        surrogate = S.token_clipped_surrogate_loss(lp, old, adv, mask, 0.2, 0.28, "sequence_mean")
        return surrogate + 0.1 * S.masked_aggregate(S.kl_divergence_estimate(lp, old, "k3", mask), mask)

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    x = logp.clone().requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    out_c, out_e = compiled(x), loss(y)
    assert_match(out_c.detach(), out_e.detach(), exact=False)
    (gc,), (ge,) = torch.autograd.grad(out_c, x), torch.autograd.grad(out_e, y)
    assert_match(gc, ge, exact=False)
    assert ge.abs().sum() > 0


class _RecordSyncs(TorchDispatchMode):
    """Records aten ops that copy a value or a data-dependent shape to the host (cf. test_no_host_sync)."""

    SYNCING = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.is_nonzero.default,
        torch.ops.aten.equal.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
    }

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCING:
            self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_no_host_sync_in_values_or_gradients():
    inputs, mask = _batch(6)
    with _RecordSyncs() as rec:
        _outputs_and_grads(inputs, mask)
        S.group_relative_advantages(inputs["x"], "batch")
        S.leave_one_out_advantages(inputs["x"])
    assert rec.seen == []
    with _RecordSyncs() as rec:
        torch.zeros(2).sum().item()  # the recorder itself works
    assert rec.seen == [torch.ops.aten._local_scalar_dense.default]


# ----------------------------------------------------------------------------- argument checks
_L = torch.zeros(2, 3, 4)
_TOK = torch.zeros(2, 3, dtype=torch.long)
_M = torch.ones(2, 3, dtype=torch.bool)
_X = torch.zeros(2, 3)
_A = torch.zeros(2)

BAD_CALLS = [
    ("mask", ValueError, lambda: S.sequence_log_probs(_L, _TOK, _M[:, :2])),
    ("mask", TypeError, lambda: S.sequence_log_probs(_L, _TOK, _M.float())),
    ("tokens", TypeError, lambda: S.sequence_log_probs(_L, _X, _M)),
    ("tokens", ValueError, lambda: S.sequence_log_probs(_L, _TOK[:1], _M)),
    ("logits", TypeError, lambda: S.sequence_log_probs(_L.long(), _TOK, _M)),
    ("logits", ValueError, lambda: S.sequence_log_probs(torch.zeros(4), torch.zeros((), dtype=torch.long), _M)),
    ("mask", ValueError, lambda: S.masked_sum(_X, _M[0])),
    ("mask", ValueError, lambda: S.masked_mean(_X, _M.T)),
    ("mask", TypeError, lambda: S.masked_mean(_X, _M.int())),
    ("x", TypeError, lambda: S.masked_mean(_TOK, _M)),
    ("mask", TypeError, lambda: S.masked_whiten(_X, _X)),
    ("eps", ValueError, lambda: S.masked_whiten(_X, _M, eps=-1.0)),
    ("mask", ValueError, lambda: S.masked_entropy(_L, _M[:, :1])),
    ("estimator", ValueError, lambda: S.kl_divergence_estimate(_X, _X, "k4")),
    ("ref_logp", ValueError, lambda: S.kl_divergence_estimate(_X, _X[:1])),
    ("mask", ValueError, lambda: S.kl_divergence_estimate(_X, _X, "k1", _M[:1])),
    ("ref_logits", ValueError, lambda: S.kl_divergence_from_logits(_L, _L[..., :3])),
    ("mask", TypeError, lambda: S.kl_divergence_from_logits(_L, _L, _X)),
    ("normalize", ValueError, lambda: S.group_relative_advantages(_X, "std")),
    ("rewards", ValueError, lambda: S.group_relative_advantages(torch.zeros(3, 1))),
    ("rewards", TypeError, lambda: S.group_relative_advantages(_TOK)),
    ("rewards", ValueError, lambda: S.leave_one_out_advantages(torch.zeros(1))),
    ("aggregation", ValueError, lambda: S.masked_aggregate(_X, _M, "seq_mean")),
    ("per_token", ValueError, lambda: S.masked_aggregate(_X[0], _M[0])),
    ("max_tokens", ValueError, lambda: S.masked_aggregate(_X, _M, "constant", max_tokens=0)),
    ("max_tokens", TypeError, lambda: S.masked_aggregate(_X, _M, "constant", max_tokens=2.5)),
    ("mask", ValueError, lambda: S.masked_aggregate(_X, _M[:, :2])),
    ("advantages", ValueError, lambda: S.token_clipped_surrogate_loss(_X, _X, torch.zeros(3), _M)),
    ("advantages", TypeError, lambda: S.token_clipped_surrogate_loss(_X, _X, _TOK, _M)),
    ("old_logp", ValueError, lambda: S.token_clipped_surrogate_loss(_X, _X[:, :2], _A, _M)),
    ("mask", ValueError, lambda: S.token_clipped_surrogate_loss(_X, _X, _A, _M[:1])),
    ("mask", TypeError, lambda: S.token_clipped_surrogate_loss(_X, _X, _A, _X)),
    ("logp", ValueError, lambda: S.token_clipped_surrogate_loss(_X[0], _X[0], _A[0], _M[0])),
    ("epsilon_low", ValueError, lambda: S.token_clipped_surrogate_loss(_X, _X, _A, _M, -0.1)),
    ("epsilon_high", TypeError, lambda: S.token_clipped_surrogate_loss(_X, _X, _A, _M, 0.2, "x")),
    ("aggregation", ValueError, lambda: S.token_clipped_surrogate_loss(_X, _X, _A, _M, aggregation="mean")),
    ("epsilon_low", ValueError, lambda: S.token_clip_fraction(_X, _X, _A, _M, -0.1)),
    ("scores", ValueError, lambda: S.kl_penalized_rewards(torch.zeros(3), _X, _X, _M, 0.1)),
    ("coef", ValueError, lambda: S.kl_penalized_rewards(_A, _X, _X, _M, -0.1)),
    ("mask", ValueError, lambda: S.kl_penalized_rewards(_A, _X, _X, _M[:, :1], 0.1)),
    ("estimator", ValueError, lambda: S.kl_penalized_rewards(_A, _X, _X, _M, 0.1, "k5")),
]


@pytest.mark.parametrize("name,exc,call", BAD_CALLS, ids=[f"{i}-{c[0]}" for i, c in enumerate(BAD_CALLS)])
def test_bad_arguments_name_the_argument(name, exc, call):
    with pytest.raises(exc, match=f"^{name}:"):
        call()
