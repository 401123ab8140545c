"""Tests for funrl.losses.distributional: categorical projection, C51 and QR losses."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

from funrl.losses import distributional as d
from helpers import assert_match

F64 = torch.float64


def _c51_projection_reference(z_p, probs, v_min, v_max, n_atoms):
    """The per-atom loop of Bellemare et al. (Algorithm 1) on a uniform support, in numpy."""
    dz = (v_max - v_min) / (n_atoms - 1)
    m = np.zeros(n_atoms)
    for z, p in zip(z_p, probs):
        tz = min(max(z, v_min), v_max)
        b = (tz - v_min) / dz
        lo, hi = int(np.floor(b)), int(np.ceil(b))
        if lo == hi:
            m[lo] += p
        else:
            m[lo] += p * (hi - b)
            m[hi] += p * (b - lo)
    return m


# ----------------------------------------------------------------------------- projection
def test_categorical_l2_project_hand_computed():
    z_q = torch.linspace(-1.0, 1.0, 5)  # [-1, -.5, 0, .5, 1]
    z_p = torch.tensor([0.1, 0.6, 2.0])  # 2.0 is clipped to 1.0
    probs = torch.tensor([0.2, 0.3, 0.5])
    # 0.1 -> 0.8 on 0, 0.2 on .5;  0.6 -> 0.8 on .5, 0.2 on 1;  1.0 -> all on 1
    expected = torch.tensor([0.0, 0.0, 0.16, 0.04 + 0.24, 0.06 + 0.5])
    torch.testing.assert_close(d.categorical_l2_project(z_p, probs, z_q), expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), kp=st.integers(1, 8), kq=st.integers(2, 9))
def test_projection_matches_c51_reference(seed, kp, kq):
    rng = np.random.default_rng(seed)
    z_p = rng.uniform(-4, 4, kp)
    probs = rng.dirichlet(np.ones(kp))
    ours = d.categorical_l2_project(torch.tensor(z_p), torch.tensor(probs), torch.linspace(-3, 3, kq, dtype=F64))
    np.testing.assert_allclose(ours.numpy(), _c51_projection_reference(z_p, probs, -3.0, 3.0, kq), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), kp=st.integers(1, 8), kq=st.integers(2, 9), inside=st.booleans())
def test_projection_preserves_mass_and_inside_mean(seed, kp, kq, inside):
    g = torch.Generator().manual_seed(seed)
    # a non-uniform increasing support
    z_q = torch.cumsum(torch.rand(kq, generator=g, dtype=F64) + 0.1, 0) - 2.0
    lo, hi = z_q[0], z_q[-1]
    if inside:
        z_p = lo + (hi - lo) * torch.rand(kp, generator=g, dtype=F64)
    else:
        z_p = 10 * torch.randn(kp, generator=g, dtype=F64)
    probs = torch.softmax(torch.randn(kp, generator=g, dtype=F64), 0)
    q = d.categorical_l2_project(z_p, probs, z_q)
    assert torch.all(q >= 0)
    torch.testing.assert_close(q.sum(), torch.tensor(1.0, dtype=F64))
    if inside:
        torch.testing.assert_close((q * z_q).sum(), (probs * z_p).sum())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 9))
def test_projection_onto_same_support_is_identity(seed, k):
    g = torch.Generator().manual_seed(seed)
    z = torch.cumsum(torch.rand(k, generator=g, dtype=F64) + 0.1, 0)
    probs = torch.softmax(torch.randn(k, generator=g, dtype=F64), 0)
    torch.testing.assert_close(d.categorical_l2_project(z, probs, z), probs)


# ----------------------------------------------------------------------------- categorical losses
def _cross_entropy(target, logits):
    return -(target * torch.log_softmax(logits, -1)).sum()


def test_categorical_td_learning_matches_reference():
    atoms = torch.linspace(-2.0, 2.0, 5, dtype=F64)
    logits_tm1 = torch.tensor([0.1, -0.3, 0.5, 0.0, 0.2], dtype=F64)
    logits_t = torch.tensor([1.0, 0.0, -1.0, 0.5, 0.3], dtype=F64)
    r, disc = torch.tensor(0.5, dtype=F64), torch.tensor(0.8, dtype=F64)
    target = _c51_projection_reference(
        (0.5 + 0.8 * atoms).numpy(), torch.softmax(logits_t, 0).numpy(), -2.0, 2.0, 5)
    expected = _cross_entropy(torch.tensor(target), logits_tm1)
    torch.testing.assert_close(
        d.categorical_td_learning(atoms, logits_tm1, r, disc, atoms, logits_t), expected)


def _categorical_q_case(dtype=F64):
    atoms = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype)
    q_logits_tm1 = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, -1.0]], dtype=dtype)
    # action 0 at t has mean -0.6ish, action 1 puts its mass on +1: greedy is 1
    q_logits_t = torch.tensor([[2.0, 0.0, -1.0], [-1.0, 0.0, 2.0]], dtype=dtype)
    return atoms, q_logits_tm1, torch.tensor(1), torch.tensor(0.5, dtype=dtype), torch.tensor(0.5, dtype=dtype), atoms, q_logits_t


def test_categorical_q_learning_uses_greedy_mean_action():
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = _categorical_q_case()
    target = _c51_projection_reference(
        (0.5 + 0.5 * atoms).numpy(), torch.softmax(q_logits_t[1], 0).numpy(), -1.0, 1.0, 3)
    expected = _cross_entropy(torch.tensor(target), q_logits_tm1[1])
    torch.testing.assert_close(
        d.categorical_q_learning(atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t), expected)


def test_categorical_double_q_learning_uses_selector():
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = _categorical_q_case()
    selector = torch.tensor([1.0, 0.0], dtype=F64)  # picks action 0, not the greedy-by-mean 1
    target = _c51_projection_reference(
        (0.5 + 0.5 * atoms).numpy(), torch.softmax(q_logits_t[0], 0).numpy(), -1.0, 1.0, 3)
    expected = _cross_entropy(torch.tensor(target), q_logits_tm1[1])
    torch.testing.assert_close(
        d.categorical_double_q_learning(atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t, selector),
        expected)


def test_categorical_losses_stop_target_gradients():
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = _categorical_q_case()
    selector = torch.tensor([0.0, 1.0], dtype=F64)
    cases = [
        (lambda lt, st_: d.categorical_q_learning(atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, lt, st_), q_logits_t),
        (lambda lt, st_: d.categorical_double_q_learning(
            atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, lt, selector, st_), q_logits_t),
        (lambda lt, st_: d.categorical_td_learning(atoms, q_logits_tm1[0], r, disc, atoms_t, lt, st_), q_logits_t[1]),
    ]
    for fn, target_logits in cases:
        assert torch.count_nonzero(grad(fn)(target_logits, True)) == 0
        assert torch.count_nonzero(grad(fn)(target_logits, False)) > 0
    # the online logits always get a gradient, only on the taken action's row
    g = grad(lambda lg: d.categorical_q_learning(atoms, lg, a_tm1, r, disc, atoms_t, q_logits_t))(q_logits_tm1)
    assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[1]) > 0


def test_categorical_loss_is_minimised_by_the_projected_target():
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = _categorical_q_case()
    target = d.categorical_l2_project(0.5 + 0.5 * atoms_t, torch.softmax(q_logits_t[1], 0), atoms)
    # cross entropy gradient softmax(logits) - target vanishes when softmax == target
    logits = torch.log(target + 1e-300).expand(2, 3).clone()
    g = grad(lambda lg: d.categorical_q_learning(atoms, lg, a_tm1, r, disc, atoms_t, q_logits_t))(logits)
    torch.testing.assert_close(g, torch.zeros_like(g), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- quantile losses
def test_quantile_regression_loss_hand_computed():
    src = torch.tensor([0.0])
    target = torch.tensor([2.0, -1.0])
    # tau .25: under-estimate (d=2) weighted .25, over-estimate (d=-1) weighted .75
    torch.testing.assert_close(
        d.quantile_regression_loss(src, torch.tensor([0.25]), target), torch.tensor((0.25 * 2 + 0.75 * 1) / 2))
    # Huber(1): rho(2) = 1.5, rho(-1) = 0.5
    torch.testing.assert_close(
        d.quantile_regression_loss(src, torch.tensor([0.25]), target, huber_param=1.0),
        torch.tensor((0.25 * 1.5 + 0.75 * 0.5) / 2))
    # sums over source quantiles
    two = d.quantile_regression_loss(torch.tensor([0.0, 0.0]), torch.tensor([0.25, 0.75]), target)
    torch.testing.assert_close(two, torch.tensor((0.25 * 2 + 0.75 * 1) / 2 + (0.75 * 2 + 0.25 * 1) / 2))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), tau=st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]))
def test_quantile_loss_is_minimised_at_the_empirical_quantile(seed, tau):
    g = torch.Generator().manual_seed(seed)
    samples = torch.randn(40, generator=g, dtype=F64)
    k = int(np.ceil(tau * 40)) - 1  # a tau-quantile of 40 samples
    q = torch.sort(samples).values[k]
    tau_t = torch.tensor([tau], dtype=F64)
    best = d.quantile_regression_loss(q.reshape(1), tau_t, samples)
    for shift in (-0.3, -0.01, 0.01, 0.3):
        assert best <= d.quantile_regression_loss((q + shift).reshape(1), tau_t, samples) + 1e-12


def _quantile_case(seed=0, n=4, m=5, a=3):
    g = torch.Generator().manual_seed(seed)
    dist_q_tm1 = torch.randn(n, a, generator=g, dtype=F64)
    tau = (torch.arange(n, dtype=F64) + 0.5) / n
    selector = torch.randn(m, a, generator=g, dtype=F64)
    dist_q_t = torch.randn(m, a, generator=g, dtype=F64)
    return dist_q_tm1, tau, torch.tensor(2), torch.tensor(0.3, dtype=F64), torch.tensor(0.9, dtype=F64), selector, dist_q_t


@pytest.mark.parametrize("huber", [0.0, 1.0])
def test_quantile_q_learning_matches_composition(huber):
    dist_q_tm1, tau, a_tm1, r, disc, selector, dist_q_t = _quantile_case()
    a_t = int(torch.argmax(selector.mean(0)))
    expected = d.quantile_regression_loss(dist_q_tm1[:, 2], tau, r + disc * dist_q_t[:, a_t], huber)
    torch.testing.assert_close(
        d.quantile_q_learning(dist_q_tm1, tau, a_tm1, r, disc, selector, dist_q_t, huber), expected)


@pytest.mark.parametrize("huber", [0.0, 0.5])
def test_quantile_expected_sarsa_is_policy_weighted_qr_loss(huber):
    dist_q_tm1, tau, a_tm1, r, disc, _, dist_q_t = _quantile_case(1)
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    expected = sum(
        probs[a] * d.quantile_regression_loss(dist_q_tm1[:, 2], tau, r + disc * dist_q_t[:, a], huber)
        for a in range(3))
    torch.testing.assert_close(
        d.quantile_expected_sarsa(dist_q_tm1, tau, a_tm1, r, disc, dist_q_t, probs, huber), expected)


def test_quantile_losses_stop_target_gradients():
    dist_q_tm1, tau, a_tm1, r, disc, selector, dist_q_t = _quantile_case(2)
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    src = dist_q_tm1[:, 0]
    cases = [
        (lambda t, s: d.quantile_regression_loss(src, tau, t, 0.0, s), dist_q_t[:, 0]),
        (lambda t, s: d.quantile_q_learning(dist_q_tm1, tau, a_tm1, r, disc, selector, t, 1.0, s), dist_q_t),
        (lambda t, s: d.quantile_expected_sarsa(dist_q_tm1, tau, a_tm1, r, disc, t, probs, 0.0, s), dist_q_t),
        (lambda p, s: d.quantile_expected_sarsa(dist_q_tm1, tau, a_tm1, r, disc, dist_q_t, p, 0.0, s), probs),
    ]
    for fn, target in cases:
        assert torch.count_nonzero(grad(fn)(target, True)) == 0
        assert torch.count_nonzero(grad(fn)(target, False)) > 0
    g = grad(lambda q: d.quantile_q_learning(q, tau, a_tm1, r, disc, selector, dist_q_t))(dist_q_tm1)
    assert torch.count_nonzero(g[:, [0, 1]]) == 0 and torch.count_nonzero(g[:, 2]) > 0


# ----------------------------------------------------------------------------- vmap == loop
def test_vmap_equals_loop_for_every_distributional_loss():
    cat = [_categorical_q_case() for _ in range(3)]
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = (torch.stack(x) for x in zip(*cat))
    noise = torch.randn(3, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    q_logits_t = q_logits_t + noise
    a_tm1 = torch.tensor([0, 1, 1])
    selector = noise[:, :, 0]
    qs = [_quantile_case(s) for s in range(3)]
    dq_tm1, tau, qa_tm1, qr, qdisc, qsel, dq_t = (torch.stack(x) for x in zip(*qs))
    probs = torch.softmax(noise[:, 1], -1)
    cases = [
        (d.categorical_l2_project, (r[:, None] + atoms_t, torch.softmax(q_logits_t[:, 0], -1), atoms)),
        (d.categorical_td_learning, (atoms, q_logits_tm1[:, 0], r, disc, atoms_t, q_logits_t[:, 1])),
        (d.categorical_q_learning, (atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t)),
        (d.categorical_double_q_learning, (atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t, selector)),
        (d.quantile_regression_loss, (dq_tm1[:, :, 0], tau, dq_t[:, :, 1])),
        (d.quantile_q_learning, (dq_tm1, tau, qa_tm1, qr, qdisc, qsel, dq_t)),
        (d.quantile_expected_sarsa, (dq_tm1, tau, qa_tm1, qr, qdisc, dq_t, probs)),
    ]
    for fn, args in cases:
        batched = vmap(fn)(*args)
        for i in range(3):
            # sums over atoms / quantiles, unbatched vs under vmap: equal up to reassociation
            assert_match(fn(*(x[i] for x in args)), batched[i], exact=False)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t = _categorical_q_case(torch.float32)
    with pytest.raises(ValueError, match=r"probs: expected shape \(3,\).*got \(2,\)"):
        d.categorical_l2_project(torch.zeros(3), torch.zeros(2), torch.zeros(4))
    with pytest.raises(ValueError, match="z_q: expected rank 1"):
        d.categorical_l2_project(torch.zeros(3), torch.zeros(3), torch.zeros(4, 1))
    with pytest.raises(TypeError, match="a_tm1: expected an integer tensor"):
        d.categorical_q_learning(atoms, q_logits_tm1, torch.tensor(1.0), r, disc, atoms_t, q_logits_t)
    with pytest.raises(ValueError, match=r"r_t: expected rank 0"):
        d.categorical_q_learning(atoms, q_logits_tm1, a_tm1, torch.zeros(1), disc, atoms_t, q_logits_t)
    with pytest.raises(ValueError, match=r"q_logits_t: expected shape \(2, 3\).*got \(3, 3\)"):
        d.categorical_q_learning(atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"q_t_selector: expected shape \(2,\)"):
        d.categorical_double_q_learning(atoms, q_logits_tm1, a_tm1, r, disc, atoms_t, q_logits_t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"tau_src: expected shape \(4,\).*got \(3,\)"):
        d.quantile_regression_loss(torch.zeros(4), torch.zeros(3), torch.zeros(5))
    with pytest.raises(ValueError, match="huber_param"):
        d.quantile_regression_loss(torch.zeros(4), torch.zeros(4), torch.zeros(5), huber_param=-1.0)
    dist_q_tm1, tau, qa, qr, qd, sel, dist_q_t = _quantile_case()
    with pytest.raises(ValueError, match=r"dist_q_t: expected shape \(\*, 3\).*got \(5, 2\)"):
        d.quantile_q_learning(dist_q_tm1, tau, qa, qr, qd, sel, dist_q_t[:, :2])
    with pytest.raises(ValueError, match=r"probs_a_t: expected shape \(3,\)"):
        d.quantile_expected_sarsa(dist_q_tm1, tau, qa, qr, qd, dist_q_t, torch.ones(2, dtype=F64))
