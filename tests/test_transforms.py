"""Tests for funrl.losses.transforms: squashing pairs, two-hot, transformed Bellman targets."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

from funrl.losses import transforms as tx
from helpers import assert_match

F64 = torch.float64
values = st.floats(-1e4, 1e4, allow_nan=False, width=64)


# ----------------------------------------------------------------------------- fixtures
def test_transforms_hand_computed():
    x = torch.tensor([3.0, -8.0, 0.0], dtype=F64)
    # eps = 0: sqrt(4) - 1 = 1, -(sqrt(9) - 1) = -2
    torch.testing.assert_close(tx.signed_hyperbolic(x, eps=0.0), torch.tensor([1.0, -2.0, 0.0], dtype=F64))
    torch.testing.assert_close(tx.signed_hyperbolic(x), torch.tensor([1.003, -2.008, 0.0], dtype=F64))
    # eps = 0: (|x| + 1)^2 - 1
    torch.testing.assert_close(tx.signed_parabolic(torch.tensor([1.0, -2.0], dtype=F64), eps=0.0),
                               torch.tensor([3.0, -8.0], dtype=F64))
    torch.testing.assert_close(tx.signed_logp1(torch.tensor([math.e - 1, 1 - math.e], dtype=F64)),
                               torch.tensor([1.0, -1.0], dtype=F64))
    torch.testing.assert_close(tx.signed_expm1(torch.tensor([1.0, -2.0], dtype=F64)),
                               torch.tensor([math.e - 1, 1 - math.e**2], dtype=F64))
    # p = 2, q = sqrt(2): x = sqrt(2) -> ((1 + 1)^2 - 1) / sqrt(2)
    torch.testing.assert_close(tx.power(torch.tensor([math.sqrt(2)], dtype=F64), 2.0),
                               torch.tensor([3 / math.sqrt(2)], dtype=F64))
    torch.testing.assert_close(tx.sigmoid(torch.tensor([0.0])), torch.tensor([0.5]))
    torch.testing.assert_close(tx.logit(torch.tensor([0.5, 0.75], dtype=F64)),
                               torch.tensor([0.0, math.log(3.0)], dtype=F64))
    y = torch.tensor([1.0, -2.0])
    assert tx.identity(y) is y


@settings(max_examples=60, deadline=None)
@given(x=values, eps=st.sampled_from([1e-3, 1e-2, 0.1]))
def test_signed_parabolic_equals_textbook_formula(x, eps):
    # rlax's form: z = sqrt(1 + 4 eps (eps + 1 + |x|)) / (2 eps) - 1 / (2 eps), sign(x) (z^2 - 1)
    z = math.sqrt(1 + 4 * eps * (eps + 1 + abs(x))) / 2 / eps - 1 / 2 / eps
    ref = math.copysign(z * z - 1, x) if x != 0 else 0.0
    ours = tx.signed_parabolic(torch.tensor(x, dtype=F64), eps).item()
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-9)
    h = math.copysign(math.sqrt(abs(x) + 1) - 1, x) + eps * x
    assert tx.signed_hyperbolic(torch.tensor(x, dtype=F64), eps).item() == pytest.approx(h, rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(x=values, eps=st.sampled_from([0.0, 1e-3, 1e-2]))
def test_signed_hyperbolic_and_parabolic_are_inverses(x, eps):
    t = torch.tensor(x, dtype=F64)
    torch.testing.assert_close(tx.signed_parabolic(tx.signed_hyperbolic(t, eps), eps), t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tx.signed_hyperbolic(tx.signed_parabolic(t, eps), eps), t, rtol=1e-10, atol=1e-10)


def test_signed_hyperbolic_pair_float32_round_trip():
    x = torch.linspace(-1000, 1000, 2001)
    back = tx.signed_parabolic(tx.signed_hyperbolic(x))
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-30, 30, allow_nan=False, width=64))
def test_signed_logp1_and_expm1_are_inverses(x):
    t = torch.tensor(x, dtype=F64)
    torch.testing.assert_close(tx.signed_expm1(tx.signed_logp1(t)), t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tx.signed_logp1(tx.signed_expm1(t)), t, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(x=st.floats(-100, 100, allow_nan=False, width=64), p=st.floats(0.2, 5.0))
def test_power_inverse_and_sigmoid_logit(x, p):
    t = torch.tensor(x, dtype=F64)
    torch.testing.assert_close(tx.power(tx.power(t, p), 1.0 / p), t, rtol=1e-9, atol=1e-9)
    s = torch.tensor(x / 10, dtype=F64)
    torch.testing.assert_close(tx.logit(tx.sigmoid(s)), s, rtol=1e-9, atol=1e-9)


def test_pairs_are_named_tuples_of_inverse_functions():
    x = torch.linspace(-50, 50, 11, dtype=F64)
    for pair in (tx.IDENTITY_PAIR, tx.SIGNED_LOGP1_PAIR, tx.SIGNED_HYPERBOLIC_PAIR):
        assert isinstance(pair, tx.TxPair)
        torch.testing.assert_close(pair.apply_inv(pair.apply(x)), x)
    assert tx.SIGNED_HYPERBOLIC_PAIR.apply is tx.signed_hyperbolic


def test_signed_hyperbolic_gradient_at_zero():
    # d/dx [x / (sqrt(|x| + 1) + 1) + eps x] at 0 is 1/2 + eps
    g = grad(tx.signed_hyperbolic)(torch.tensor(0.0, dtype=F64))
    assert g.item() == pytest.approx(0.501)


# ----------------------------------------------------------------------------- two-hot
def test_two_hot_hand_computed():
    s = torch.tensor([-3.0, 0.2, 7.9, 8.0])
    out = tx.transform_to_2hot(s, -2.0, 8.0, 11)  # bins at -2, -1, ..., 8
    expected = torch.zeros(4, 11)
    expected[0, 0] = 1.0  # clipped to -2
    expected[1, 2], expected[1, 3] = 0.8, 0.2  # 0.2 between 0 (bin 2) and 1 (bin 3)
    expected[2, 9], expected[2, 10] = 0.1, 0.9
    expected[3, 10] = 1.0
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(tx.transform_from_2hot(out, -2.0, 8.0, 11), torch.tensor([-2.0, 0.2, 7.9, 8.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lo=st.floats(-20, 0), width=st.floats(0.5, 40), n=st.integers(2, 64))
def test_two_hot_round_trip_within_support(seed, lo, width, n):
    hi = lo + width
    g = torch.Generator().manual_seed(seed)
    s = lo + width * torch.rand(3, 5, generator=g, dtype=F64)
    probs = tx.transform_to_2hot(s, lo, hi, n)
    assert probs.shape == (3, 5, n)
    assert torch.all(probs >= 0)
    assert torch.count_nonzero(probs, dim=-1).max() <= 2
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5, dtype=F64))
    torch.testing.assert_close(tx.transform_from_2hot(probs, lo, hi, n), s)
    outside = torch.tensor([lo - 1.0, hi + 1.0], dtype=F64)
    torch.testing.assert_close(tx.transform_from_2hot(tx.transform_to_2hot(outside, lo, hi, n), lo, hi, n),
                               torch.tensor([lo, hi], dtype=F64))


def test_two_hot_gradient_flows_through_interpolation():
    s = torch.tensor([0.3, -1.7, 4.2], dtype=F64)
    g = grad(lambda x: tx.transform_from_2hot(tx.transform_to_2hot(x, -5.0, 5.0, 21), -5.0, 5.0, 21).sum())(s)
    torch.testing.assert_close(g, torch.ones(3, dtype=F64))


def test_two_hot_vmap_equals_loop():
    s = torch.tensor([[0.3, 2.0], [-1.0, 9.0]])
    batched = vmap(lambda x: tx.transform_to_2hot(x, -2.0, 8.0, 6))(s)
    for i in range(2):
        assert_match(batched[i], tx.transform_to_2hot(s[i], -2.0, 8.0, 6))  # element-wise: bit for bit


# ----------------------------------------------------------------------------- transformed targets
def _n_step_reference(r, disc, v, n):
    """n-step bootstrapped returns truncated at the end of the sequence (rlax's semantics)."""
    r, disc, v = (np.asarray(x, dtype=np.float64) for x in (r, disc, v))
    t_len = len(r)
    out = np.zeros(t_len)
    for t in range(t_len):
        m = min(n, t_len - t)
        g, scale = 0.0, 1.0
        for k in range(m):
            g += scale * r[t + k]
            scale *= disc[t + k]
        out[t] = g + scale * v[t + m - 1]
    return out


def _lambda_reference(r, disc, v, lam):
    t_len = len(r)
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (t_len,))
    out, g = np.zeros(t_len), v[-1]
    for i in reversed(range(t_len)):
        g = r[i] + disc[i] * ((1 - lam[i]) * v[i] + lam[i] * g)
        out[i] = g
    return out


def _off_policy_reference(q, a, r, disc, c, pi):
    exp_q = (pi * q).sum(-1)
    q_a = q[np.arange(len(a)), a]
    t_len = len(r)
    out = np.zeros(t_len)
    g = r[-1] + disc[-1] * exp_q[-1]
    out[-1] = g
    for i in reversed(range(t_len - 1)):
        g = r[i] + disc[i] * (exp_q[i] - c[i] * q_a[i] + c[i] * g)
        out[i] = g
    return out


def _sequence(seed, t=6, a=3):
    g = torch.Generator().manual_seed(seed)
    q_tm1 = 5 * torch.randn(t, a, generator=g, dtype=F64)
    q_t = 5 * torch.randn(t, a, generator=g, dtype=F64)
    a_tm1 = torch.randint(0, a, (t,), generator=g)
    a_t = torch.randint(0, a, (t,), generator=g)
    r_t = torch.randn(t, generator=g, dtype=F64)
    discount_t = torch.where(torch.rand(t, generator=g) < 0.2, 0.0, 0.9).to(F64)
    pi_t = torch.softmax(torch.randn(t, a, generator=g, dtype=F64), -1)
    mu_t = torch.rand(t, generator=g, dtype=F64) * 0.8 + 0.1
    return q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t


PAIRS = [tx.IDENTITY_PAIR, tx.SIGNED_HYPERBOLIC_PAIR, tx.SIGNED_LOGP1_PAIR]


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("n", [1, 3, 10])
def test_transformed_n_step_q_learning_matches_reference(pair, n):
    q_tm1, q_t, a_tm1, a_t, r_t, discount_t, _, _ = _sequence(n)
    v = q_t[torch.arange(6), a_t]
    target = pair.apply(torch.tensor(_n_step_reference(r_t, discount_t, pair.apply_inv(v), n)))
    expected = target - q_tm1[torch.arange(6), a_tm1]
    ours = tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t, a_t, r_t, discount_t, n, tx_pair=pair)
    torch.testing.assert_close(ours, expected)


def test_transformed_n_step_q_learning_hand_computed_identity():
    q_tm1 = torch.tensor([[1.0, 2.0], [0.0, 0.5], [3.0, 1.0]])
    a_tm1 = torch.tensor([1, 0, 0])
    target_q_t = torch.tensor([[4.0, 1.0], [2.0, 6.0], [0.0, 10.0]])
    a_t = torch.tensor([0, 1, 1])  # bootstrap values 4, 6, 10
    r_t = torch.tensor([1.0, 2.0, 3.0])
    discount_t = torch.tensor([0.5, 0.5, 0.5])
    # n = 2: G0 = 1 + .5*2 + .25*6 = 3.5;  G1 = 2 + .5*3 + .25*10 = 6;  G2 = 3 + .5*10 = 8
    out = tx.transformed_n_step_q_learning(q_tm1, a_tm1, target_q_t, a_t, r_t, discount_t, 2)
    torch.testing.assert_close(out, torch.tensor([3.5 - 2.0, 6.0 - 0.0, 8.0 - 3.0]))


@pytest.mark.parametrize("pair", PAIRS)
def test_transformed_q_lambda_and_retrace_match_reference(pair):
    q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t = _sequence(7)
    idx = torch.arange(6)
    v = torch.amax(q_t, -1)
    target = pair.apply(torch.tensor(_lambda_reference(r_t, discount_t, pair.apply_inv(v), 0.7)))
    torch.testing.assert_close(
        tx.transformed_q_lambda(q_tm1, a_tm1, r_t, discount_t, q_t, 0.7, tx_pair=pair),
        target - q_tm1[idx, a_tm1])
    c_t = torch.clamp(pi_t[idx, a_t] / (mu_t + 1e-8), max=1.0) * 0.9
    target = pair.apply(torch.tensor(_off_policy_reference(
        pair.apply_inv(q_t).numpy(), a_t.numpy(), r_t.numpy(), discount_t.numpy(), c_t.numpy(), pi_t.numpy())))
    torch.testing.assert_close(
        tx.transformed_retrace(q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t, 0.9, tx_pair=pair),
        target - q_tm1[idx, a_tm1])


def test_transformed_losses_stop_target_gradients():
    q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t = _sequence(8)
    pair = tx.SIGNED_HYPERBOLIC_PAIR
    cases = [
        lambda q, s: tx.transformed_n_step_q_learning(q_tm1, a_tm1, q, a_t, r_t, discount_t, 3, s, pair),
        lambda q, s: tx.transformed_q_lambda(q_tm1, a_tm1, r_t, discount_t, q, 0.8, s, pair),
        lambda q, s: tx.transformed_retrace(q_tm1, q, a_tm1, a_t, r_t, discount_t, pi_t, mu_t, 0.9, 1e-8, s, pair),
    ]
    for fn in cases:
        assert torch.count_nonzero(grad(lambda q: fn(q, True).sum())(q_t)) == 0
        assert torch.count_nonzero(grad(lambda q: fn(q, False).sum())(q_t)) > 0
    g = grad(lambda q: tx.transformed_n_step_q_learning(q, a_tm1, q_t, a_t, r_t, discount_t, 3).sum())(q_tm1)
    torch.testing.assert_close(g, -torch.nn.functional.one_hot(a_tm1, 3).to(F64))


def test_transformed_losses_vmap_equals_loop():
    seqs = [_sequence(s) for s in range(3)]
    q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t = (torch.stack(x) for x in zip(*seqs))
    pair = tx.SIGNED_HYPERBOLIC_PAIR
    cases = [
        (lambda *a: tx.transformed_n_step_q_learning(*a, 3, tx_pair=pair), (q_tm1, a_tm1, q_t, a_t, r_t, discount_t)),
        (lambda *a: tx.transformed_q_lambda(*a, 0.8, tx_pair=pair), (q_tm1, a_tm1, r_t, discount_t, q_t)),
        (lambda *a: tx.transformed_retrace(*a, 0.9, tx_pair=pair),
         (q_tm1, q_t, a_tm1, a_t, r_t, discount_t, pi_t, mu_t)),
    ]
    for fn, args in cases:
        batched = vmap(fn)(*args)
        for i in range(3):
            # retrace's expectations over actions are reductions: equal up to reassociation
            assert_match(fn(*(x[i] for x in args)), batched[i], exact=False)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        tx.signed_hyperbolic(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="eps"):
        tx.signed_parabolic(torch.tensor([1.0]), eps=-1.0)
    with pytest.raises(ValueError, match="p: expected a number > 0"):
        tx.power(torch.tensor([1.0]), 0.0)
    with pytest.raises(ValueError, match="num_bins: expected an int >= 2, got 1"):
        tx.transform_to_2hot(torch.tensor([1.0]), 0.0, 1.0, 1)
    with pytest.raises(ValueError, match="max_value"):
        tx.transform_to_2hot(torch.tensor([1.0]), 1.0, 1.0, 5)
    with pytest.raises(ValueError, match=r"probs: expected shape \(\.\.\., 5\), got \(3, 4\)"):
        tx.transform_from_2hot(torch.ones(3, 4), 0.0, 1.0, 5)
    q_tm1, q_t, a_tm1, a_t, r_t, discount_t, _, _ = _sequence(0)
    with pytest.raises(ValueError, match=r"r_t: expected 6 time steps.*got shape \(5,\)"):
        tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t, a_t, r_t[:5], discount_t, 2)
    with pytest.raises(TypeError, match="a_t: expected an integer tensor"):
        tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t, a_t.double(), r_t, discount_t, 2)
    with pytest.raises(ValueError, match=r"target_q_t: expected shape \(6, 3\)"):
        tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t[:, :2], a_t, r_t, discount_t, 2)
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t, a_t, r_t, discount_t, 0)
    with pytest.raises(TypeError, match="tx_pair"):
        tx.transformed_n_step_q_learning(q_tm1, a_tm1, q_t, a_t, r_t, discount_t, 2, tx_pair=tx.identity)
