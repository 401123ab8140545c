"""Tests for funrl.stats: IQM against hand computation, bootstrap CIs, summaries, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl.stats import bootstrap_ci, iqm, summarize

SETTINGS = settings(max_examples=40, deadline=None)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _iqm_by_hand(values) -> float:
    """scipy.stats.trim_mean(x, 0.25) written out: drop floor(n/4) from each end."""
    v = sorted(float(x) for x in values)
    cut = int(0.25 * len(v))
    kept = v[cut : len(v) - cut]
    return math.fsum(kept) / len(kept)


def test_iqm_hand_computed_fixtures():
    assert iqm([1.0, 2.0, 3.0, 4.0]) == 2.5  # drop 1 and 4
    assert iqm([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]) == 4.5  # drop 1, 2 and 10, 100
    assert iqm([5.0, 1.0, 9.0]) == 5.0  # n < 4: nothing dropped, the mean
    assert iqm([7.0]) == 7.0
    assert iqm([1, 2, 3, 4, 1000]) == 3.0  # floor(5/4) = 1 dropped each side
    assert iqm(np.arange(12)) == 5.5  # drop 0,1,2 and 9,10,11


@SETTINGS
@given(st.lists(finite, min_size=1, max_size=40))
def test_iqm_matches_hand_computation(values):
    assert iqm(values) == pytest.approx(_iqm_by_hand(values), rel=1e-12, abs=1e-6)
    assert min(values) <= iqm(values) + 1e-6 and iqm(values) <= max(values) + 1e-6


@SETTINGS
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=30), st.floats(0.1, 10), st.floats(-50, 50))
def test_iqm_affine_equivariance_and_permutation_invariance(values, a, b):
    x = np.array(values)
    assert iqm(a * x + b) == pytest.approx(a * iqm(x) + b, rel=1e-9, abs=1e-9)
    assert iqm(x[::-1]) == pytest.approx(iqm(x), rel=1e-12, abs=1e-12)


def test_iqm_axes_and_input_types():
    rows = np.array([[4.0, 1.0, 3.0, 2.0], [0.0, 10.0, 20.0, 30.0]])
    np.testing.assert_allclose(iqm(rows), [2.5, 15.0])
    np.testing.assert_allclose(iqm(rows, axis=0), [2.0, 5.5, 11.5, 16.0])
    assert iqm(rows, axis=None) == _iqm_by_hand(rows.ravel())
    assert iqm(torch.tensor([1.0, 2.0, 3.0, 4.0])) == 2.5
    assert iqm(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.bfloat16)) == 2.5
    assert iqm(torch.tensor([1, 2, 3, 4])) == 2.5
    assert isinstance(iqm([1.0, 2.0]), float)


def test_bootstrap_ci_contains_statistic_and_is_deterministic():
    rng = np.random.default_rng(0)
    datasets = [
        rng.normal(100.0, 20.0, size=10),
        rng.exponential(50.0, size=10),
        rng.standard_t(2.0, size=15),
        rng.uniform(0.0, 500.0, size=(8, 5)),  # 8 seeds x 5 evaluation episodes
    ]
    for x in datasets:
        low, high = bootstrap_ci(x)
        assert low <= iqm(x, axis=None) <= high
        assert (low, high) == bootstrap_ci(x)  # same seed, same interval
        assert (low, high) != bootstrap_ci(x, seed=1)
        lo_m, hi_m = bootstrap_ci(x, statistic=np.mean)
        assert lo_m <= float(np.mean(x)) <= hi_m
        lo90, hi90 = bootstrap_ci(x, confidence=0.5)
        assert low <= lo90 <= hi90 <= high


def test_bootstrap_ci_matches_explicit_resampling_loop():
    x = np.array([3.0, 9.0, 1.0, 7.0, 5.0, 11.0])
    rng = np.random.default_rng(42)
    idx = rng.integers(0, 6, size=(300, 6))
    stats = [_iqm_by_hand(x[i]) for i in idx]
    expected = np.quantile(stats, [0.05, 0.95])
    low, high = bootstrap_ci(x, confidence=0.9, num_resamples=300, seed=42)
    np.testing.assert_allclose([low, high], expected, rtol=1e-12)


def test_bootstrap_ci_narrows_with_more_seeds():
    rng = np.random.default_rng(1)
    population = rng.normal(0.0, 1.0, size=200)
    widths = []
    for n in (5, 20, 200):
        low, high = bootstrap_ci(population[:n], num_resamples=1000)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_does_not_touch_global_rngs():
    np.random.seed(123)
    torch.manual_seed(123)
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    bootstrap_ci(np.arange(10.0), num_resamples=50)
    summarize(np.arange(10.0), num_resamples=50)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_summarize_hand_computed():
    returns = [10.0, 20.0, 30.0, 40.0]
    s = summarize(returns, num_resamples=200)
    assert set(s) == {"iqm", "ci_low", "ci_high", "mean", "std", "median", "min", "max", "num_seeds"}
    assert s["iqm"] == 25.0 and s["mean"] == 25.0 and s["median"] == 25.0
    assert s["std"] == pytest.approx(math.sqrt(125.0))  # population std (ddof=0)
    assert (s["min"], s["max"], s["num_seeds"]) == (10.0, 40.0, 4)
    assert (s["ci_low"], s["ci_high"]) == bootstrap_ci(returns, num_resamples=200)
    assert all(isinstance(v, float) for k, v in s.items() if k != "num_seeds")
    assert isinstance(s["num_seeds"], int)
    two_d = summarize(torch.tensor([[1.0, 3.0], [5.0, 7.0], [9.0, 11.0]]), num_resamples=100)
    assert two_d["num_seeds"] == 3 and two_d["mean"] == 6.0
    assert two_d["iqm"] == _iqm_by_hand([1, 3, 5, 7, 9, 11])


def test_bad_input_errors():
    with pytest.raises(ValueError, match="x: expected at least one score"):
        iqm([])
    with pytest.raises(ValueError, match="x: expected finite scores, got 1 NaN"):
        iqm([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="x: .*1 infinite"):
        bootstrap_ci(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="returns_per_seed: expected at least one score"):
        summarize(np.zeros((0,)))
    with pytest.raises(ValueError, match="returns_per_seed: expected finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="ragged"):
        iqm([[1.0, 2.0], [3.0]])
    with pytest.raises(TypeError, match="x: expected real numeric"):
        iqm(["a", "b"])
    with pytest.raises(ValueError, match="axis"):
        iqm([1.0, 2.0], axis=3)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_ci([1.0, 2.0], num_resamples=0)
    with pytest.raises(ValueError, match="seed"):
        bootstrap_ci([1.0, 2.0], seed=-1)
    with pytest.raises(ValueError, match="statistic: expected a reduction"):
        bootstrap_ci([1.0, 2.0], statistic=lambda a, axis=-1: np.mean(a))
