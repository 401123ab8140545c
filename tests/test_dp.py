"""Tests for funrl.dp: identities (hypothesis), hand-computed fixtures, a numpy
reference, batching/vmap/compile agreement and input validation."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.func import vmap

from funrl import dp
from funrl import random as frandom
from funrl.compile import jit
from funrl.testing import strategies as fst
from funrl import tree
from helpers import assert_match

F64 = torch.float64
SMALL = dict(num_states=st.integers(1, 5), num_actions=st.integers(1, 3))
MDPS = fst.finite_mdps(**SMALL, gamma=fst.discounts(0.0, 0.95))
MDPS_TERMINAL = fst.finite_mdps(**SMALL, gamma=fst.discounts(0.0, 0.95), terminal_states=True)


def sizes(mdp):
    return mdp.R.shape[-2], mdp.R.shape[-1]


def random_mdp(seed, batch, S, A, reward_range=(0.0, 1.0)):
    """Dense random MDPs from funrl keys (float64)."""
    kp, kr = frandom.split(frandom.key(seed))
    P = frandom.uniform(kp, batch + (S, A, S), F64)
    return P / P.sum(-1, keepdim=True), frandom.uniform(kr, batch + (S, A), F64, *reward_range)


# ---------------------------------------------------------------- hand-computed MDPs
def two_state_mdp():
    """s0: a0 stays (r=0), a1 -> s1 (r=1); s1: a0 stays (r=2), a1 -> s0 (r=0)."""
    P = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], dtype=F64)
    R = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=F64)
    return P, R


def test_two_state_mdp_hand_computed():
    # gamma = 0.5: staying in s1 is worth 2 / (1 - 0.5) = 4; from s0 moving is worth
    # 1 + 0.5 * 4 = 3 > staying (0.5 * 3); from s1 leaving is worth 0.5 * 3 = 1.5 < 4.
    P, R = two_state_mdp()
    v_star = torch.tensor([3.0, 4.0], dtype=F64)
    q_star = torch.tensor([[1.5, 3.0], [4.0, 1.5]], dtype=F64)
    pi_star = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    for res in (
        dp.value_iteration(P, R, 0.5, tol=1e-12),
        dp.value_iteration(P, R, 0.5, tol=1e-12, stopping="sup"),
        dp.policy_iteration(P, R, 0.5),
        dp.value_iteration_fixed(P, R, 0.5, 80),
    ):
        torch.testing.assert_close(res.v, v_star, atol=1e-11, rtol=0)
        torch.testing.assert_close(res.q, q_star, atol=1e-11, rtol=0)
        assert torch.equal(res.policy, pi_star)
    # Uniform policy: v0 = .25 v0 + .5 + .25 v1 and v1 = 1 + .25 v1 + .25 v0
    # => 3 v0 - v1 = 2, -v0 + 3 v1 = 4 => v = (1.25, 1.75).
    uniform = torch.full((2, 2), 0.5, dtype=F64)
    v_uniform = torch.tensor([1.25, 1.75], dtype=F64)
    torch.testing.assert_close(dp.policy_evaluation(P, R, 0.5, uniform), v_uniform, atol=1e-14, rtol=0)
    torch.testing.assert_close(
        dp.policy_evaluation(P, R, 0.5, uniform, method="iterative", tol=1e-13), v_uniform, atol=1e-12, rtol=0
    )
    # One backup from zero: T* 0 = max_a R, T^pi 0 = mean_a R, Q(0) = R.
    zero = torch.zeros(2, dtype=F64)
    torch.testing.assert_close(dp.bellman_optimality_v(zero, P, R, 0.5), torch.tensor([1.0, 2.0], dtype=F64))
    torch.testing.assert_close(dp.bellman_expectation_v(zero, P, R, 0.5, uniform), torch.tensor([0.5, 1.0], dtype=F64))
    torch.testing.assert_close(dp.q_from_v(v_star, P, R, 0.5), q_star)
    # T^pi q at q*: R + 0.5 * P (mean_a q*) with mean_a q* = (2.25, 2.75).
    expected = torch.tensor([[1.125, 2.375], [3.375, 1.125]], dtype=F64)
    torch.testing.assert_close(dp.bellman_expectation_q(q_star, P, R, 0.5, uniform), expected)


def test_stochastic_transition_hand_computed():
    # One action; s0 -> s0 or s1 with probability 1/2 each, reward 1; s1 absorbing, reward 0.
    # v1 = 0 and v0 = 1 + 0.9 * 0.5 * v0 => v0 = 1 / 0.55 = 20 / 11.
    P = torch.tensor([[[0.5, 0.5]], [[0.0, 1.0]]], dtype=F64)
    R = torch.tensor([[1.0], [0.0]], dtype=F64)
    expected = torch.tensor([20 / 11, 0.0], dtype=F64)
    torch.testing.assert_close(dp.policy_evaluation(P, R, 0.9, torch.ones(2, 1, dtype=F64)), expected)
    torch.testing.assert_close(dp.value_iteration(P, R, 0.9, tol=1e-12).v, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(dp.policy_iteration(P, R, 0.9).v, expected)
    # Undiscounted, the episode still ends: expected number of steps in s0 is 2.
    v1 = dp.value_iteration(P, R, 1.0, tol=1e-13, stopping="sup").v
    torch.testing.assert_close(v1, torch.tensor([2.0, 0.0], dtype=F64), atol=1e-11, rtol=0)
    torch.testing.assert_close(
        dp.policy_evaluation(P, R, 1.0, torch.ones(2, 1, dtype=F64), method="iterative", tol=1e-13),
        torch.tensor([2.0, 0.0], dtype=F64), atol=1e-11, rtol=0,
    )


def test_greedy_ties_go_to_lowest_index():
    q = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [-1.0, -1.0, -1.0]], dtype=F64)
    assert dp.greedy_actions(q).tolist() == [0, 1, 0]
    assert dp.greedy_policy(q, one_hot=False).tolist() == [0, 1, 0]
    pi = dp.greedy_policy(q)
    assert pi.dtype == F64 and pi.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    torch.testing.assert_close(dp.v_from_q(q), torch.tensor([1.0, 2.0, -1.0], dtype=F64))
    torch.testing.assert_close(dp.v_from_q(q, pi), torch.tensor([1.0, 2.0, -1.0], dtype=F64))


# --------------------------------------------------------------------- identities
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_policy_values_satisfy_bellman_expectation(data):
    mdp = data.draw(MDPS_TERMINAL)
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A))
    v = dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, pi)
    q = dp.q_from_v(v, mdp.P, mdp.R, mdp.gamma)
    # Q^pi = R + gamma P V^pi (by construction above) and V^pi = sum_a pi Q^pi.
    torch.testing.assert_close(dp.v_from_q(q, pi), v, atol=1e-10, rtol=0)
    torch.testing.assert_close(dp.bellman_expectation_v(v, mdp.P, mdp.R, mdp.gamma, pi), v, atol=1e-10, rtol=0)
    torch.testing.assert_close(dp.bellman_expectation_q(q, mdp.P, mdp.R, mdp.gamma, pi), q, atol=1e-10, rtol=0)
    # Q^pi from the definition, summing over successors explicitly.
    direct = mdp.R + mdp.gamma * (mdp.P * v).sum(-1)
    torch.testing.assert_close(q, direct, atol=1e-12, rtol=0)


@settings(max_examples=40, deadline=None)
@given(MDPS_TERMINAL)
def test_optimal_values_value_iteration_and_policy_iteration_agree(mdp):
    tol = 1e-10
    vi = dp.value_iteration(mdp.P, mdp.R, mdp.gamma, tol=tol)
    pi = dp.policy_iteration(mdp.P, mdp.R, mdp.gamma)
    for res in (vi, pi):
        # V* = max_a Q*, and V*, Q* are fixed points of T*.
        torch.testing.assert_close(res.v, res.q.amax(-1), atol=1e-12, rtol=0)
        torch.testing.assert_close(dp.bellman_optimality_v(res.v, mdp.P, mdp.R, mdp.gamma), res.v, atol=1e-9, rtol=0)
        torch.testing.assert_close(dp.bellman_optimality_q(res.q, mdp.P, mdp.R, mdp.gamma), res.q, atol=1e-9, rtol=0)
    torch.testing.assert_close(vi.v, pi.v, atol=tol, rtol=0)
    # Policies equal up to ties: each picks an action that is optimal under the other's q.
    for res, other in ((vi, pi), (pi, vi)):
        chosen = (res.policy * other.q).sum(-1)
        assert bool((chosen >= other.q.amax(-1) - 1e-8).all())
    # The value of either policy is V*.
    torch.testing.assert_close(dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, vi.policy), pi.v, atol=1e-8, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_bellman_operators_are_gamma_contractions(data):
    mdp = data.draw(MDPS)
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A))
    v1, v2 = data.draw(fst.state_value_tables(S)), data.draw(fst.state_value_tables(S))
    q1, q2 = data.draw(fst.action_value_tables(S, A)), data.draw(fst.action_value_tables(S, A))
    args = (mdp.P, mdp.R, mdp.gamma)
    pairs = [
        (dp.bellman_expectation_v(v1, *args, pi), dp.bellman_expectation_v(v2, *args, pi), v1, v2),
        (dp.bellman_optimality_v(v1, *args), dp.bellman_optimality_v(v2, *args), v1, v2),
        (dp.bellman_expectation_q(q1, *args, pi), dp.bellman_expectation_q(q2, *args, pi), q1, q2),
        (dp.bellman_optimality_q(q1, *args), dp.bellman_optimality_q(q2, *args), q1, q2),
    ]
    for t1, t2, x1, x2 in pairs:
        assert float((t1 - t2).abs().max()) <= mdp.gamma * float((x1 - x2).abs().max()) + 1e-12


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_policy_improvement_is_monotone(data):
    mdp = data.draw(MDPS_TERMINAL)
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A))
    v = dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, pi)
    improved = dp.greedy_policy(dp.q_from_v(v, mdp.P, mdp.R, mdp.gamma))
    v_new = dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, improved)
    assert bool((v_new >= v - 1e-10).all())


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_exact_and_iterative_policy_evaluation_agree(data):
    mdp = data.draw(MDPS_TERMINAL)
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A))
    exact = dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, pi, method="exact")
    iterative = dp.policy_evaluation(mdp.P, mdp.R, mdp.gamma, pi, method="iterative", tol=1e-12)
    # error of the iterative result <= tol * gamma / (1 - gamma) <= 2e-11 for gamma <= 0.95
    torch.testing.assert_close(iterative, exact, atol=1e-10, rtol=0)


# ------------------------------------------------------------------ numpy reference
def numpy_value_iteration(P, R, gamma, tol):
    """Textbook value iteration, one MDP, float64 numpy."""
    S, A = R.shape
    v = np.zeros(S)
    for k in range(1, 100_000):
        q = R + gamma * (P.reshape(S * A, S) @ v).reshape(S, A)
        v_new = q.max(1)
        if np.abs(v_new - v).max() < tol:
            return v_new, q, k
        v = v_new
    raise AssertionError("numpy reference did not converge")


@settings(max_examples=25, deadline=None)
@given(fst.finite_mdps(**SMALL, gamma=fst.discounts(0.0, 0.95), batch_shape=(3,)))
def test_value_iteration_matches_numpy_reference(mdp):
    tol = 1e-10
    sup = dp.value_iteration(mdp.P, mdp.R, mdp.gamma, tol=tol, stopping="sup", check_every=1, block_size=1)
    span = dp.value_iteration(mdp.P, mdp.R, mdp.gamma, tol=tol)
    for i in range(3):
        v_np, q_np, k_np = numpy_value_iteration(mdp.P[i].numpy(), mdp.R[i].numpy(), mdp.gamma, tol)
        # Same iterates; a rounding difference can move the stop by one sweep (<= tol apart).
        assert abs(int(sup.iterations[i]) - k_np) <= 1
        np.testing.assert_allclose(sup.v[i].numpy(), v_np, atol=2 * tol, rtol=0)
        np.testing.assert_allclose(sup.q[i].numpy(), q_np, atol=2 * tol, rtol=0)
        # numpy's result is within tol * gamma / (1 - gamma) of v*; span's within tol.
        bound = tol * mdp.gamma / (1 - mdp.gamma) + 2 * tol
        np.testing.assert_allclose(span.v[i].numpy(), v_np, atol=bound, rtol=0)


@settings(max_examples=25, deadline=None)
@given(fst.finite_mdps(num_states=st.integers(2, 6), num_actions=st.integers(1, 3),
                       gamma=fst.discounts(0.5, 0.99), terminal_states=True))
def test_span_stopping_error_bound(mdp):
    v_star = dp.policy_iteration(mdp.P, mdp.R, mdp.gamma).v
    for tol in (1e-4, 1e-9):
        res = dp.value_iteration(mdp.P, mdp.R, mdp.gamma, tol=tol)
        assert float((res.v - v_star).abs().max()) <= mdp.gamma * tol + 1e-12


# ------------------------------------------------------- batching, vmap and compile
@settings(max_examples=12, deadline=None)
@given(st.data())
def test_batched_equals_loop_over_mdps(data):
    mdp = data.draw(fst.finite_mdps(**SMALL, batch_shape=(2, 3)))
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A, batch_shape=(2, 3)))
    gamma = torch.tensor(data.draw(st.lists(fst.discounts(0.0, 0.95), min_size=3, max_size=3)), dtype=F64)
    tol = 1e-11
    vi = dp.value_iteration(mdp.P, mdp.R, gamma, tol=tol)
    vi_blocks = dp.value_iteration(mdp.P, mdp.R, gamma, tol=tol, block_size=4)
    pit = dp.policy_iteration(mdp.P, mdp.R, gamma)
    pe = dp.policy_evaluation(mdp.P, mdp.R, gamma, pi)
    assert vi.v.shape == (2, 3, S) and vi.q.shape == (2, 3, S, A) and vi.iterations.shape == (2, 3)
    assert pit.iterations.shape == (2, 3) and pe.shape == (2, 3, S)
    for i in range(2):
        for j in range(3):
            args = (mdp.P[i, j], mdp.R[i, j], float(gamma[j]))
            one = dp.value_iteration(*args, tol=tol)
            # The batch keeps sweeping until its slowest MDP converges: equal within the bound.
            torch.testing.assert_close(vi.v[i, j], one.v, atol=2 * tol, rtol=0)
            torch.testing.assert_close(vi_blocks.v[i, j], one.v, atol=2 * tol, rtol=0)
            one_pi = dp.policy_iteration(*args)
            # batched vs one MDP: solves and matrix products, equal up to reassociation (policies exact)
            assert_match((pit.policy[i, j], pit.v[i, j]), (one_pi.policy, one_pi.v), exact=False)
            assert_match(pe[i, j], dp.policy_evaluation(*args, pi[i, j]), exact=False)


def test_shared_transitions_broadcast_over_reward_batch():
    P, R = two_state_mdp()
    Rs = torch.stack([R, 2 * R, -R])
    res = dp.value_iteration(P, Rs, 0.5, tol=1e-12)
    assert res.v.shape == (3, 2)
    for i in range(3):
        torch.testing.assert_close(res.v[i], dp.value_iteration(P, Rs[i], 0.5, tol=1e-12).v, atol=1e-11, rtol=0)
    # gamma with its own batch axis broadcasts against an unbatched MDP
    gammas = torch.tensor([0.0, 0.5], dtype=F64)
    res = dp.policy_iteration(P, R, gammas)
    torch.testing.assert_close(res.v[0], R.amax(-1))
    torch.testing.assert_close(res.v[1], torch.tensor([3.0, 4.0], dtype=F64))


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_vmap_equals_loop(data):
    mdp = data.draw(fst.finite_mdps(**SMALL, batch_shape=(3,)))
    S, A = sizes(mdp)
    pi = data.draw(fst.stochastic_policies(S, A, batch_shape=(3,)))
    v = data.draw(fst.state_value_tables(S, batch_shape=(3,)))
    gamma = torch.tensor(data.draw(st.lists(fst.discounts(), min_size=3, max_size=3)), dtype=F64)

    def per_mdp(P, R, g, pi, v):
        fixed = dp.value_iteration_fixed(P, R, g, 7)
        return (
            fixed,
            dp.policy_evaluation(P, R, g, pi),
            dp.bellman_expectation_v(v, P, R, g, pi),
            dp.bellman_optimality_q(dp.q_from_v(v, P, R, g), P, R, g),
        )

    batched = vmap(per_mdp)(mdp.P, mdp.R, gamma, pi, v)
    for i in range(3):
        single = per_mdp(mdp.P[i], mdp.R[i], float(gamma[i]), pi[i], v[i])
        # matrix products and solves, unbatched vs under vmap: equal up to reassociation
        assert_match(single, tree.index(batched, i), exact=False)
    # value_iteration_fixed of the batch == vmap of it
    direct = dp.value_iteration_fixed(mdp.P, mdp.R, gamma, 7)
    assert_match(direct.v, batched[0].v, exact=False)


@pytest.mark.compile
def test_compiled_value_iteration_fixed_matches_eager():
    P, R = two_state_mdp()
    Ps = torch.stack([P, P.flip(-1), P])
    Rs = torch.stack([R, R.flip(0), -R])
    gammas = torch.tensor([0.5, 0.9, 0.0], dtype=F64)
    fn = vmap(lambda P, R, g: dp.value_iteration_fixed(P, R, g, 3))
    eager = fn(Ps, Rs, gammas)
    compiled = jit(fn)(Ps, Rs, gammas)
    assert_match(compiled, eager, exact=False)  # compiled vs eager: up to reassociation


# ---------------------------------------------------------------- dtypes and warnings
def test_float32_solutions_close_to_float64():
    P, R = random_mdp(0, (4,), 6, 3)
    ref = dp.policy_iteration(P, R, 0.9)
    P32, R32 = P.float(), R.float()
    for res in (dp.value_iteration(P32, R32, 0.9, tol=1e-4), dp.policy_iteration(P32, R32, 0.9)):
        assert res.v.dtype == torch.float32 and res.q.dtype == torch.float32
        torch.testing.assert_close(res.v.double(), ref.v, atol=2e-4, rtol=0)


def test_float32_unreachable_tolerance_is_raised_with_warning():
    P, R = random_mdp(1, (), 6, 3, (5.0, 10.0))
    ref = dp.policy_iteration(P, R, 0.99).v
    with pytest.warns(UserWarning, match="below what torch.float32 resolves"):
        res = dp.value_iteration(P.float(), R.float(), 0.99, tol=1e-9)
    torch.testing.assert_close(res.v.double(), ref, atol=0.05, rtol=0)


def test_non_convergence_warns():
    P, R = two_state_mdp()
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        res = dp.value_iteration(P, R, 0.99, tol=1e-12, stopping="sup", max_iterations=5)
    assert int(res.iterations) == 5
    with pytest.warns(RuntimeWarning, match="did not fall below"):
        dp.policy_evaluation(P, R, 0.99, torch.full((2, 2), 0.5, dtype=F64), method="iterative", max_iterations=3)


def test_no_warning_when_converged():
    P, R = two_state_mdp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dp.value_iteration(P, R, 0.9)
        dp.policy_iteration(P, R, 0.9)


# ------------------------------------------------------------------------ bad input
def test_bad_shapes_raise_value_error_naming_argument():
    P, R = two_state_mdp()
    pi = torch.full((2, 2), 0.5, dtype=F64)
    v = torch.zeros(2, dtype=F64)
    cases = [
        (lambda: dp.q_from_v(v, P[0], R, 0.5), r"P: expected shape \(\.\.\., S, A, S\) with rank >= 3, got shape \(2, 2\)"),
        (lambda: dp.q_from_v(v, torch.zeros(2, 2, 3, dtype=F64), R, 0.5), r"P: expected .*next state.*got shape \(2, 2, 3\)"),
        (lambda: dp.q_from_v(v, P, R[:, :1], 0.5), r"R: expected shape \(\.\.\., 2, 2\).*got shape \(2, 1\)"),
        (lambda: dp.q_from_v(torch.zeros(3, dtype=F64), P, R, 0.5), r"v: expected shape \(\.\.\., 2\).*got shape \(3,\)"),
        (lambda: dp.bellman_expectation_v(v, P, R, 0.5, pi[:1]), r"pi: expected shape \(\.\.\., 2, 2\).*got shape \(1, 2\)"),
        (lambda: dp.bellman_optimality_q(v, P, R, 0.5), r"q: expected shape \(\.\.\., 2, 2\).*got shape \(2,\)"),
        (lambda: dp.v_from_q(R, pi[:, :1]), r"pi: expected shape \(\.\.\., 2, 2\).*got shape \(2, 1\)"),
        (lambda: dp.value_iteration(torch.stack([P] * 3), torch.stack([R] * 2), 0.5),
         r"R: expected a batch shape that broadcasts with P's batch shape \(3,\).*\(2,\)"),
        (lambda: dp.value_iteration(P, R, torch.tensor([0.5, 0.5, 0.5], dtype=F64).reshape(3, 1)),
         None),  # gamma (3, 1) broadcasts: fine
        (lambda: dp.value_iteration(torch.stack([P] * 3), R, torch.full((2,), 0.5, dtype=F64)),
         r"gamma: expected a float or a tensor broadcastable to the MDP batch shape \(3,\), got a tensor of shape \(2,\)"),
        (lambda: dp.policy_evaluation(P, R, 1.0, pi), r"gamma: expected a discount < 1 for method='exact'.*got 1\.0"),
        (lambda: dp.policy_evaluation(P, R, 1.5, pi, method="iterative"), r"gamma: expected a number in \[0\.0, 1\.0\], got 1\.5"),
        (lambda: dp.policy_evaluation(P, R, 0.5, pi, method="direct"), r"method: expected 'exact' or 'iterative', got 'direct'"),
        (lambda: dp.policy_iteration(P, R, torch.tensor(1.0, dtype=F64)), r"gamma: expected discounts < 1 for policy_iteration"),
        (lambda: dp.value_iteration(P, R, 0.5, stopping="relative"), r"stopping: expected 'span' or 'sup', got 'relative'"),
        (lambda: dp.value_iteration(P, R, 0.5, tol=-1.0), r"tol: expected a number > 0, got -1\.0"),
        (lambda: dp.value_iteration(P, R, 0.5, max_iterations=0), r"max_iterations: expected an int >= 1, got 0"),
        (lambda: dp.value_iteration_fixed(P, R, 0.5, 0), r"num_iterations: expected an int >= 1, got 0"),
    ]
    for fn, pattern in cases:
        if pattern is None:
            assert fn().v.shape == (3, 1, 2)
            continue
        with pytest.raises(ValueError, match=pattern):
            fn()


def test_bad_dtypes_raise_type_error():
    P, R = two_state_mdp()
    with pytest.raises(TypeError, match=r"R: expected dtype torch.float64 \(the dtype of P\), got torch.float32"):
        dp.q_from_v(torch.zeros(2, dtype=F64), P, R.float(), 0.5)
    with pytest.raises(TypeError, match=r"P: expected a floating-point tensor, got dtype torch.int64"):
        dp.value_iteration(P.long(), R, 0.5)
    with pytest.raises(TypeError, match=r"pi: expected dtype torch.float64 \(the dtype of P\)"):
        dp.policy_evaluation(P, R, 0.5, torch.full((2, 2), 0.5))
    with pytest.raises(TypeError, match=r"P: expected a torch.Tensor, got ndarray"):
        dp.value_iteration(P.numpy(), R, 0.5)
    with pytest.raises(TypeError, match=r"num_iterations: expected an int, got float"):
        dp.value_iteration_fixed(P, R, 0.5, 3.0)


def test_check_mdp_rejects_bad_values():
    P, R = two_state_mdp()
    bad = P.clone()
    bad[1, 0] = torch.tensor([0.2, 0.7], dtype=F64)
    with pytest.raises(ValueError, match=r"P: expected finite rows .* sum.*got row \(1, 0\) summing to 0\.9"):
        dp.check_mdp(bad, R, 0.5)
    with pytest.raises(ValueError, match=r"row \(1, 0\)"):
        dp.value_iteration(bad, R, 0.5)  # the host loops validate by default
    neg = P.clone()
    neg[0, 1] = torch.tensor([-0.5, 1.5], dtype=F64)
    with pytest.raises(ValueError, match=r"P: expected non-negative probabilities, got P\[\(0, 1, 0\)\] = -0\.5"):
        dp.policy_iteration(neg, R, 0.5)
    nan = P.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"P: expected finite rows"):
        dp.check_mdp(nan, R, 0.5)
    with pytest.raises(ValueError, match=r"R: expected finite rewards"):
        dp.check_mdp(P, R.clone().fill_(float("inf")), 0.5)
    with pytest.raises(ValueError, match=r"gamma: expected discounts in \[0, 1\], got values in \[0\.5, 1\.2\]"):
        dp.check_mdp(torch.stack([P, P]), R, torch.tensor([0.5, 1.2], dtype=F64))
    dp.check_mdp(P, R, 0.5)  # a valid MDP passes


def test_empty_batch():
    res = dp.value_iteration(torch.zeros(0, 3, 2, 3, dtype=F64), torch.zeros(0, 3, 2, dtype=F64), 0.9)
    assert res.v.shape == (0, 3) and res.q.shape == (0, 3, 2) and res.iterations.shape == (0,)


def test_benchmark_quick_smoke(tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dp.py"
    spec = importlib.util.spec_from_file_location("bench_dp", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--threads", "1", "--out", str(tmp_path / "dp.json")])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "dp.json").read_text())
    assert saved["rows"] and saved["numpy_loop"]["seconds"] > 0
    assert saved["sup_rule_every_sweep_block_1_vs_numpy"]["sweep_counts_equal"]
    for row in result["rows"]:
        # every variant solves the MDPs: within tol * gamma / (1 - gamma) of v* (float32: its floor)
        assert row["max_abs_diff_vs_v_star"] < 1e-4, row
