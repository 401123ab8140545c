"""funrl.lm: pure sampling with the KV cache, scoring, and their contracts (purity, vmap, padding, temperature)."""

import math

import pytest
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.lm import sample, score
from funrl.lm.sampling import completion_logits
from helpers import assert_match

V, EOS, PAD = 7, 2, 6


@pytest.fixture(scope="module")
def model():
    return funrl.nn.transformer(vocab_size=V, max_len=12, d_model=16, n_heads=2, n_layers=2)


@pytest.fixture(scope="module")
def params(model):
    # larger init so that the distribution is far from uniform and EOS comes early in some rows
    return tree.map(lambda x: x * 8.0, model.init(jr.key(0)))


PROMPTS = torch.tensor([[PAD, PAD, 3, 4], [1, 5, 3, 4], [PAD, 1, 1, 0]])
PROMPT_MASK = PROMPTS != PAD


def test_shapes_mask_and_padding_after_eos(model, params):
    out = sample(jr.key(1), model, params, PROMPTS, PROMPT_MASK, max_new_tokens=8, eos_id=EOS, pad_id=PAD)
    assert out.tokens.shape == out.logp.shape == out.mask.shape == (3, 8)
    assert out.tokens.dtype == torch.int64 and out.mask.dtype == torch.bool
    for row_tokens, row_mask, row_logp in zip(out.tokens.tolist(), out.mask.tolist(), out.logp.tolist()):
        # the mask is True up to and including the first EOS, False after it
        first_eos = row_tokens.index(EOS) if EOS in row_tokens else None
        expected = [first_eos is None or t <= first_eos for t in range(8)]
        assert row_mask == expected
        for t in range(8):
            if not row_mask[t]:
                assert row_tokens[t] == PAD and row_logp[t] == 0.0
            else:
                assert row_logp[t] <= 0.0
    assert (~out.mask).any(), "fixture must end some completion early to test the mask"


def test_same_key_same_completions_other_key_other(model, params):
    a = sample(jr.key(3), model, params, PROMPTS, PROMPT_MASK, 8, eos_id=EOS, pad_id=PAD)
    b = sample(jr.key(3), model, params, PROMPTS, PROMPT_MASK, 8, eos_id=EOS, pad_id=PAD)
    c = sample(jr.key(4), model, params, PROMPTS, PROMPT_MASK, 8, eos_id=EOS, pad_id=PAD)
    assert_match(a, b)
    assert not torch.equal(a.tokens, c.tokens)


def test_cache_equals_full_recompute_and_score(model, params):
    """The cached sampler draws the same tokens as re-running the whole sequence, and
    its log-probs equal one scoring pass over prompt + completion (up to reassociation)."""
    for temperature in (1.0, 0.5):
        a = sample(jr.key(5), model, params, PROMPTS, PROMPT_MASK, 8, temperature, eos_id=EOS, pad_id=PAD)
        b = sample(jr.key(5), model, params, PROMPTS, PROMPT_MASK, 8, temperature, eos_id=EOS, pad_id=PAD,
                   use_cache=False)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.mask, b.mask)
        assert_match(a.logp, b.logp, exact=False)
        s = score(model.apply, params, PROMPTS, PROMPT_MASK, a.tokens, a.mask, temperature)
        assert_match(s, a.logp, exact=False)


def test_log_probs_are_under_the_tempered_distribution(model, params):
    """logp = log softmax(logits / T)[token], computed here by hand from one forward pass."""
    T = 0.7
    out = sample(jr.key(6), model, params, PROMPTS, PROMPT_MASK, 5, T, eos_id=EOS, pad_id=PAD)
    logits = completion_logits(model.apply, params, PROMPTS, PROMPT_MASK, out.tokens, out.mask).double()
    for b in range(3):
        for t in range(5):
            if out.mask[b, t]:
                row = logits[b, t] / T
                expected = row[out.tokens[b, t]] - math.log(row.exp().sum().item())
                assert abs(out.logp[b, t].item() - expected) < 1e-5
    # the wrong temperature gives other numbers: scoring must use the sampling temperature
    wrong = score(model.apply, params, PROMPTS, PROMPT_MASK, out.tokens, out.mask, 1.0)
    assert (wrong - out.logp).abs().max() > 1e-2


def test_temperature_changes_the_distribution_as_expected(model, params):
    """Low temperature: draws concentrate on the argmax; greedy takes it."""
    g = sample(jr.key(7), model, params, PROMPTS, PROMPT_MASK, 4, eos_id=None, pad_id=PAD, greedy=True)
    cold = sample(jr.key(8), model, params, PROMPTS, PROMPT_MASK, 4, 1e-3, eos_id=None, pad_id=PAD)
    assert torch.equal(g.tokens, cold.tokens)
    assert g.mask.all()


def test_empirical_frequencies_match_the_model(model, params):
    """First-token frequencies over 4000 keys match softmax(logits / T) (binomial 5-sigma bounds)."""
    T = 2.0
    prompt, pmask = PROMPTS[1:2], PROMPT_MASK[1:2]
    keys = jr.split(jr.key(9), 4000)
    draws = torch.func.vmap(lambda k: sample(k, model, params, prompt, pmask, 1, T, pad_id=PAD).tokens[0, 0])(keys)
    probs = torch.softmax(model.apply(params, prompt, pmask)[0, -1].double() / T, -1)
    freq = torch.bincount(draws, minlength=V).double() / 4000
    sigma = (probs * (1 - probs) / 4000).sqrt()
    assert ((freq - probs).abs() <= 5 * sigma + 1e-3).all(), (freq, probs)


def test_vmap_over_seeds_and_params_equals_loop(model):
    keys = jr.split(jr.key(10), 3)
    ps = torch.func.vmap(model.init)(keys)

    def one(k, p):
        return sample(k, model, p, PROMPTS, PROMPT_MASK, 6, eos_id=EOS, pad_id=PAD)

    batched = torch.func.vmap(one)(keys, ps)
    for i in range(3):
        alone = one(keys[i], tree.map(lambda x: x[i], ps))
        assert torch.equal(batched.tokens[i], alone.tokens)
        assert_match(batched.logp[i], alone.logp, exact=False)


def test_left_padding_changes_nothing(model, params):
    """A prompt with extra left padding scores its completion as the unpadded prompt does."""
    short, short_mask = PROMPTS[1:2], PROMPT_MASK[1:2]
    padded = torch.cat([torch.full((1, 3), PAD), short], 1)
    padded_mask = torch.cat([torch.zeros(1, 3, dtype=torch.bool), short_mask], 1)
    out = sample(jr.key(11), model, params, short, short_mask, 5, eos_id=EOS, pad_id=PAD)
    out_padded = sample(jr.key(11), model, params, padded, padded_mask, 5, eos_id=EOS, pad_id=PAD)
    assert torch.equal(out.tokens, out_padded.tokens)
    a = score(model.apply, params, short, short_mask, out.tokens, out.mask)
    b = score(model.apply, params, padded, padded_mask, out.tokens, out.mask)
    assert_match(a, b, exact=False)


def test_tokens_after_eos_never_reach_the_score(model, params):
    """Garbage after EOS (any token ids, masked) leaves the real positions' log-probs bit for bit unchanged."""
    out = sample(jr.key(12), model, params, PROMPTS, PROMPT_MASK, 8, eos_id=EOS, pad_id=PAD)
    garbage = torch.where(out.mask, out.tokens, torch.randint(0, V, out.tokens.shape, generator=torch.Generator().manual_seed(0)))
    a = score(model.apply, params, PROMPTS, PROMPT_MASK, out.tokens, out.mask)
    b = score(model.apply, params, PROMPTS, PROMPT_MASK, garbage, out.mask)
    assert torch.equal(a, b)


def test_compiles(model, params):
    f = torch.compile(lambda k, p: sample(k, model, p, PROMPTS, PROMPT_MASK, 3, eos_id=EOS, pad_id=PAD),
                      backend="aot_eager", fullgraph=True)
    a = f(jr.key(13), params)
    b = sample(jr.key(13), model, params, PROMPTS, PROMPT_MASK, 3, eos_id=EOS, pad_id=PAD)
    assert torch.equal(a.tokens, b.tokens)
    assert_match(a.logp, b.logp, exact=False)


def test_lora_model_samples_like_the_base_until_trained(model, params):
    lm = funrl.nn.lora.with_adapters(model, rank=2, alpha=4.0, targets=r"q_proj\.weight$")
    full = lm.init(jr.key(14))
    full = {"base": params, "adapters": full["adapters"]}
    a = sample(jr.key(15), lm, full, PROMPTS, PROMPT_MASK, 6, eos_id=EOS, pad_id=PAD)
    b = sample(jr.key(15), model, params, PROMPTS, PROMPT_MASK, 6, eos_id=EOS, pad_id=PAD)
    assert_match(a, b)  # b = 0: the adapters add exact zeros
    moved = tree.map(lambda x: x + 0.5, full["adapters"])
    c = score(lm.apply, {"base": params, "adapters": moved}, PROMPTS, PROMPT_MASK, a.tokens, a.mask)
    assert (c - a.logp).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt_mask=torch.ones(3, 5, dtype=torch.bool)), "prompt_mask"),
        (dict(prompt_mask=torch.ones(3, 4)), "prompt_mask"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=10), "max_new_tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(eos_id=-1), "eos_id"),
        (dict(pad_id=1.5), "pad_id"),
        (dict(prompts=PROMPTS.float()), "prompts"),
    ],
)
def test_bad_input_names_the_argument(model, params, kwargs, match):
    args = dict(prompts=PROMPTS, prompt_mask=PROMPT_MASK, max_new_tokens=4)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        sample(jr.key(0), model, params, **args)


def test_score_bad_input_names_the_argument(model, params):
    tokens = torch.zeros(3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match="completion_mask"):
        score(model.apply, params, PROMPTS, PROMPT_MASK, tokens, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="completions"):
        score(model.apply, params, PROMPTS, PROMPT_MASK, tokens[:2], torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="use_cache"):
        sample(jr.key(0), model.apply, params, PROMPTS, PROMPT_MASK, 2)


def test_group_rows_by_prompt():
    from funrl.lm import group

    x = torch.arange(12).reshape(6, 2)
    g = group(x, 3)
    assert g.shape == (2, 3, 2) and torch.equal(g[1, 0], x[3])
    with pytest.raises(ValueError, match="group_size"):
        group(x, 4)  # 4 does not divide 6
    with pytest.raises(ValueError, match="group_size"):
        group(x, 1)
