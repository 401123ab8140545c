"""Tests for funrl.random: known answers, purity, vmap/compile equality, statistics, errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funrl
from funrl import random as fr
from funrl import tree
from helpers import assert_match

# vmap-vs-loop and compiled-vs-eager identities: .ci/run runs them under ATEN_CPU_CAPABILITY=default too
pytestmark = pytest.mark.exactness

M32 = 0xFFFFFFFF


# ------------------------------------------------------------------ known answers
# Random123 kat_vectors for threefry2x32_20 (also JAX's random_test vectors):
# (key0, key1), (ctr0, ctr1) -> (out0, out1)
KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("k, ctr, expected", KAT)
def test_threefry_known_answers(k, ctr, expected):
    y0, y1 = fr.threefry_2x32(torch.tensor(k), torch.tensor([ctr[0]]), torch.tensor([ctr[1]]))
    assert (int(y0), int(y1)) == expected


def _threefry_reference(k, x):
    """Plain-Python Threefry-2x32-20 (an independent reference for random counters)."""
    rot = (13, 15, 26, 6, 17, 29, 16, 24)
    ks = [k[0], k[1], k[0] ^ k[1] ^ 0x1BD11BDA]
    x = [(x[0] + ks[0]) & M32, (x[1] + ks[1]) & M32]
    for i in range(20):
        r = rot[i % 8]
        x[0] = (x[0] + x[1]) & M32
        x[1] = (((x[1] << r) | (x[1] >> (32 - r))) & M32) ^ x[0]
        if i % 4 == 3:
            j = i // 4 + 1
            x[0] = (x[0] + ks[j % 3]) & M32
            x[1] = (x[1] + ks[(j + 1) % 3] + j) & M32
    return tuple(x)


@settings(max_examples=50, deadline=None)
@given(st.tuples(*[st.integers(0, M32)] * 4))
def test_threefry_matches_python_reference(words):
    k = (words[0], words[1])
    ctr = (words[2], words[3])
    y0, y1 = fr.threefry_2x32(torch.tensor(k), torch.tensor([ctr[0]]), torch.tensor([ctr[1]]))
    assert (int(y0), int(y1)) == _threefry_reference(k, ctr)


def test_key_layout_matches_jax_prngkey():
    assert fr.key(0).tolist() == [0, 0]
    assert fr.key(42).tolist() == [0, 42]
    assert fr.key(2**32 + 5).tolist() == [1, 5]
    assert fr.key(-1).tolist() == [M32, M32]
    assert fr.key(torch.tensor(7)).tolist() == [0, 7]
    assert fr.key(0).dtype == torch.int64


# ------------------------------------------------------------------------- purity
def test_same_key_same_numbers_and_different_keys_differ():
    k = fr.key(3)
    a = fr.uniform(k, (100,))
    assert torch.equal(a, fr.uniform(k, (100,)))
    assert not torch.equal(a, fr.uniform(fr.key(4), (100,)))


def test_split_and_fold_in_give_distinct_keys():
    k = fr.key(0)
    ks = fr.split(k, 1000)
    assert ks.shape == (1000, 2) and ks.dtype == torch.int64
    assert len({tuple(x) for x in ks.tolist()}) == 1000
    assert ((ks >= 0) & (ks <= M32)).all()
    folded = torch.stack([fr.fold_in(k, i) for i in range(200)])
    assert len({tuple(x) for x in folded.tolist()}) == 200
    # fold_in with a tensor equals fold_in with the int
    assert torch.equal(fr.fold_in(k, 17), fr.fold_in(k, torch.tensor(17)))
    # split's keys differ from the bits drawn with the same key (separate counter domains)
    assert not torch.equal(fr.split(k, 2).reshape(-1), fr.bits(k, (4,)))


def test_split_is_prefix_consistent():
    k = fr.key(11)
    assert torch.equal(fr.split(k, 5)[:3], fr.split(k, 3))


def test_inputs_not_mutated_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    k = fr.key(5)
    before = k.clone()
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    logits_before = logits.clone()
    fr.split(k, 3)
    fr.fold_in(k, 1)
    fr.uniform(k, (5,))
    fr.normal(k, (5,), dtype=torch.float64)
    fr.truncated_normal(k, -1.0, 1.0, (5,))
    fr.randint(k, (5,), 0, 10)
    fr.bernoulli(k, 0.3, (5,))
    fr.categorical(k, logits)
    fr.gumbel(k, (5,))
    fr.exponential(k, (5,))
    fr.permutation(k, 10)
    fr.choice(k, 10, (3,), replace=False)
    assert torch.equal(k, before)
    assert torch.equal(logits, logits_before)
    assert torch.equal(torch.random.get_rng_state(), state)


# ----------------------------------------------------------------------- vmap
def _all_samplers(k):
    k1, k2, k3, k4, k5, k6, k7, k8 = fr.split(k, 8)
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, -torch.inf]])
    return (
        fr.uniform(k1, (7,)),
        fr.uniform(k1, (3,), torch.float64, -2.0, 3.0),
        fr.normal(k2, (5,)),
        fr.randint(k3, (6,), 2, 9),
        fr.bernoulli(k4, 0.25, (6,)),
        fr.categorical(k5, logits),
        fr.gumbel(k6, (4,)),
        fr.permutation(k7, 9),
        fr.choice(k8, 9, (4,), replace=False),
        fr.fold_in(k, 3),
        fr.split(k, 3),
    )


def test_vmap_equals_loop_bit_for_bit():
    keys = fr.split(fr.key(123), 6)
    batched = torch.func.vmap(_all_samplers)(keys)
    for i in range(keys.shape[0]):
        assert_match(tree.index(batched, i), _all_samplers(keys[i]))


def test_vmap_over_key_and_traced_fold_in_data():
    keys = fr.split(fr.key(1), 4)
    steps = torch.arange(4)
    out = torch.func.vmap(fr.fold_in)(keys, steps)
    for i in range(4):
        assert_match(out[i], fr.fold_in(keys[i], i))


def test_vmap_with_batched_sampler_parameters():
    keys = fr.split(fr.key(2), 3)
    maxvals = torch.tensor([2, 5, 1000])
    out = torch.func.vmap(lambda k, m: fr.randint(k, (50,), 0, m))(keys, maxvals)
    for i in range(3):
        assert_match(out[i], fr.randint(keys[i], (50,), 0, maxvals[i]))
        assert int(out[i].max()) < int(maxvals[i])


@pytest.mark.compile
def test_compiled_equals_eager():
    def f(k):
        k1, k2, k3, k4 = fr.split(k, 4)
        return (
            fr.uniform(k1, (33,)),
            fr.randint(k2, (17,), -3, 40),
            fr.categorical(k3, torch.tensor([0.5, -1.0, 2.0, 0.0]), shape=(25,)),
            fr.bernoulli(k4, 0.4, (9,)),
            fr.normal(k1, (11,)),
            fr.uniform(k2, (5,), torch.float64),
        )

    keys = fr.split(fr.key(9), 3)
    compiled = funrl.jit(torch.func.vmap(f))
    got = compiled(keys)
    want = torch.func.vmap(f)(keys)
    # integer-derived draws stay bit for bit even compiled; the normal's transcendental transform
    # (log, erfinv) is compiled vs eager arithmetic: equal up to reassociation
    assert_match(got[:4] + got[5:], want[:4] + want[5:])
    assert_match(got[4], want[4], exact=False)


# --------------------------------------------------------------------- statistics
def _chi2_critical(df, z=3.29):
    """Wilson–Hilferty upper quantile of chi-square (z=3.29: p ≈ 0.9995)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _chi2(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_chi_square_and_range(dtype):
    n, bins = 200_000, 100
    u = fr.uniform(fr.key(0), (n,), dtype)
    assert u.dtype == dtype
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u.double(), bins=bins, min=0.0, max=1.0)
    assert _chi2(counts, n / bins) < _chi2_critical(bins - 1)


def test_uniform_values_are_exact_dyadic():
    u32 = fr.uniform(fr.key(1), (1000,))
    assert torch.equal(u32 * 2**24, torch.round(u32 * 2**24))
    u64 = fr.uniform(fr.key(1), (1000,), torch.float64)
    assert torch.equal(u64 * 2**53, torch.round(u64 * 2**53))


def test_uniform_bounds_half_open():
    u = fr.uniform(fr.key(2), (10_000,), minval=-3.0, maxval=-1.0)
    assert float(u.min()) >= -3.0 and float(u.max()) < -1.0


def _normal_cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_kolmogorov_smirnov(dtype):
    n = 50_000
    z = np.sort(fr.normal(fr.key(7), (n,), dtype).double().numpy())
    cdf = _normal_cdf(z)
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert d < 1.95 / math.sqrt(n)  # alpha = 0.001
    assert abs(z.mean()) < 4.5 / math.sqrt(n) and abs(z.var() - 1) < 0.03


def test_normal_mean_std_arguments():
    z = fr.normal(fr.key(8), (40_000,), torch.float64, mean=3.0, std=0.5)
    assert abs(float(z.mean()) - 3.0) < 0.01 and abs(float(z.std()) - 0.5) < 0.01


def test_split_streams_are_independent():
    n = 100_000
    k1, k2 = fr.split(fr.key(0))
    a = fr.uniform(k1, (n,), torch.float64).numpy()
    b = fr.uniform(k2, (n,), torch.float64).numpy()
    assert abs(np.corrcoef(a, b)[0, 1]) < 4.5 / math.sqrt(n)
    # neighbouring keys from fold_in are independent too
    c = fr.uniform(fr.fold_in(k1, 0), (n,), torch.float64).numpy()
    d = fr.uniform(fr.fold_in(k1, 1), (n,), torch.float64).numpy()
    assert abs(np.corrcoef(c, d)[0, 1]) < 4.5 / math.sqrt(n)
    # a 2-D chi-square on (a, b) pairs: joint independence, not just zero correlation
    h, _, _ = np.histogram2d(a, b, bins=10, range=[[0, 1], [0, 1]])
    assert _chi2(torch.tensor(h), n / 100) < _chi2_critical(99)


def test_consecutive_draws_are_serially_independent():
    n = 100_000
    u = fr.uniform(fr.key(5), (n,), torch.float64).numpy()
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4.5 / math.sqrt(n)
    # the two words of each cipher block (first half vs second half of the stream)
    assert abs(np.corrcoef(u[: n // 2], u[n // 2 :])[0, 1]) < 4.5 / math.sqrt(n / 2)


def test_randint_uniform_over_range():
    n, lo, hi = 60_000, -5, 7
    x = fr.randint(fr.key(3), (n,), lo, hi)
    assert x.dtype == torch.int64
    assert int(x.min()) == lo and int(x.max()) == hi - 1
    counts = torch.bincount(x - lo, minlength=hi - lo).double()
    assert _chi2(counts, n / (hi - lo)) < _chi2_critical(hi - lo - 1)


def test_randint_large_span():
    x = fr.randint(fr.key(3), (10_000,), 0, 2**40)
    assert int(x.min()) >= 0 and int(x.max()) < 2**40 and float(x.double().mean()) > 0.45 * 2**40


def test_bernoulli_frequency():
    n = 100_000
    x = fr.bernoulli(fr.key(4), 0.3, (n,))
    assert x.dtype == torch.bool
    assert abs(float(x.double().mean()) - 0.3) < 4.5 * math.sqrt(0.21 / n)
    p = torch.tensor([0.0, 1.0, 0.5])
    y = fr.bernoulli(fr.key(4), p)
    assert y.shape == (3,) and not bool(y[0]) and bool(y[1])


def test_categorical_frequencies_match_softmax():
    n = 100_000
    logits = torch.tensor([0.0, 1.0, -1.0, 0.5, -torch.inf])
    x = fr.categorical(fr.key(6), logits, shape=(n,))
    probs = torch.softmax(logits.double(), -1)
    counts = torch.bincount(x, minlength=5).double()
    assert counts[4] == 0
    assert _chi2(counts[:4], n * probs[:4]) < _chi2_critical(3)


def test_categorical_axis_and_batch():
    logits = torch.full((3, 2), -torch.inf)
    logits[0, 0] = logits[1, 1] = logits[2, 0] = 0.0
    x = fr.categorical(fr.key(0), logits.T, axis=0)
    assert x.tolist() == [0, 1, 0]
    y = fr.categorical(fr.key(0), torch.zeros(4, 3), shape=(5, 4))
    assert y.shape == (5, 4)


def test_gumbel_and_exponential_moments():
    n = 100_000
    g = fr.gumbel(fr.key(1), (n,), torch.float64)
    assert abs(float(g.mean()) - 0.5772156649) < 0.02 and abs(float(g.var()) - math.pi**2 / 6) < 0.05
    e = fr.exponential(fr.key(1), (n,), torch.float64)
    assert float(e.min()) > 0 and abs(float(e.mean()) - 1.0) < 0.02
    assert torch.isfinite(fr.gumbel(fr.key(2), (n,))).all()


def test_truncated_normal_bounds_and_mean():
    z = fr.truncated_normal(fr.key(2), -0.5, 2.0, (50_000,), torch.float64)
    assert float(z.min()) >= -0.5 and float(z.max()) <= 2.0
    # mean of N(0,1) truncated to [a, b] = (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    mean = (phi(-0.5) - phi(2.0)) / (Phi(2.0) - Phi(-0.5))
    assert abs(float(z.mean()) - mean) < 0.02


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**40), st.integers(1, 60))
def test_permutation_is_a_permutation(seed, n):
    p = fr.permutation(fr.key(seed), n)
    assert sorted(p.tolist()) == list(range(n))
    x = torch.arange(n * 2).reshape(n, 2)
    shuffled = fr.permutation(fr.key(seed), x)
    assert torch.equal(shuffled, x[p])


def test_permutation_is_uniform_over_small_n():
    keys = fr.split(fr.key(0), 12_000)
    perms = torch.func.vmap(lambda k: fr.permutation(k, 3))(keys)
    codes = perms[:, 0] * 9 + perms[:, 1] * 3 + perms[:, 2]
    counts = torch.tensor([(codes == c).sum() for c in codes.unique()]).double()
    assert counts.numel() == 6
    assert _chi2(counts, 2000.0) < _chi2_critical(5)


def test_choice_variants():
    k = fr.key(1)
    c = fr.choice(k, 10, (10,), replace=False)
    assert sorted(c.tolist()) == list(range(10))
    p = torch.tensor([0.0, 0.5, 0.5, 0.0])
    d = fr.choice(k, 4, (1000,), p=p)
    assert set(d.unique().tolist()) <= {1, 2}
    e = fr.choice(k, 4, (2,), replace=False, p=p)
    assert sorted(e.tolist()) == [1, 2]
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    rows = fr.choice(k, a, (5,))
    assert rows.shape == (5, 2)
    assert all(r.tolist() in a.tolist() for r in rows)


# -------------------------------------------------------------------- bad input
def test_float_tensor_as_key_raises_type_error_naming_argument():
    with pytest.raises(TypeError, match=r"key: expected a funrl key .* got dtype torch.float32"):
        fr.uniform(torch.zeros(2), (3,))


def test_batched_key_without_vmap_raises():
    with pytest.raises(ValueError, match=r"key: expected a single key of shape \(2,\), got shape \(4, 2\)"):
        fr.normal(fr.split(fr.key(0), 4), (3,))


def test_non_tensor_key_raises():
    with pytest.raises(TypeError, match="key: expected a funrl key"):
        fr.split(0)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: fr.uniform(fr.key(0), (-1,)), ValueError, "shape: expected a tuple of non-negative ints"),
        (lambda: fr.uniform(fr.key(0), (2,), torch.int64), TypeError, "dtype: expected a floating dtype"),
        (lambda: fr.randint(fr.key(0), (2,), 5, 5), ValueError, "maxval: expected maxval > minval"),
        (lambda: fr.randint(fr.key(0), (2,), 0, 2.5), TypeError, "maxval: expected an int"),
        (lambda: fr.bernoulli(fr.key(0), 1.5), ValueError, r"p: expected a probability in \[0, 1\], got 1.5"),
        (lambda: fr.split(fr.key(0), 0), ValueError, "num: expected an int >= 1, got 0"),
        (lambda: fr.fold_in(fr.key(0), -1), ValueError, r"data: expected an int in \[0, 2\*\*32\)"),
        (lambda: fr.fold_in(fr.key(0), 1.5), TypeError, "data: expected an int"),
        (lambda: fr.categorical(fr.key(0), torch.tensor([1, 2])), TypeError, "logits: expected a floating-point"),
        (lambda: fr.categorical(fr.key(0), torch.zeros(2, 3), shape=(5,)), ValueError, "shape: expected a shape ending"),
        (lambda: fr.choice(fr.key(0), 3, (4,), replace=False), ValueError, "without replacement"),
        (lambda: fr.choice(fr.key(0), 3, p=torch.ones(4)), ValueError, r"p: expected shape \(3,\), got \(4,\)"),
        (lambda: fr.key(1.5), TypeError, "seed: expected an int"),
        (lambda: fr.key(2**64), ValueError, "seed: expected an int in"),
    ],
)
def test_bad_input_messages(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()
