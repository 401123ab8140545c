"""Tests for funrl.losses.base: huber/l2 losses, clip_gradient, stop_gradient, indexing."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import funrl
from funrl.losses import base
from helpers import assert_match

floats = st.floats(-50.0, 50.0, allow_nan=False, width=64)
positive = st.floats(0.01, 10.0, width=64)


# ----------------------------------------------------------------------------- huber / l2
def test_huber_loss_hand_computed():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    # |x| <= 1: 0.5 x^2;  |x| > 1: 0.5 + (|x| - 1)
    expected = torch.tensor([2.5, 0.5, 0.125, 0.0, 0.125, 0.5, 2.5])
    torch.testing.assert_close(base.huber_loss(x), expected)
    # delta = 2 at x = 3: 0.5 * 4 + 2 * (3 - 2) = 4
    torch.testing.assert_close(base.huber_loss(torch.tensor([3.0, -1.0]), 2.0), torch.tensor([4.0, 0.5]))


@settings(max_examples=60, deadline=None)
@given(x=floats, delta=positive)
def test_huber_is_l2_inside_and_linear_outside(x, delta):
    xt = torch.tensor(x, dtype=torch.float64)
    h = base.huber_loss(xt, delta)
    if abs(x) <= delta:
        torch.testing.assert_close(h, base.l2_loss(xt))
    else:
        torch.testing.assert_close(h, torch.tensor(delta * (abs(x) - 0.5 * delta), dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(x=floats, delta=positive)
def test_huber_gradient_is_clipped_error(x, delta):
    g = grad(lambda t: base.huber_loss(t, delta))(torch.tensor(x, dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor(min(max(x, -delta), delta), dtype=torch.float64))


def test_huber_gradient_at_the_kink_is_not_doubled():
    g = grad(lambda t: base.huber_loss(t, 1.0))(torch.tensor(1.0))
    assert g.item() == 1.0


def test_huber_tensor_delta_vmap_equals_loop():
    x = torch.tensor([[3.0, -0.2], [-4.0, 1.5], [0.3, 2.0]])
    deltas = torch.tensor([1.0, 2.0, 0.5])
    batched = vmap(base.huber_loss)(x, deltas)
    for i in range(3):
        assert_match(batched[i], base.huber_loss(x[i], float(deltas[i])))  # element-wise: bit for bit


def test_l2_loss_hand_computed():
    p = torch.tensor([1.0, -2.0, 3.0])
    torch.testing.assert_close(base.l2_loss(p), torch.tensor([0.5, 2.0, 4.5]))
    torch.testing.assert_close(base.l2_loss(p, torch.tensor([0.0, 0.0, 1.0])), torch.tensor([0.5, 2.0, 2.0]))


def test_huber_and_l2_bad_inputs():
    with pytest.raises(TypeError, match="x"):
        base.huber_loss(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="delta.*>= 0.*-1"):
        base.huber_loss(torch.tensor([1.0]), -1.0)
    with pytest.raises(TypeError, match="predictions"):
        base.l2_loss(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"targets.*\(3,\).*\(2,\)"):
        base.l2_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(TypeError, match="targets"):
        base.l2_loss(torch.zeros(3), torch.zeros(3, dtype=torch.int64))


# ----------------------------------------------------------------------------- clip_gradient
X = torch.tensor([-3.0, -0.5, 0.2, 4.0])
CLIPPED = torch.tensor([-1.0, -0.5, 0.2, 1.0])  # grad of 0.5 x^2 is x, clipped to [-1, 1]


def _half_square_clipped(x):
    return torch.sum(0.5 * base.clip_gradient(x, -1.0, 1.0) ** 2)


def test_clip_gradient_forward_is_identity():
    y = base.clip_gradient(X, -0.1, 0.1)
    assert torch.equal(y, X)


def test_clip_gradient_backward_and_func_grad():
    x = X.clone().requires_grad_()
    _half_square_clipped(x).backward()
    torch.testing.assert_close(x.grad, CLIPPED)
    torch.testing.assert_close(grad(_half_square_clipped)(X), CLIPPED)


def test_clip_gradient_matches_huber_gradient():
    x = torch.linspace(-5, 5, 41)
    g_clip = grad(lambda t: torch.sum(0.5 * base.clip_gradient(t, -2.0, 2.0) ** 2))(x)
    g_huber = grad(lambda t: torch.sum(base.huber_loss(t, 2.0)))(x)
    torch.testing.assert_close(g_clip, g_huber)


def test_clip_gradient_asymmetric_bounds():
    g = grad(lambda t: torch.sum(base.clip_gradient(t, -0.5, 2.0) * torch.tensor([-3.0, 3.0, 1.0])))(
        torch.zeros(3)
    )
    torch.testing.assert_close(g, torch.tensor([-0.5, 2.0, 1.0]))


def test_clip_gradient_vmap_grad_equals_loop_with_tensor_bounds():
    xs = torch.stack([X, 2 * X, -X])
    lows = torch.tensor([-1.0, -2.0, -0.1])

    def f(x, lo):
        return torch.sum(0.5 * base.clip_gradient(x, lo, torch.tensor(1.0)) ** 2)

    batched = vmap(grad(f))(xs, lows)
    for i in range(3):
        assert_match(batched[i], grad(f)(xs[i], lows[i]))  # element-wise: bit for bit
        torch.testing.assert_close(batched[i], torch.clamp(xs[i], float(lows[i]), 1.0))


def test_clip_gradient_bad_inputs():
    with pytest.raises(TypeError, match="x"):
        base.clip_gradient(torch.tensor([1, 2]), -1.0, 1.0)
    with pytest.raises(ValueError, match="gradient_max.*>= gradient_min"):
        base.clip_gradient(X, 1.0, -1.0)
    with pytest.raises(TypeError, match="gradient_min"):
        base.clip_gradient(X, "a", 1.0)


# ----------------------------------------------------------------------------- stop_gradient
def test_stop_gradient_blocks_gradient_and_keeps_values():
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(base.stop_gradient(x), x)
    g = grad(lambda t: torch.sum(base.stop_gradient(t) * t))(x)
    torch.testing.assert_close(g, x)  # only the un-stopped factor contributes


def test_maybe_stop_gradient_bool_and_tensor_flag():
    x = torch.tensor(3.0)
    assert grad(lambda t: base.maybe_stop_gradient(t, True) * 2)(x).item() == 0.0
    assert grad(lambda t: base.maybe_stop_gradient(t, False) * 2)(x).item() == 2.0
    flags = torch.tensor([True, False])
    g = vmap(grad(lambda t, f: base.maybe_stop_gradient(t, f) * 2))(torch.ones(2), flags)
    torch.testing.assert_close(g, torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="stop"):
        base.maybe_stop_gradient(x, 1)


# ----------------------------------------------------------------------------- indexing
def test_one_hot_and_batched_index():
    idx = torch.tensor([2, 0])
    torch.testing.assert_close(base.one_hot(idx, 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(base.batched_index(v, idx), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(base.batched_index(v, idx, keepdims=True), torch.tensor([[3.0], [4.0]]))
    batched = vmap(base.batched_index)(v, idx.reshape(2))
    torch.testing.assert_close(batched, torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match=r"indices.*\(2,\).*\(3,\)"):
        base.batched_index(v, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="indices"):
        base.batched_index(v, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_classes"):
        base.one_hot(idx, 0)


@pytest.mark.compile
def test_clip_gradient_compiled_paths_match_eager():
    # Dynamo drops custom backwards of autograd.Functions under functorch
    # transforms (pytorch#193279); these are the paths that used to go wrong.
    xs = torch.stack([X, 2 * X])
    expected = torch.clamp(xs, -1.0, 1.0)
    torch.testing.assert_close(funrl.jit(vmap(grad(_half_square_clipped)))(xs), expected)
    x = xs.clone().requires_grad_()
    funrl.jit(lambda t: vmap(_half_square_clipped)(t).sum())(x).backward()
    torch.testing.assert_close(x.grad, expected)
