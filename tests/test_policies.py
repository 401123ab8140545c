"""Tests for funrl.losses.policies: greedy, epsilon-greedy and softmax policies."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import vmap

import funrl
from funrl import random as frandom
from funrl.losses import exploration
from funrl.losses import policies as P
from helpers import assert_match

# chi-square critical values at p = 0.001 (df -> value), from standard tables
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52}


def _chi_square(samples, probs):
    n = samples.numel()
    counts = torch.bincount(samples.flatten(), minlength=probs.numel()).double()
    expected = n * probs.double()
    support = expected > 0
    assert torch.all(counts[~support] == 0), "sampled an action of probability zero"
    stat = ((counts[support] - expected[support]) ** 2 / expected[support]).sum().item()
    return stat, int(support.sum()) - 1


def _keys(seed, n):
    return frandom.split(frandom.key(seed), n)


# ----------------------------------------------------------------------------- greedy
def test_greedy_probs_split_ties_evenly():
    q = torch.tensor([[1.0, 3.0, 3.0], [0.0, 0.0, 1.0], [2.0, 2.0, 2.0]])
    expected = torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(P.greedy_probs(q), expected)
    torch.testing.assert_close(P.greedy_log_prob(torch.tensor([1, 2, 0]), q),
                               torch.log(torch.tensor([0.5, 1.0, 1 / 3])))
    assert P.greedy_log_prob(torch.tensor([0]), q[:1]).item() == -math.inf


def test_greedy_sample_breaks_ties_uniformly():
    q = torch.tensor([1.0, 3.0, 0.0, 3.0])
    samples = vmap(lambda k: P.greedy_sample(k, q))(_keys(0, 4000))
    stat, df = _chi_square(samples, P.greedy_probs(q))
    assert df == 1 and stat < CHI2_999[1]


# ----------------------------------------------------------------------------- epsilon-greedy
def test_epsilon_greedy_probs_hand_computed():
    q = torch.tensor([[1.0, 3.0, 3.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(P.epsilon_greedy_probs(q, 0.3),
                               torch.tensor([[0.1, 0.45, 0.45], [0.1, 0.1, 0.8]]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), a=st.integers(1, 7), eps=st.floats(0.0, 1.0))
def test_epsilon_greedy_probs_properties(seed, a, eps):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 3, (4, a), generator=g).double()  # small ints: many ties
    p = P.epsilon_greedy_probs(q, eps)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(-1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(P.epsilon_greedy_probs(q, 0.0), P.greedy_probs(q))
    torch.testing.assert_close(P.epsilon_greedy_probs(q, 1.0), torch.full((4, a), 1.0 / a, dtype=torch.float64))
    torch.testing.assert_close(P.epsilon_greedy_log_prob(torch.zeros(4, dtype=torch.int64), q, eps), torch.log(p[:, 0]))


def test_epsilon_greedy_sample_frequencies_match_probs():
    q = torch.tensor([0.5, 2.0, -1.0, 1.0, 2.0])
    samples = vmap(lambda k: P.epsilon_greedy_sample(k, q, 0.4))(_keys(1, 8000))
    stat, df = _chi_square(samples, P.epsilon_greedy_probs(q, 0.4))
    assert df == 4 and stat < CHI2_999[4]


def test_epsilon_greedy_tensor_epsilon_vmap_equals_loop():
    keys = _keys(2, 4)
    q = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.tensor([0.0, 0.1, 0.5, 1.0])
    batched = vmap(P.epsilon_greedy_sample)(keys, q, eps)
    probs = vmap(P.epsilon_greedy_probs)(q, eps)
    for i in range(4):
        assert_match(batched[i], P.epsilon_greedy_sample(keys[i], q[i], float(eps[i])))
        assert_match(probs[i], P.epsilon_greedy_probs(q[i], float(eps[i])))
    # a per-row epsilon tensor without vmap broadcasts the same way
    assert_match(P.epsilon_greedy_probs(q, eps), probs)


# ----------------------------------------------------------------------------- softmax
def test_softmax_functions_match_torch_distributions():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a = torch.randint(0, 4, (5,), generator=g)
    for temp in (1.0, 0.5, 3.0):
        ref = torch.distributions.Categorical(logits=logits / temp)
        torch.testing.assert_close(P.softmax_probs(logits, temp), ref.probs)
        torch.testing.assert_close(P.softmax_log_prob(a, logits, temp), ref.log_prob(a))
        torch.testing.assert_close(P.softmax_entropy(logits, temp), ref.entropy())


def test_softmax_sample_frequencies_match_probs():
    logits = torch.tensor([0.0, 1.0, -1.0, 0.5])
    samples = vmap(lambda k: P.softmax_sample(k, logits, 2.0))(_keys(4, 8000))
    stat, df = _chi_square(samples, P.softmax_probs(logits, 2.0))
    assert df == 3 and stat < CHI2_999[3]


def test_samplers_vmap_equals_loop_and_batch_axes():
    keys = _keys(5, 3)
    q = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1))
    for fn in (P.greedy_sample, lambda k, x: P.epsilon_greedy_sample(k, x, 0.5),
               lambda k, x: P.softmax_sample(k, x, 0.7)):
        batched = vmap(fn)(keys, q)
        assert batched.shape == (3, 2) and batched.dtype == torch.int64
        for i in range(3):
            assert_match(batched[i], fn(keys[i], q[i]))


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    q = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="q_values: expected a floating-point tensor"):
        P.greedy_probs(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"q_values: expected shape \(\.\.\., num_actions\)"):
        P.greedy_probs(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"epsilon: expected a number in \[0.0, 1.0\], got 1.5"):
        P.epsilon_greedy_probs(q, 1.5)
    with pytest.raises(ValueError, match=r"epsilon: expected shape \(\) or a suffix of the batch shape \(2,\)"):
        P.epsilon_greedy_probs(q, torch.zeros(3))
    with pytest.raises(ValueError, match="temperature: expected a number > 0"):
        P.softmax_probs(q, 0.0)
    with pytest.raises(ValueError, match=r"sample: expected shape \(2,\).*got \(3,\)"):
        P.softmax_log_prob(torch.zeros(3, dtype=torch.int64), q)
    with pytest.raises(TypeError, match="sample"):
        P.softmax_log_prob(torch.zeros(2), q)
    with pytest.raises(TypeError, match="key"):
        P.softmax_sample(torch.zeros(2), q)


# ----------------------------------------------------------------------------- compiled
@pytest.mark.compile
def test_compiled_samplers_match_eager():
    """One compile for all the samplers of policies.py and exploration.py."""
    keys = _keys(6, 4)
    q = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    eps = torch.tensor([0.0, 0.2, 0.5, 1.0])
    noise_tm1 = torch.randn(4, 5, generator=torch.Generator().manual_seed(3))

    def sample_all(key, q, eps, noise_tm1):
        # one key for every sampler keeps the compiled graph (and compile time) small;
        # independence between the draws is not what this test is about
        return (
            P.greedy_sample(key, q),
            P.epsilon_greedy_sample(key, q, eps),
            P.softmax_sample(key, q, 0.5),
            exploration.add_ornstein_uhlenbeck_noise(key, q, noise_tm1, 0.15, 0.2),
            P.epsilon_greedy_probs(q, eps),
            P.softmax_entropy(q),
        )

    eager = vmap(sample_all)(keys, q, eps, noise_tm1)
    compiled = funrl.jit(vmap(sample_all))(keys, q, eps, noise_tm1)
    assert_match(compiled, eager, exact=False)  # compiled vs eager: reassociation; sampled actions exact
