"""Tests for funrl.losses.exploration: Gaussian and Ornstein-Uhlenbeck action noise."""

import pytest
import torch
from torch.func import vmap

from funrl import random as frandom
from funrl.losses import exploration as ex
from helpers import assert_match

F64 = torch.float64


def _keys(seed, n):
    return frandom.split(frandom.key(seed), n)


def test_add_gaussian_noise_is_action_plus_scaled_normal():
    key = frandom.key(0)
    action = torch.tensor([0.5, -1.0, 2.0])
    out = ex.add_gaussian_noise(key, action, 0.3)
    torch.testing.assert_close(out, action + 0.3 * frandom.normal(key, (3,), dtype=torch.float32))
    assert torch.equal(ex.add_gaussian_noise(key, action, 0.0), action)
    assert ex.add_gaussian_noise(key, torch.tensor(1.0, dtype=F64), 0.1).dtype == F64


def test_add_gaussian_noise_moments():
    # 20000 draws of a 2-d action: mean within 5 standard errors, std within 3%
    action = torch.tensor([1.0, -2.0], dtype=F64)
    out = vmap(lambda k: ex.add_gaussian_noise(k, action, 0.5))(_keys(1, 20000))
    se = 0.5 / 20000**0.5
    assert torch.all((out.mean(0) - action).abs() < 5 * se)
    torch.testing.assert_close(out.std(0), torch.full((2,), 0.5, dtype=F64), rtol=0.03, atol=0)


def test_ornstein_uhlenbeck_hand_computed_and_consistent():
    key = frandom.key(2)
    noise_tm1 = torch.tensor([1.0, -2.0])
    # stddev 0: deterministic decay (1 - damping) * noise_tm1
    torch.testing.assert_close(ex.ornstein_uhlenbeck_noise(key, noise_tm1, 0.25, 0.0), torch.tensor([0.75, -1.5]))
    noise_t = ex.ornstein_uhlenbeck_noise(key, noise_tm1, 0.15, 0.2)
    torch.testing.assert_close(noise_t, 0.85 * noise_tm1 + 0.2 * frandom.normal(key, (2,), dtype=torch.float32))
    action = torch.tensor([0.1, 0.2])
    assert torch.equal(ex.add_ornstein_uhlenbeck_noise(key, action, noise_tm1, 0.15, 0.2), action + noise_t)
    # damping 1: white noise, independent of the previous noise
    assert torch.equal(ex.ornstein_uhlenbeck_noise(key, noise_tm1, 1.0, 0.2),
                       ex.ornstein_uhlenbeck_noise(key, torch.zeros(2), 1.0, 0.2))


def test_ornstein_uhlenbeck_stationary_variance():
    # Iterating x <- (1 - d) x + s N(0, 1) converges to variance s^2 / (1 - (1 - d)^2).
    d, s, steps, n = 0.3, 0.5, 40, 4000
    keys = _keys(3, n)
    noise = torch.zeros(n, 1, dtype=F64)
    step = vmap(lambda k, x: ex.ornstein_uhlenbeck_noise(k, x, d, s))
    for t in range(steps):
        noise = step(vmap(lambda k: frandom.fold_in(k, t))(keys), noise)
    expected_var = s**2 / (1 - (1 - d) ** 2)
    assert abs(noise.var().item() - expected_var) < 0.1 * expected_var


def test_exploration_vmap_equals_loop_with_tensor_hyperparameters():
    keys = _keys(4, 3)
    action = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    noise_tm1 = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    stddev = torch.tensor([0.1, 0.2, 0.0])
    damping = torch.tensor([0.0, 0.5, 1.0])
    g = vmap(ex.add_gaussian_noise)(keys, action, stddev)
    ou = vmap(ex.add_ornstein_uhlenbeck_noise)(keys, action, noise_tm1, damping, stddev)
    for i in range(3):
        # draws and element-wise arithmetic: bit for bit
        assert_match(g[i], ex.add_gaussian_noise(keys[i], action[i], float(stddev[i])))
        assert_match(
            ou[i], ex.add_ornstein_uhlenbeck_noise(keys[i], action[i], noise_tm1[i], float(damping[i]), float(stddev[i])))


def test_bad_inputs_name_the_argument():
    key = frandom.key(0)
    with pytest.raises(TypeError, match="action: expected a floating-point tensor"):
        ex.add_gaussian_noise(key, torch.tensor([1, 2]), 0.1)
    with pytest.raises(ValueError, match="stddev: expected a number >= 0.0, got -0.1"):
        ex.add_gaussian_noise(key, torch.zeros(2), -0.1)
    with pytest.raises(TypeError, match="key"):
        ex.add_gaussian_noise(torch.zeros(2), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"noise_tm1: expected shape \(3,\).*got \(2,\)"):
        ex.add_ornstein_uhlenbeck_noise(key, torch.zeros(3), torch.zeros(2), 0.1, 0.1)
    with pytest.raises(ValueError, match=r"damping: expected a number in \[0.0, 1.0\], got 1.5"):
        ex.ornstein_uhlenbeck_noise(key, torch.zeros(2), 1.5, 0.1)
    with pytest.raises(ValueError, match="action: expected rank 1"):
        ex.add_ornstein_uhlenbeck_noise(key, torch.zeros(2, 2), torch.zeros(2, 2), 0.1, 0.1)
