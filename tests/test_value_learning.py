"""Tests for funrl.losses.value_learning: TD errors of state and action values.

References are hand computations and independent numpy loops written here;
identities tie the sequence methods (TD(lambda), SARSA(lambda), Q(lambda),
Retrace) to their one-step counterparts.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import funrl
from funrl.losses import value_learning as vl
from helpers import assert_match

F64 = torch.float64
SEEDS = st.integers(0, 2**31 - 1)
SET = settings(max_examples=30, deadline=None)


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def s64(x):
    return torch.tensor(float(x), dtype=F64)


def i64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.int64))


# ----------------------------------------------------------------------------- numpy references
def np_lambda_returns(r, d, v, lam):
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), r.shape)
    out, g = np.zeros_like(r), v[-1]
    for i in reversed(range(len(r))):
        g = r[i] + d[i] * ((1 - lam[i]) * v[i] + lam[i] * g)
        out[i] = g
    return out


def np_retrace_targets(q_t, a_t, r, d, pi_t, c_t):
    """Munos et al.'s Retrace target, one step at a time (c_t[-1] is never used)."""
    T = len(r)
    exp_q = (pi_t * q_t).sum(-1)
    out = np.zeros(T)
    g = r[-1] + d[-1] * exp_q[-1]
    out[-1] = g
    for i in reversed(range(T - 1)):
        g = r[i] + d[i] * (exp_q[i] - c_t[i] * q_t[i, a_t[i]] + c_t[i] * g)
        out[i] = g
    return out


def traj(seed, T, A=3):
    rng = np.random.default_rng(seed)
    return dict(
        q_tm1=rng.normal(size=(T, A)),
        q_t=rng.normal(size=(T, A)),
        a_tm1=rng.integers(0, A, size=T),
        a_t=rng.integers(0, A, size=T),
        r=rng.normal(size=T),
        d=rng.uniform(0.5, 1.0, T) * (rng.uniform(size=T) > 0.2),
        v_tm1=rng.normal(size=T),
        v_t=rng.normal(size=T),
        pi=rng.dirichlet(np.ones(A), size=T),
        mu=rng.uniform(0.1, 1.0, size=T),
        lam=rng.uniform(0, 1, size=T),
        s=rng.uniform(0, 1),
    )


# ----------------------------------------------------------------------------- hand-computed fixtures
def test_one_step_errors_hand_computed():
    q_tm1, q_t = t64([1.0, 2.0]), t64([4.0, 6.0])
    a0, a1 = i64(0), i64(1)
    r, d = s64(1.0), s64(0.5)
    # td: 2 + .5*3 - 1
    torch.testing.assert_close(vl.td_learning(s64(1.0), s64(2.0), d, s64(3.0)), s64(2.5))
    # sarsa: 1 + .5*q_t[0] - q_tm1[1] = 1 + 2 - 2
    torch.testing.assert_close(vl.sarsa(q_tm1, a1, r, d, q_t, a0), s64(1.0))
    # expected sarsa: 1 + .5*(.25*4 + .75*6) - 2 = 1.75
    torch.testing.assert_close(vl.expected_sarsa(q_tm1, a1, r, d, q_t, t64([0.25, 0.75])), s64(1.75))
    # q-learning: 1 + .5*6 - 2
    torch.testing.assert_close(vl.q_learning(q_tm1, a1, r, d, q_t), s64(2.0))
    # double q: the selector picks action 0, evaluated by q_t: 1 + .5*4 - 2
    torch.testing.assert_close(vl.double_q_learning(q_tm1, a1, r, d, q_t, t64([1.0, 0.0])), s64(1.0))
    # persistent, scale .5, a_tm1=0: 1 + .5*(.5*6 + .5*4) - 1 = 2.5
    torch.testing.assert_close(vl.persistent_q_learning(q_tm1, a0, r, d, q_t, 0.5), s64(2.5))
    # qv-learning: 1 + .5*4 - 2;  qv-max: 1 + .5*6 - 1
    torch.testing.assert_close(vl.qv_learning(q_tm1, a1, r, d, s64(4.0)), s64(1.0))
    torch.testing.assert_close(vl.qv_max(s64(1.0), r, d, q_t), s64(3.0))
    # an episode end (discount 0) leaves only the reward
    torch.testing.assert_close(vl.q_learning(q_tm1, a1, r, s64(0.0), q_t), s64(-1.0))


def test_sequence_errors_hand_computed():
    r, d = t64([1, 2, 3]), t64([0.5, 0.5, 0.5])
    # lambda-returns at lambda=.5 bootstrapping on [2, 4, 8]: G = [2.6875, 4.75, 7]
    targets = t64([2.6875, 4.75, 7.0])
    torch.testing.assert_close(vl.td_lambda(t64([1, 1, 1]), r, d, t64([2, 4, 8]), 0.5), targets - 1)
    q_tm1 = t64([[0, 1], [1, 0], [0, 1]])  # q_tm1[a_tm1] = 1 everywhere
    a_tm1 = i64([1, 0, 1])
    q_t = t64([[2, -9], [-9, 4], [8, 1]])  # q_t[a_t] == max q_t == [2, 4, 8]
    a_t = i64([0, 1, 0])
    torch.testing.assert_close(vl.sarsa_lambda(q_tm1, a_tm1, r, d, q_t, a_t, 0.5), targets - 1)
    torch.testing.assert_close(vl.q_lambda(q_tm1, a_tm1, r, d, q_t, 0.5), targets - 1)


def test_retrace_hand_computed():
    q_tm1 = t64([[0, 1], [2, 0]])  # q_tm1[a_tm1] = [1, 2]
    a_tm1 = i64([1, 0])
    q_t, a_t = t64([[1, 3], [2, 4]]), i64([1, 0])
    r, d = t64([1, 1]), t64([0.5, 0.5])
    pi, mu = t64([[0.5, 0.5], [0.25, 0.75]]), t64([1.0, 0.5])
    # c = min(1, pi(a_t)/mu) = [.5, .5];  E_pi q = [2, 3.5]
    # G1 = 1 + .5*3.5 = 2.75;  G0 = 1 + .5*(2 - .5*3 + .5*2.75) = 1.9375
    out = vl.retrace(q_tm1, q_t, a_tm1, a_t, r, d, pi, mu, 1.0, eps=0.0)
    torch.testing.assert_close(out, t64([1.9375 - 1, 2.75 - 2]))
    # continuous: q_t(a) = [3], v_t = E_pi q, log rho = log .5
    out = vl.retrace_continuous(t64([1, 2]), t64([3.0]), t64([2.0, 3.5]), r, d, t64([math.log(0.5)]), 1.0)
    torch.testing.assert_close(out, t64([1.9375 - 1, 2.75 - 2]))


# ----------------------------------------------------------------------------- numpy cross-checks
@SET
@given(seed=SEEDS, A=st.integers(1, 5))
def test_one_step_errors_match_numpy(seed, A):
    x = traj(seed, 1, A)
    q_tm1, q_t, pi = x["q_tm1"][0], x["q_t"][0], x["pi"][0]
    a, b = int(x["a_tm1"][0]), int(x["a_t"][0])
    r, d, s = x["r"][0], x["d"][0], x["s"]
    args = (t64(q_tm1), i64(a), s64(r), s64(d))
    sel = -q_t[::-1].copy()
    expected = {
        "sarsa": (vl.sarsa(*args, t64(q_t), i64(b)), r + d * q_t[b] - q_tm1[a]),
        "expected_sarsa": (vl.expected_sarsa(*args, t64(q_t), t64(pi)), r + d * pi @ q_t - q_tm1[a]),
        "q_learning": (vl.q_learning(*args, t64(q_t)), r + d * q_t.max() - q_tm1[a]),
        "double_q_learning": (vl.double_q_learning(*args, t64(q_t), t64(sel)), r + d * q_t[np.argmax(sel)] - q_tm1[a]),
        "persistent_q_learning": (vl.persistent_q_learning(*args, t64(q_t), s),
                                  r + d * ((1 - s) * q_t.max() + s * q_t[a]) - q_tm1[a]),
        "qv_learning": (vl.qv_learning(*args, s64(q_t[0])), r + d * q_t[0] - q_tm1[a]),
        "qv_max": (vl.qv_max(s64(q_tm1[0]), s64(r), s64(d), t64(q_t)), r + d * q_t.max() - q_tm1[0]),
        "td_learning": (vl.td_learning(s64(q_tm1[0]), s64(r), s64(d), s64(q_t[0])), r + d * q_t[0] - q_tm1[0]),
    }
    for name, (got, want) in expected.items():
        torch.testing.assert_close(got, s64(want), msg=name)


@SET
@given(seed=SEEDS, T=st.integers(1, 10), per_step=st.booleans())
def test_sequence_errors_match_numpy(seed, T, per_step):
    x = traj(seed, T)
    lam = x["lam"] if per_step else float(x["lam"][0])
    lam_t = t64(lam) if per_step else lam
    q_tm1, q_t, a_tm1, a_t, r, d = x["q_tm1"], x["q_t"], x["a_tm1"], x["a_t"], x["r"], x["d"]
    qa_tm1 = q_tm1[np.arange(T), a_tm1]
    Q = (t64(q_tm1), i64(a_tm1), t64(r), t64(d), t64(q_t))
    torch.testing.assert_close(
        vl.td_lambda(t64(x["v_tm1"]), t64(r), t64(d), t64(x["v_t"]), lam_t),
        t64(np_lambda_returns(r, d, x["v_t"], lam) - x["v_tm1"]),
    )
    torch.testing.assert_close(
        vl.sarsa_lambda(*Q, i64(a_t), lam_t), t64(np_lambda_returns(r, d, q_t[np.arange(T), a_t], lam) - qa_tm1)
    )
    torch.testing.assert_close(vl.q_lambda(*Q, lam_t), t64(np_lambda_returns(r, d, q_t.max(-1), lam) - qa_tm1))
    pi, mu = x["pi"], x["mu"]
    c = np.minimum(1.0, pi[np.arange(T), a_t] / (mu + 1e-8)) * lam
    torch.testing.assert_close(
        vl.retrace(t64(q_tm1), t64(q_t), i64(a_tm1), i64(a_t), t64(r), t64(d), t64(pi), t64(mu), lam_t),
        t64(np_retrace_targets(q_t, a_t, r, d, pi, c) - qa_tm1),
    )


# ----------------------------------------------------------------------------- identities
@SET
@given(seed=SEEDS, T=st.integers(1, 10))
def test_lambda_zero_reduces_to_one_step_methods(seed, T):
    x = traj(seed, T)
    q_tm1, q_t, a_tm1, a_t = t64(x["q_tm1"]), t64(x["q_t"]), i64(x["a_tm1"]), i64(x["a_t"])
    r, d, pi, mu = t64(x["r"]), t64(x["d"]), t64(x["pi"]), t64(x["mu"])
    torch.testing.assert_close(vl.q_lambda(q_tm1, a_tm1, r, d, q_t, 0.0), vmap(vl.q_learning)(q_tm1, a_tm1, r, d, q_t))
    torch.testing.assert_close(vl.sarsa_lambda(q_tm1, a_tm1, r, d, q_t, a_t, 0.0),
                               vmap(vl.sarsa)(q_tm1, a_tm1, r, d, q_t, a_t))
    v_tm1, v_t = t64(x["v_tm1"]), t64(x["v_t"])
    torch.testing.assert_close(vl.td_lambda(v_tm1, r, d, v_t, 0.0), vmap(vl.td_learning)(v_tm1, r, d, v_t))
    # Retrace with lambda = 0 cuts every trace: expected SARSA under pi
    torch.testing.assert_close(vl.retrace(q_tm1, q_t, a_tm1, a_t, r, d, pi, mu, 0.0),
                               vmap(vl.expected_sarsa)(q_tm1, a_tm1, r, d, q_t, pi))


@SET
@given(seed=SEEDS, T=st.integers(1, 10))
def test_retrace_on_policy(seed, T):
    """With mu = pi(a_t) and lambda = 1 every trace is 1 (Harutyunyan et al.'s Q(1));
    if pi is also deterministic on the taken actions, Retrace is SARSA(1)."""
    x = traj(seed, T)
    q_tm1, q_t, a_tm1, a_t = t64(x["q_tm1"]), t64(x["q_t"]), i64(x["a_tm1"]), i64(x["a_t"])
    r, d, pi = t64(x["r"]), t64(x["d"]), t64(x["pi"])
    mu = pi.gather(1, a_t[:, None]).squeeze(1)
    out = vl.retrace(q_tm1, q_t, a_tm1, a_t, r, d, pi, mu, 1.0, eps=0.0)
    qa_tm1 = x["q_tm1"][np.arange(T), x["a_tm1"]]
    expected = np_retrace_targets(x["q_t"], x["a_t"], x["r"], x["d"], x["pi"], np.ones(T)) - qa_tm1
    torch.testing.assert_close(out, t64(expected))
    greedy = torch.nn.functional.one_hot(a_t, 3).to(F64)
    out = vl.retrace(q_tm1, q_t, a_tm1, a_t, r, d, greedy, torch.ones(T, dtype=F64), 1.0)
    torch.testing.assert_close(out, vl.sarsa_lambda(q_tm1, a_tm1, r, d, q_t, a_t, 1.0))
    # the continuous form with q(a_t), E_pi q and log pi/mu gives the same errors
    log_rhos = torch.log(pi.gather(1, a_t[:, None]).squeeze(1) / t64(x["mu"]))
    qa_t = q_t.gather(1, a_t[:, None]).squeeze(1)
    torch.testing.assert_close(
        vl.retrace_continuous(t64(qa_tm1), qa_t[:-1], (pi * q_t).sum(-1), r, d, log_rhos[:-1], 0.8),
        vl.retrace(q_tm1, q_t, a_tm1, a_t, r, d, pi, t64(x["mu"]), 0.8, eps=0.0),
    )


@SET
@given(seed=SEEDS, A=st.integers(2, 5))
def test_one_step_identities(seed, A):
    x = traj(seed, 1, A)
    q_tm1, q_t, a, b = t64(x["q_tm1"][0]), t64(x["q_t"][0]), i64(x["a_tm1"][0]), i64(x["a_t"][0])
    r, d = s64(x["r"][0]), s64(x["d"][0])
    ql = vl.q_learning(q_tm1, a, r, d, q_t)
    torch.testing.assert_close(vl.double_q_learning(q_tm1, a, r, d, q_t, q_t), ql)
    torch.testing.assert_close(vl.persistent_q_learning(q_tm1, a, r, d, q_t, 0.0), ql)
    greedy = torch.nn.functional.one_hot(q_t.argmax(), A).to(F64)
    torch.testing.assert_close(vl.expected_sarsa(q_tm1, a, r, d, q_t, greedy), ql)
    torch.testing.assert_close(vl.expected_sarsa(q_tm1, a, r, d, q_t, torch.nn.functional.one_hot(b, A).to(F64)),
                               vl.sarsa(q_tm1, a, r, d, q_t, b))
    torch.testing.assert_close(vl.persistent_q_learning(q_tm1, a, r, d, q_t, 1.0), vl.sarsa(q_tm1, a, r, d, q_t, a))
    torch.testing.assert_close(vl.qv_learning(q_tm1, a, r, d, q_t.max()), ql)
    torch.testing.assert_close(vl.qv_max(q_tm1[a], r, d, q_t), ql)


# ----------------------------------------------------------------------------- vmap, compile, gradients
def _batch(seed, B, T, A=3):
    xs = [traj(seed + i, T, A) for i in range(B)]

    def stack(key, conv=t64):
        return torch.stack([conv(x[key]) for x in xs])

    b = {k: stack(k) for k in ("q_tm1", "q_t", "r", "d", "v_tm1", "v_t", "pi", "mu", "lam")}
    b.update(a_tm1=stack("a_tm1", i64), a_t=stack("a_t", i64))
    b["log_rhos"] = torch.log(b["pi"].gather(2, b["a_t"][..., None]).squeeze(-1) / b["mu"])[:, :-1]
    return b


def _step(b, key):
    """The first transition of every sequence (one-step functions take scalars)."""
    return b[key][:, 0]


ONE_STEP = {
    "td_learning": (lambda b: (_step(b, "v_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "v_t")), vl.td_learning),
    "sarsa": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "q_t"),
                         _step(b, "a_t")), vl.sarsa),
    "expected_sarsa": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "q_t"),
                                  _step(b, "pi")), vl.expected_sarsa),
    "q_learning": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "q_t")),
                   vl.q_learning),
    "double_q_learning": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"),
                                     _step(b, "q_t"), _step(b, "pi")), vl.double_q_learning),
    "persistent_q_learning": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"),
                                         _step(b, "q_t")), lambda *a, **kw: vl.persistent_q_learning(*a, 0.3, **kw)),
    "qv_learning": (lambda b: (_step(b, "q_tm1"), _step(b, "a_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "v_t")),
                    vl.qv_learning),
    "qv_max": (lambda b: (_step(b, "v_tm1"), _step(b, "r"), _step(b, "d"), _step(b, "q_t")), vl.qv_max),
}
SEQUENCE = {
    "td_lambda": (lambda b: (b["v_tm1"], b["r"], b["d"], b["v_t"], b["lam"]), vl.td_lambda),
    "sarsa_lambda": (lambda b: (b["q_tm1"], b["a_tm1"], b["r"], b["d"], b["q_t"], b["a_t"], b["lam"]), vl.sarsa_lambda),
    "q_lambda": (lambda b: (b["q_tm1"], b["a_tm1"], b["r"], b["d"], b["q_t"]),
                 lambda *a, **kw: vl.q_lambda(*a, 0.9, **kw)),
    "retrace": (lambda b: (b["q_tm1"], b["q_t"], b["a_tm1"], b["a_t"], b["r"], b["d"], b["pi"], b["mu"], b["lam"]),
                vl.retrace),
    "retrace_continuous": (lambda b: (b["v_tm1"], b["v_t"][:, :-1], b["v_t"], b["r"], b["d"], b["log_rhos"]),
                           lambda *a, **kw: vl.retrace_continuous(*a, 0.9, **kw)),
}
CASES = {**ONE_STEP, **SEQUENCE}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmap_equals_python_loop_and_keeps_dtype(name):
    make_args, fn = CASES[name]
    args = make_args(_batch(0, 5, 7))
    batched = vmap(fn)(*args)
    looped = torch.stack([fn(*(x[i] for x in args)) for i in range(5)])
    # element-wise (indexing, max, recursions over time): bit for bit; the expectations over
    # actions of expected SARSA and Retrace are reductions: equal up to reassociation
    assert_match(batched, looped, exact=name not in ("expected_sarsa", "retrace"))
    assert batched.dtype == F64 and batched.shape == ((5,) if name in ONE_STEP else (5, 7))
    out32 = fn(*(x[0].float() if x.is_floating_point() else x[0] for x in args))
    assert out32.dtype == torch.float32


INDUCTOR_GROUP = ("q_learning", "double_q_learning", "sarsa_lambda", "retrace")


@pytest.mark.compile
def test_compiled_equals_eager():
    """Inductor for a representative group in one graph; aot_eager (fullgraph tracing) for the rest."""
    b = _batch(21, 4, 8)

    def group(names):
        return lambda b: {name: vmap(CASES[name][1])(*CASES[name][0](b)) for name in names}

    # compiled vs eager: equal up to reassociation
    assert_match(funrl.jit(group(INDUCTOR_GROUP))(b), group(INDUCTOR_GROUP)(b), exact=False)
    rest = [name for name in sorted(CASES) if name not in INDUCTOR_GROUP]
    assert_match(funrl.jit(group(rest), backend="aot_eager")(b), group(rest)(b), exact=False)


TARGET_ARGS = {  # which arguments feed only the target
    "td_learning": (3,), "sarsa": (4,), "expected_sarsa": (4, 5), "q_learning": (4,), "double_q_learning": (4, 5),
    "persistent_q_learning": (4,), "qv_learning": (4,), "qv_max": (3,), "td_lambda": (3,), "sarsa_lambda": (4,),
    "q_lambda": (4,), "retrace": (1, 6), "retrace_continuous": (1, 2),
}
PREDICTION_ARG = {"td_learning": 0, "qv_max": 0, "td_lambda": 0, "retrace_continuous": 0}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stop_target_gradients(name):
    make_args, fn = CASES[name]
    args = [x[0] for x in make_args(_batch(5, 1, 6))]

    def loss(stop):
        return lambda *a: fn(*a, stop_target_gradients=stop).sum()

    for i in TARGET_ARGS[name]:
        assert torch.count_nonzero(grad(loss(True), argnums=i)(*args)) == 0, f"argument {i} of {name}"
        # with the flag off, gradients reach the target (except argmax selectors, piecewise constant)
        if not (name == "double_q_learning" and i == 5):
            assert torch.count_nonzero(grad(loss(False), argnums=i)(*args)) > 0, f"argument {i} of {name}"
    # the prediction always gets -1 per error on the taken action
    p = PREDICTION_ARG.get(name, 0)
    g = grad(loss(True), argnums=p)(*args)
    if args[p].ndim > (1 if name in SEQUENCE else 0):  # action values: -1 on the taken action only
        a = args[1] if name in ONE_STEP else args[2 if name == "retrace" else 1]
        want = -torch.nn.functional.one_hot(a, args[p].shape[-1]).to(F64)
    else:
        want = -torch.ones_like(args[p])
    torch.testing.assert_close(g, want)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    q, a, r, d = torch.zeros(3), torch.tensor(1), torch.tensor(0.0), torch.tensor(0.9)
    qs, as_, rs, ds = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64), torch.zeros(4), torch.ones(4)
    cases = [
        (TypeError, "a_tm1", lambda: vl.q_learning(q, torch.tensor(1.0), r, d, q)),
        (ValueError, "q_tm1", lambda: vl.q_learning(torch.zeros(2, 3), a, r, d, q)),
        (ValueError, "r_t", lambda: vl.q_learning(q, a, torch.zeros(1), d, q)),
        (TypeError, "discount_t", lambda: vl.td_learning(r, r, torch.tensor(1), r)),
        (TypeError, "v_t", lambda: vl.td_learning(r, r, d, 1.0)),
        (TypeError, "a_t", lambda: vl.sarsa(q, a, r, d, q, torch.tensor(0.0))),
        (ValueError, "probs_a_t", lambda: vl.expected_sarsa(q, a, r, d, q, torch.ones(4))),
        (ValueError, "q_t_selector", lambda: vl.double_q_learning(q, a, r, d, q, torch.zeros(4))),
        (ValueError, "action_gap_scale", lambda: vl.persistent_q_learning(q, a, r, d, q, 1.5)),
        (ValueError, "v_t", lambda: vl.qv_learning(q, a, r, d, torch.zeros(3))),
        (ValueError, "q_t", lambda: vl.qv_max(r, r, d, torch.zeros(2, 2))),
        (ValueError, "v_t", lambda: vl.td_lambda(rs, rs, ds, torch.zeros(5), 0.9)),
        (ValueError, "lambda_", lambda: vl.td_lambda(rs, rs, ds, rs, -0.5)),
        (ValueError, "a_t", lambda: vl.sarsa_lambda(qs, as_, rs, ds, qs, torch.zeros(3, dtype=torch.int64), 0.9)),
        (ValueError, "r_t", lambda: vl.q_lambda(qs, as_, torch.zeros(5), ds, qs, 0.9)),
        (ValueError, "lambda_", lambda: vl.q_lambda(qs, as_, rs, ds, qs, torch.ones(5))),
        (ValueError, "pi_t", lambda: vl.retrace(qs, qs, as_, as_, rs, ds, torch.zeros(4, 2), rs, 1.0)),
        (ValueError, "eps", lambda: vl.retrace(qs, qs, as_, as_, rs, ds, qs, rs, 1.0, eps=-1.0)),
        (ValueError, "log_rhos", lambda: vl.retrace_continuous(rs, rs[:3], rs, rs, ds, rs, 1.0)),
        (TypeError, "stop", lambda: vl.q_learning(q, a, r, d, q, stop_target_gradients=None)),
    ]
    for exc, name, call in cases:
        with pytest.raises(exc, match=name):
            call()
    with pytest.raises(ValueError, match=r"q_tm1: expected rank 1, got rank 2 with shape \(2, 3\)"):
        vl.q_learning(torch.zeros(2, 3), a, r, d, q)
    with pytest.raises(TypeError, match=r"a_tm1: expected an integer tensor, got dtype torch.float32"):
        vl.q_learning(q, torch.tensor(1.0), r, d, q)
