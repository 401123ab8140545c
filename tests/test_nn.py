"""Tests for funrl.nn: initialiser statistics, torch.nn cross-checks, vmap over seeds, from_module."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, grad, vmap

from funrl import nn
from funrl import random as jr
from funrl import tree
from helpers import assert_match


def _moments(x: torch.Tensor):
    x = x.double().reshape(-1)
    mean = x.mean()
    var = x.var()
    kurt = ((x - mean) ** 4).mean() / var**2
    return mean.item(), var.item(), kurt.item()


# ----------------------------------------------------------------------------- initialisers
# (factory, variance as a function of (fan_in, fan_out), kurtosis: 3 normal, 1.8 uniform)
VARIANCE_CASES = [
    ("he_normal", nn.he_normal, lambda i, o: 2.0 / i, 3.0),
    ("he_uniform", nn.he_uniform, lambda i, o: 2.0 / i, 1.8),
    ("lecun_normal", nn.lecun_normal, lambda i, o: 1.0 / i, 3.0),
    ("lecun_uniform", nn.lecun_uniform, lambda i, o: 1.0 / i, 1.8),
    ("glorot_normal", nn.glorot_normal, lambda i, o: 2.0 / (i + o), 3.0),
    ("glorot_uniform", nn.glorot_uniform, lambda i, o: 2.0 / (i + o), 1.8),
    ("torch_default_linear", nn.torch_default_linear, lambda i, o: 1.0 / (3.0 * i), 1.8),
]


@pytest.mark.parametrize("name,factory,variance,kurtosis", VARIANCE_CASES, ids=[c[0] for c in VARIANCE_CASES])
@pytest.mark.parametrize("shape", [(256, 512), (96, 32, 3, 3)])
def test_variance_scaling_moments(name, factory, variance, kurtosis, shape):
    w = factory()(jr.key(3), shape)
    assert w.shape == shape and w.dtype == torch.float32
    fan_in, fan_out = nn.fans(shape)
    # torch's convention: (out, in, *kernel)
    assert fan_in == shape[1] * math.prod(shape[2:]) and fan_out == shape[0] * math.prod(shape[2:])
    n = w.numel()
    mean, var, kurt = _moments(w)
    want = variance(fan_in, fan_out)
    assert abs(mean) < 5 * math.sqrt(want / n)
    # sampling sd of the variance estimate is var*sqrt((kurt-1)/n) < 1% at n >= 1e5
    assert abs(var / want - 1) < 0.03, (var, want)
    assert abs(kurt - kurtosis) < 0.15, kurt
    if kurtosis == 1.8:
        bound = math.sqrt(3 * want)
        assert w.abs().max().item() <= bound + 1e-7
        assert w.abs().max().item() > 0.99 * bound


def test_torch_default_linear_matches_torch_linear_bounds():
    # torch.nn.Linear: weight and bias uniform within 1/sqrt(in_features)
    layer = nn.Linear(300, 200)
    p = layer.init(jr.key(0))
    bound = 1 / math.sqrt(300)
    ref = torch.nn.Linear(300, 200)  # torch's own (global-RNG) init, as an independent reference
    for ours, theirs in ((p["weight"], ref.weight), (p["bias"], ref.bias)):
        assert ours.abs().max() <= bound and theirs.abs().max() <= bound
        assert ours.abs().max() > 0.97 * bound
    _, var_ours, _ = _moments(p["weight"])
    _, var_theirs, _ = _moments(ref.weight.detach())
    assert abs(var_ours / (bound**2 / 3) - 1) < 0.03 and abs(var_theirs / var_ours - 1) < 0.05


def test_truncated_normal_variance_scaling():
    w = nn.variance_scaling(2.0, "fan_in", "truncated_normal")(jr.key(1), (256, 512))
    _, var, _ = _moments(w)
    assert abs(var / (2.0 / 512) - 1) < 0.03
    assert w.abs().max() <= 2 * math.sqrt(2.0 / 512) / 0.87962566103423978 + 1e-6


@pytest.mark.parametrize("shape", [(8, 8), (4, 16), (16, 4), (6, 2, 3), (1, 5), (5, 1)])
@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 0.01])
def test_orthogonal(shape, gain):
    w = nn.orthogonal(gain)(jr.key(7), shape)
    assert w.shape == shape
    m = w.reshape(shape[0], -1).double()
    rows, cols = m.shape
    if rows <= cols:
        gram = m @ m.T
        eye = torch.eye(rows, dtype=torch.float64)
    else:
        gram = m.T @ m
        eye = torch.eye(cols, dtype=torch.float64)
    torch.testing.assert_close(gram, gain**2 * eye, atol=1e-5 * gain**2, rtol=0)


def test_orthogonal_is_haar_distributed():
    # with the sign fix, entries of a Haar orthogonal n x n matrix have mean 0 and
    # variance 1/n; without it diag(W) would be biased positive
    n, S = 8, 400
    ws = vmap(lambda k: nn.orthogonal()(k, (n, n)))(jr.split(jr.key(11), S))
    diag = torch.diagonal(ws, dim1=-2, dim2=-1).double()
    assert abs(diag.mean().item()) < 5 * math.sqrt(1 / n / diag.numel())
    assert abs(ws.double().var().item() * n - 1) < 0.05


def test_orthogonal_float64_and_float16():
    w64 = nn.orthogonal()(jr.key(0), (5, 5), torch.float64)
    assert w64.dtype == torch.float64
    torch.testing.assert_close(w64 @ w64.T, torch.eye(5, dtype=torch.float64), atol=1e-12, rtol=0)
    w16 = nn.orthogonal()(jr.key(0), (5, 5), torch.float16)
    assert w16.dtype == torch.float16


def test_normal_uniform_constant_zeros_ones():
    k = jr.key(5)
    x = nn.normal(0.5)(k, (200, 500))
    mean, var, kurt = _moments(x)
    assert abs(mean) < 5 * 0.5 / math.sqrt(1e5) and abs(var / 0.25 - 1) < 0.03 and abs(kurt - 3) < 0.15
    u = nn.uniform(0.2)(k, (200, 500))
    assert u.min() >= -0.2 and u.max() < 0.2 and abs(u.mean().item()) < 0.01
    assert abs(u.double().var().item() / (0.04 / 3) - 1) < 0.03
    torch.testing.assert_close(nn.constant(2.5)(k, (3, 2)), torch.full((3, 2), 2.5))
    assert torch.equal(nn.zeros(k, (4,)), torch.zeros(4))
    assert torch.equal(nn.ones(k, (2, 2), torch.float64), torch.ones(2, 2, dtype=torch.float64))
    # zeros / ones are initialisers and factories of themselves
    assert nn.zeros() is nn.zeros and nn.ones() is nn.ones


def test_initialisers_are_deterministic_in_the_key():
    for f in (nn.he_normal(), nn.orthogonal(), nn.uniform(), nn.torch_default_linear()):
        a, b = f(jr.key(1), (6, 4)), f(jr.key(1), (6, 4))
        c = f(jr.key(2), (6, 4))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_initialiser_errors_name_the_argument():
    with pytest.raises(ValueError, match="shape"):
        nn.he_normal()(jr.key(0), (5,))
    with pytest.raises(ValueError, match="shape"):
        nn.orthogonal()(jr.key(0), (5,))
    with pytest.raises(ValueError, match="shape"):
        nn.normal()(jr.key(0), (2, -1))
    with pytest.raises(TypeError, match="key"):
        nn.he_normal()(torch.zeros(2), (3, 3))
    with pytest.raises(TypeError, match="key"):
        nn.zeros(torch.zeros(2), (3,))
    with pytest.raises(TypeError, match="dtype"):
        nn.he_normal()(jr.key(0), (3, 3), torch.int64)
    with pytest.raises(ValueError, match="gain"):
        nn.orthogonal(-1.0)
    with pytest.raises(ValueError, match="mode"):
        nn.variance_scaling(1.0, "fan_sideways")
    with pytest.raises(ValueError, match="distribution"):
        nn.variance_scaling(1.0, "fan_in", "cauchy")
    with pytest.raises(ValueError, match="scale"):
        nn.variance_scaling(0.0)
    with pytest.raises(ValueError, match="fan_in"):
        nn.torch_default_linear(-3)


# ----------------------------------------------------------------------------- activations
def test_activation_names():
    x = torch.linspace(-3, 3, 13)
    expected = {
        "relu": torch.nn.ReLU(),
        "tanh": torch.nn.Tanh(),
        "gelu": torch.nn.GELU(),
        "elu": torch.nn.ELU(),
        "silu": torch.nn.SiLU(),
        "sigmoid": torch.nn.Sigmoid(),
        "identity": torch.nn.Identity(),
        "leaky_relu": torch.nn.LeakyReLU(),
        "softplus": torch.nn.Softplus(),
    }
    for name, module in expected.items():
        # gelu, silu, sigmoid and softplus are funrl.ops' position-independent forms:
        # equal to torch's within a few ulps, the rest are torch's own functions
        assert_match(nn.activation(name)(x), module(x), exact=name not in {"gelu", "silu", "sigmoid", "softplus"}, ulps=4)
    assert nn.activation(torch.cos) is torch.cos
    torch.testing.assert_close(nn.activation(None)(x), x)


def test_activation_unknown_name():
    with pytest.raises(ValueError, match=r"activation.*relu.*swoosh|activation.*swoosh") as e:
        nn.activation("swoosh")
    assert "tanh" in str(e.value) and "'swoosh'" in str(e.value)
    with pytest.raises(ValueError, match="output_activation"):
        nn.mlp([2, 3], output_activation="nope")


# ----------------------------------------------------------------------------- modules vs torch.nn
@settings(max_examples=15, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_matches_torch(lead, n_in, n_out, bias, seed):
    layer = nn.Linear(n_in, n_out, bias=bias)
    params = layer.init(jr.key(seed))
    assert set(params) == ({"weight", "bias"} if bias else {"weight"})
    assert params["weight"].shape == (n_out, n_in)
    ref = torch.nn.Linear(n_in, n_out, bias=bias)
    ref.load_state_dict(params)
    x = jr.normal(jr.key(seed + 1), (*lead, n_in))
    if n_out <= nn._SMALL_OUT:
        # small heads use a multiply-sum (bit-exact under vmap), not torch's gemv: rounding differs
        torch.testing.assert_close(layer.apply(params, x), ref(x), rtol=1e-6, atol=1e-6)
    else:
        torch.testing.assert_close(layer.apply(params, x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("sizes", [[4, 64, 64, 1], [4, 64, 64, 2], [8, 16, 3]])
def test_vmap_apply_and_grad_equal_loop_bit_for_bit_with_small_heads(sizes):
    model = nn.mlp(sizes, activation="tanh")
    keys = jr.split(jr.key(0), 3)
    params = torch.func.vmap(model.init)(keys)
    x = jr.normal(jr.key(1), (3, 128, sizes[0]))

    def loss(p, xs):
        return (model.apply(p, xs) ** 2).sum()

    out = torch.func.vmap(model.apply)(params, x)
    grads = torch.func.vmap(torch.func.grad(loss))(params, x)
    for i in range(3):
        p_i = tree.index(params, i)
        # exact although these are matrix products: small heads (<= nn._SMALL_OUT outputs) use a
        # multiply-sum that rounds the same unbatched and under vmap -- the property under test
        assert_match(model.apply(p_i, x[i]), out[i])
        assert_match(torch.func.grad(loss)(p_i, x[i]), tree.index(grads, i))


@pytest.mark.parametrize("size", [5, (3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(size, affine):
    ln = nn.LayerNorm(size, eps=1e-3, elementwise_affine=affine)
    params = ln.init(jr.key(0))
    shape = (size,) if isinstance(size, int) else size
    ref = torch.nn.LayerNorm(shape, eps=1e-3, elementwise_affine=affine)
    if affine:
        assert torch.equal(params["weight"], torch.ones(shape)) and torch.equal(params["bias"], torch.zeros(shape))
        params = {"weight": jr.normal(jr.key(1), shape), "bias": jr.normal(jr.key(2), shape)}
        ref.load_state_dict(params)
    else:
        assert params == {}
    x = jr.normal(jr.key(3), (2, 7, *shape)) * 3 + 1
    torch.testing.assert_close(ln.apply(params, x), ref(x), rtol=0, atol=0)


def _sequential_like(sizes, act, out_act=None, layer_norm=False):
    mods = []
    for i in range(len(sizes) - 1):
        mods.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if layer_norm:
                mods.append(torch.nn.LayerNorm(sizes[i + 1]))
            mods.append(act())
    if out_act is not None:
        mods.append(out_act())
    return torch.nn.Sequential(*mods)


def _copy_into_sequential(params, seq, layer_norm=False):
    linears = [m for m in seq if isinstance(m, torch.nn.Linear)]
    norms = [m for m in seq if isinstance(m, torch.nn.LayerNorm)]
    with torch.no_grad():
        for i, m in enumerate(linears):
            m.weight.copy_(params[f"linear_{i}"]["weight"])
            m.bias.copy_(params[f"linear_{i}"]["bias"])
        for i, m in enumerate(norms):
            m.weight.copy_(params[f"layer_norm_{i}"]["weight"])
            m.bias.copy_(params[f"layer_norm_{i}"]["bias"])


@pytest.mark.parametrize(
    "activation,act,out_name,out_act,layer_norm",
    [
        ("relu", torch.nn.ReLU, None, None, False),
        ("tanh", torch.nn.Tanh, "tanh", torch.nn.Tanh, False),
        ("elu", torch.nn.ELU, None, None, True),
    ],
)
def test_mlp_matches_sequential(activation, act, out_name, out_act, layer_norm):
    sizes = [4, 64, 64, 2]
    model = nn.mlp(sizes, activation=activation, output_activation=out_name, layer_norm=layer_norm)
    params = model.init(jr.key(0))
    names = ["linear_0", "layer_norm_0", "linear_1", "layer_norm_1", "linear_2"] if layer_norm else ["linear_0", "linear_1", "linear_2"]
    assert list(params) == names
    if layer_norm:  # non-trivial norm params, so the cross-check sees them
        params = dict(params)
        for i in range(2):
            params[f"layer_norm_{i}"] = {"weight": 1 + 0.1 * jr.normal(jr.key(10 + i), (64,)), "bias": 0.1 * jr.normal(jr.key(20 + i), (64,))}
    seq = _sequential_like(sizes, act, out_act, layer_norm)
    _copy_into_sequential(params, seq, layer_norm)
    x = jr.normal(jr.key(1), (3, 5, 4))
    torch.testing.assert_close(model.apply(params, x), seq(x), rtol=1e-6, atol=1e-6)


def test_mlp_grad_matches_autograd():
    sizes = [3, 16, 2]
    model = nn.mlp(sizes, activation="tanh")
    params = model.init(jr.key(4))
    seq = _sequential_like(sizes, torch.nn.Tanh)
    _copy_into_sequential(params, seq)
    x = jr.normal(jr.key(5), (10, 3))
    y = jr.normal(jr.key(6), (10, 2))
    g = grad(lambda p: ((model.apply(p, x) - y) ** 2).mean())(params)
    ((seq(x) - y) ** 2).mean().backward()
    torch.testing.assert_close(g["linear_0"]["weight"], seq[0].weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g["linear_1"]["bias"], seq[2].bias.grad, rtol=1e-5, atol=1e-7)


def test_mlp_cleanrl_ppo_init():
    actor = nn.mlp(
        [4, 64, 64, 2], activation="tanh", w_init=nn.orthogonal(math.sqrt(2)), b_init=nn.zeros, final_w_init=nn.orthogonal(0.01)
    )
    p = actor.init(jr.key(0))
    w0 = p["linear_0"]["weight"].double()  # (64, 4): tall, columns orthonormal * sqrt(2)
    torch.testing.assert_close(w0.T @ w0, 2 * torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    w1 = p["linear_1"]["weight"].double()
    torch.testing.assert_close(w1 @ w1.T, 2 * torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0)
    w2 = p["linear_2"]["weight"].double()  # (2, 64): wide
    torch.testing.assert_close(w2 @ w2.T, 1e-4 * torch.eye(2, dtype=torch.float64), atol=1e-9, rtol=0)
    for i in range(3):
        assert torch.equal(p[f"linear_{i}"]["bias"], torch.zeros(p[f"linear_{i}"]["bias"].shape))


def test_vmap_init_and_apply_equal_loop():
    S = 4
    model = nn.mlp([3, 8, 8, 2], activation="relu", w_init=nn.orthogonal(math.sqrt(2)), b_init=nn.zeros, layer_norm=True)
    keys = jr.split(jr.key(9), S)
    stacked = vmap(model.init)(keys)
    assert stacked["linear_0"]["weight"].shape == (S, 8, 3)
    for i in range(S):
        assert_match(tree.index(stacked, i), model.init(keys[i]))  # draws: bit for bit
    # batched leaves are real per-seed tensors, not stride-0 broadcasts
    assert stacked["linear_0"]["bias"].stride()[0] != 0
    xs = jr.normal(jr.key(10), (S, 5, 3))
    ys = vmap(model.apply)(stacked, xs)
    for i in range(S):
        # matrix products unbatched vs under vmap: equal up to reassociation
        assert_match(model.apply(tree.index(stacked, i), xs[i]), ys[i], exact=False)


def test_module_input_errors():
    model = nn.mlp([3, 4, 2])
    params = model.init(jr.key(0))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 3\)"):
        model.apply(params, torch.zeros(5, 4))
    with pytest.raises(TypeError, match="x"):
        model.apply(params, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="x"):
        nn.LayerNorm((2, 3)).apply({}, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="sizes"):
        nn.mlp([3])
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        nn.mlp([3, 0, 2])
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="w_init"):
        nn.Linear(2, 3, w_init=0.5)
    with pytest.raises(ValueError, match="eps"):
        nn.LayerNorm(3, eps=-1.0)
    with pytest.raises(ValueError, match="size"):
        nn.LayerNorm(0)


def test_float64_params():
    model = nn.mlp([2, 5, 1], dtype=torch.float64, w_init=nn.he_uniform())
    p = model.init(jr.key(0))
    assert all(x.dtype == torch.float64 for x in tree.leaves(p))
    assert model.apply(p, torch.zeros(3, 2, dtype=torch.float64)).dtype == torch.float64


# ----------------------------------------------------------------------------- from_module
def _transformer():
    return torch.nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)


def _small_mlp():
    return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


@pytest.mark.parametrize("make,shape", [(_small_mlp, (6, 3)), (_transformer, (2, 5, 8))], ids=["mlp", "transformer"])
def test_from_module_apply_vmap_and_grad(make, shape):
    torch.manual_seed(0)  # torch.nn modules initialise from torch's RNG; these are reference modules
    S = 3
    modules = [make() for _ in range(S)]
    before = {k: v.clone() for k, v in modules[0].state_dict().items()}
    params0, apply = nn.from_module(modules[0])
    assert list(params0) == list(modules[0].state_dict())
    # copies: detached, not sharing storage, module untouched and still usable
    for name, p in modules[0].named_parameters():
        assert not params0[name].requires_grad and params0[name].data_ptr() != p.data_ptr()
        assert p.device.type == "cpu"
    x = jr.normal(jr.key(1), shape)
    torch.testing.assert_close(apply(params0, x), modules[0](x), rtol=1e-6, atol=1e-6)

    stacked = tree.stack([nn.from_module(m)[0] for m in modules])
    xs = jr.normal(jr.key(2), (S, *shape))
    ys = vmap(apply)(stacked, xs)
    for i in range(S):
        assert_match(modules[i](xs[i]).detach(), ys[i], exact=False)  # vmap vs one module: reassociation

    # grad through apply equals autograd on the module
    g = grad(lambda p: (apply(p, x) ** 2).sum())(params0)
    (modules[0](x) ** 2).sum().backward()
    for name, p in modules[0].named_parameters():
        torch.testing.assert_close(g[name], p.grad, rtol=1e-5, atol=1e-6)
    for k, v in modules[0].state_dict().items():
        assert torch.equal(v, before[k])


def test_from_module_includes_buffers_and_leaves_module_alone():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        m[1].running_mean.copy_(torch.arange(4.0))
        m[1].running_var.copy_(torch.arange(1.0, 5.0))
    params, apply = nn.from_module(m)
    assert "1.running_mean" in params and "1.num_batches_tracked" in params
    x = jr.normal(jr.key(0), (5, 3))
    torch.testing.assert_close(apply(params, x), m(x))
    # a different buffer value changes the output: buffers are really swapped in
    p2 = {**params, "1.running_mean": params["1.running_mean"] + 1.0}
    assert not torch.allclose(apply(p2, x), m(x))
    assert next(m.parameters()).device.type == "cpu"
    torch.testing.assert_close(m[1].running_mean, torch.arange(4.0))
    with pytest.raises(TypeError, match="module"):
        nn.from_module(lambda x: x)


def test_from_module_functional_call_equivalence_with_tied_weights():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4, bias=False)
            self.b = torch.nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(1)
    m = Tied()
    params, apply = nn.from_module(m)
    assert list(params) == ["a.weight"]
    x = jr.normal(jr.key(0), (2, 4))
    torch.testing.assert_close(apply(params, x), m(x))
    torch.testing.assert_close(apply(params, x), functional_call(m, dict(m.named_parameters()), (x,)))
