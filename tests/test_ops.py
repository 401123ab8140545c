"""funrl.ops: element-wise functions whose value does not depend on the element's position."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from funrl import ops
from helpers import assert_match

pytestmark = pytest.mark.exactness

#: each funrl.ops function next to torch's own (the reference values)
PAIRS = {
    "softplus": (ops.softplus, F.softplus),
    "sigmoid": (ops.sigmoid, torch.sigmoid),
    "log_sigmoid": (ops.log_sigmoid, F.logsigmoid),
    "silu": (ops.silu, F.silu),
    "gelu": (ops.gelu, F.gelu),
    "logaddexp": (lambda x: ops.logaddexp(x, 0.3 - 2 * x), lambda x: torch.logaddexp(x, 0.3 - 2 * x)),
    # inputs well inside (-1, 1): atanh and its gradient 1 / (1 - x^2) are ill-conditioned at +-1,
    # where any two formulas part by many ulps (torch.atanh's own gradient loses digits there)
    "atanh": (lambda x: ops.atanh(torch.tanh(x / 12)), lambda x: torch.atanh(torch.tanh(x / 12))),
    "power": (lambda x: ops.power(x.abs() + 0.1, 1.7), lambda x: (x.abs() + 0.1) ** 1.7),
}


def _x(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=dtype) * 4


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_at_an_element_is_the_same_at_every_position_and_size(name, dtype):
    f = PAIRS[name][0]
    # sizes around the vector widths (8, 16 floats per AVX2 block pair, 32 for AVX-512)
    for n in (1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 65, 100):
        x = _x(n, dtype, seed=n)
        whole = f(x)
        alone = torch.cat([f(x[k : k + 1]) for k in range(n)])
        assert_match(whole, alone, exact=True)
        # inside a larger batch, at another offset
        batch = torch.stack([x.roll(1), x, x.flip(0)])
        assert_match(torch.func.vmap(f)(batch)[1], whole, exact=True)
        g_whole = torch.func.grad(lambda y: f(y).sum())(x)
        g_alone = torch.cat([torch.func.grad(lambda y: f(y).sum())(x[k : k + 1]) for k in range(n)])
        assert_match(g_whole, g_alone, exact=True)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_gradients_equal_torch_within_a_few_ulps(name, dtype):
    f, ref = PAIRS[name]
    x = _x(1000, dtype)
    assert_match(f(x), ref(x), exact=False, ulps=4)
    assert_match(torch.func.grad(lambda y: f(y).sum())(x), torch.func.grad(lambda y: ref(y).sum())(x), exact=False, ulps=8)


def test_hand_computed_values_and_extremes():
    x = torch.tensor([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0], dtype=torch.float64)
    sp = ops.softplus(x)
    assert sp[0] == 0 and sp[-1] == 1000 and sp[3] == math.log(2)
    assert sp[4].item() == pytest.approx(math.log1p(math.e), rel=1e-15)
    sig = ops.sigmoid(x)
    assert sig[0] == 0 and sig[-1] == 1 and sig[3] == 0.5
    # full relative precision in the left tail (0.5 + 0.5 tanh(x/2) would lose it)
    assert sig[1].item() == pytest.approx(1 / (1 + math.exp(30)), rel=1e-14)
    assert torch.isfinite(ops.log_sigmoid(x)).all() and ops.log_sigmoid(x)[0] == -1000
    assert ops.logaddexp(torch.tensor(float("inf")), torch.tensor(float("inf"))) == float("inf")
    assert ops.logaddexp(torch.tensor(-float("inf")), torch.tensor(0.0)) == 0
    assert ops.logaddexp(torch.tensor(2.0), torch.tensor(2.0)).item() == pytest.approx(2 + math.log(2))
    assert ops.atanh(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [-math.inf, 0.0, math.inf]
    assert ops.atanh(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(math.atanh(0.5), rel=1e-15)
    assert ops.power(0.9, torch.tensor(3.0, dtype=torch.float64)).item() == pytest.approx(0.729, rel=1e-15)
    assert ops.power(torch.tensor([0.0, 4.0]), 0.5).tolist() == [0.0, 2.0]
    assert ops.gelu(torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist() == pytest.approx([0.0, 0.8413447460685429], rel=1e-15)


def test_power_needs_a_tensor_and_keeps_the_device_and_dtype():
    with pytest.raises(TypeError, match="base, exponent"):
        ops.power(2.0, 3.0)
    out = ops.power(0.5, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert out.dtype == torch.float64 and out.tolist() == [0.5, 0.25]


@pytest.mark.compile
def test_compiled_equals_eager_up_to_reassociation():
    x = _x(257, torch.float32)
    f = lambda y: ops.softplus(y) + ops.sigmoid(y) * ops.silu(y) + ops.logaddexp(y, -y) + ops.gelu(y)  # noqa: E731
    compiled = torch.compile(f, fullgraph=True)  # Inductor: its own vectorised loops
    assert_match(compiled(x), f(x), exact=False, ulps=4)
