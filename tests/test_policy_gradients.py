"""Tests for funrl.losses.policy_gradients (and a grouped compiled check of the losses)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import funrl
from funrl.losses import base, distributional, transforms
from funrl.losses import policy_gradients as pg
from helpers import assert_match

LN2 = math.log(2.0)


def _seq(seed, t=5, a=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, a, generator=g, dtype=dtype)
    actions = torch.randint(0, a, (t,), generator=g)
    adv = torch.randn(t, generator=g, dtype=dtype)
    w = torch.rand(t, generator=g, dtype=dtype)
    q = torch.randn(t, a, generator=g, dtype=dtype)
    return logits, actions, adv, w, q


# ----------------------------------------------------------------------------- policy_gradient_loss
def test_policy_gradient_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # pi = [.5, .5], [.75, .25]
    a = torch.tensor([0, 1])
    adv = torch.tensor([2.0, -1.0])
    w = torch.tensor([1.0, 0.5])
    # mean(-log pi(a) adv w) = mean(2 ln2 * 1, -(2 ln2) * 0.5) = ln2 / 2
    torch.testing.assert_close(pg.policy_gradient_loss(logits, a, adv, w), torch.tensor(LN2 / 2))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(1, 6), a=st.integers(2, 5))
def test_policy_gradient_loss_gradient_is_reinforce(seed, t, a):
    logits, actions, adv, w, _ = _seq(seed, t, a)
    g = grad(pg.policy_gradient_loss)(logits, actions, adv, w)
    pi = torch.softmax(logits, -1)
    # d/dlogits of -log pi(a) = pi - onehot(a); scaled by adv * w / T
    expected = (pi - torch.nn.functional.one_hot(actions, a).to(pi.dtype)) * (adv * w / t).unsqueeze(-1)
    torch.testing.assert_close(g, expected)


def test_policy_gradient_loss_stop_gradient_into_advantages():
    logits, actions, adv, w, _ = _seq(0)
    g_stop = grad(pg.policy_gradient_loss, argnums=2)(logits, actions, adv, w)
    assert torch.count_nonzero(g_stop) == 0
    g_free = grad(lambda *args: pg.policy_gradient_loss(*args, use_stop_gradient=False), argnums=2)(
        logits, actions, adv, w
    )
    log_pi_a = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
    torch.testing.assert_close(g_free, -log_pi_a * w / 5)


# ----------------------------------------------------------------------------- entropy_loss
def test_entropy_loss_matches_torch_distributions():
    logits, _, _, w, _ = _seq(1)
    expected = -torch.mean(torch.distributions.Categorical(logits=logits).entropy() * w)
    torch.testing.assert_close(pg.entropy_loss(logits, w), expected)
    uniform = torch.zeros(2, 4)
    torch.testing.assert_close(pg.entropy_loss(uniform, torch.ones(2)), torch.tensor(-math.log(4.0)))
    # entropy is maximal at the uniform policy: zero gradient there
    torch.testing.assert_close(grad(pg.entropy_loss)(uniform, torch.ones(2)), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- clipped surrogate
def test_clipped_surrogate_hand_computed():
    r = torch.tensor([0.5, 1.5, 1.0, 0.5])
    adv = torch.tensor([1.0, 1.0, -2.0, -1.0])
    # min(r A, clip(r, .8, 1.2) A): 0.5, 1.2, -2.0, min(-0.5, -0.8) = -0.8  -> mean -0.275
    torch.testing.assert_close(pg.clipped_surrogate_pg_loss(r, adv, 0.2), torch.tensor(0.275))
    # the clipped terms (2nd and 4th) contribute no gradient to the ratios
    g = grad(pg.clipped_surrogate_pg_loss)(r, adv, 0.2)
    torch.testing.assert_close(g, torch.tensor([-0.25, 0.0, 0.5, 0.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.05, 0.5))
def test_clipped_surrogate_equals_unclipped_inside_trust_region(seed, eps):
    g = torch.Generator().manual_seed(seed)
    r = 1.0 + (2 * torch.rand(6, generator=g, dtype=torch.float64) - 1) * eps
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(pg.clipped_surrogate_pg_loss(r, adv, eps), -torch.mean(r * adv))
    torch.testing.assert_close(grad(pg.clipped_surrogate_pg_loss)(r, adv, eps), -adv / 6)


def test_clipped_surrogate_tensor_epsilon_vmap_equals_loop():
    g = torch.Generator().manual_seed(3)
    r = torch.rand(4, 6, generator=g) + 0.5
    adv = torch.randn(4, 6, generator=g)
    eps = torch.tensor([0.1, 0.2, 0.3, 0.0])
    batched = vmap(pg.clipped_surrogate_pg_loss)(r, adv, eps)
    for i in range(4):
        # a mean over time, unbatched vs under vmap: equal up to reassociation
        assert_match(pg.clipped_surrogate_pg_loss(r[i], adv[i], float(eps[i])), batched[i], exact=False)


# ----------------------------------------------------------------------------- dpg
def test_dpg_loss_gradient_wrt_action_is_minus_dqda():
    a = torch.tensor([0.3, -0.2, 1.0])
    dqda = torch.tensor([1.5, -2.0, 0.25])
    torch.testing.assert_close(pg.dpg_loss(a, dqda), 0.5 * dqda**2)
    g = grad(lambda x: pg.dpg_loss(x, dqda).sum())(a)
    torch.testing.assert_close(g, -dqda)


def test_dpg_loss_clipping_rescales_to_norm():
    a = torch.zeros(2)
    dqda = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to norm 1: [0.6, 0.8]
    g = grad(lambda x: pg.dpg_loss(x, dqda, dqda_clipping=1.0).sum())(a)
    torch.testing.assert_close(g, torch.tensor([-0.6, -0.8]))
    # below the threshold nothing changes
    g = grad(lambda x: pg.dpg_loss(x, dqda, dqda_clipping=10.0).sum())(a)
    torch.testing.assert_close(g, -dqda)
    # zero critic gradient: no 0/0
    loss = pg.dpg_loss(a, torch.zeros(2), dqda_clipping=1.0)
    assert torch.equal(loss, torch.zeros(2))


def test_dpg_loss_stop_gradient():
    a = torch.tensor([0.5, -0.5])
    dqda = torch.tensor([1.0, 2.0])
    g = grad(lambda d: pg.dpg_loss(a, d).sum())(dqda)
    assert torch.count_nonzero(g) == 0
    g = grad(lambda d: pg.dpg_loss(a, d, use_stop_gradient=False).sum())(dqda)
    torch.testing.assert_close(g, dqda)


# ----------------------------------------------------------------------------- qpg / rm / rpg
def test_qpg_rm_rpg_hand_computed():
    logits = torch.zeros(1, 2)  # pi = [.5, .5]
    q = torch.tensor([[1.0, 3.0]])  # baseline 2, advantages [-1, 1]
    torch.testing.assert_close(pg.qpg_loss(logits, q), torch.tensor(0.0))
    torch.testing.assert_close(pg.rm_loss(logits, q), torch.tensor(-0.5))
    torch.testing.assert_close(pg.rpg_loss(logits, q), torch.tensor(1.0))
    # d/dlogits of -sum(pi * A) with A constant = -pi * (A - sum(pi A)) = [0.5, -0.5]
    torch.testing.assert_close(grad(pg.qpg_loss)(logits, q), torch.tensor([[0.5, -0.5]]))


def test_qpg_rm_rpg_do_not_differentiate_q():
    logits, _, _, _, q = _seq(4)
    for fn in (pg.qpg_loss, pg.rm_loss, pg.rpg_loss):
        assert torch.count_nonzero(grad(fn, argnums=1)(logits, q)) == 0
    g = grad(lambda lg, qq: pg.rpg_loss(lg, qq, use_stop_gradient=False), argnums=1)(logits, q)
    assert torch.count_nonzero(g) > 0


def test_qpg_without_stop_gradient_differs():
    logits, _, _, _, q = _seq(5)
    g_stop = grad(pg.qpg_loss)(logits, q)
    g_free = grad(lambda lg: pg.qpg_loss(lg, q, use_stop_gradient=False))(logits)
    assert not torch.allclose(g_stop, g_free)


# ----------------------------------------------------------------------------- vmap == loop
def test_vmap_equals_loop_for_every_policy_gradient_loss():
    batch = [_seq(s) for s in range(3)]
    logits, actions, adv, w, q = (torch.stack(x) for x in zip(*batch))
    ratios = torch.exp(0.3 * adv)
    dqda = q[:, 0]
    acts = q[:, 1]
    cases = [
        (pg.policy_gradient_loss, (logits, actions, adv, w)),
        (pg.entropy_loss, (logits, w)),
        (pg.qpg_loss, (logits, q)),
        (pg.rm_loss, (logits, q)),
        (pg.rpg_loss, (logits, q)),
        (lambda r, a: pg.clipped_surrogate_pg_loss(r, a, 0.2), (ratios, adv)),
        (lambda a, d: pg.dpg_loss(a, d, dqda_clipping=1.0), (acts, dqda)),
    ]
    for fn, args in cases:
        batched = vmap(fn)(*args)
        for i in range(3):
            # reductions over actions / time, unbatched vs under vmap: equal up to reassociation
            assert_match(fn(*(x[i] for x in args)), batched[i], exact=False)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    logits, actions, adv, w, q = _seq(0, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"logits_t: expected rank 2, got rank 1"):
        pg.policy_gradient_loss(logits[0], actions, adv, w)
    with pytest.raises(TypeError, match="a_t: expected an integer tensor"):
        pg.policy_gradient_loss(logits, actions.float(), adv, w)
    with pytest.raises(ValueError, match=r"adv_t: expected shape \(5,\).*got \(4,\)"):
        pg.policy_gradient_loss(logits, actions, adv[:4], w)
    with pytest.raises(ValueError, match=r"q_t: expected shape \(5, 3\).*got \(5, 2\)"):
        pg.qpg_loss(logits, q[:, :2])
    with pytest.raises(ValueError, match=r"adv_t: expected shape \(5,\)"):
        pg.clipped_surrogate_pg_loss(torch.ones(5), torch.ones(6), 0.2)
    with pytest.raises(ValueError, match="epsilon"):
        pg.clipped_surrogate_pg_loss(torch.ones(5), torch.ones(5), -0.1)
    with pytest.raises(ValueError, match=r"dqda_t: expected shape \(3,\).*got \(2,\)"):
        pg.dpg_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="dqda_clipping"):
        pg.dpg_loss(torch.zeros(3), torch.zeros(3), dqda_clipping=0.0)
    with pytest.raises(TypeError, match="w_t"):
        pg.entropy_loss(logits, torch.ones(5, dtype=torch.int64))


# ----------------------------------------------------------------------------- compiled
@pytest.mark.compile
def test_compiled_losses_match_eager():
    """One compile for many losses: policy gradients, distributional, transforms, base."""
    torch.manual_seed(0)
    b, t, a, n_atoms = 2, 4, 3, 5
    logits = torch.randn(b, t, a)
    actions = torch.randint(0, a, (b, t))
    adv = torch.randn(b, t)
    w = torch.rand(b, t)
    q = torch.randn(b, t, a)
    atoms = torch.linspace(-2.0, 2.0, n_atoms).expand(b, n_atoms).contiguous()
    q_logits = torch.randn(b, a, n_atoms)
    dist_q = torch.randn(b, 4, a)
    tau = ((torch.arange(4) + 0.5) / 4).expand(b, 4).contiguous()
    r = torch.randn(b)
    disc = torch.full((b,), 0.9)

    def losses(logits, actions, adv, w, q, atoms, q_logits, dist_q, tau, r, disc):
        out = torch.stack([
            pg.policy_gradient_loss(logits, actions, adv, w),
            pg.entropy_loss(logits, w),
            pg.qpg_loss(logits, q),
            pg.rm_loss(logits, q),
            pg.rpg_loss(logits, q),
            pg.clipped_surrogate_pg_loss(torch.exp(0.1 * adv), adv, 0.2),
            pg.dpg_loss(q[0], q[1], 1.0).sum(),
            distributional.categorical_q_learning(
                atoms, q_logits, actions[0], r, disc, atoms, q_logits.flip(0)),
            distributional.categorical_double_q_learning(
                atoms, q_logits, actions[0], r, disc, atoms, q_logits, q[0]),
            distributional.quantile_q_learning(dist_q, tau, actions[1], r, disc, dist_q, dist_q, 1.0),
            distributional.quantile_expected_sarsa(dist_q, tau, actions[1], r, disc, dist_q, torch.softmax(q[0], 0)),
            transforms.transform_from_2hot(transforms.transform_to_2hot(adv, -1.0, 1.0, 7), -1.0, 1.0, 7).sum(),
            transforms.signed_parabolic(transforms.signed_hyperbolic(adv)).sum(),
            base.huber_loss(adv).sum(),
            torch.sum(0.5 * base.clip_gradient(adv, -0.1, 0.1) ** 2),
        ])
        return out

    args = (logits, actions, adv, w, q, atoms, q_logits, dist_q, tau, r, disc)
    fn = vmap(losses)
    eager = fn(*args)
    compiled = funrl.jit(fn)(*args)
    assert_match(compiled, eager, exact=False)  # compiled vs eager: reassociation
