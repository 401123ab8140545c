"""Tests for funrl.losses.multistep: returns, GAE, off-policy returns and V-trace.

References are independent numpy backward loops written here (rlax's recursions,
one step at a time), plus hand-computed fixtures and identities between the
estimators.
"""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import funrl
from funrl.losses import multistep as ms
from helpers import assert_match

F64 = torch.float64


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------- numpy references
def np_lambda_returns(r, d, v, lam):
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    out, g = np.zeros_like(r), v[-1]
    for i in reversed(range(len(r))):
        g = r[i] + d[i] * ((1 - lam[i]) * v[i] + lam[i] * g)
        out[i] = g
    return out


def np_n_step(r, d, v, n, lam=1.0):
    """rlax's definition: pad r with 0, discounts and lambdas with 1, values with v[-1]; iterate n times."""
    T = len(r)
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    rp = np.concatenate([r, np.zeros(n - 1)])
    dp = np.concatenate([d, np.ones(n - 1)])
    lp = np.concatenate([lam, np.ones(n - 1)])
    vp = np.concatenate([v, np.full(n - 1, v[-1])])
    targets = vp[n - 1 : n - 1 + T].copy()
    for i in reversed(range(n)):
        targets = rp[i : i + T] + dp[i : i + T] * ((1 - lp[i : i + T]) * vp[i : i + T] + lp[i : i + T] * targets)
    return targets


def np_gae(r, d, lam, values):
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    out, adv = np.zeros_like(r), 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + d[t] * values[t + 1] - values[t]
        adv = delta + d[t] * lam[t] * adv
        out[t] = adv
    return out


def np_importance_corrected(r, d, rho_tm1, lam, values):
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    T = len(r)
    out, e = np.zeros(T), 0.0
    for t in reversed(range(T)):
        rho_next = rho_tm1[t + 1] if t + 1 < T else 1.0
        e = (r[t] + d[t] * values[t + 1] - values[t]) + d[t] * rho_next * lam[t] * e
        out[t] = e
    return rho_tm1 * out


def np_off_policy_q_and_v(q, v, r, d, c):
    K = len(r)
    out = np.zeros(K)
    g = r[-1] + d[-1] * v[-1]
    out[-1] = g
    for i in reversed(range(K - 1)):
        g = r[i] + d[i] * (v[i] - c[i] * q[i] + c[i] * g)
        out[i] = g
    return out


def np_off_policy_action_values(q, a, r, d, c, pi):
    exp_q = (pi * q).sum(-1)
    q_a = q[np.arange(len(a)), a]
    return np_off_policy_q_and_v(q_a[:-1], exp_q, r, d, c[:-1])


def np_leaky_vtrace(v_tm1, v_t, r, d, rho, alpha=1.0, lam=1.0, clip=1.0, clip_pg=1.0):
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    c = ((1 - alpha) * rho + alpha * np.minimum(1.0, rho)) * lam
    crho = (1 - alpha) * rho + alpha * np.minimum(clip, rho)
    T = len(r)
    errors, e = np.zeros(T), 0.0
    for i in reversed(range(T)):
        e = crho[i] * (r[i] + d[i] * v_t[i] - v_tm1[i]) + d[i] * c[i] * e
        errors[i] = e
    targets = errors + v_tm1
    q_est = np.zeros(T)
    for i in range(T):
        boot = lam[i] * targets[i + 1] + (1 - lam[i]) * v_tm1[i + 1] if i + 1 < T else v_t[-1]
        q_est[i] = r[i] + d[i] * boot
    pg_rho = (1 - alpha) * rho + alpha * np.minimum(clip_pg, rho)
    return errors, pg_rho * (q_est - v_tm1), q_est


def traj(seed, T, A=3, end_prob=0.2):
    """One random trajectory (float64 numpy), with some episode ends (discount 0)."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 1.0, T) * (rng.uniform(size=T) > end_prob)
    q = rng.normal(size=(T, A))
    pi = rng.dirichlet(np.ones(A), size=T)
    return dict(
        r=rng.normal(size=T),
        d=d,
        v=rng.normal(size=T),
        values=rng.normal(size=T + 1),
        rho=np.exp(rng.normal(scale=0.7, size=T)),
        lam=rng.uniform(0, 1, size=T),
        q=q,
        a=rng.integers(0, A, size=T),
        pi=pi,
        c=rng.uniform(0, 1, size=T),
    )


SEEDS = st.integers(0, 2**31 - 1)
LENGTHS = st.integers(1, 12)
SET = settings(max_examples=30, deadline=None)


# ----------------------------------------------------------------------------- hand-computed fixtures
def test_lambda_returns_hand_computed():
    r, d, v = t64([1, 2, 3]), t64([0.5, 0.5, 0.5]), t64([2, 4, 8])
    # G2 = 3 + .5*8 = 7;  G1 = 2 + .5*(.5*4 + .5*7) = 4.75;  G0 = 1 + .5*(.5*2 + .5*4.75) = 2.6875
    torch.testing.assert_close(ms.lambda_returns(r, d, v, 0.5), t64([2.6875, 4.75, 7.0]))


def test_discounted_returns_hand_computed_and_episode_end():
    r, d = t64([1, 2, 3]), t64([0.5, 0.0, 0.5])
    # G2 = 3 + .5*8 = 7;  G1 = 2 + 0*7 = 2 (episode ends);  G0 = 1 + .5*2 = 2
    torch.testing.assert_close(ms.discounted_returns(r, d, t64(8.0)), t64([2.0, 2.0, 7.0]))
    # a value sequence bootstraps on its last entry only
    torch.testing.assert_close(ms.discounted_returns(r, d, t64([-5, 99, 8])), t64([2.0, 2.0, 7.0]))


def test_n_step_hand_computed():
    r, d, v = t64([1, 2, 3]), t64([0.5, 0.5, 0.5]), t64([2, 4, 8])
    # n=2: G0 = 1 + .5*(2 + .5*4) = 3;  G1 = 2 + .5*(3 + .5*8) = 5.5;  G2 = 3 + .5*8 = 7 (truncated)
    torch.testing.assert_close(ms.n_step_bootstrapped_returns(r, d, v, 2), t64([3.0, 5.5, 7.0]))


def test_gae_hand_computed():
    r, d, values = t64([1, 2]), t64([0.5, 0.5]), t64([1, 2, 4])
    # delta = [1 + 1 - 1, 2 + 2 - 2] = [1, 2];  A1 = 2;  A0 = 1 + .5*.5*2 = 1.5
    torch.testing.assert_close(ms.truncated_generalized_advantage_estimation(r, d, 0.5, values), t64([1.5, 2.0]))


def test_importance_corrected_td_errors_hand_computed():
    r, d, rho, values = t64([1, 2]), t64([0.5, 0.5]), t64([2.0, 0.5]), t64([1, 2, 4])
    # delta = [1, 2];  e1 = 2;  e0 = 1 + .5 * rho1(.5) * 1 * 2 = 1.5;  errors = rho * e = [3, 1]
    torch.testing.assert_close(ms.importance_corrected_td_errors(r, d, rho, 1.0, values), t64([3.0, 1.0]))


def test_general_off_policy_returns_hand_computed():
    # from q and v: G1 = 1 + .5*3 = 2.5;  G0 = 1 + .5*(2 - .5*1 + .5*2.5) = 2.375
    out = ms.general_off_policy_returns_from_q_and_v(t64([1]), t64([2, 3]), t64([1, 1]), t64([0.5, 0.5]), t64([0.5]))
    torch.testing.assert_close(out, t64([2.375, 2.5]))
    # from action values: E_pi q = [2, 3.5], q(a) = [3, .];  G1 = 1 + .5*3.5 = 2.75;
    # G0 = 1 + .5*(2 - .5*3 + .5*2.75) = 1.9375  (c_t[-1] is unused)
    q, a = t64([[1, 3], [2, 4]]), torch.tensor([1, 0])
    pi = t64([[0.5, 0.5], [0.25, 0.75]])
    out = ms.general_off_policy_returns_from_action_values(q, a, t64([1, 1]), t64([0.5, 0.5]), t64([0.5, 9.0]), pi)
    torch.testing.assert_close(out, t64([1.9375, 2.75]))


def test_vtrace_hand_computed():
    v_tm1, v_t, r, d, rho = t64([1, 2]), t64([2, 4]), t64([1, 2]), t64([0.5, 0.5]), t64([2.0, 0.5])
    # c = min(1, rho) = [1, .5]; rho_bar = [1, .5]; td = [1*(1+1-1), .5*(2+2-2)] = [1, 1]
    # e1 = 1; e0 = 1 + .5*1*1 = 1.5
    torch.testing.assert_close(ms.vtrace(v_tm1, v_t, r, d, rho), t64([1.5, 1.0]))
    out = ms.vtrace_td_error_and_advantage(v_tm1, v_t, r, d, rho)
    # targets = [2.5, 3]; q = [1 + .5*3, 2 + .5*4] = [2.5, 4]; adv = [1*(2.5-1), .5*(4-2)]
    torch.testing.assert_close(out.errors, t64([1.5, 1.0]))
    torch.testing.assert_close(out.q_estimate, t64([2.5, 4.0]))
    torch.testing.assert_close(out.pg_advantage, t64([1.5, 1.0]))
    # leaky, alpha=.5: c = rho_bar = [.5*2 + .5*1, .5] = [1.5, .5]; td = [1.5, 1]; e0 = 1.5 + .5*1.5*1
    torch.testing.assert_close(ms.leaky_vtrace(v_tm1, v_t, r, d, rho, 0.5), t64([2.25, 1.0]))
    out = ms.leaky_vtrace_td_error_and_advantage(v_tm1, v_t, r, d, rho, alpha=0.5)
    torch.testing.assert_close(out.errors, t64([2.25, 1.0]))
    torch.testing.assert_close(out.q_estimate, t64([2.5, 4.0]))
    torch.testing.assert_close(out.pg_advantage, t64([1.5 * 1.5, 1.0]))
    assert isinstance(out, ms.VTraceOutput) and out._fields == ("errors", "pg_advantage", "q_estimate")


# ----------------------------------------------------------------------------- numpy cross-checks
@SET
@given(seed=SEEDS, T=LENGTHS, per_step=st.booleans())
def test_returns_match_numpy(seed, T, per_step):
    x = traj(seed, T)
    lam = x["lam"] if per_step else float(x["lam"][0])
    lam_t = t64(lam) if per_step else lam
    r, d, v, values = t64(x["r"]), t64(x["d"]), t64(x["v"]), t64(x["values"])
    torch.testing.assert_close(ms.lambda_returns(r, d, v, lam_t), t64(np_lambda_returns(x["r"], x["d"], x["v"], lam)))
    torch.testing.assert_close(
        ms.truncated_generalized_advantage_estimation(r, d, lam_t, values),
        t64(np_gae(x["r"], x["d"], lam, x["values"])),
    )
    for n in (1, 2, 3, T, T + 3):
        torch.testing.assert_close(
            ms.n_step_bootstrapped_returns(r, d, v, n, lam_t), t64(np_n_step(x["r"], x["d"], x["v"], n, lam))
        )
    torch.testing.assert_close(
        ms.importance_corrected_td_errors(r, d, t64(x["rho"]), lam_t, values),
        t64(np_importance_corrected(x["r"], x["d"], x["rho"], lam, x["values"])),
    )


@SET
@given(seed=SEEDS, T=LENGTHS)
def test_off_policy_returns_match_numpy(seed, T):
    x = traj(seed, T)
    out = ms.general_off_policy_returns_from_action_values(
        t64(x["q"]), torch.as_tensor(x["a"]), t64(x["r"]), t64(x["d"]), t64(x["c"]), t64(x["pi"])
    )
    torch.testing.assert_close(out, t64(np_off_policy_action_values(x["q"], x["a"], x["r"], x["d"], x["c"], x["pi"])))


@SET
@given(seed=SEEDS, T=LENGTHS, alpha=st.floats(0, 1), clip=st.floats(0.5, 3), clip_pg=st.floats(0.5, 3),
       per_step=st.booleans())
def test_vtrace_matches_numpy(seed, T, alpha, clip, clip_pg, per_step):
    x = traj(seed, T)
    lam = x["lam"] if per_step else float(x["lam"][0])
    lam_t = t64(lam) if per_step else lam
    v_tm1, v_t = x["values"][:-1], x["values"][1:] + 0.1  # inconsistent on purpose: v_t is its own input
    args = (t64(v_tm1), t64(v_t), t64(x["r"]), t64(x["d"]), t64(x["rho"]))
    e, adv, q = np_leaky_vtrace(v_tm1, v_t, x["r"], x["d"], x["rho"], alpha, lam, clip, clip_pg)
    out = ms.leaky_vtrace_td_error_and_advantage(*args, alpha, lam_t, clip, clip_pg)
    torch.testing.assert_close(out, ms.VTraceOutput(t64(e), t64(adv), t64(q)))
    torch.testing.assert_close(ms.leaky_vtrace(*args, alpha, lam_t, clip), t64(e))
    e, adv, q = np_leaky_vtrace(v_tm1, v_t, x["r"], x["d"], x["rho"], 1.0, lam, clip, clip_pg)
    torch.testing.assert_close(ms.vtrace_td_error_and_advantage(*args, lam_t, clip, clip_pg),
                               ms.VTraceOutput(t64(e), t64(adv), t64(q)))


# ----------------------------------------------------------------------------- identities
@SET
@given(seed=SEEDS, T=LENGTHS)
def test_lambda_returns_limits(seed, T):
    x = traj(seed, T)
    r, d, v = t64(x["r"]), t64(x["d"]), t64(x["v"])
    torch.testing.assert_close(ms.lambda_returns(r, d, v, 1.0), ms.discounted_returns(r, d, v))
    torch.testing.assert_close(ms.lambda_returns(r, d, v, 0.0), r + d * v)
    torch.testing.assert_close(ms.n_step_bootstrapped_returns(r, d, v, 1), r + d * v)
    for n in (T, T + 1, 4 * T):
        torch.testing.assert_close(ms.n_step_bootstrapped_returns(r, d, v, n), ms.discounted_returns(r, d, v[-1]))


@SET
@given(seed=SEEDS, T=LENGTHS, lam=st.floats(0, 1))
def test_gae_identities(seed, T, lam):
    x = traj(seed, T)
    r, d, values = t64(x["r"]), t64(x["d"]), t64(x["values"])
    gae = ms.truncated_generalized_advantage_estimation
    torch.testing.assert_close(gae(r, d, 1.0, values) + values[:-1], ms.discounted_returns(r, d, values[-1]))
    torch.testing.assert_close(gae(r, d, 0.0, values), r + d * values[1:] - values[:-1])
    torch.testing.assert_close(gae(r, d, lam, values) + values[:-1], ms.lambda_returns(r, d, values[1:], lam))


@SET
@given(seed=SEEDS, T=LENGTHS, lam=st.floats(0, 1))
def test_vtrace_identities(seed, T, lam):
    x = traj(seed, T)
    r, d, values, rho = t64(x["r"]), t64(x["d"]), t64(x["values"]), t64(x["rho"])
    v_tm1, v_t = values[:-1], values[1:]
    ones = torch.ones(T, dtype=F64)
    # on-policy V-trace targets are n-step (n >= T) discounted returns bootstrapped on v_t[-1] ...
    torch.testing.assert_close(ms.vtrace(v_tm1, v_t, r, d, ones) + v_tm1, ms.discounted_returns(r, d, v_t[-1]))
    torch.testing.assert_close(ms.vtrace(v_tm1, v_t, r, d, ones) + v_tm1, ms.n_step_bootstrapped_returns(r, d, v_t, T))
    # ... and lambda-returns for lambda < 1 (values consistent: v_t[:-1] == v_tm1[1:])
    torch.testing.assert_close(ms.vtrace(v_tm1, v_t, r, d, ones, lam) + v_tm1, ms.lambda_returns(r, d, v_t, lam))
    # leaky V-trace interpolates: alpha=1 is V-trace, alpha=0 per-decision importance sampling
    torch.testing.assert_close(ms.leaky_vtrace(v_tm1, v_t, r, d, rho, 1.0, lam), ms.vtrace(v_tm1, v_t, r, d, rho, lam))
    torch.testing.assert_close(
        ms.leaky_vtrace_td_error_and_advantage(v_tm1, v_t, r, d, rho, 1.0, lam),
        ms.vtrace_td_error_and_advantage(v_tm1, v_t, r, d, rho, lam),
    )
    torch.testing.assert_close(
        ms.leaky_vtrace(v_tm1, v_t, r, d, rho, 0.0, lam),
        ms.importance_corrected_td_errors(r, d, rho, lam, values),
    )


@SET
@given(seed=SEEDS, T=LENGTHS)
def test_off_policy_returns_special_cases(seed, T):
    x = traj(seed, T, A=4)
    q, r, d = t64(x["q"]), t64(x["r"]), t64(x["d"])
    a = torch.as_tensor(x["a"])
    greedy_on_a = torch.nn.functional.one_hot(a, 4).to(F64)
    f = ms.general_off_policy_returns_from_action_values
    # pi deterministic on the taken actions and c = 1: discounted returns bootstrapped on q_t[-1, a_t[-1]]
    q_a = q.gather(1, a[:, None]).squeeze(1)
    ones = torch.ones(T, dtype=F64)
    torch.testing.assert_close(f(q, a, r, d, ones, greedy_on_a), ms.discounted_returns(r, d, q_a[-1]))
    # c = 0: one-step expected-SARSA targets r + discount * E_pi q
    pi = t64(x["pi"])
    torch.testing.assert_close(f(q, a, r, d, torch.zeros(T, dtype=F64), pi), r + d * (pi * q).sum(-1))


@SET
@given(seed=SEEDS, T=st.integers(3, 12), data=st.data())
def test_episode_end_cuts_the_recursion(seed, T, data):
    """With discount_t[k] = 0, returns at times <= k ignore everything after step k."""
    k = data.draw(st.integers(0, T - 2))
    x = traj(seed, T, end_prob=0.0)
    x["d"][k] = 0.0
    y = {key: val.copy() for key, val in x.items()}
    rng = np.random.default_rng(seed + 1)
    y["r"][k + 1:] += rng.normal(size=T - k - 1)
    y["v"][k:] += rng.normal(size=T - k)
    y["values"][k + 1:] += rng.normal(size=T - k)
    y["rho"][k + 1:] *= 3.0

    def outputs(z):
        r, d, v, values, rho = t64(z["r"]), t64(z["d"]), t64(z["v"]), t64(z["values"]), t64(z["rho"])
        return [
            ms.lambda_returns(r, d, v, 0.9),
            ms.discounted_returns(r, d, v),
            ms.n_step_bootstrapped_returns(r, d, v, 5, 0.8),
            ms.truncated_generalized_advantage_estimation(r, d, 0.95, values),
            ms.importance_corrected_td_errors(r, d, rho, 0.9, values),
            ms.vtrace(values[:-1], values[1:], r, d, rho, 0.9),
        ]

    for before, after in zip(outputs(x), outputs(y)):
        torch.testing.assert_close(before[: k + 1], after[: k + 1])
        assert not torch.allclose(before[k + 1:], after[k + 1:])


# ----------------------------------------------------------------------------- vmap, dtype, gradients
def _batch_args(seed, B, T):
    xs = [traj(seed + i, T) for i in range(B)]

    def stack(key, dtype=F64):
        return torch.stack([torch.as_tensor(x[key]).to(dtype) for x in xs])

    a = torch.stack([torch.as_tensor(x["a"]) for x in xs])
    return dict(r=stack("r"), d=stack("d"), v=stack("v"), values=stack("values"), rho=stack("rho"), lam=stack("lam"),
                q=stack("q"), a=a, pi=stack("pi"), c=stack("c"), qa=stack("v")[:, :-1], v0=stack("values")[:, 0])


CASES = {
    "lambda_returns": (lambda b: (b["r"], b["d"], b["v"], b["lam"]), ms.lambda_returns),
    "discounted_returns_scalar_v": (lambda b: (b["r"], b["d"], b["v0"]), ms.discounted_returns),
    "n_step": (lambda b: (b["r"], b["d"], b["v"]), lambda r, d, v: ms.n_step_bootstrapped_returns(r, d, v, 3, 0.9)),
    "gae": (lambda b: (b["r"], b["d"], b["lam"], b["values"]), ms.truncated_generalized_advantage_estimation),
    "importance_corrected": (lambda b: (b["r"], b["d"], b["rho"], b["lam"], b["values"]),
                             ms.importance_corrected_td_errors),
    "off_policy_action_values": (lambda b: (b["q"], b["a"], b["r"], b["d"], b["c"], b["pi"]),
                                 ms.general_off_policy_returns_from_action_values),
    "off_policy_q_and_v": (lambda b: (b["qa"], b["v"], b["r"], b["d"], b["c"][:, :-1]),
                           ms.general_off_policy_returns_from_q_and_v),
    "vtrace": (lambda b: (b["values"][:, :-1], b["values"][:, 1:], b["r"], b["d"], b["rho"], b["lam"]), ms.vtrace),
    "leaky_vtrace": (lambda b: (b["values"][:, :-1], b["values"][:, 1:], b["r"], b["d"], b["rho"]),
                     lambda *a: ms.leaky_vtrace(*a, alpha_=0.3, lambda_=0.9, clip_rho_threshold=2.0)),
    "vtrace_adv": (lambda b: (b["values"][:, :-1], b["values"][:, 1:], b["r"], b["d"], b["rho"]),
                   ms.vtrace_td_error_and_advantage),
    "leaky_vtrace_adv": (lambda b: (b["values"][:, :-1], b["values"][:, 1:], b["r"], b["d"], b["rho"]),
                         lambda *a: ms.leaky_vtrace_td_error_and_advantage(*a, alpha=0.4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_equals_python_loop_and_keeps_dtype(name):
    make_args, fn = CASES[name]
    args = make_args(_batch_args(0, 5, 9))
    batched = vmap(fn)(*args)
    looped = [fn(*(x[i] for x in args)) for i in range(5)]
    looped = type(batched)(*map(torch.stack, zip(*looped))) if isinstance(batched, tuple) else torch.stack(looped)
    assert_match(batched, looped)  # element-wise recursions over time: bit for bit
    for out in batched if isinstance(batched, tuple) else (batched,):
        assert out.dtype == F64 and out.shape == (5, 9)
    # float32 in, float32 out
    out32 = fn(*(x[0].float() if x.is_floating_point() else x[0] for x in args))
    for out in out32 if isinstance(out32, tuple) else (out32,):
        assert out.dtype == torch.float32


def _torch_loop_lambda_returns(r, d, v, lam):
    g, out = v[-1], []
    for i in reversed(range(r.shape[0])):
        g = r[i] + d[i] * ((1 - lam) * v[i] + lam * g)
        out.append(g)
    return torch.stack(out[::-1])


def test_gradients_match_the_backward_loop():
    """Gradients through the doubling scan equal those through rlax's loop."""
    x = traj(3, 10)
    r, d, v = t64(x["r"]), t64(x["d"]), t64(x["v"])
    w = torch.linspace(-1, 1, 10, dtype=F64)
    for argnum in (0, 1, 2):
        g = grad(lambda *a: (ms.lambda_returns(*a, 0.7) * w).sum(), argnums=argnum)(r, d, v)
        g_ref = grad(lambda *a: (_torch_loop_lambda_returns(*a, 0.7) * w).sum(), argnums=argnum)(r, d, v)
        torch.testing.assert_close(g, g_ref)
    # GAE = lambda_returns(values[1:]) - values[:-1]: its gradient w.r.t. values
    values = t64(x["values"])
    g = grad(lambda vals: (ms.truncated_generalized_advantage_estimation(r, d, 0.7, vals) * w).sum())(values)
    g_ref = grad(lambda vals: ((_torch_loop_lambda_returns(r, d, vals[1:], 0.7) - vals[:-1]) * w).sum())(values)
    torch.testing.assert_close(g, g_ref)


def test_stop_target_gradients():
    x = traj(4, 6)
    r, d, v, values, rho = t64(x["r"]), t64(x["d"]), t64(x["v"]), t64(x["values"]), t64(x["rho"])
    zeros = torch.zeros(6, dtype=F64)

    def total(f, argnum, *args, **kw):
        return grad(lambda *a: f(*a, **kw).sum(), argnums=argnum)(*args)

    # returns: stop => no gradient at all; default (False) => gradient into the bootstrap values
    for f, args, argnum in [
        (ms.lambda_returns, (r, d, v, 0.9), 2),
        (ms.n_step_bootstrapped_returns, (r, d, v, 2), 2),
        (ms.discounted_returns, (r, d, v), 2),
        (ms.truncated_generalized_advantage_estimation, (r, d, 0.9, values), 3),
        (ms.general_off_policy_returns_from_q_and_v, (v[:-1], v, r, d, rho[:-1]), 1),
    ]:
        assert torch.count_nonzero(total(f, argnum, *args, stop_target_gradients=True)) == 0
        assert torch.count_nonzero(total(f, argnum, *args)) > 0
    # TD-style errors (V-trace, importance corrected): stop => d/dv_t = 0 and d/dv_tm1 = -1
    v_tm1, v_t = values[:-1], values[1:]
    for f in (ms.vtrace, ms.leaky_vtrace):
        torch.testing.assert_close(total(f, 1, v_tm1, v_t, r, d, rho), zeros)
        torch.testing.assert_close(total(f, 0, v_tm1, v_t, r, d, rho), -torch.ones(6, dtype=F64))
        assert torch.count_nonzero(total(f, 1, v_tm1, v_t, r, d, rho, stop_target_gradients=False)) > 0
    g = total(ms.importance_corrected_td_errors, 4, r, d, rho, 0.9, values, stop_target_gradients=True)
    torch.testing.assert_close(g, torch.cat([-torch.ones(6, dtype=F64), torch.zeros(1, dtype=F64)]))
    for f in (ms.vtrace_td_error_and_advantage, ms.leaky_vtrace_td_error_and_advantage):
        torch.testing.assert_close(grad(lambda vt: f(v_tm1, vt, r, d, rho).errors.sum())(v_t), zeros)
        # as in rlax, only the last Q estimate sees v_t (un-stopped): r + discount * v_t[-1]
        g = grad(lambda vt: f(v_tm1, vt, r, d, rho).q_estimate.sum())(v_t)
        torch.testing.assert_close(g, torch.cat([zeros[:-1], d[-1:]]))
    # a vmapped per-sequence flag (bool tensor) selects per sequence
    flags = torch.tensor([True, False])
    g = grad(lambda vv: vmap(lambda vi, s: ms.lambda_returns(r, d, vi, 0.9, stop_target_gradients=s))(vv, flags).sum())(
        torch.stack([v, v])
    )
    assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[1]) > 0


def test_graph_size_is_logarithmic_in_T():
    """No unrolled loop over time: the traced graph grows with log2(T), not T."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def size(T):
        f = vmap(lambda r, d, v: ms.truncated_generalized_advantage_estimation(r, d, 0.95, v)
                 + ms.lambda_returns(r, d, v[1:], 0.9)[..., :])
        gm = make_fx(f)(torch.zeros(4, T), torch.zeros(4, T), torch.zeros(4, T + 1))
        return len(gm.graph.nodes)

    n8, n128, n512 = size(8), size(128), size(512)
    # each doubling of T adds one scan step, i.e. a fixed number of nodes: 8 -> 128 is 4 steps, 128 -> 512 two
    assert n128 - n8 == 2 * (n512 - n128) > 0
    assert n512 < 3 * n8 < 512  # an unrolled loop would need several nodes per time step


INDUCTOR_GROUP = ("lambda_returns", "n_step", "gae", "off_policy_action_values", "vtrace_adv")


@pytest.mark.compile
def test_compiled_equals_eager():
    """Compiled == eager, in two graphs to bound compile time.

    Inductor (the real thing): a representative group at T=8 plus GAE and
    lambda-returns at T=128 in one graph.  aot_eager (Dynamo + AOTAutograd, no
    code generation): the other estimators, proving each traces with fullgraph=True.
    """
    b = _batch_args(11, 4, 8)
    x128 = _batch_args(12, 4, 128)

    def group(names):
        def run(b, x128):
            out = {name: vmap(CASES[name][1])(*CASES[name][0](b)) for name in names}
            out["gae128"] = vmap(ms.truncated_generalized_advantage_estimation, in_dims=(0, 0, None, 0))(
                x128["r"], x128["d"], 0.95, x128["values"])
            out["lambda128"] = vmap(ms.lambda_returns, in_dims=(0, 0, 0, None))(x128["r"], x128["d"], x128["v"], 0.9)
            return out
        return run

    start = time.perf_counter()
    compiled = funrl.jit(group(INDUCTOR_GROUP))(b, x128)
    print(f"inductor compile + first call (incl. T=128 GAE and lambda-returns): {time.perf_counter() - start:.1f} s")
    assert_match(compiled, group(INDUCTOR_GROUP)(b, x128), exact=False)  # compiled vs eager: reassociation
    x = x128
    torch.testing.assert_close(
        compiled["gae128"][0], t64(np_gae(x["r"][0].numpy(), x["d"][0].numpy(), 0.95, x["values"][0].numpy()))
    )
    rest = [name for name in sorted(CASES) if name not in INDUCTOR_GROUP]

    def run_rest(b):
        return {name: vmap(CASES[name][1])(*CASES[name][0](b)) for name in rest}

    assert_match(funrl.jit(run_rest, backend="aot_eager")(b), run_rest(b), exact=False)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    r, d, v = torch.zeros(4), torch.ones(4), torch.zeros(4)
    values = torch.zeros(5)
    cases = [
        (ValueError, "r_t", lambda: ms.lambda_returns(torch.zeros(4, 2), d, v)),
        (TypeError, "discount_t", lambda: ms.lambda_returns(r, torch.ones(4, dtype=torch.int64), v)),
        (ValueError, "v_t", lambda: ms.lambda_returns(r, d, torch.zeros(3))),
        (ValueError, "lambda_", lambda: ms.lambda_returns(r, d, v, 1.5)),
        (ValueError, "lambda_", lambda: ms.lambda_returns(r, d, v, torch.ones(3))),
        (TypeError, "lambda_", lambda: ms.lambda_returns(r, d, v, "0.9")),
        (ValueError, "r_t", lambda: ms.lambda_returns(torch.zeros(0), torch.zeros(0), torch.zeros(0))),
        (TypeError, "r_t", lambda: ms.discounted_returns([0.0, 1.0], d, v)),
        (ValueError, "v_t", lambda: ms.discounted_returns(r, d, torch.zeros(2, 2))),
        (ValueError, "n", lambda: ms.n_step_bootstrapped_returns(r, d, v, 0)),
        (TypeError, "n", lambda: ms.n_step_bootstrapped_returns(r, d, v, 2.0)),
        (ValueError, "values", lambda: ms.truncated_generalized_advantage_estimation(r, d, 0.9, torch.zeros(4))),
        (ValueError, "values", lambda: ms.importance_corrected_td_errors(r, d, torch.ones(4), 1.0, torch.zeros(6))),
        (TypeError, "a_t", lambda: ms.general_off_policy_returns_from_action_values(
            torch.zeros(4, 2), torch.zeros(4), r, d, d, torch.zeros(4, 2))),
        (ValueError, "pi_t", lambda: ms.general_off_policy_returns_from_action_values(
            torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64), r, d, d, torch.zeros(4, 3))),
        (ValueError, "q_t",
         lambda: ms.general_off_policy_returns_from_q_and_v(torch.zeros(4), v, r, d, torch.zeros(3))),
        (ValueError, "rho_tm1", lambda: ms.vtrace(v, v, r, d, torch.ones(5))),
        (ValueError, "clip_rho_threshold", lambda: ms.vtrace(v, v, r, d, torch.ones(4), clip_rho_threshold=0.0)),
        (ValueError, "alpha_", lambda: ms.leaky_vtrace(v, v, r, d, torch.ones(4), alpha_=-0.1)),
        (ValueError, "clip_pg_rho_threshold",
         lambda: ms.vtrace_td_error_and_advantage(v, v, r, d, torch.ones(4), clip_pg_rho_threshold=-1.0)),
        (TypeError, "stop", lambda: ms.lambda_returns(r, d, v, stop_target_gradients="yes")),
    ]
    for exc, name, call in cases:
        with pytest.raises(exc, match=name):
            call()
    # messages say what was expected and what was given
    with pytest.raises(ValueError, match=r"values: expected 5 time steps .* got shape \(4,\)"):
        ms.truncated_generalized_advantage_estimation(r, d, 0.9, torch.zeros(4))
    assert math.isfinite(float(ms.truncated_generalized_advantage_estimation(r, d, 0.9, values).sum()))


def test_benchmark_quick_smoke(tmp_path):
    """benchmarks/bench_losses.py --quick runs, checks every method against the loop and writes JSON."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_losses.py"
    spec = importlib.util.spec_from_file_location("bench_losses", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "losses.json"
    result = bench.main(["--quick", "--no-compile", "--out", str(out)])
    assert json.loads(out.read_text())["config"]["quick"] is True
    methods = {(row["estimator"], row["method"]) for row in result["results"]}
    names = ("funrl", "funrl_NT", "cleanrl_loop", "rlax_loop", "matrix")
    assert methods == {(e, m) for e in ("gae", "lambda_returns") for m in names}
    assert all(row["max_abs_err"] < 1e-5 and row["ms"] > 0 for row in result["results"])
