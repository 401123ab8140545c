"""Tests for funrl.nn.pruning: masks equal torch.nn.utils.prune's, exact counts,
vmap, sparse training that keeps pruned weights exactly zero, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as prune
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl import nn, optim
from funrl import random as jr
from funrl import tree
from funrl.nn import pruning
from helpers import assert_match

SIZES = [6, 10, 8, 3]


def _params(seed: int = 0, dtype=torch.float32):
    return nn.mlp(SIZES, dtype=dtype).init(jr.key(seed))


def _torch_layers(params):
    layers = []
    for i in range(len(SIZES) - 1):
        lin = torch.nn.Linear(SIZES[i], SIZES[i + 1])
        with torch.no_grad():
            lin.weight.copy_(params[f"linear_{i}"]["weight"])
            lin.bias.copy_(params[f"linear_{i}"]["bias"])
        layers.append(lin)
    return layers


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.75, 1.0])
def test_layer_masks_equal_torch_l1_unstructured(sparsity):
    params = _params(1)
    masks = pruning.magnitude_masks(params, sparsity, scope="layer")
    for i, lin in enumerate(_torch_layers(params)):
        prune.l1_unstructured(lin, "weight", amount=sparsity)
        assert torch.equal(masks[f"linear_{i}"]["weight"], lin.weight_mask.bool())
        assert bool(masks[f"linear_{i}"]["bias"].all())  # biases are not targets by default
        n = lin.weight.numel()
        assert int((~masks[f"linear_{i}"]["weight"]).sum()) == round(sparsity * n)


@pytest.mark.parametrize("sparsity", [0.2, 0.9])
def test_global_masks_equal_torch_global_unstructured(sparsity):
    params = _params(2)
    masks = pruning.magnitude_masks(params, sparsity)
    layers = _torch_layers(params)
    prune.global_unstructured([(lin, "weight") for lin in layers], pruning_method=prune.L1Unstructured, amount=sparsity)
    for i, lin in enumerate(layers):
        assert torch.equal(masks[f"linear_{i}"]["weight"], lin.weight_mask.bool())
    total = sum(lin.weight.numel() for lin in layers)
    pruned = sum(int((~masks[f"linear_{i}"]["weight"]).sum()) for i in range(3))
    assert pruned == round(sparsity * total)
    # global: the layers end up with different sparsities; every kept |w| >= every pruned |w|
    ws = torch.cat([params[f"linear_{i}"]["weight"].reshape(-1) for i in range(3)]).abs()
    ms = torch.cat([masks[f"linear_{i}"]["weight"].reshape(-1) for i in range(3)])
    assert ws[ms].min() >= ws[~ms].max()
    expected = torch.tensor(pruned / tree.size(params), dtype=torch.float32)
    assert torch.equal(pruning.sparsity(masks), expected)


@settings(max_examples=30, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 1.0),
    scope=st.sampled_from(["global", "layer"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_magnitude_masks_prune_the_exact_count_of_smallest_entries(shapes, sparsity, scope, seed):
    keys = jr.split(jr.key(seed), len(shapes))
    params = {f"w{i}": jr.normal(k, s) for i, (k, s) in enumerate(zip(keys, shapes))}
    masks = pruning.magnitude_masks(params, sparsity, scope=scope)
    groups = [[n] for n in params] if scope == "layer" else [list(params)]
    for names in groups:
        w = torch.cat([params[n].abs().reshape(-1) for n in names])
        m = torch.cat([masks[n].reshape(-1) for n in names])
        assert int((~m).sum()) == round(sparsity * w.numel())
        if m.any() and (~m).any():
            assert w[m].min() >= w[~m].max()


def test_targets_regex_and_callable():
    params = _params(3)
    only_first = pruning.magnitude_masks(params, 0.5, scope="layer", targets=r"linear_0\.weight$")
    assert int((~only_first["linear_0"]["weight"]).sum()) == 30
    assert all(bool(m.all()) for k, m in [("1", only_first["linear_1"]["weight"]), ("2", only_first["linear_2"]["weight"])])
    biases_too = pruning.magnitude_masks(params, 0.5, scope="layer", targets=lambda path, leaf: path.endswith("bias"))
    assert int((~biases_too["linear_1"]["bias"]).sum()) == 4 and bool(biases_too["linear_1"]["weight"].all())


def test_masks_vmap_over_seeds_bit_for_bit():
    keys = jr.split(jr.key(4), 3)
    model = nn.mlp(SIZES)
    params = torch.func.vmap(model.init)(keys)
    for scope in ("global", "layer"):
        masks = torch.func.vmap(lambda p: pruning.magnitude_masks(p, 0.6, scope=scope))(params)
        for i in range(3):
            assert_match(tree.index(masks, i), pruning.magnitude_masks(tree.index(params, i), 0.6, scope=scope))


@pytest.mark.parametrize("make", [
    lambda: optim.adamw(0.05, weight_decay=0.1),
    lambda: optim.sgd(0.05, momentum=0.9),
    lambda: optim.rmsprop(0.05, centered=True),
])
def test_sparse_training_keeps_pruned_weights_exactly_zero(make):
    model = nn.mlp(SIZES)
    params = model.init(jr.key(5))
    x = jr.normal(jr.key(6), (32, 6))
    y = jr.normal(jr.key(7), (32, 3))

    def loss(p):
        return ((model.apply(p, x) - y) ** 2).mean()

    masks = pruning.magnitude_masks(params, 0.7)
    tx = optim.chain(make(), pruning.keep_masked(masks))
    p = pruning.apply_masks(params, masks)
    state = tx.init(p)
    start = loss(p)
    for _ in range(20):
        u, state = tx.update(torch.func.grad(loss)(p), state, p)
        p = optim.apply_updates(p, u)
        for w, m in zip(tree.leaves(p), tree.leaves(masks)):
            assert torch.equal(w[~m], torch.zeros_like(w[~m]))  # exactly 0 (+0.0 or -0.0 compare equal)
    assert loss(p) < start
    kept = masks["linear_1"]["weight"]
    assert not torch.equal(p["linear_1"]["weight"][kept], params["linear_1"]["weight"][kept])
    # keep_masked also prunes unpruned params on the first step: w + (-w) = 0
    u, _ = pruning.keep_masked(masks).update(tree.zeros_like(params), None, params)
    once = optim.apply_updates(params, u)
    assert tree.equal(once, pruning.apply_masks(params, masks))


def test_apply_masks_after_each_step_is_the_other_way():
    model = nn.mlp(SIZES)
    params = model.init(jr.key(8))
    masks = pruning.magnitude_masks(params, 0.5, scope="layer")
    tx = optim.adam(0.1)
    p, state = pruning.apply_masks(params, masks), tx.init(params)
    for t in range(5):
        g = tree.map(lambda w: torch.ones_like(w), p)
        u, state = tx.update(g, state, p)
        p = pruning.apply_masks(optim.apply_updates(p, u), masks)
    zeros = sum(int((w == 0).sum()) for w in tree.leaves(p))
    assert zeros == sum(int((~m).sum()) for m in tree.leaves(masks))


def test_bad_arguments_name_the_argument():
    params = _params(9)
    masks = pruning.magnitude_masks(params, 0.5)
    with pytest.raises(ValueError, match=r"masks: expected a tree with the structure of params"):
        pruning.apply_masks(params, {"linear_0": masks["linear_0"]})
    with pytest.raises(ValueError, match=r"masks: expected a tree with the structure of params"):
        pruning.keep_masked({"linear_0": masks["linear_0"]}).init(params)
    bad = tree.map(lambda m: m.float(), masks)
    with pytest.raises(TypeError, match="masks: leaf 0 expected a bool tensor, got torch.float32"):
        pruning.apply_masks(params, bad)
    wrong_shape = tree.map(lambda m: m.reshape(-1), masks)
    with pytest.raises(ValueError, match=r"masks: leaf \d expected shape \(10, 6\) \(the param's\), got \(60,\)"):
        pruning.apply_masks(params, wrong_shape)
    with pytest.raises(ValueError, match=r"sparsity: expected a fraction in \[0, 1\], got 1.5"):
        pruning.magnitude_masks(params, 1.5)
    with pytest.raises(ValueError, match="scope: expected one of"):
        pruning.magnitude_masks(params, 0.5, scope="row")
    with pytest.raises(ValueError, match="targets: expected to select at least one leaf of params, got 'nothing'"):
        pruning.magnitude_masks(params, 0.5, targets="nothing")
    with pytest.raises(ValueError, match="params: keep_masked needs the params"):
        pruning.keep_masked(masks).update(params, None)
    with pytest.raises(TypeError, match="masks: expected a non-empty tree of bool tensors"):
        pruning.sparsity({"a": torch.ones(2)})
