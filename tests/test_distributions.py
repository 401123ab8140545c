"""Tests for funrl.distributions: cross-checks against torch.distributions, sampling
statistics, vmap == loop, reparameterisation gradients, one compiled check, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributions as td
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.func import jacrev, vmap

import funrl.random as fr
import funrl.tree as ftree
from funrl.compile import jit
from funrl.distributions import Bernoulli, Categorical, Deterministic, Normal, TanhNormal
from helpers import assert_match

# vmap-vs-loop and compiled-vs-eager identities: .ci/run runs them under ATEN_CPU_CAPABILITY=default too
pytestmark = pytest.mark.exactness

F64 = torch.float64
SETTINGS = settings(max_examples=25, deadline=None)


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=F64)


batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


@st.composite
def logits_pairs(draw):
    shape = draw(batch_shapes) + (draw(st.integers(1, 6)),)
    arr = hnp.arrays(np.float64, shape, elements=st.floats(-6, 6))
    return draw(arr), draw(arr)


@st.composite
def loc_scale(draw, loc_bound=4.0):
    shape = draw(batch_shapes) + (draw(st.integers(1, 4)),)
    loc = draw(hnp.arrays(np.float64, shape, elements=st.floats(-loc_bound, loc_bound)))
    scale = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.05, 3.0)))
    return loc, scale


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    """Upper-tail p-value of Pearson's chi-square test (regularised upper incomplete gamma)."""
    n = counts.sum()
    expected = n * probs
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = len(counts) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=F64), torch.tensor(stat / 2, dtype=F64)))


# ------------------------------------------------------------- Categorical
@SETTINGS
@given(logits_pairs())
def test_categorical_matches_torch(pair):
    logits, other = _t(pair[0]), _t(pair[1])
    d, ref = Categorical(logits), td.Categorical(logits=logits)
    k = logits.shape[-1]
    xs = torch.arange(k).reshape((k,) + (1,) * (logits.ndim - 1)).expand((k,) + logits.shape[:-1])
    torch.testing.assert_close(d.log_prob(xs), ref.log_prob(xs), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.entropy(), ref.entropy(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.probs, ref.probs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.log_probs, torch.log_softmax(logits, -1), rtol=0, atol=0)
    assert d.num_classes == k
    assert torch.equal(d.mode(), torch.argmax(logits, -1))
    torch.testing.assert_close(
        d.kl(Categorical(other)), td.kl_divergence(ref, td.Categorical(logits=other)), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(d.kl(d), torch.zeros(logits.shape[:-1], dtype=F64), rtol=0, atol=1e-12)


def test_categorical_masked_logits_hand_computed():
    logits = torch.tensor([0.0, -math.inf, math.log(3.0)], dtype=F64)  # p = (1/4, 0, 3/4)
    d = Categorical(logits)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(d.entropy(), torch.tensor(h, dtype=F64), rtol=1e-14, atol=0)
    assert d.log_prob(torch.tensor(1)).item() == -math.inf
    torch.testing.assert_close(d.log_prob(torch.tensor(2)), torch.tensor(math.log(0.75), dtype=F64))
    # out-of-range indices have probability 0 instead of reading out of bounds
    assert torch.equal(d.log_prob(torch.tensor([-1, 3, 7])), torch.full((3,), -math.inf, dtype=F64))
    # KL(p || q) with q(2) = 0 < p(2) is infinite; KL(q || p) is finite
    q = Categorical(torch.tensor([0.0, 0.0, -math.inf], dtype=F64))
    assert d.kl(q).item() == math.inf
    # gradients through masked entropy are finite (no 0 * -inf)
    g = torch.func.grad(lambda l: Categorical(l).entropy())(logits)
    assert torch.isfinite(g).all()


def test_categorical_kl_masked_hand_computed():
    p = Categorical(torch.tensor([0.0, 0.0, -math.inf], dtype=F64))  # (1/2, 1/2, 0)
    q = Categorical(torch.tensor([0.0, -math.inf, math.log(3.0)], dtype=F64))  # (1/4, 0, 3/4)
    r = Categorical(torch.log(torch.tensor([0.25, 0.25, 0.5], dtype=F64)))
    torch.testing.assert_close(p.kl(r), torch.tensor(math.log(2.0), dtype=F64), rtol=1e-14, atol=0)
    assert p.kl(q).item() == math.inf
    torch.testing.assert_close(
        q.kl(r), torch.tensor(0.25 * math.log(1.0) + 0.75 * math.log(1.5), dtype=F64), rtol=1e-14, atol=1e-15
    )


def test_categorical_sample_frequencies_chi_square():
    probs = np.array([0.1, 0.2, 0.3, 0.05, 0.35])
    d = Categorical(torch.log(torch.tensor(probs, dtype=torch.float32)))
    x = d.sample(fr.key(11), (40_000,))
    assert x.shape == (40_000,) and x.dtype == torch.int64
    counts = np.bincount(x.numpy(), minlength=5)
    assert _chi2_pvalue(counts, probs) > 1e-4


def test_categorical_sample_shapes_and_batch():
    logits = torch.zeros(3, 4)
    d = Categorical(logits)
    assert d.sample(fr.key(0)).shape == (3,)
    assert d.sample(fr.key(0), (5, 2)).shape == (5, 2, 3)
    x, lp = d.sample_and_log_prob(fr.key(1), (7,))
    torch.testing.assert_close(lp, torch.full((7, 3), -math.log(4.0)))
    assert ((x >= 0) & (x < 4)).all()


# ------------------------------------------------------------------ Normal
@SETTINGS
@given(loc_scale(), loc_scale(), st.integers(0, 2**31))
def test_normal_matches_torch(ls, ls2, seed):
    loc, scale = _t(ls[0]), _t(ls[1])
    d = Normal(loc, scale)
    ref1 = td.Normal(loc, scale)
    ref = td.Independent(ref1, 1)
    x = d.sample(fr.key(seed), (3,))
    assert x.shape == (3,) + loc.shape
    torch.testing.assert_close(d.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.log_prob_elementwise(x), ref1.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.entropy(), ref.entropy(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.entropy_elementwise(), ref1.entropy(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.mean(), ref.mean)
    torch.testing.assert_close(d.mode(), ref.mode)
    torch.testing.assert_close(d.variance(), ref.variance, rtol=1e-12, atol=0)
    assert torch.equal(d.stddev(), scale)
    o_loc, o_scale = _t(ls2[0]), _t(ls2[1])
    if o_loc.shape == loc.shape:
        o = Normal(o_loc, o_scale)
        ro = td.Independent(td.Normal(o_loc, o_scale), 1)
        torch.testing.assert_close(d.kl(o), td.kl_divergence(ref, ro), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            d.kl_elementwise(o), td.kl_divergence(ref1, td.Normal(o_loc, o_scale)), rtol=1e-10, atol=1e-12
        )
    # sample_and_log_prob's density (from eps) equals log_prob of its sample
    xs, lps = d.sample_and_log_prob(fr.key(seed), (2,))
    torch.testing.assert_close(lps, ref.log_prob(xs), rtol=1e-10, atol=1e-10)
    assert torch.equal(xs, d.sample(fr.key(seed), (2,)))


def test_normal_hand_computed():
    d = Normal(torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64))
    x = torch.tensor([1.0, 1.0], dtype=F64)
    e0 = -0.5 - 0.5 * math.log(2 * math.pi)
    e1 = -math.log(2.0) - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(d.log_prob_elementwise(x), torch.tensor([e0, e1], dtype=F64))
    torch.testing.assert_close(d.log_prob(x), torch.tensor(e0 + e1, dtype=F64))
    assert d.log_prob(x).shape == ()


def test_normal_sample_statistics():
    loc = torch.tensor([0.5, -2.0, 3.0])
    scale = torch.tensor([1.0, 0.1, 4.0])
    n = 40_000
    x = Normal(loc, scale).sample(fr.key(3), (n,)).double()
    # 5-sigma bounds for the mean (sd scale/sqrt(n)) and the variance (sd ~ var*sqrt(2/n))
    assert ((x.mean(0) - loc.double()).abs() < 5 * scale.double() / math.sqrt(n)).all()
    var = scale.double() ** 2
    assert ((x.var(0) - var).abs() < 5 * var * math.sqrt(2.0 / n)).all()


def test_normal_reparameterisation_gradient():
    loc = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    scale = torch.tensor([0.5, 1.5, 2.0], dtype=F64)
    k = fr.key(5)
    eps = (Normal(loc, scale).sample(k) - loc) / scale
    j_loc = jacrev(lambda m: Normal(m, scale).sample(k))(loc)
    j_scale = jacrev(lambda s: Normal(loc, s).sample(k))(scale)
    torch.testing.assert_close(j_loc, torch.eye(3, dtype=F64))
    torch.testing.assert_close(j_scale, torch.diag(eps))


# -------------------------------------------------------------- TanhNormal
def _torch_tanh_normal(loc, scale):
    return td.TransformedDistribution(td.Independent(td.Normal(loc, scale), 1), [td.TanhTransform()])


@SETTINGS
@given(loc_scale(loc_bound=1.5), st.integers(0, 2**31))
def test_tanh_normal_matches_torch(ls, seed):
    loc, scale = _t(ls[0]), _t(ls[1])
    d = TanhNormal(loc, scale)
    ref = _torch_tanh_normal(loc, scale)
    # actions well inside (-1, 1), so torch's unclamped atanh is accurate
    u = loc + scale * torch.clamp(fr.normal(fr.key(seed), (4,) + loc.shape, dtype=F64), -1.0, 1.0)
    u = torch.clamp(u, -3.0, 3.0)
    a = torch.tanh(u)
    torch.testing.assert_close(d.log_prob(a), ref.log_prob(a), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(d.mode(), torch.tanh(loc))
    a2, lp2 = d.sample_and_log_prob(fr.key(seed), (2,))
    assert a2.shape == (2,) + loc.shape and lp2.shape == (2,) + loc.shape[:-1]
    assert torch.equal(a2, d.sample(fr.key(seed), (2,)))
    inside = (a2.abs() < 0.995).all(-1)
    torch.testing.assert_close(
        torch.where(inside, lp2, 0.0), torch.where(inside, ref.log_prob(a2), 0.0), rtol=1e-8, atol=1e-8
    )


def test_tanh_normal_stable_log_prob_for_saturated_samples():
    # u ~ 20: tanh(u) == 1.0 in float32, naive log(1 - tanh(u)^2) = -inf
    loc = torch.tensor([20.0, -20.0])
    scale = torch.tensor([0.01, 0.01])
    d = TanhNormal(loc, scale)
    a, lp = d.sample_and_log_prob(fr.key(0))
    assert torch.isfinite(lp).all()
    # the float64 reference computed from the same pre-squash sample
    u = (loc + scale * fr.normal(fr.key(0), (2,), dtype=torch.float32)).double()
    base = td.Normal(loc.double(), scale.double()).log_prob(u)
    expected = (base - 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))).sum()
    torch.testing.assert_close(lp.double(), expected, rtol=1e-5, atol=1e-3)
    assert torch.equal(a.abs(), torch.ones(2))


def test_tanh_normal_log_prob_clamps_bounds():
    d = TanhNormal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64))
    edge = 1.0 - torch.finfo(F64).eps
    lp_bound = d.log_prob(torch.tensor([1.0, -1.0], dtype=F64))
    lp_edge = d.log_prob(torch.tensor([edge, -edge], dtype=F64))
    assert torch.isfinite(lp_bound) and torch.equal(lp_bound, lp_edge)
    assert torch.equal(d.log_prob(torch.tensor([3.0, -7.0], dtype=F64)), lp_edge)


def test_tanh_normal_sample_statistics_and_entropy_estimate():
    loc = torch.tensor([0.3, -0.8], dtype=F64)
    scale = torch.tensor([0.7, 1.2], dtype=F64)
    d = TanhNormal(loc, scale)
    n = 40_000
    a = d.sample(fr.key(2), (n,))
    assert (a.abs() <= 1).all()
    u = torch.atanh(a)
    assert ((u.mean(0) - loc).abs() < 5 * scale / math.sqrt(n)).all()
    # entropy by quadrature: H = sum_i [H(N(loc_i, scale_i)) + E log(1 - tanh(u_i)^2)]
    grid = torch.linspace(-12, 12, 200_001, dtype=F64)
    h = 0.0
    for m, s in zip(loc.tolist(), scale.tolist()):
        pdf = torch.exp(td.Normal(m, s).log_prob(grid))
        logdet = 2.0 * (math.log(2.0) - grid - torch.nn.functional.softplus(-2.0 * grid))
        h += 0.5 + 0.5 * math.log(2 * math.pi) + math.log(s) + float(torch.trapezoid(pdf * logdet, grid))
    _, lp = d.sample_and_log_prob(fr.key(4), (n,))
    est = d.entropy_estimate(fr.key(4), n)
    torch.testing.assert_close(est, -lp.mean(0))
    assert abs(float(est) - h) < 5 * float(lp.std()) / math.sqrt(n)
    with pytest.raises(NotImplementedError, match="entropy_estimate"):
        d.entropy()


def test_tanh_normal_gradient_matches_torch_composition():
    loc = torch.tensor([0.2, -0.4, 1.0], dtype=F64)
    scale = torch.tensor([0.3, 0.9, 0.5], dtype=F64)
    k = fr.key(9)
    eps = fr.normal(k, (3,), dtype=F64)

    def ours(m, s):
        a, lp = TanhNormal(m, s).sample_and_log_prob(k)
        return lp + a.sum()

    def reference(m, s):
        a = torch.tanh(m + s * eps)
        return _torch_tanh_normal(m, s).log_prob(a) + a.sum()

    g = torch.func.grad(ours, argnums=(0, 1))(loc, scale)
    r = torch.func.grad(reference, argnums=(0, 1))(loc, scale)
    torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------- Bernoulli, Deterministic
@SETTINGS
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), elements=st.floats(-8, 8)))
def test_bernoulli_matches_torch(a):
    logits = _t(a)
    d, ref = Bernoulli(logits), td.Bernoulli(logits=logits)
    for v in (0.0, 1.0):
        x = torch.full(logits.shape, v, dtype=F64)
        torch.testing.assert_close(d.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.log_prob(torch.ones(logits.shape, dtype=torch.bool)), ref.log_prob(torch.ones_like(logits)))
    torch.testing.assert_close(d.entropy(), ref.entropy(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d.probs, ref.probs)
    o = -0.5 * logits + 1.0
    torch.testing.assert_close(
        d.kl(Bernoulli(o)), td.kl_divergence(ref, td.Bernoulli(logits=o)), rtol=1e-8, atol=1e-10
    )
    assert torch.equal(d.mode(), logits > 0)


def test_bernoulli_sample_frequency():
    p = torch.tensor([0.1, 0.5, 0.9])
    x = Bernoulli(torch.logit(p)).sample(fr.key(8), (40_000,))
    assert x.shape == (40_000, 3) and x.dtype == torch.bool
    freq = x.double().mean(0)
    assert ((freq - p.double()).abs() < 5 * torch.sqrt(p.double() * (1 - p.double()) / 40_000)).all()


def test_deterministic():
    v = torch.tensor([1.5, -2.0])
    d = Deterministic(v)
    assert torch.equal(d.sample(fr.key(0), (3,)), v.expand(3, 2))
    assert torch.equal(d.log_prob(torch.tensor([1.5, 0.0])), torch.tensor([0.0, -math.inf]))
    assert torch.equal(d.entropy(), torch.zeros(2))
    assert torch.equal(d.mode(), v)
    with pytest.raises(TypeError, match="key"):
        d.sample(torch.zeros(2))


# ---------------------------------------------------------------- vmap / pytree
def test_vmap_over_keys_equals_loop():
    keys = fr.split(fr.key(123), 5)
    logits = torch.tensor([[0.1, 1.0, -0.5], [2.0, 0.0, 0.0]])
    loc, scale = torch.tensor([[0.0, 1.0], [0.5, -0.5]]), torch.tensor([[1.0, 0.5], [2.0, 0.1]])
    dists = [Categorical(logits), Normal(loc, scale), TanhNormal(loc, scale), Bernoulli(logits)]
    for d in dists:
        batched = vmap(lambda k: d.sample(k, (4,)))(keys)
        looped = torch.stack([d.sample(k, (4,)) for k in keys])
        assert_match(batched, looped)  # keys and draws: bit for bit
    for d in dists[:3]:
        bx, blp = vmap(d.sample_and_log_prob)(keys)
        lx, llp = zip(*[d.sample_and_log_prob(k) for k in keys])
        assert_match((bx, blp), (torch.stack(lx), torch.stack(llp)))


def test_vmap_over_distribution_batch_equals_loop():
    # 33 x 3 elements: most rows sit in the vectorised body of every kernel (also on AVX-512), a row
    # alone in the scalar tail -- funrl.ops' position-independent softplus/atanh make it bit for bit
    loc = fr.normal(fr.key(1), (33, 3))
    scale = torch.exp(fr.normal(fr.key(2), (33, 3)) * 0.3)
    keys = fr.split(fr.key(3), 33)
    stacked = TanhNormal(loc, scale)

    def f(d, k):
        a, lp = d.sample_and_log_prob(k)
        return a, lp, d.log_prob(a * 0.5), Bernoulli(d.loc).log_prob(a > 0), Bernoulli(d.loc).entropy()

    out = vmap(f)(stacked, keys)
    rows = [f(ftree.index(stacked, i), keys[i]) for i in range(33)]
    assert_match(out, ftree.stack(rows), exact=True)
    # a distribution is a pytree that funrl.tree handles
    assert isinstance(ftree.index(stacked, 0), TanhNormal)
    s = ftree.stack([Normal(loc[0], scale[0]), Normal(loc[1], scale[1])])
    assert isinstance(s, Normal) and torch.equal(s.loc, loc[:2])
    # construction tolerates the placeholder leaves pytree utilities use
    kept, rest = ftree.partition(lambda x: x is stacked.loc, stacked)
    assert isinstance(kept, TanhNormal) and ftree.equal(ftree.combine(kept, rest), stacked)


@pytest.mark.compile
def test_compiled_matches_eager():
    # one RNG stream only: each Threefry chain adds seconds of Inductor codegen
    keys = fr.split(fr.key(7), 4)
    logits = fr.normal(fr.key(8), (4, 5))
    loc = fr.normal(fr.key(9), (4, 2))
    scale = torch.exp(0.5 * fr.normal(fr.key(10), (4, 2)))

    def f(k, l, m, s):
        a, lp = TanhNormal(m, s).sample_and_log_prob(k)
        c = Categorical(l)
        x = c.mode()
        flipped = Categorical(torch.flip(l, [-1]))
        return x, c.log_prob(x) + c.entropy() + c.kl(flipped), a, lp, Normal(m, s).kl(Normal(a, s * 2.0))

    eager = vmap(f)(keys, logits, loc, scale)
    compiled = jit(vmap(f))(keys, logits, loc, scale)
    # compiled vs eager: up to reassociation (the integer mode stays exact)
    assert_match(compiled, eager, exact=False)


# --------------------------------------------------------------- bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"loc, scale.*loc \(3,\).*scale \(2,\)"):
        Normal(torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="loc.*scale"):
        TanhNormal(torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(TypeError, match="loc.*scale.*dtype"):
        Normal(torch.zeros(3), torch.ones(3, dtype=F64))
    with pytest.raises(TypeError, match="loc"):
        Normal(torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)).sample(fr.key(0))
    with pytest.raises(ValueError, match="loc.*rank"):
        Normal(torch.tensor(0.0), torch.tensor(1.0)).log_prob(torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"x: .*\(event\) axis of size 3"):
        Normal(torch.zeros(3), torch.ones(3)).log_prob(torch.zeros(2))
    with pytest.raises(TypeError, match="x"):
        Normal(torch.zeros(3), torch.ones(3)).log_prob(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="logits"):
        Categorical(torch.zeros(3, dtype=torch.int64)).sample(fr.key(0))
    with pytest.raises(ValueError, match="logits.*K"):
        Categorical(torch.tensor(0.0)).entropy()
    with pytest.raises(TypeError, match="x.*integer"):
        Categorical(torch.zeros(3)).log_prob(torch.tensor(1.0))
    with pytest.raises(ValueError, match="other.*3 classes"):
        Categorical(torch.zeros(3)).kl(Categorical(torch.zeros(4)))
    with pytest.raises(TypeError, match="other.*Normal"):
        Normal(torch.zeros(3), torch.ones(3)).kl(Categorical(torch.zeros(3)))
    with pytest.raises(ValueError, match="shape"):
        Normal(torch.zeros(3), torch.ones(3)).sample(fr.key(0), (-1,))
    with pytest.raises(TypeError, match="key"):
        Normal(torch.zeros(3), torch.ones(3)).sample(torch.zeros(2))
    with pytest.raises(ValueError, match="num_samples"):
        TanhNormal(torch.zeros(3), torch.ones(3)).entropy_estimate(fr.key(0), 0)
    # scale <= 0 cannot be checked under vmap: documented NaN/-inf, not an error
    lp = Normal(torch.zeros(1), torch.zeros(1) - 1.0).log_prob(torch.zeros(1))
    assert torch.isnan(lp)
