"""Tests for funrl.nn.transformer: shapes and names, masking, padding, KV cache,
vmap and compile, and numeric cross-checks against torch.nn.Transformer* layers
and a Hugging Face GPT-2 (float64, 1e-10)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from funrl import nn
from funrl import random as jr
from funrl import tree
from helpers import assert_match

V, L = 13, 12  # vocabulary, max_len: tiny so the whole file runs in seconds
TINY = dict(d_model=16, n_heads=2, n_layers=2)
VARIANTS = {
    "learned_layernorm_tied": dict(),
    "rotary_rmsnorm_untied": dict(positions="rotary", norm="rmsnorm", tied=False, bias=False),
}


def _tokens(seed: int, shape) -> torch.Tensor:
    return jr.randint(jr.key(seed), shape, 0, V)


def _model(dtype=torch.float64, **kw):
    return nn.transformer(V, L, dtype=dtype, **{**TINY, **kw})


def _randomise(params: dict, seed: int, std: float = 0.3) -> dict:
    """Every leaf perturbed (norm weights and biases leave their 1 / 0 init) so cross-checks see them."""
    leaves = tree.leaves(params)
    keys = jr.split(jr.key(seed), len(leaves))
    noisy = [x + jr.normal(k, x.shape, x.dtype) * std for x, k in zip(leaves, keys)]
    return tree.unflatten(tree.structure(params), noisy)


# ----------------------------------------------------------------------------- structure
def test_params_are_plain_dicts_with_torch_names_and_layouts():
    model = nn.transformer(V, L, d_model=16, n_heads=2, n_layers=2, d_ff=24, tied=False)
    p = model.init(jr.key(0))
    names = {".".join(path) for path, _ in nn.lora.weight_paths(p)}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert f"layers.1.self_attn.{proj}.weight" in names and f"layers.1.self_attn.{proj}.bias" in names
    assert p["layers"]["0"]["mlp"]["up_proj"]["weight"].shape == (24, 16)  # [out, in]
    assert p["layers"]["0"]["mlp"]["down_proj"]["weight"].shape == (16, 24)
    assert p["embed_tokens"]["weight"].shape == (V, 16) and p["lm_head"]["weight"].shape == (V, 16)
    assert p["embed_positions"]["weight"].shape == (L, 16)
    assert all(type(d) is dict for d in (p, p["layers"], p["layers"]["0"]))
    tokens = _tokens(1, (3, 2, 7))
    assert model.apply(p, tokens).shape == (3, 2, 7, V)  # any leading dims
    # rotary: no position table; tied: no head
    p2 = nn.transformer(V, L, positions="rotary", **TINY).init(jr.key(0))
    assert "embed_positions" not in p2 and "lm_head" not in p2


def test_init_is_a_function_of_the_key_and_vmaps_bit_for_bit():
    model = _model(torch.float32)
    keys = jr.split(jr.key(3), 3)
    stacked = torch.func.vmap(model.init)(keys)
    for i in range(3):
        assert_match(tree.index(stacked, i), model.init(keys[i]))  # draws: bit for bit
    assert not tree.equal(model.init(keys[0]), model.init(keys[1]))


def test_vmap_over_seeds_matches_a_loop_to_float32_rounding():
    """Batched matmuls round differently from unbatched ones: equal up to reassociation, not bit for bit."""
    model = _model(torch.float32, positions="rotary")
    keys = jr.split(jr.key(4), 3)
    params = torch.func.vmap(model.init)(keys)
    tokens = _tokens(5, (3, 2, 9))
    mask = torch.ones(3, 2, 9, dtype=torch.bool)
    mask[:, 1, :3] = False

    def loss(p, t, m):
        lg = model.apply(p, t, m)
        return F.cross_entropy(lg[..., :-1, :].reshape(-1, V), t[..., 1:].reshape(-1))

    out = torch.func.vmap(model.apply)(params, tokens, mask)
    grads = torch.func.vmap(torch.func.grad(loss))(params, tokens, mask)
    for i in range(3):
        p_i = tree.index(params, i)
        assert_match(model.apply(p_i, tokens[i], mask[i]), out[i], exact=False)
        assert_match(torch.func.grad(loss)(p_i, tokens[i], mask[i]), tree.index(grads, i), exact=False)


@pytest.mark.compile
def test_compiled_equals_eager():
    """fullgraph=True: the vmapped forward is one graph (no breaks).  The aot_eager backend keeps the
    test at a few seconds; Inductor's cold compile of this graph took ~40 s on a loaded 2-core machine."""
    model = nn.transformer(V, L, d_model=8, n_heads=2, n_layers=1)
    params = torch.func.vmap(model.init)(jr.split(jr.key(6), 2))
    tokens = _tokens(7, (2, 3, 6))
    f = torch.func.vmap(model.apply)
    assert_match(torch.compile(f, fullgraph=True, backend="aot_eager")(params, tokens), f(params, tokens), exact=False)
    # one decoding step compiles once (the cache's length is a tensor, not a Python int) and matches eager
    p0 = tree.index(params, 0)
    step = torch.compile(model.decode, fullgraph=True, backend="aot_eager", dynamic=False)
    c_eager = c_comp = model.init_cache(p0, (3,))
    for t in range(4):
        a, c_comp = step(p0, tokens[0, :, t : t + 1], c_comp)
        b, c_eager = model.decode(p0, tokens[0, :, t : t + 1], c_eager)
        assert_match((a, c_comp), (b, c_eager), exact=False)  # compiled vs eager: reassociation
    counter = CompileCounter()
    counted = torch.compile(model.decode, fullgraph=True, backend=counter, dynamic=False)
    cache = model.init_cache(p0, (3,))
    for t in range(4):
        _, cache = counted(p0, tokens[0, :, t : t + 1], cache)
    assert counter.frame_count == 1


def test_linear_is_torch_linear_and_adds_the_lora_path():
    g = torch.Generator().manual_seed(1)
    w, b, x = (torch.randn(*s, dtype=torch.float64, generator=g) for s in [(5, 4), (5,), (3, 2, 4)])
    torch.testing.assert_close(nn.linear({"weight": w, "bias": b}, x), F.linear(x, w, b), rtol=0, atol=0)
    torch.testing.assert_close(nn.linear({"weight": w}, x), x @ w.T, rtol=1e-14, atol=1e-14)
    a, bb = torch.randn(2, 4, dtype=torch.float64, generator=g), torch.randn(5, 2, dtype=torch.float64, generator=g)
    lo = {"a": a, "b": bb, "scale": 1.5, "dropout": 0.0, "key": None}
    out = nn.linear({"weight": w, "bias": b, "lora": lo}, x)
    torch.testing.assert_close(out, F.linear(x, w + 1.5 * bb @ a, b), rtol=1e-12, atol=1e-12)


def test_attention_matches_scaled_dot_product_attention_with_a_bool_mask():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, n, 4, dtype=torch.float64, generator=g) for n in (5, 6, 6))
    allowed = torch.rand(2, 1, 5, 6, generator=g) > 0.4
    allowed[..., 0] = True  # every row allows at least one key
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(nn.attention(q, k, v, allowed), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- masking and padding
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causal_changing_a_later_token_leaves_earlier_logits_unchanged(variant):
    model = _model(**VARIANTS[variant])
    p = _randomise(model.init(jr.key(8)), 9)
    tokens = _tokens(10, (2, 8))
    for t in (0, 3, 6):
        changed = tokens.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % V
        a, b = model.apply(p, tokens), model.apply(p, changed)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-13)
        assert (a[:, t + 1] - b[:, t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_left_padded_prompts_give_the_unpadded_logits(variant):
    model = _model(**VARIANTS[variant])
    p = _randomise(model.init(jr.key(11)), 12)
    lengths = [7, 4, 2]
    T = max(lengths)
    rows = [_tokens(20 + i, (n,)) for i, n in enumerate(lengths)]
    padded = torch.stack([F.pad(r, (T - len(r), 0), value=V - 1) for r in rows])
    mask = torch.stack([torch.arange(T) >= T - len(r) for r in rows])
    out = model.apply(p, padded, mask)
    assert torch.isfinite(out).all()  # padding rows attend to themselves: no NaN anywhere
    for i, r in enumerate(rows):
        torch.testing.assert_close(out[i, T - len(r):], model.apply(p, r), rtol=1e-12, atol=1e-12)
    # explicit positions give the same as the default cumsum(mask) - 1
    pos = (torch.cumsum(mask.long(), -1) - 1).clamp(min=0)
    torch.testing.assert_close(model.apply(p, padded, mask, pos), out, rtol=0, atol=0)
    # and without the mask the padding leaks in (so the test above can fail)
    assert (model.apply(p, padded)[1, -1] - out[1, -1]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kv_cache_token_by_token_equals_full_forward(variant):
    model = _model(**VARIANTS[variant])
    p = _randomise(model.init(jr.key(13)), 14)
    tokens = _tokens(15, (2, L))
    full = model.apply(p, tokens)
    cache = model.init_cache(p, batch_shape=(2,))
    steps = []
    for t in range(L):
        logits, cache = model.decode(p, tokens[:, t : t + 1], cache)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-12, atol=1e-12)
    assert cache["length"].item() == L and cache["count"].tolist() == [L, L] and bool(cache["valid"].all())
    # a prompt in one chunk, then the rest token by token
    cache = model.init_cache(p, (2,))
    first, cache = model.decode(p, tokens[:, :5], cache)
    sixth, cache = model.decode(p, tokens[:, 5:6], cache)
    torch.testing.assert_close(torch.cat([first, sixth], 1), full[:, :6], rtol=1e-12, atol=1e-12)


def test_kv_cache_with_left_padded_prompts_and_vmap_over_seeds():
    model = _model(torch.float32, positions="rotary")
    params = torch.func.vmap(model.init)(jr.split(jr.key(16), 2))
    prompt = torch.stack([F.pad(_tokens(17, (3,)), (2, 0)), _tokens(18, (5,))])  # (2, 5), row 0 left-padded
    mask = torch.tensor([[False, False, True, True, True], [True] * 5])
    cont = _tokens(19, (2, 4))

    def generate(p):
        cache = model.init_cache(p, (2,))
        lg0, cache = model.decode(p, prompt, cache, mask)
        outs = [lg0]
        for t in range(4):
            lg, cache = model.decode(p, cont[:, t : t + 1], cache)
            outs.append(lg)
        return torch.cat(outs, 1)

    out = torch.func.vmap(generate)(params)
    for s in range(2):
        p_s = tree.index(params, s)
        full = model.apply(p_s, torch.cat([prompt, cont], 1), torch.cat([mask, torch.ones(2, 4, dtype=torch.bool)], 1))
        real = torch.cat([mask, torch.ones(2, 4, dtype=torch.bool)], 1)
        torch.testing.assert_close(out[s][real], full[real], rtol=1e-5, atol=1e-5)
        # row 0's real tokens equal the unpadded sequence on its own
        alone = model.apply(p_s, torch.cat([prompt[0, 2:], cont[0]]))
        torch.testing.assert_close(out[s][0, 2:], alone, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- rotary
def test_rotary_matches_the_complex_number_form_and_depends_on_offsets_only():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, generator=g)  # (B, H, T, Dh)
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 3, 0, 11, 2]])
    out = nn.rotary(x, pos, base=100.0)
    theta = 100.0 ** (-torch.arange(4, dtype=torch.float64) * 2 / 8)
    z = torch.complex(x[..., :4], x[..., 4:]) * torch.polar(torch.ones((), dtype=torch.float64), pos[:, None, :, None] * theta)
    torch.testing.assert_close(out, torch.cat([z.real, z.imag], -1), rtol=1e-12, atol=1e-12)
    q, k = x[0, 0, 0], x[0, 0, 1]

    def score(m, n):
        return nn.rotary(q[None, None, :], torch.tensor([m]))[0, 0] @ nn.rotary(k[None, None, :], torch.tensor([n]))[0, 0]

    torch.testing.assert_close(score(5, 2), score(13, 10), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- cross-checks
def _copy_attention(mha: torch.nn.MultiheadAttention, p: dict) -> None:
    mha.in_proj_weight.copy_(torch.cat([p["q_proj"]["weight"], p["k_proj"]["weight"], p["v_proj"]["weight"]]))
    mha.in_proj_bias.copy_(torch.cat([p["q_proj"]["bias"], p["k_proj"]["bias"], p["v_proj"]["bias"]]))
    mha.out_proj.weight.copy_(p["o_proj"]["weight"])
    mha.out_proj.bias.copy_(p["o_proj"]["bias"])


def _copy_norm(ln: torch.nn.LayerNorm, p: dict) -> None:
    ln.weight.copy_(p["weight"])
    ln.bias.copy_(p["bias"])


def _copy_mlp(layer, p: dict) -> None:
    layer.linear1.weight.copy_(p["up_proj"]["weight"])
    layer.linear1.bias.copy_(p["up_proj"]["bias"])
    layer.linear2.weight.copy_(p["down_proj"]["weight"])
    layer.linear2.bias.copy_(p["down_proj"]["bias"])


def _encoder_layer(d, heads, d_ff):
    # train mode with dropout 0: no dropout and no fused fast path
    return torch.nn.TransformerEncoderLayer(d, heads, d_ff, dropout=0.0, activation="gelu", batch_first=True,
                                            norm_first=True, dtype=torch.float64)


@torch.no_grad()
def test_decoder_only_matches_torch_transformer_encoder_layers_with_a_causal_mask():
    model = _model(d_ff=24)
    p = _randomise(model.init(jr.key(30)), 31)
    tokens = _tokens(32, (3, 9))
    h = F.embedding(tokens, p["embed_tokens"]["weight"]) + p["embed_positions"]["weight"][:9]
    causal = torch.nn.Transformer.generate_square_subsequent_mask(9, dtype=torch.float64)
    for i in range(2):
        layer = _encoder_layer(16, 2, 24)
        q = p["layers"][str(i)]
        _copy_attention(layer.self_attn, q["self_attn"])
        _copy_norm(layer.norm1, q["attn_norm"])
        _copy_norm(layer.norm2, q["mlp_norm"])
        _copy_mlp(layer, q["mlp"])
        h = layer(h, src_mask=causal)
    ref = F.layer_norm(h, (16,), p["norm"]["weight"], p["norm"]["bias"]) @ p["embed_tokens"]["weight"].T
    torch.testing.assert_close(model.apply(p, tokens), ref, rtol=1e-10, atol=1e-10)


@torch.no_grad()
def test_encoder_decoder_matches_torch_nn_transformer():
    model = nn.encoder_decoder(V, L, n_encoder_layers=2, d_model=16, n_heads=2, n_layers=3, d_ff=24, dtype=torch.float64)
    p = _randomise(model.init(jr.key(33)), 34)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note that norm_first disables nested tensors
        ref_model = torch.nn.Transformer(16, 2, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=24,
                                         dropout=0.0, activation="gelu", batch_first=True, norm_first=True,
                                         dtype=torch.float64)
    for i, layer in enumerate(ref_model.encoder.layers):
        q = p["encoder"]["layers"][str(i)]
        _copy_attention(layer.self_attn, q["self_attn"])
        _copy_norm(layer.norm1, q["attn_norm"])
        _copy_norm(layer.norm2, q["mlp_norm"])
        _copy_mlp(layer, q["mlp"])
    for i, layer in enumerate(ref_model.decoder.layers):
        q = p["decoder"]["layers"][str(i)]
        _copy_attention(layer.self_attn, q["self_attn"])
        _copy_attention(layer.multihead_attn, q["cross_attn"])
        _copy_norm(layer.norm1, q["attn_norm"])
        _copy_norm(layer.norm2, q["cross_attn_norm"])
        _copy_norm(layer.norm3, q["mlp_norm"])
        _copy_mlp(layer, q["mlp"])
    _copy_norm(ref_model.encoder.norm, p["encoder"]["norm"])
    _copy_norm(ref_model.decoder.norm, p["decoder"]["norm"])
    src, tgt = _tokens(35, (2, 7)), _tokens(36, (2, 5))
    src_mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])  # row 1 right-padded
    emb = p["embed_tokens"]["weight"]
    src_emb = F.embedding(src, emb) + p["encoder"]["embed_positions"]["weight"][:7]
    tgt_emb = F.embedding(tgt, emb) + p["decoder"]["embed_positions"]["weight"][:5]
    out = ref_model(src_emb, tgt_emb, tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64),
                    src_key_padding_mask=~src_mask, memory_key_padding_mask=~src_mask)
    ours = model.apply(p, src, tgt, src_mask=src_mask)
    torch.testing.assert_close(ours, out @ emb.T, rtol=1e-10, atol=1e-10)
    # the encoder alone, at the real source positions
    memory = ref_model.encoder(src_emb, src_key_padding_mask=~src_mask)
    torch.testing.assert_close(model.encode(p, src, src_mask)[src_mask], memory[src_mask], rtol=1e-10, atol=1e-10)


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=V, n_positions=L, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    config._attn_implementation = "eager"
    hf = GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():  # funrl-key values everywhere (biases and norms too), not HF's init
        for i, (_, w) in enumerate(hf.named_parameters()):
            w.copy_(jr.normal(jr.key(100 + i), w.shape, torch.float64) * 0.3)
    return hf


@torch.no_grad()
def test_gpt2_converter_gives_hugging_face_logits():
    hf = _tiny_gpt2()
    params, model = nn.from_gpt2(hf.state_dict(), n_heads=2, eps=hf.config.layer_norm_epsilon)
    assert model.config.activation == "gelu_tanh" and model.config.max_len == L and model.config.d_ff == 64
    tokens = _tokens(40, (3, 10))
    torch.testing.assert_close(model.apply(params, tokens), hf(tokens).logits, rtol=1e-10, atol=1e-10)
    # left padding: HF with attention_mask + explicit position_ids, at the real positions
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, :4] = False
    mask[2, :7] = False
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    ref = hf(tokens, attention_mask=mask.long(), position_ids=pos).logits
    torch.testing.assert_close(model.apply(params, tokens, mask)[mask], ref[mask], rtol=1e-10, atol=1e-10)
    # the converted model keeps funrl's KV cache
    cache = model.init_cache(params, (3,))
    lg, cache = model.decode(params, tokens[:, :6], cache)
    lg2, _ = model.decode(params, tokens[:, 6:], cache)
    torch.testing.assert_close(torch.cat([lg, lg2], 1), hf(tokens).logits, rtol=1e-10, atol=1e-10)
    # the state dict is untouched and shares no storage with the params
    sd = hf.state_dict()
    assert all(x.untyped_storage().data_ptr() != sd["transformer.wte.weight"].untyped_storage().data_ptr()
               for x in tree.leaves(params))


def test_from_module_brings_any_torch_model():
    hf = _tiny_gpt2()
    params, apply = nn.from_module(hf)
    tokens = _tokens(41, (2, 6))
    with torch.no_grad():
        ref = hf(tokens).logits
    torch.testing.assert_close(apply(params, tokens).logits, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- encoder-decoder
def test_encoder_decoder_cache_vmap_and_masking():
    model = nn.encoder_decoder(V, L, positions="rotary", norm="rmsnorm", dtype=torch.float64, **TINY)
    p = _randomise(model.init(jr.key(50)), 51)
    src, tgt = _tokens(52, (2, 6)), _tokens(53, (2, 5))
    full = model.apply(p, src, tgt)
    assert full.shape == (2, 5, V)
    memory = model.encode(p, src)
    cache = model.init_cache(p, (2,))
    steps = []
    for t in range(5):
        lg, cache = model.decode(p, tgt[:, t : t + 1], memory, cache)
        steps.append(lg)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-12, atol=1e-12)
    # decoder is causal; encoder is bidirectional (a later source token changes every output)
    changed_tgt = tgt.clone()
    changed_tgt[:, 3] = (tgt[:, 3] + 1) % V
    torch.testing.assert_close(model.apply(p, src, changed_tgt)[:, :3], full[:, :3], rtol=0, atol=1e-13)
    changed_src = src.clone()
    changed_src[:, -1] = (src[:, -1] + 1) % V
    assert (model.apply(p, changed_src, tgt)[:, 0] - full[:, 0]).abs().min() > 0
    # padding the source (masked) changes nothing at the real tokens
    padded = torch.cat([src, torch.zeros(2, 2, dtype=torch.long)], 1)
    src_mask = torch.cat([torch.ones(2, 6, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool)], 1)
    torch.testing.assert_close(model.apply(p, padded, tgt, src_mask=src_mask), full, rtol=1e-12, atol=1e-12)
    # vmap over seeds
    m32 = nn.encoder_decoder(V, L, **TINY)
    ps = torch.func.vmap(m32.init)(jr.split(jr.key(54), 2))
    out = torch.func.vmap(m32.apply, in_dims=(0, None, None))(ps, src, tgt)
    for s in range(2):
        assert_match(m32.apply(tree.index(ps, s), src, tgt), out[s], exact=False)  # vmap vs loop: reassociation


# ----------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    model = _model()
    p = model.init(jr.key(60))
    with pytest.raises(ValueError, match=r"tokens: expected at most max_len=12 tokens, got a sequence of 13"):
        model.apply(p, _tokens(0, (1, 13)))
    with pytest.raises(TypeError, match=r"tokens: expected dtype one of .*int64.*, got torch.float32"):
        model.apply(p, torch.zeros(1, 4))
    with pytest.raises(TypeError, match="tokens: expected a torch.Tensor, got list"):
        model.apply(p, [1, 2, 3])
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 4\) \(the tokens' shape\), got \(1, 3\)"):
        model.apply(p, _tokens(0, (1, 4)), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected dtype torch.bool, got torch.int64"):
        model.apply(p, _tokens(0, (1, 4)), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="positions: expected dtype"):
        model.apply(p, _tokens(0, (1, 4)), None, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="tokens: expected at most max_len=12"):
        model.decode(p, _tokens(0, (1, 13)), model.init_cache(p, (1,)))
    with pytest.raises(ValueError, match=r"cache: expected k of shape \(2, 3, 2, 12, 8\)"):
        model.decode(p, _tokens(0, (3, 1)), model.init_cache(p, (1,)))
    with pytest.raises(ValueError, match="batch_shape: expected a tuple of positive ints"):
        model.init_cache(p, (0,))
    with pytest.raises(ValueError, match="d_model: expected a multiple of n_heads"):
        nn.transformer(V, L, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="d_model: rotary positions need an even head width"):
        nn.transformer(V, L, d_model=6, n_heads=2, positions="rotary")
    with pytest.raises(ValueError, match="norm: expected one of"):
        nn.transformer(V, L, norm="batchnorm")
    with pytest.raises(ValueError, match="vocab_size: expected a positive int, got 0"):
        nn.transformer(0, L)
    with pytest.raises(TypeError, match="n_encoder_layers: only encoder_decoder"):
        nn.transformer(V, L, n_encoder_layers=2)
    ed = nn.encoder_decoder(V, L, **TINY)
    pe = ed.init(jr.key(61))
    with pytest.raises(ValueError, match=r"src_mask: expected shape \(1, 4\)"):
        ed.apply(pe, _tokens(0, (1, 4)), _tokens(1, (1, 3)), src_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="tgt: expected at most max_len=12"):
        ed.apply(pe, _tokens(0, (1, 4)), _tokens(1, (1, 13)))
    with pytest.raises(ValueError, match="state_dict: expected GPT-2 names"):
        nn.from_gpt2({"foo": torch.zeros(1)}, n_heads=2)
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        nn.from_gpt2([], n_heads=2)
    with pytest.raises(ValueError, match=r"max_len: expected an int in \[1, 12\]"):
        nn.from_gpt2(_tiny_gpt2().state_dict(), n_heads=2, max_len=13)


def test_every_tensor_follows_the_key_and_params_device():
    """On the meta device a tensor made on the CPU behind the caller's back would fail to mix."""
    k = jr.key(0, device="meta")
    tokens = torch.zeros(2, 5, dtype=torch.long, device="meta")
    for positions in ("learned", "rotary"):
        model = nn.transformer(V, L, d_model=8, n_heads=2, n_layers=1, positions=positions)
        p = model.init(k)
        assert {x.device.type for x in tree.leaves(p)} == {"meta"}
        assert model.apply(p, tokens, tokens == 0).device.type == "meta"
        logits, cache = model.decode(p, tokens, model.init_cache(p, (2,)), tokens == 0)
        assert logits.device.type == "meta" and {x.device.type for x in cache.values()} == {"meta"}
        ad = nn.lora.init(k, p, 1, 1, "q_proj", dropout=0.1)
        assert nn.lora.apply(model.apply)(p, ad, tokens, key=k).device.type == "meta"
        assert {m.device.type for m in tree.leaves(nn.pruning.magnitude_masks(p, 0.5))} == {"meta"}
    ed = nn.encoder_decoder(V, L, d_model=8, n_heads=2, n_layers=1)
    assert ed.apply(ed.init(k), tokens, tokens).shape == (2, 5, V)
