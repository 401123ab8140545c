"""Tests for funrl.testing: the hypothesis strategies (properties of what they
generate) and the Bellman assertions (pass on DP solutions, fail informatively
on perturbed ones)."""

from __future__ import annotations

import functools
import subprocess
import sys

import hypothesis
import pytest
import torch
from hypothesis import given, settings, strategies as st

import funrl.testing as ftesting
from funrl import dp
from funrl import random as frandom
from funrl.testing import (
    assert_bellman_expectation,
    assert_bellman_optimality,
    assert_contraction,
    assert_policy_improvement,
)
from funrl.testing import strategies as fst

F64 = torch.float64
DTYPES = st.sampled_from([torch.float32, torch.float64])


def assert_no_subnormals(x: torch.Tensor):
    tiny = torch.finfo(x.dtype).tiny
    assert bool(((x == 0) | (x.abs() >= tiny)).all()), "subnormal value generated"
    assert bool(torch.isfinite(x).all())


def assert_rows_stochastic(p: torch.Tensor):
    eps = torch.finfo(p.dtype).eps
    assert bool((p >= 0).all())
    assert float((p.sum(-1) - 1).abs().max()) <= 4 * eps


# ------------------------------------------------------------------------ strategies
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_finite_mdps_are_valid(data):
    dtype = data.draw(DTYPES)
    lo = data.draw(st.floats(-5, 0))
    hi = data.draw(st.floats(0, 5))
    batch = data.draw(st.sampled_from([(), (2,), (2, 3)]))
    deterministic = data.draw(st.booleans())
    mdp = data.draw(fst.finite_mdps(reward_range=(lo, hi), dtype=dtype, deterministic=deterministic,
                                    terminal_states=data.draw(st.booleans()), batch_shape=batch))
    S, A = mdp.R.shape[-2:]
    assert 1 <= S <= 6 and 1 <= A <= 4
    assert mdp.P.shape == batch + (S, A, S) and mdp.R.shape == batch + (S, A)
    assert mdp.P.dtype == dtype and mdp.R.dtype == dtype
    assert isinstance(mdp.gamma, float) and 0 <= mdp.gamma < 1
    assert_rows_stochastic(mdp.P)
    assert_no_subnormals(mdp.P)
    assert_no_subnormals(mdp.R)
    assert bool(((mdp.R >= lo) & (mdp.R <= hi)).all())
    if deterministic:
        assert bool(((mdp.P == 0) | (mdp.P == 1)).all())
    dp.check_mdp(mdp.P, mdp.R, mdp.gamma)  # funrl's own validator accepts them


def test_finite_mdps_terminal_states_are_absorbing_with_zero_reward():
    def has_terminal(m):
        S = m.P.shape[-1]
        eye = torch.eye(S, dtype=m.P.dtype)
        absorbing = (m.P == eye[:, None, :]).all(-1).all(-1) & (m.R == 0).all(-1)
        return bool(absorbing.any()) and not bool(absorbing.all())

    mdp = hypothesis.find(fst.finite_mdps(num_states=st.integers(2, 6), terminal_states=True), has_terminal)
    assert has_terminal(mdp)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_policies_and_tables(data):
    dtype = data.draw(DTYPES)
    S, A = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    pi = data.draw(fst.stochastic_policies(S, A, dtype=dtype, batch_shape=(2,)))
    assert pi.shape == (2, S, A) and pi.dtype == dtype
    assert_rows_stochastic(pi)
    assert_no_subnormals(pi)
    positive = data.draw(fst.stochastic_policies(st.just(S), A, dtype=dtype, strictly_positive=True))
    assert bool((positive > 0).all())
    det = data.draw(fst.deterministic_policies(S, A, dtype=dtype))
    assert det.shape == (S, A) and bool((det.sum(-1) == 1).all()) and bool(((det == 0) | (det == 1)).all())
    acts = data.draw(fst.deterministic_policies(S, A, one_hot=False))
    assert acts.dtype == torch.int64 and acts.shape == (S,) and bool(((acts >= 0) & (acts < A)).all())
    q = data.draw(fst.action_value_tables(S, A, value_range=(-3, 2), dtype=dtype))
    v = data.draw(fst.state_value_tables(S, value_range=(-3, 2), dtype=dtype, batch_shape=(4,)))
    assert q.shape == (S, A) and v.shape == (4, S) and q.dtype == v.dtype == dtype
    for x in (q, v):
        assert_no_subnormals(x)
        assert bool(((x >= -3) & (x <= 2)).all())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_trajectories(data):
    dtype = data.draw(DTYPES)
    ends = data.draw(st.booleans())
    traj = data.draw(fst.trajectories(T=st.integers(1, 12), with_episode_ends=ends, dtype=dtype,
                                      gamma=fst.discounts(0.1, 0.99)))
    T, A = traj.r_t.shape[0], traj.q_values.shape[-1]
    assert traj.discount_t.shape == (T,) and traj.values.shape == (T + 1,) and traj.actions.shape == (T,)
    assert traj.q_values.shape == (T + 1, A)
    assert traj.target_probs.shape == traj.behaviour_probs.shape == (T + 1, A)
    assert traj.target_log_probs.shape == traj.behaviour_log_probs.shape == (T,)
    for x in traj:
        if x.is_floating_point():
            assert x.dtype == dtype
            assert_no_subnormals(x)
    assert traj.actions.dtype == torch.int64 and bool(((traj.actions >= 0) & (traj.actions < A)).all())
    nonzero = traj.discount_t[traj.discount_t != 0]
    assert bool((nonzero == nonzero[0]).all()) if nonzero.numel() else True
    assert bool(((traj.discount_t >= 0) & (traj.discount_t < 1)).all())
    if not ends:
        assert bool((traj.discount_t > 0).all())
    for probs, logp in ((traj.target_probs, traj.target_log_probs), (traj.behaviour_probs, traj.behaviour_log_probs)):
        assert_rows_stochastic(probs)
        assert bool((probs > 0).all())
        torch.testing.assert_close(logp, probs[:-1].gather(-1, traj.actions[:, None]).squeeze(-1).log())


def test_trajectories_can_end_episodes():
    traj = hypothesis.find(fst.trajectories(), lambda t: bool((t.discount_t == 0).any()) and bool((t.discount_t > 0).any()))
    assert bool((traj.discount_t == 0).any())


@settings(max_examples=30, deadline=None)
@given(fst.keys(), fst.discounts(0.2, 0.5))
def test_keys_and_discounts(k, g):
    assert k.dtype == torch.int64 and k.shape == (2,)
    assert bool(((k >= 0) & (k < 2**32)).all())
    u = frandom.uniform(k, (3,))
    assert u.shape == (3,)
    assert 0.2 <= g <= 0.5


def test_strategies_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"num_states: expected an int >= 1, got 0"):
        fst.finite_mdps(num_states=0)
    with pytest.raises(TypeError, match=r"num_actions: expected an int or a hypothesis strategy"):
        fst.stochastic_policies(3, 2.5)
    with pytest.raises(TypeError, match=r"dtype: expected torch.float32 or torch.float64, got torch.int64"):
        fst.finite_mdps(dtype=torch.int64)
    with pytest.raises(ValueError, match=r"max_value: expected 0 <= min_value <= max_value < 1"):
        fst.discounts(0.0, 1.0)
    with pytest.raises(ValueError, match=r"reward_range: expected finite low <= high"):
        fst.finite_mdps(reward_range=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"batch_shape: expected a tuple of positive ints"):
        fst.action_value_tables(2, 2, batch_shape=(0,))


def test_package_exports_strategies_lazily():
    assert ftesting.finite_mdps is fst.finite_mdps
    assert ftesting.MDP is fst.MDP
    assert ftesting.strategies is fst
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ftesting.nonexistent


def test_funrl_imports_without_hypothesis():
    # Hide hypothesis in a fresh interpreter: funrl, funrl.dp and the assertions still
    # import; the strategies module explains how to install it.
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import funrl, funrl.dp, funrl.testing\n"
        "from funrl.testing import assert_bellman_optimality\n"
        "try:\n"
        "    funrl.testing.finite_mdps\n"
        "except ImportError as e:\n"
        "    print('IMPORT-ERROR:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORT-ERROR:" in out.stdout
    assert "pip install hypothesis" in out.stdout and "funrl[test]" in out.stdout


# ------------------------------------------------------------------------ assertions
MDPS = fst.finite_mdps(num_states=st.integers(1, 5), num_actions=st.integers(1, 3), gamma=fst.discounts(0.0, 0.9))


def two_state_mdp():
    P = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]], dtype=F64)
    R = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=F64)
    return P, R


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_assertions_pass_on_dp_solutions_and_fail_on_perturbed_ones(data):
    mdp = data.draw(MDPS)
    S, A = mdp.R.shape
    args = (mdp.P, mdp.R, mdp.gamma)
    pi = data.draw(fst.stochastic_policies(S, A))
    v_pi = dp.policy_evaluation(*args, pi)
    q_pi = dp.q_from_v(v_pi, *args)
    star = dp.policy_iteration(*args)
    assert_bellman_expectation(v_pi, *args, pi, atol=1e-10)
    assert_bellman_expectation(q_pi, *args, pi, atol=1e-10)
    assert_bellman_optimality(star.v, *args, atol=1e-10)
    assert_bellman_optimality(star.q, *args, atol=1e-10)
    assert_policy_improvement(*args, pi)

    s = data.draw(st.integers(0, S - 1))
    a = data.draw(st.integers(0, A - 1))
    delta = data.draw(st.sampled_from([-0.1, 0.1]))
    # Perturbing one entry by delta changes its residual by at least (1 - gamma) |delta|.
    bad_v = v_pi.clone()
    bad_v[s] += delta
    with pytest.raises(AssertionError, match=r"Bellman expectation equation v = T\^pi v violated: max \|difference\|"):
        assert_bellman_expectation(bad_v, *args, pi, atol=1e-3)
    bad_q = star.q.clone()
    bad_q[s, a] += delta
    with pytest.raises(AssertionError, match=r"Bellman optimality equation q = T\* q violated"):
        assert_bellman_optimality(bad_q, *args, atol=1e-3)


def test_assertion_messages_locate_the_violation():
    P, R = two_state_mdp()
    P, R = torch.stack([P, P]), torch.stack([R, R])
    res = dp.value_iteration(P, R, 0.3, tol=1e-12)
    bad = res.v.clone()
    # v* = (1 + 0.3 * 2/0.7, 2/0.7); raising v[1, 0] by 0.5 leaves T* v unchanged (moving
    # to s1 stays optimal from s0 and nothing else leads to s0 profitably).
    bad[1, 0] += 0.5
    with pytest.raises(AssertionError) as info:
        assert_bellman_optimality(bad, P, R, 0.3, atol=1e-6)
    msg = str(info.value)
    assert "max |difference| = 0.5 " in msg and "(batch=1, state=0)" in msg and "1 of 4 entries fail" in msg
    bad_q = res.q.clone()
    bad_q[0, 1, 0] -= 1.0
    with pytest.raises(AssertionError, match=r"at \(batch=0, state=1, action=0\)"):
        assert_bellman_optimality(bad_q, P, R, 0.3, atol=1e-6)
    # kind can be forced; the wrong trailing shape is a ValueError naming the argument
    assert_bellman_optimality(res.v, P, R, 0.3, atol=1e-9, kind="v")
    with pytest.raises(ValueError, match=r"value: expected state values \(\.\.\., 2\) or action values \(\.\.\., 2, 2\)"):
        assert_bellman_optimality(torch.zeros(3, dtype=F64), P, R, 0.3)
    with pytest.raises(ValueError, match=r"kind: expected 'auto', 'v' or 'q', got 'w'"):
        assert_bellman_optimality(res.v, P, R, 0.3, kind="w")


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_assert_contraction(data):
    mdp = data.draw(MDPS)
    S, A = mdp.R.shape
    pi = data.draw(fst.stochastic_policies(S, A))
    args = (mdp.P, mdp.R, mdp.gamma)
    v1, v2 = data.draw(fst.state_value_tables(S)), data.draw(fst.state_value_tables(S))
    q1, q2 = data.draw(fst.action_value_tables(S, A)), data.draw(fst.action_value_tables(S, A))
    assert_contraction(dp.bellman_optimality_v, *args, v1, v2)
    assert_contraction(dp.bellman_optimality_q, *args, q1, q2)
    assert_contraction(functools.partial(dp.bellman_expectation_v, pi=pi), *args, v1, v2)
    assert_contraction(functools.partial(dp.bellman_expectation_q, pi=pi), *args, q1, q2)
    if not torch.equal(v1, v2):
        # an expansion (T v = 2 v) is caught
        with pytest.raises(AssertionError, match=r"contraction violated at batch index \(\): .*ratio 2"):
            assert_contraction(lambda v, P, R, g: 2 * v, *args, v1, v2)


def test_assert_contraction_batched_gamma_and_bad_operator():
    P, R = two_state_mdp()
    P, R = torch.stack([P, P]), torch.stack([R, R])
    gamma = torch.tensor([0.5, 0.9], dtype=F64)
    x = torch.tensor([[0.0, 1.0], [3.0, -2.0]], dtype=F64)
    y = torch.zeros(2, 2, dtype=F64)
    assert_contraction(dp.bellman_optimality_v, P, R, gamma, x, y)
    # an operator that ignores gamma (T v = R.max + v) contracts nothing
    with pytest.raises(AssertionError, match=r"contraction violated .*\(ratio 1\); 2 of 2 MDPs fail"):
        assert_contraction(lambda v, P, R, g: R.amax(-1) + v, P, R, gamma, x, y)
    with pytest.raises(TypeError, match="operator: expected a callable, got int"):
        assert_contraction(3, P, R, gamma, x, y)


def test_assert_policy_improvement_catches_a_worse_policy():
    P, R = two_state_mdp()
    optimal = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    worse = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    assert_policy_improvement(P, R, 0.5, worse)  # greedy improvement of a bad policy is fine
    assert_policy_improvement(P, R, 0.5, worse, optimal)
    # V^optimal = (3, 4); V^worse = (0, 0): every state gets worse.
    with pytest.raises(AssertionError, match=r"policy improvement violated.*\(state=1\): 0 < 4 .*2 of 2 states are worse"):
        assert_policy_improvement(P, R, 0.5, optimal, worse)
