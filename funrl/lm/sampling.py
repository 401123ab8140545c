"""Sampling completions from a language model and scoring them, as pure functions.

::

    out = funrl.lm.sample(key, model, params, prompts, prompt_mask, max_new_tokens=9,
                          temperature=1.0, eos_id=0, pad_id=21)
    out.tokens, out.logp, out.mask            # each [..., L]
    logp = funrl.lm.score(model.apply, params, prompts, prompt_mask, out.tokens, out.mask,
                          temperature=1.0)    # the same log-probs from one full forward pass

Why both: RL fine-tuning samples with the KV cache (one token at a time) and
then scores the samples in one forward pass with gradients.  The importance
ratio ``exp(logp_new - logp_old)`` must be exactly 1 before the first step, so
the algorithms take ``logp_old`` from :func:`score` (same function, same
params, same kernels) rather than from the sampling pass, whose cached
attention sums in another order (equal up to float reassociation; tested).

Both use the *same* temperature: the samples come from ``softmax(logits / T)``
and :func:`score` returns log-probs under that distribution.  Scoring under
another temperature, or sampling with top-k / top-p truncation, means the
samples are not from the policy being scored -- a known source of negative KL
estimates in RLHF libraries -- so funrl offers neither.

Shapes: prompts ``[..., P]`` are *left*-padded (``prompt_mask`` False on the
left), as for Hugging Face generation: the last prompt position must be a real
token, because the first completion token is drawn from its logits.  Positions
come from the mask (:func:`funrl.nn.transformer`), so padding changes nothing.
A completion has ``L = max_new_tokens`` slots; ``mask`` is True up to and
including the first ``eos_id`` and False after it, where ``tokens`` holds
``pad_id`` and ``logp`` holds 0.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from funrl import random as jr
from funrl._checks import check_dtype, check_float, check_tensor
from funrl.losses.sequence import sequence_log_probs

__all__ = ["Completions", "sample", "completion_logits", "score", "group"]

_TOKEN_DTYPES = (torch.int64, torch.int32)


class Completions(NamedTuple):
    """Sampled completions (leaves ``[..., L]``).

    Attributes:
      tokens: int64 token ids; ``pad_id`` after the first ``eos_id``.
      logp: float log-probability of each token under the sampling distribution
        ``softmax(logits / temperature)``; 0 where ``mask`` is False.
      mask: bool, True for real completion tokens (up to and including the first EOS).
    """

    tokens: torch.Tensor
    logp: torch.Tensor
    mask: torch.Tensor


def _check_prompts(prompts, prompt_mask):
    check_tensor(prompts, "prompts")
    check_dtype(prompts, _TOKEN_DTYPES, "prompts")
    if prompts.ndim < 1 or prompts.shape[-1] < 1:
        raise ValueError(f"prompts: expected shape (..., P) with P >= 1, got {tuple(prompts.shape)}")
    if prompt_mask is None:
        return torch.ones_like(prompts, dtype=torch.bool)
    check_dtype(prompt_mask, torch.bool, "prompt_mask")
    if tuple(prompt_mask.shape) != tuple(prompts.shape):
        raise ValueError(f"prompt_mask: expected shape {tuple(prompts.shape)} (the prompts' shape), got {tuple(prompt_mask.shape)}")
    return prompt_mask


def _check_temperature(temperature):
    if isinstance(temperature, torch.Tensor):
        check_float(temperature, "temperature")
        if temperature.ndim != 0:
            raise ValueError(f"temperature: expected a scalar (a number or a tensor of shape ()), got shape {tuple(temperature.shape)}")
        return temperature  # a per-seed value under vmap: not checked by value
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    return temperature


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return value


def sample(
    key: torch.Tensor,
    model,
    params,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    max_new_tokens: int = 16,
    temperature: float | torch.Tensor = 1.0,
    eos_id: int | None = None,
    pad_id: int = 0,
    greedy: bool = False,
    use_cache: bool = True,
) -> Completions:
    """Draw ``max_new_tokens`` tokens after each prompt (fixed length, tokens after EOS masked).

    Pure: the draws come from ``key`` only (token ``t`` uses ``fold_in(key, t)``),
    so the same key gives the same completions, and the function works under
    ``torch.func.vmap`` (over keys, params and prompts) and ``torch.compile``
    (the loop over ``max_new_tokens`` unrolls).

    Args:
      key: a funrl key ``(2,)``.
      model: a :class:`funrl.nn.Transformer` (or anything with its ``apply``,
        ``init_cache`` and ``decode``), or a plain ``apply(params, tokens,
        mask) -> logits`` (then ``use_cache`` must be False).
      params: the model's params.
      prompts: int64 ``[..., P]``, left-padded.
      prompt_mask: bool ``[..., P]`` (True = real token); default all True.
      max_new_tokens: ``L``, the completion length (``P + L - 1`` must fit the
        model's ``max_len`` with the cache).
      temperature: > 0; tokens are drawn from ``softmax(logits / temperature)``
        and ``logp`` is under that distribution.
      eos_id: the token that ends a completion (None: completions never end early).
      pad_id: written after EOS.
      greedy: take the most probable token instead of sampling (``logp`` is still
        its log-probability under the tempered distribution).
      use_cache: decode with the model's KV cache (one token per step) instead
        of re-running the whole sequence each step (same numbers up to float
        reassociation; the cache is faster beyond a few tokens).

    Returns:
      :class:`Completions` with leaves ``[..., L]``.
    """
    jr._check_key(key)
    prompt_mask = _check_prompts(prompts, prompt_mask)
    L = _check_count(max_new_tokens, "max_new_tokens")
    _check_temperature(temperature)
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, int) or eos_id < 0):
        raise ValueError(f"eos_id: expected None or a token id >= 0, got {eos_id!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id: expected a token id >= 0, got {pad_id!r}")
    apply = model if callable(model) and not hasattr(model, "decode") else model.apply
    if use_cache:
        if not hasattr(model, "decode"):
            raise ValueError("use_cache: needs a model with init_cache and decode (a funrl.nn.Transformer); "
                             "pass use_cache=False for a plain apply function")
        max_len = model.config.max_len
        if prompts.shape[-1] + L - 1 > max_len:
            raise ValueError(f"max_new_tokens: prompts of {prompts.shape[-1]} tokens plus {L} new tokens need "
                             f"{prompts.shape[-1] + L - 1} cache slots, the model's max_len is {max_len}")
        return _sample_cached(key, model, params, prompts, prompt_mask, L, temperature, eos_id, pad_id, greedy)
    return _sample_full(key, apply, params, prompts, prompt_mask, L, temperature, eos_id, pad_id, greedy)


def _draw(key, logits, t, temperature, greedy):
    """Token ``t`` and its log-prob from next-token logits ``[..., V]``."""
    scaled = logits / temperature
    logp_all = torch.log_softmax(scaled, dim=-1)
    if greedy:
        token = torch.argmax(scaled, dim=-1)
    else:
        token = jr.categorical(jr.fold_in(key, t), scaled)
    return token, torch.gather(logp_all, -1, token[..., None])[..., 0]


def _record(token, logp, alive, eos_id, pad_id):
    """Mask what comes after EOS; returns the stored token, log-prob, mask and the next ``alive``."""
    mask = alive
    token = torch.where(mask, token, torch.full_like(token, pad_id))
    logp = torch.where(mask, logp, torch.zeros_like(logp))
    if eos_id is not None:
        alive = alive & (token != eos_id)
    return token, logp, mask, alive


def _sample_cached(key, model, params, prompts, prompt_mask, L, temperature, eos_id, pad_id, greedy):
    cache = model.init_cache(params, batch_shape=tuple(prompts.shape[:-1]))
    logits, cache = model.decode(params, prompts, cache, mask=prompt_mask)
    last = logits[..., -1, :]
    alive = torch.ones_like(prompts[..., 0], dtype=torch.bool)
    tokens, logps, masks = [], [], []
    for t in range(L):
        token, logp = _draw(key, last, t, temperature, greedy)
        token, logp, mask, alive = _record(token, logp, alive, eos_id, pad_id)
        tokens.append(token), logps.append(logp), masks.append(mask)
        if t < L - 1:
            # after EOS the model still runs (fixed shapes) on a masked token that nothing reads
            logits, cache = model.decode(params, token[..., None], cache, mask=mask[..., None])
            last = logits[..., -1, :]
    return Completions(torch.stack(tokens, -1), torch.stack(logps, -1), torch.stack(masks, -1))


def _sample_full(key, apply, params, prompts, prompt_mask, L, temperature, eos_id, pad_id, greedy):
    seq, seq_mask = prompts, prompt_mask
    alive = torch.ones_like(prompts[..., 0], dtype=torch.bool)
    tokens, logps, masks = [], [], []
    for t in range(L):
        last = apply(params, seq, seq_mask)[..., -1, :]
        token, logp = _draw(key, last, t, temperature, greedy)
        token, logp, mask, alive = _record(token, logp, alive, eos_id, pad_id)
        tokens.append(token), logps.append(logp), masks.append(mask)
        seq = torch.cat([seq, token[..., None]], -1)
        seq_mask = torch.cat([seq_mask, mask[..., None]], -1)
    return Completions(torch.stack(tokens, -1), torch.stack(logps, -1), torch.stack(masks, -1))


def completion_logits(
    apply: Callable,
    params,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completions: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """The logits that predict each completion token, from one forward pass over prompt + completion.

    Args:
      apply: ``apply(params, tokens, mask) -> logits`` (e.g. ``model.apply``).
      prompts, prompt_mask: ``[..., P]`` (left-padded).
      completions, completion_mask: ``[..., L]``.

    Returns:
      float ``[..., L, V]``: row ``t`` is the model's output at the position
      before completion token ``t`` (the last prompt token for ``t = 0``).
      Rows where ``completion_mask`` is False hold values nothing should read.
    """
    prompt_mask = _check_prompts(prompts, prompt_mask)
    check_dtype(completions, _TOKEN_DTYPES, "completions")
    check_dtype(completion_mask, torch.bool, "completion_mask")
    if tuple(completion_mask.shape) != tuple(completions.shape):
        raise ValueError(f"completion_mask: expected shape {tuple(completions.shape)} (the completions' shape), "
                         f"got {tuple(completion_mask.shape)}")
    if tuple(completions.shape[:-1]) != tuple(prompts.shape[:-1]):
        raise ValueError(f"completions: expected batch shape {tuple(prompts.shape[:-1])} (the prompts'), "
                         f"got shape {tuple(completions.shape)}")
    P, L = prompts.shape[-1], completions.shape[-1]
    tokens = torch.cat([prompts, completions], -1)
    mask = torch.cat([prompt_mask, completion_mask], -1)
    logits = apply(params, tokens, mask)
    return logits[..., P - 1 : P + L - 1, :]


def score(
    apply: Callable,
    params,
    prompts: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completions: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Log-probabilities of the completion tokens under ``softmax(logits / temperature)``.

    Returns:
      float ``[..., L]``, 0 where ``completion_mask`` is False (differentiable in ``params``).
    """
    _check_temperature(temperature)
    logits = completion_logits(apply, params, prompts, prompt_mask, completions, completion_mask)
    return sequence_log_probs(logits / temperature, completions, completion_mask)


def group(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Rows of completions grouped by prompt: ``[N, ...] -> [N / G, G, ...]``.

    Completions of one prompt are consecutive rows (``prompts.repeat_interleave(G, 0)``),
    as GRPO and RLOO sample them; their advantages compare the rows of a group.

    Raises:
      ValueError: ``group_size`` is not an int >= 2 or does not divide ``N``.
    """
    check_tensor(x, "x")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size: expected an int >= 2 (completions per prompt), got {group_size!r}")
    if x.ndim < 1 or x.shape[0] % group_size:
        raise ValueError(f"group_size: expected a divisor of the number of completions "
                         f"{x.shape[0] if x.ndim else 'of a scalar'}, got {group_size}")
    return x.reshape(x.shape[0] // group_size, group_size, *x.shape[1:])
