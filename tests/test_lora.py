"""Tests for funrl.nn.lora: adapters' layout and init, merge/unmerge/apply, peft
equivalence, gradients of the adapters only, vmap over seeds, from_module params,
and argument errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from funrl import nn, optim
from funrl import random as jr
from funrl import tree
from funrl.nn import lora
from helpers import assert_match

V, L = 11, 8
TINY = dict(d_model=16, n_heads=2, n_layers=2)
QV = r"(q_proj|v_proj)\.weight$"


def _transformer(dtype=torch.float64, **kw):
    model = nn.transformer(V, L, dtype=dtype, **{**TINY, **kw})
    return model, model.init(jr.key(0))


def _with_random_b(adapters: lora.Adapters, seed: int, std: float = 0.2) -> lora.Adapters:
    """Adapters whose B is non-zero (fresh ones are zero, which would hide any bug in the low-rank path)."""
    def walk(node, k):
        if set(node) == {"a", "b"}:
            return {"a": node["a"], "b": jr.normal(k, node["b"].shape, node["b"].dtype) * std}
        keys = jr.split(k, len(node))
        return {name: walk(v, keys[i]) for i, (name, v) in enumerate(node.items())}

    return lora.Adapters(walk(adapters.tree, jr.key(seed)), adapters.rank, adapters.alpha, adapters.scale, adapters.dropout)


def _tokens(seed, shape):
    return jr.randint(jr.key(seed), shape, 0, V)


# ----------------------------------------------------------------------------- init
def test_adapters_mirror_the_targeted_weights_with_peft_defaults():
    model, params = _transformer(d_model=32, n_heads=2)
    ad = lora.init(jr.key(1), params, rank=4, alpha=8, targets=QV)
    assert ad.rank == 4 and ad.alpha == 8.0 and ad.scale == 2.0 and ad.dropout == 0.0
    paths = {".".join(p) for p, _ in lora.weight_paths(ad.tree)}
    assert paths == {f"layers.{i}.self_attn.{n}.weight.{m}" for i in range(2) for n in ("q_proj", "v_proj") for m in "ab"}
    q = ad.tree["layers"]["0"]["self_attn"]["q_proj"]["weight"]
    assert q["a"].shape == (4, 32) and q["b"].shape == (32, 4) and q["a"].dtype == torch.float64
    assert torch.equal(q["b"], torch.zeros(32, 4, dtype=torch.float64))
    # kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), as torch.nn.Linear and peft
    all_a = torch.cat([node["weight"]["a"].reshape(-1) for layer in ad.tree["layers"].values() for node in layer["self_attn"].values()])
    bound = 1 / math.sqrt(32)
    assert all_a.abs().max() <= bound and all_a.abs().max() > 0.95 * bound
    assert abs(all_a.var().item() - bound**2 / 3) < 0.2 * bound**2 / 3
    # rsLoRA
    assert lora.init(jr.key(1), params, 4, 8, QV, rslora=True).scale == 4.0
    # callable targets see the path and the leaf
    ups = lora.init(jr.key(1), params, 2, 2, lambda path, w: path.endswith("up_proj.weight") and w.shape[0] == 128)
    assert {".".join(p[:-1]) for p, _ in lora.weight_paths(ups.tree)} == {"layers.0.mlp.up_proj.weight", "layers.1.mlp.up_proj.weight"}


def test_init_vmaps_over_keys_bit_for_bit():
    _, params = _transformer(torch.float32)
    keys = jr.split(jr.key(2), 3)
    stacked = torch.func.vmap(lambda k: lora.init(k, params, 2, 4, QV))(keys)
    assert isinstance(stacked, lora.Adapters) and stacked.scale == 2.0
    for i in range(3):
        assert_match(tree.index(stacked, i), lora.init(keys[i], params, 2, 4, QV))  # draws: bit for bit
    assert not tree.equal(tree.index(stacked, 0), tree.index(stacked, 1))


# ----------------------------------------------------------------------------- merge / apply
def test_fresh_adapters_change_nothing_and_merge_equals_the_unmerged_path():
    model, params = _transformer()
    tokens = _tokens(3, (2, 7))
    base = model.apply(params, tokens)
    ad = lora.init(jr.key(4), params, 2, 4, r"(q_proj|v_proj|up_proj|o_proj)\.weight$")
    assert torch.equal(lora.apply(model.apply)(params, ad, tokens), base)
    ad = _with_random_b(ad, 5)
    unmerged = lora.apply(model.apply)(params, ad, tokens)
    assert (unmerged - base).abs().max() > 1e-3
    merged = lora.merge(params, ad)
    torch.testing.assert_close(model.apply(merged, tokens), unmerged, rtol=1e-12, atol=1e-12)
    w = params["layers"]["1"]["self_attn"]["v_proj"]["weight"]
    ab = ad.tree["layers"]["1"]["self_attn"]["v_proj"]["weight"]
    torch.testing.assert_close(merged["layers"]["1"]["self_attn"]["v_proj"]["weight"], w + ad.scale * ab["b"] @ ab["a"],
                               rtol=1e-14, atol=1e-14)
    # untargeted leaves are the very same tensors; inputs untouched
    assert merged["layers"]["1"]["self_attn"]["k_proj"]["weight"] is params["layers"]["1"]["self_attn"]["k_proj"]["weight"]
    assert not torch.equal(merged["layers"]["1"]["self_attn"]["v_proj"]["weight"], w)
    back = lora.unmerge(merged, ad)
    for a, b in zip(tree.leaves(back), tree.leaves(params)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("tied", [True, False])
def test_every_2d_weight_of_a_transformer_takes_unmerged_adapters(tied):
    # embeddings (a lookup, and the tied head) and the untied head too, not only the projections
    model, params = _transformer(tied=tied)
    ad = _with_random_b(lora.init(jr.key(14), params, 2, 4, lambda path, w: True), 15)
    n_weights = sum(1 for _, w in lora.weight_paths(params) if w.ndim == 2)
    assert len(lora.weight_paths(ad.tree)) == 2 * n_weights
    tokens = _tokens(16, (2, 7))
    unmerged = lora.apply(model.apply)(params, ad, tokens)
    torch.testing.assert_close(unmerged, model.apply(lora.merge(params, ad), tokens), rtol=1e-12, atol=1e-12)
    for target in ("embed_tokens", "embed_positions", "lm_head"):
        if target == "lm_head" and tied:
            continue
        one = _with_random_b(lora.init(jr.key(17), params, 2, 4, rf"^{target}\.weight$"), 18)
        out = lora.apply(model.apply)(params, one, tokens)
        assert (out - model.apply(params, tokens)).abs().max() > 1e-3
        torch.testing.assert_close(out, model.apply(lora.merge(params, one), tokens), rtol=1e-12, atol=1e-12)


def test_kv_cache_decode_with_adapters_equals_full_forward():
    model, params = _transformer(positions="rotary")
    ad = _with_random_b(lora.init(jr.key(6), params, 2, 4, QV), 7)
    tokens = _tokens(8, (2, L))
    full = lora.apply(model.apply)(params, ad, tokens)
    decode = lora.apply(model.decode)
    cache = model.init_cache(params, (2,))
    steps = []
    for t in range(L):
        lg, cache = decode(params, ad, tokens[:, t : t + 1], cache)
        steps.append(lg)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-12, atol=1e-12)


def test_encoder_decoder_cross_attention_targets():
    model = nn.encoder_decoder(V, L, dtype=torch.float64, **TINY)
    params = model.init(jr.key(9))
    ad = _with_random_b(lora.init(jr.key(10), params, 2, 2, r"decoder\..*cross_attn\.(q_proj|v_proj)\.weight$"), 11)
    assert set(ad.tree) == {"decoder"}
    src, tgt = _tokens(12, (2, 5)), _tokens(13, (2, 4))
    unmerged = lora.apply(model.apply)(params, ad, src, tgt)
    assert (unmerged - model.apply(params, src, tgt)).abs().max() > 1e-3
    torch.testing.assert_close(model.apply(lora.merge(params, ad), src, tgt), unmerged, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- peft
class _Net(torch.nn.Module):
    """Named like funrl.nn.mlp([5, 8, 3]) so the state dicts line up."""

    def __init__(self):
        super().__init__()
        self.linear_0 = torch.nn.Linear(5, 8, dtype=torch.float64)
        self.linear_1 = torch.nn.Linear(8, 3, dtype=torch.float64)

    def forward(self, x):
        return self.linear_1(torch.relu(self.linear_0(x)))


def test_matches_peft_forward_and_merge_and_unload():
    from peft import LoraConfig, get_peft_model

    mlp = nn.mlp([5, 8, 3], dtype=torch.float64)
    params = mlp.init(jr.key(20))
    net = _Net()
    with torch.no_grad():
        for name, w in net.named_parameters():
            layer, leaf = name.split(".")
            w.copy_(params[layer][leaf])
    ad = _with_random_b(lora.init(jr.key(21), params, rank=2, alpha=6, targets=r"linear_\d\.weight$"), 22)
    peft_model = get_peft_model(net, LoraConfig(r=2, lora_alpha=6, target_modules=["linear_0", "linear_1"], lora_dropout=0.0))
    with torch.no_grad():
        for layer in ("linear_0", "linear_1"):
            m = peft_model.base_model.model.get_submodule(layer)
            m.lora_A["default"].weight.copy_(ad.tree[layer]["weight"]["a"])
            m.lora_B["default"].weight.copy_(ad.tree[layer]["weight"]["b"])
    x = jr.normal(jr.key(23), (6, 5), torch.float64)
    with torch.no_grad():
        ref = peft_model(x)
    assert (ref - mlp.apply(params, x)).abs().max() > 1e-3
    torch.testing.assert_close(lora.apply(mlp.apply)(params, ad, x), ref, rtol=1e-12, atol=1e-12)
    merged_module = peft_model.merge_and_unload()
    merged = lora.merge(params, ad)
    for layer in ("linear_0", "linear_1"):
        torch.testing.assert_close(merged[layer]["weight"], merged_module.get_submodule(layer).weight.detach(),
                                   rtol=1e-13, atol=1e-13)
    # from_module params (a flat dict of state-dict names) take the same adapters' paths
    flat, apply = nn.from_module(_Net().requires_grad_(False))
    flat = {k: params[k.split(".")[0]][k.split(".")[1]] for k in flat}
    flat_ad = lora.init(jr.key(21), flat, rank=2, alpha=6, targets=r"linear_\d\.weight$")
    assert set(flat_ad.tree) == {"linear_0.weight", "linear_1.weight"}
    flat_ad = lora.Adapters({f"{k}.weight": v["weight"] for k, v in ad.tree.items()}, 2, 6.0, 3.0, 0.0)
    torch.testing.assert_close(lora.apply(apply)(flat, flat_ad, x), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lora.merge(flat, flat_ad)["linear_1.weight"], merged["linear_1"]["weight"], rtol=0, atol=0)


# ----------------------------------------------------------------------------- grad, vmap, optim
def _lm_loss(logits, tokens):
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, V), tokens[..., 1:].reshape(-1))


def test_grad_of_adapters_only_and_its_lora_structure():
    model, params = _transformer()
    tokens = _tokens(30, (3, 7))
    ad = lora.init(jr.key(31), params, 2, 4, QV)

    def loss(adapters):
        return _lm_loss(lora.apply(model.apply)(params, adapters, tokens), tokens)

    g = torch.func.grad(loss)(ad)
    assert isinstance(g, lora.Adapters) and tree.structure(g) == tree.structure(ad)
    for path, leaf in lora.weight_paths(g.tree):
        if path[-1] == "a":  # B = 0 at init: dL/dA = scale * B^T (...) = 0 exactly
            assert torch.equal(leaf, torch.zeros_like(leaf))
        else:
            assert leaf.abs().max() > 0
    # dL/dB equals the autograd gradient through the merged weights
    b = {".".join(p): leaf.detach().clone().requires_grad_() for p, leaf in lora.weight_paths(ad.tree) if p[-1] == "b"}
    rebuilt = {}
    for p, leaf in lora.weight_paths(ad.tree):
        name = ".".join(p)
        rebuilt = lora._set(rebuilt, p, b[name] if name in b else leaf)
    l_ref = _lm_loss(model.apply(lora.merge(params, lora.Adapters(rebuilt, 2, 4.0, 2.0, 0.0)), tokens), tokens)
    grads = torch.autograd.grad(l_ref, list(b.values()))
    ours = {".".join(p): leaf for p, leaf in lora.weight_paths(g.tree)}
    for name, gr in zip(b, grads):
        torch.testing.assert_close(ours[name], gr, rtol=1e-10, atol=1e-12)


def test_vmap_over_seeds_of_init_grad_and_adam_matches_a_loop():
    """float32 and transformer-sized batched matmuls: the loop agrees up to reassociation."""
    model, params = _transformer(torch.float32)
    tokens = _tokens(32, (2, 7))
    tx = optim.adam(1e-2)

    def train(key):
        ad = lora.init(key, params, 2, 4, QV)
        state = tx.init(ad)
        losses = []
        for _ in range(3):
            g, lv = torch.func.grad_and_value(lambda a: _lm_loss(lora.apply(model.apply)(params, a, tokens), tokens))(ad)
            u, state = tx.update(g, state, ad)
            ad = optim.apply_updates(ad, u)
            losses.append(lv)
        return ad, torch.stack(losses)

    keys = jr.split(jr.key(33), 2)
    ads, losses = torch.func.vmap(train)(keys)
    for i in range(2):
        ad_i, l_i = train(keys[i])
        # matrix products unbatched vs under vmap (mm vs bmm): equal up to reassociation
        assert_match((ad_i, l_i), tree.index((ads, losses), i), exact=False)
        assert l_i[-1] < l_i[0]  # the adapters learn


def test_dropout_uses_the_key_and_is_unbiased():
    layer = nn.Linear(6, 5, dtype=torch.float64)
    params = layer.init(jr.key(40))
    ad = _with_random_b(lora.init(jr.key(41), params, 2, 2, r"weight$", dropout=0.5), 42, std=1.0)
    x = jr.normal(jr.key(43), (6,), torch.float64)
    f = lora.apply(layer.apply)
    no_dropout = f(params, ad, x)
    k = jr.key(44)
    assert torch.equal(f(params, ad, x, key=k), f(params, ad, x, key=k))
    assert not torch.equal(f(params, ad, x, key=k), no_dropout)
    # inverted dropout: the mean over many keys is the no-dropout output
    outs = torch.func.vmap(lambda kk: f(params, ad, x, key=kk))(jr.split(jr.key(45), 4000))
    base = layer.apply(params, x)
    err = (outs.mean(0) - no_dropout).abs()
    assert (err < 5 * outs.std(0) / math.sqrt(4000) + 1e-12).all()
    # dropout touches the adapter's input only: with B = 0 the output is the base one for every key
    fresh = lora.init(jr.key(41), params, 2, 2, r"weight$", dropout=0.5)
    assert torch.equal(f(params, fresh, x, key=k), base)


def test_adapters_checkpoint_roundtrip(tmp_path):
    from funrl import checkpoint

    _, params = _transformer(torch.float32)
    ad = _with_random_b(lora.init(jr.key(50), params, 2, 4, QV, dropout=0.1), 51)
    checkpoint.save(tmp_path / "adapters.pt", ad)
    back, _ = checkpoint.load(tmp_path / "adapters.pt")
    assert isinstance(back, lora.Adapters) and (back.rank, back.alpha, back.scale, back.dropout) == (2, 4.0, 2.0, 0.1)
    assert tree.equal(back, ad)


# ----------------------------------------------------------------------------- errors
def test_bad_arguments_name_the_argument():
    model, params = _transformer()
    with pytest.raises(ValueError, match=r"targets: expected a pattern matching at least one 2-D weight path, got 'nope', which matches none of: embed_tokens.weight"):
        lora.init(jr.key(0), params, 2, 4, "nope")
    with pytest.raises(ValueError, match=r"rank: expected at most min\(out, in\) = 16 for layers.0.self_attn.q_proj.weight of shape \(16, 16\), got 17"):
        lora.init(jr.key(0), params, 17, 4, QV)
    with pytest.raises(ValueError, match="rank: expected a positive int, got 0"):
        lora.init(jr.key(0), params, 0, 4, QV)
    with pytest.raises(ValueError, match="alpha: expected a number > 0, got -1"):
        lora.init(jr.key(0), params, 2, -1, QV)
    with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\), got 1.0"):
        lora.init(jr.key(0), params, 2, 4, QV, dropout=1.0)
    with pytest.raises(TypeError, match="targets: expected a regex string or a callable"):
        lora.init(jr.key(0), params, 2, 4, 3)
    with pytest.raises(ValueError, match="targets: expected a valid regular expression"):
        lora.init(jr.key(0), params, 2, 4, "(")
    with pytest.raises(TypeError, match="params: expected nested dicts of tensors, got a list at layers"):
        lora.init(jr.key(0), {"layers": [torch.zeros(2, 2)]}, 1, 1, "layers")
    ad = lora.init(jr.key(0), params, 2, 4, QV)
    other = nn.transformer(V, L, d_model=8, n_heads=2, n_layers=2, dtype=torch.float64).init(jr.key(0))
    with pytest.raises(ValueError, match=r"adapters: expected the weight at layers.0.self_attn.q_proj.weight to have shape \(16, 16\), got \(8, 8\)"):
        lora.merge(other, ad)
    with pytest.raises(ValueError, match="adapters: expected params to hold a weight at layers.0.self_attn.q_proj.weight"):
        lora.merge({"embed_tokens": params["embed_tokens"]}, ad)
    with pytest.raises(TypeError, match="adapters: expected funrl.nn.lora.Adapters"):
        lora.merge(params, ad.tree)
    with pytest.raises(TypeError, match="apply_fn: expected a model's apply function"):
        lora.apply(None)
    _, module_apply = nn.from_module(_Net())
    flat = dict(nn.from_module(_Net())[0])
    with pytest.raises(ValueError, match="key: LoRA dropout needs a funrl model"):
        lora.apply(module_apply)(flat, lora.init(jr.key(0), flat, 1, 1, r"weight$", dropout=0.1), torch.zeros(5, dtype=torch.float64), key=jr.key(1))


def test_the_library_never_imports_the_oracles():
    import subprocess
    import sys

    code = ("import sys, torch, funrl.nn, funrl.nn.lora, funrl.nn.pruning, funrl.tree, funrl.optim\n"
            "from funrl import random as jr\n"
            "m = funrl.nn.transformer(5, 4, d_model=4, n_heads=1, n_layers=1)\n"
            "p = m.init(jr.key(0))\n"
            "funrl.nn.lora.apply(m.apply)(p, funrl.nn.lora.init(jr.key(1), p, 1, 1, 'q_proj'), torch.zeros(2, dtype=torch.long))\n"
            "print(sorted(n for n in ('peft', 'transformers') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
