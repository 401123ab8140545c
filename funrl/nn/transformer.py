"""Transformers as pure functions over plain dict params (nanoGPT's layout).

Read top to bottom: the configuration, attention, one block, the stack, the
head, then the two models (:func:`transformer`, decoder-only;
:func:`encoder_decoder`) and the GPT-2 converter (:func:`from_gpt2`)::

    model = funrl.nn.transformer(vocab_size=32, max_len=16, d_model=32, n_heads=4, n_layers=2)
    params = model.init(key)                       # a plain nested dict
    logits = model.apply(params, tokens)           # tokens (..., T) int64 -> (..., T, 32)

    cache = model.init_cache(params, batch_shape=(B,))
    logits_t, cache = model.decode(params, tokens[..., t:t + 1], cache)   # one token at a time

Parameter names follow torch / Hugging Face (``q_proj``, ``k_proj``,
``v_proj``, ``o_proj``, ``up_proj``, ``down_proj``; weights ``[out, in]`` like
``torch.nn.Linear``), so a LoRA target pattern reads as it does for a HF model::

    {"embed_tokens": {"weight": (V, D)},
     "embed_positions": {"weight": (max_len, D)},          # learned positions only
     "layers": {"0": {"attn_norm": {"weight", "bias"},
                      "self_attn": {"q_proj", "k_proj", "v_proj", "o_proj"},   # each {"weight", "bias"}
                      "mlp_norm": {...},
                      "mlp": {"up_proj", "down_proj"}}, "1": ...},
     "norm": {...},
     "lm_head": {"weight": (V, D)}}                         # untied head only

Attention is written as an explicit ``matmul`` + masked ``softmax`` rather than
``F.scaled_dot_product_attention``: on the CPU build SDPA has no vmap batching
rule (torch warns and falls back to a per-example loop), and the explicit form
was faster under ``vmap`` over seeds.  Measured (torch 2.13 CPU, one thread,
loaded 2-core machine; 2 layers, width 64, 4 heads, 4 seeds x 8 sequences of
31 tokens), three runs: a vmapped ``grad`` step took 41 / 46 / 49 ms with this
attention vs 63 / 49 / 55 ms with SDPA (a Python loop over seeds: 70-92 ms
either way); a vmapped forward 13 ms vs 18 ms.

Padding: ``mask (..., T)`` (True = a real token, like HF's ``attention_mask``)
keeps real tokens from attending to padding, and positions default to
``cumsum(mask) - 1``, so a left-padded prompt gives the same logits at its real
positions as the unpadded prompt.  A padding position attends to itself only,
so no softmax row is empty (nothing becomes NaN).

There is no dropout inside the model (pure and deterministic); LoRA's dropout
is the only stochastic part and takes a funrl key (:mod:`funrl.nn.lora`).

Bringing a pretrained model: :func:`funrl.nn.from_module` turns any
``torch.nn.Module`` (a HF model included) into ``(params, apply)``;
:func:`from_gpt2` converts a GPT-2-style state dict (``Conv1D`` weights stored
``[in, out]``) into this module's params, so the model runs as a funrl
:class:`Transformer` (with the KV cache and unmerged LoRA).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from funrl import random as jr
from funrl._checks import check_dtype, check_tensor
from funrl.nn import linear

__all__ = [
    "TransformerConfig",
    "Transformer",
    "EncoderDecoder",
    "transformer",
    "encoder_decoder",
    "attention",
    "rotary",
    "from_gpt2",
]

_NORMS = ("layernorm", "rmsnorm")
_POSITIONS = ("learned", "rotary")
_ACTIVATIONS = {
    "gelu": F.gelu,
    # GPT-2's "gelu_new"
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
_TOKEN_DTYPES = (torch.int64, torch.int32)


# ----------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Sizes and choices of a transformer (static: nothing here is a tensor).

    Attributes:
      vocab_size: number of token ids.
      max_len: longest sequence (and the KV cache's length).
      d_model: width ``D``; must divide by ``n_heads`` (and the head width must
        be even for rotary positions).
      n_heads: attention heads ``H``; head width ``D / H``.
      n_layers: decoder blocks.
      n_encoder_layers: encoder blocks (:func:`encoder_decoder` only).
      d_ff: MLP hidden width (default ``4 * d_model``).
      norm: ``"layernorm"`` or ``"rmsnorm"`` (pre-norm blocks either way).
      positions: ``"learned"`` (absolute embeddings, GPT-2) or ``"rotary"``
        (RoPE on queries and keys, the rotate-half convention of GPT-NeoX and
        Llama; not applied in cross-attention).
      activation: ``"gelu"`` (exact) or ``"gelu_tanh"`` (GPT-2's).
      tied: the LM head reuses ``embed_tokens``' weight.
      bias: biases in every projection (and LayerNorm).
      eps: norm epsilon.
      rope_base: RoPE's base frequency.
      init_std: std of the normal initialisation of weights and embeddings
        (GPT-2's 0.02; ``o_proj`` and ``down_proj`` use
        ``init_std / sqrt(2 * n_layers)``, GPT-2's residual scaling).
      dtype: parameter dtype.
    """

    vocab_size: int
    max_len: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    n_encoder_layers: int = 0
    d_ff: int | None = None
    norm: str = "layernorm"
    positions: str = "learned"
    activation: str = "gelu"
    tied: bool = True
    bias: bool = True
    eps: float = 1e-5
    rope_base: float = 10000.0
    init_std: float = 0.02
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "n_heads", "n_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        v = self.n_encoder_layers
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"n_encoder_layers: expected an int >= 0, got {v!r}")
        if self.d_ff is not None and (isinstance(self.d_ff, bool) or not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ValueError(f"d_ff: expected a positive int or None, got {self.d_ff!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads ({self.n_heads}), got {self.d_model}")
        if self.norm not in _NORMS:
            raise ValueError(f"norm: expected one of {_NORMS}, got {self.norm!r}")
        if self.positions not in _POSITIONS:
            raise ValueError(f"positions: expected one of {_POSITIONS}, got {self.positions!r}")
        if self.positions == "rotary" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model: rotary positions need an even head width d_model / n_heads, got {self.d_model // self.n_heads}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {tuple(_ACTIVATIONS)}, got {self.activation!r}")
        for name in ("eps", "rope_base", "init_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name}: expected a number > 0, got {v!r}")
        if self.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"dtype: expected a floating-point torch.dtype, got {self.dtype!r}")

    @property
    def head_dim(self) -> int:
        """Width of one head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        """The MLP's hidden width: ``d_ff``, or ``4 * d_model`` if unset."""
        return self.d_ff if self.d_ff is not None else 4 * self.d_model


# ----------------------------------------------------------------------------- init
def _normal(key, shape, cfg: TransformerConfig, std: float) -> torch.Tensor:
    return jr.normal(key, shape, cfg.dtype) * std


def _init_linear(key, n_in: int, n_out: int, cfg: TransformerConfig, std: float) -> dict:
    p = {"weight": _normal(key, (n_out, n_in), cfg, std)}
    if cfg.bias:
        p["bias"] = key.new_zeros((n_out,), dtype=cfg.dtype)
    return p


def _init_norm(key, cfg: TransformerConfig) -> dict:
    p = {"weight": key.new_ones((cfg.d_model,), dtype=cfg.dtype)}
    if cfg.norm == "layernorm" and cfg.bias:
        p["bias"] = key.new_zeros((cfg.d_model,), dtype=cfg.dtype)
    return p


def _init_attention(key, cfg: TransformerConfig, n_layers: int) -> dict:
    kq, kk, kv, ko = jr.split(key, 4)
    d, std = cfg.d_model, cfg.init_std
    return {
        "q_proj": _init_linear(kq, d, d, cfg, std),
        "k_proj": _init_linear(kk, d, d, cfg, std),
        "v_proj": _init_linear(kv, d, d, cfg, std),
        "o_proj": _init_linear(ko, d, d, cfg, std / math.sqrt(2 * n_layers)),
    }


def _init_block(key, cfg: TransformerConfig, n_layers: int, cross: bool) -> dict:
    ka, kc, ku, kd = jr.split(key, 4)
    p = {"attn_norm": _init_norm(ka, cfg), "self_attn": _init_attention(ka, cfg, n_layers)}
    if cross:
        p["cross_attn_norm"] = _init_norm(kc, cfg)
        p["cross_attn"] = _init_attention(kc, cfg, n_layers)
    p["mlp_norm"] = _init_norm(ku, cfg)
    p["mlp"] = {
        "up_proj": _init_linear(ku, cfg.d_model, cfg.hidden, cfg, cfg.init_std),
        "down_proj": _init_linear(kd, cfg.hidden, cfg.d_model, cfg, cfg.init_std / math.sqrt(2 * n_layers)),
    }
    return p


def _init_stack(key, cfg: TransformerConfig, n_layers: int, cross: bool) -> dict:
    keys = jr.split(key, n_layers + 2)
    p = {}
    if cfg.positions == "learned":
        p["embed_positions"] = {"weight": _normal(keys[-1], (cfg.max_len, cfg.d_model), cfg, cfg.init_std)}
    p["layers"] = {str(i): _init_block(keys[i], cfg, n_layers, cross) for i in range(n_layers)}
    p["norm"] = _init_norm(keys[-2], cfg)
    return p


# ----------------------------------------------------------------------------- attention
def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoPE, Su et al. 2021), rotate-half convention.

    Args:
      x: queries or keys ``(..., H, T, Dh)``, ``Dh`` even.
      positions: integer ``(..., T)`` (broadcast over heads).
      base: base frequency.

    Returns:
      ``(..., H, T, Dh)``: pairs ``(x_i, x_{i + Dh/2})`` rotated by angle
      ``position * base^(-2i/Dh)``; the dot product of a rotated query and key
      depends only on their position difference.
    """
    half = x.shape[-1] // 2
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=work) * 2.0 / x.shape[-1])
    angles = positions[..., None, :, None].to(work) * inv_freq  # (..., 1, T, half)
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(x.dtype)
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(x.dtype)
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention as explicit matmul + masked softmax.

    Args:
      q: ``(..., H, T, Dh)``.
      k, v: ``(..., H, S, Dh)``.
      allowed: bool, broadcastable to ``(..., H, T, S)``; ``True`` where query
        ``t`` may attend to key ``s``.  Every row must allow at least one key.

    Returns:
      ``(..., H, T, Dh)``: ``softmax(q k^T / sqrt(Dh) masked) v``.  Written out
      (not ``F.scaled_dot_product_attention``) so it has a vmap batching rule
      on every build; disallowed scores become the dtype's most negative
      number, whose ``exp`` underflows to exactly 0.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = torch.where(allowed, scores, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``(..., T, D) -> (..., H, T, D/H)``."""
    return x.unflatten(-1, (n_heads, -1)).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., H, T, Dh) -> (..., T, H * Dh)``."""
    return x.transpose(-3, -2).flatten(-2)


def _write(cache: torch.Tensor, new: torch.Tensor, source: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
    """Put ``new (..., H, T, Dh)`` into slots of ``cache (..., H, S, Dh)`` without in-place writes.

    ``source (S,)`` is the row of ``new`` each slot would take and ``written
    (S,)`` says which slots take it; a gather plus ``torch.where`` copies
    values exactly (no arithmetic, so an inf cannot spread) and is pure,
    vmappable and compilable.
    """
    return torch.where(written[:, None], new.index_select(-2, source), cache)


def _self_attention(p: dict, x: torch.Tensor, cfg: TransformerConfig, positions, allowed, kv=None, slots=None):
    """Multi-head self-attention ``(..., T, D) -> (..., T, D)``; with ``kv``, reads and updates a cache."""
    q = _heads(linear(p["q_proj"], x), cfg.n_heads)
    k = _heads(linear(p["k_proj"], x), cfg.n_heads)
    v = _heads(linear(p["v_proj"], x), cfg.n_heads)
    if cfg.positions == "rotary":
        q = rotary(q, positions, cfg.rope_base)
        k = rotary(k, positions, cfg.rope_base)
    if kv is not None:
        source, written = slots
        k = _write(kv[0], k, source, written)
        v = _write(kv[1], v, source, written)
    out = attention(q, k, v, allowed)
    return linear(p["o_proj"], _merge_heads(out)), (k, v)


def _cross_attention(p: dict, x: torch.Tensor, memory: torch.Tensor, cfg: TransformerConfig, allowed) -> torch.Tensor:
    """Queries from ``x (..., T, D)``, keys and values from ``memory (..., S, D)``."""
    q = _heads(linear(p["q_proj"], x), cfg.n_heads)
    k = _heads(linear(p["k_proj"], memory), cfg.n_heads)
    v = _heads(linear(p["v_proj"], memory), cfg.n_heads)
    return linear(p["o_proj"], _merge_heads(attention(q, k, v, allowed)))


# ----------------------------------------------------------------------------- block, stack, head
def _norm(p: dict, x: torch.Tensor, cfg: TransformerConfig) -> torch.Tensor:
    if cfg.norm == "rmsnorm":
        return F.rms_norm(x, (cfg.d_model,), p["weight"], cfg.eps)
    return F.layer_norm(x, (cfg.d_model,), p["weight"], p.get("bias"), cfg.eps)


def _mlp(p: dict, x: torch.Tensor, cfg: TransformerConfig) -> torch.Tensor:
    return linear(p["down_proj"], _ACTIVATIONS[cfg.activation](linear(p["up_proj"], x)))


def _block(p: dict, x, cfg, positions, allowed, kv=None, slots=None, memory=None, memory_allowed=None):
    """One pre-norm block: ``x + attn(norm(x))``, [``+ cross(norm(x), memory)``], ``+ mlp(norm(x))``."""
    a, kv = _self_attention(p["self_attn"], _norm(p["attn_norm"], x, cfg), cfg, positions, allowed, kv, slots)
    x = x + a
    if memory is not None:
        x = x + _cross_attention(p["cross_attn"], _norm(p["cross_attn_norm"], x, cfg), memory, cfg, memory_allowed)
    x = x + _mlp(p["mlp"], _norm(p["mlp_norm"], x, cfg), cfg)
    return x, kv


def _lookup(p: dict, ids: torch.Tensor) -> torch.Tensor:
    """Rows ``ids`` of ``p["weight"] (N, D)``, plus LoRA's ``scale * B[ids] A`` when adapted
    (the rows of the merged ``W + scale * B A``; no dropout on a lookup)."""
    x = F.embedding(ids, p["weight"])
    lo = p.get("lora")
    if lo is not None:
        x = x + (F.embedding(ids, lo["b"]) @ lo["a"]) * lo["scale"]
    return x


def _embed(params: dict, stack: dict, tokens, positions, cfg) -> torch.Tensor:
    x = _lookup(params["embed_tokens"], tokens)
    if cfg.positions == "learned":
        x = x + _lookup(stack["embed_positions"], positions)
    return x


def _stack(params, stack, x, cfg, positions, allowed, cache=None, slots=None, memory=None, memory_allowed=None):
    """Run every block of ``stack`` and its final norm: ``(..., T, D) -> (..., T, D)``, new ``(k, v)``."""
    ks, vs = [], []
    for i in range(len(stack["layers"])):
        kv = None if cache is None else (cache["k"][i], cache["v"][i])
        x, (k, v) = _block(stack["layers"][str(i)], x, cfg, positions, allowed, kv, slots, memory, memory_allowed)
        ks.append(k)
        vs.append(v)
    return _norm(stack["norm"], x, cfg), (ks, vs)


def _head(params: dict, x: torch.Tensor, cfg: TransformerConfig) -> torch.Tensor:
    """``(..., T, D) -> (..., T, V)`` logits."""
    # the tied head is a bias-free linear layer with the embedding's [V, D] weight
    return linear(params["embed_tokens"] if cfg.tied else params["lm_head"], x)


# ----------------------------------------------------------------------------- masks and positions
def _check_tokens(tokens, name: str, cfg: TransformerConfig) -> torch.Tensor:
    check_tensor(tokens, name)
    check_dtype(tokens, _TOKEN_DTYPES, name)
    if tokens.ndim < 1:
        raise ValueError(f"{name}: expected shape (..., T), got a scalar")
    if tokens.shape[-1] > cfg.max_len:
        raise ValueError(f"{name}: expected at most max_len={cfg.max_len} tokens, got a sequence of {tokens.shape[-1]}")
    return tokens


def _check_mask(mask, tokens: torch.Tensor, name: str) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    check_dtype(mask, torch.bool, name)
    if tuple(mask.shape) != tuple(tokens.shape):
        raise ValueError(f"{name}: expected shape {tuple(tokens.shape)} (the tokens' shape), got {tuple(mask.shape)}")
    return mask


def _positions(positions, mask: torch.Tensor, name: str, offset=None) -> torch.Tensor:
    """Explicit ``positions``, or ``offset + cumsum(mask) - 1`` (clamped at 0): each real token's index
    among the real tokens, so left padding does not shift positions."""
    if positions is not None:
        check_dtype(positions, _TOKEN_DTYPES, name)
        if tuple(positions.shape) != tuple(mask.shape):
            raise ValueError(f"{name}: expected shape {tuple(mask.shape)} (the tokens' shape), got {tuple(positions.shape)}")
        return positions
    pos = torch.cumsum(mask.to(torch.int64), -1) - 1
    if offset is not None:
        pos = pos + offset[..., None]
    return torch.clamp(pos, min=0)


def _self_allowed(q_slot, k_slot, key_valid, causal: bool) -> torch.Tensor:
    """``(..., 1, T, S)`` bool: a query may attend to valid keys (at or before it, if causal) and always to itself."""
    same = q_slot[:, None] == k_slot[None, :]
    ok = (k_slot[None, :] <= q_slot[:, None]) if causal else torch.ones_like(same)
    return (ok & key_valid[..., None, None, :]) | same


# ----------------------------------------------------------------------------- decoder-only
class Transformer(NamedTuple):
    """A decoder-only language model: the :class:`funrl.nn.Model` pair plus a KV cache.

    Attributes:
      init: ``init(key) -> params`` (a plain nested dict; see the module doc).
      apply: ``apply(params, tokens, mask=None, positions=None, hidden=False) -> logits``:
        ``tokens (..., T)`` int64/int32, ``mask (..., T)`` bool (True = real
        token), ``positions (..., T)`` int (default ``cumsum(mask) - 1``);
        logits ``(..., T, vocab_size)``, or with ``hidden=True`` the final
        norm's output ``(..., T, d_model)`` (features for a value head).
      init_cache: ``init_cache(params, batch_shape=()) -> cache``, an empty cache
        of ``max_len`` slots: ``{"k", "v": (n_layers, *batch_shape, H, max_len, Dh),
        "valid": bool (*batch_shape, max_len), "count": int64 batch_shape
        (real tokens seen per row), "length": int64 () (slots used)}``.
      decode: ``decode(params, tokens, cache, mask=None, positions=None) ->
        (logits, cache)``: run ``tokens (*batch_shape, T)`` after what the cache
        holds; feeding a sequence in pieces gives the logits of one full
        ``apply``.  Slots past ``max_len`` are dropped (the caller keeps
        ``length <= max_len``).
      config: the :class:`TransformerConfig`.
    """

    init: Callable[[torch.Tensor], dict]
    apply: Callable[..., torch.Tensor]
    init_cache: Callable[..., dict]
    decode: Callable[..., tuple[torch.Tensor, dict]]
    config: TransformerConfig


def _empty_cache(params: dict, cfg: TransformerConfig, n_layers: int, batch_shape) -> dict:
    if isinstance(batch_shape, int):
        batch_shape = (batch_shape,)
    batch_shape = tuple(batch_shape)
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_shape):
        raise ValueError(f"batch_shape: expected a tuple of positive ints, got {batch_shape!r}")
    ref = params["embed_tokens"]["weight"]
    # new_zeros on a param: batched under vmap, on the params' device and dtype
    kv_shape = (n_layers, *batch_shape, cfg.n_heads, cfg.max_len, cfg.head_dim)
    return {
        "k": ref.new_zeros(kv_shape),
        "v": ref.new_zeros(kv_shape),
        "valid": ref.new_zeros((*batch_shape, cfg.max_len), dtype=torch.bool),
        "count": ref.new_zeros(batch_shape, dtype=torch.int64),
        "length": ref.new_zeros((), dtype=torch.int64),
    }


def _check_cache(cache, tokens: torch.Tensor, n_layers: int, cfg: TransformerConfig) -> None:
    if not isinstance(cache, Mapping) or set(cache) != {"k", "v", "valid", "count", "length"}:
        raise TypeError("cache: expected the dict from init_cache (keys k, v, valid, count, length)")
    want = (n_layers, *tokens.shape[:-1], cfg.n_heads, cfg.max_len, cfg.head_dim)
    if tuple(cache["k"].shape) != want:
        raise ValueError(f"cache: expected k of shape {want} for tokens of shape {tuple(tokens.shape)}, got {tuple(cache['k'].shape)}")


def _cached_run(params, stack, tokens, cache, mask, positions, cfg, memory=None, memory_allowed=None):
    """Shared by both models' ``decode``: embed, write the new keys at slots ``length ..``, attend, head."""
    mask = _check_mask(mask, tokens, "mask")
    pos = _positions(positions, mask, "positions", offset=cache["count"])
    t = tokens.shape[-1]
    slot_ids = torch.arange(cfg.max_len, device=tokens.device)
    q_slot = cache["length"] + torch.arange(t, device=tokens.device)  # (T,)
    offset = slot_ids - cache["length"]  # (S,) index into the new tokens of each slot
    written = (offset >= 0) & (offset < t)  # slots past max_len are dropped
    source = torch.clamp(offset, 0, t - 1)
    valid = torch.where(written, mask.index_select(-1, source), cache["valid"])
    allowed = _self_allowed(q_slot, slot_ids, valid, causal=True)
    x = _embed(params, stack, tokens, pos, cfg)
    x, (ks, vs) = _stack(params, stack, x, cfg, pos, allowed, cache, (source, written), memory, memory_allowed)
    new_cache = {
        "k": torch.stack(ks),
        "v": torch.stack(vs),
        "valid": valid,
        "count": cache["count"] + mask.sum(-1),
        "length": cache["length"] + t,
    }
    return _head(params, x, cfg), new_cache


def transformer(vocab_size: int, max_len: int, **kwargs: Any) -> Transformer:
    """A decoder-only causal language model (GPT-2 / nanoGPT shape).

    ``embed_tokens (+ embed_positions)`` -> ``n_layers`` pre-norm blocks
    (causal multi-head self-attention, GELU MLP) -> final norm -> LM head.

    Args:
      vocab_size, max_len: see :class:`TransformerConfig`.
      **kwargs: the other :class:`TransformerConfig` fields (``d_model``,
        ``n_heads``, ``n_layers``, ``d_ff``, ``norm``, ``positions``,
        ``activation``, ``tied``, ``bias``, ``eps``, ``rope_base``,
        ``init_std``, ``dtype``).

    Returns:
      A :class:`Transformer` ``(init, apply, init_cache, decode, config)``.
      ``apply`` maps tokens ``(..., T)`` to logits ``(..., T, vocab_size)``;
      any leading batch dims, and ``vmap`` over params for many seeds.

    Under ``vmap`` over seeds the logits equal a Python loop over seeds only
    to float32 rounding (batched matmuls reduce in another order on some
    CPUs): compare with ``rtol=1e-5, atol=1e-6``.
    """
    if "n_encoder_layers" in kwargs:
        raise TypeError("n_encoder_layers: only encoder_decoder takes encoder layers")
    cfg = TransformerConfig(vocab_size=vocab_size, max_len=max_len, **kwargs)

    def init(key: torch.Tensor) -> dict:
        jr._check_key(key)
        ke, ks, kh = jr.split(key, 3)
        params = {"embed_tokens": {"weight": _normal(ke, (cfg.vocab_size, cfg.d_model), cfg, cfg.init_std)}}
        params.update(_init_stack(ks, cfg, cfg.n_layers, cross=False))
        if not cfg.tied:
            params["lm_head"] = {"weight": _normal(kh, (cfg.vocab_size, cfg.d_model), cfg, cfg.init_std)}
        return params

    def apply(params: dict, tokens: torch.Tensor, mask=None, positions=None, hidden: bool = False) -> torch.Tensor:
        _check_tokens(tokens, "tokens", cfg)
        mask = _check_mask(mask, tokens, "mask")
        pos = _positions(positions, mask, "positions")
        slots = torch.arange(tokens.shape[-1], device=tokens.device)
        allowed = _self_allowed(slots, slots, mask, causal=True)
        x, _ = _stack(params, params, _embed(params, params, tokens, pos, cfg), cfg, pos, allowed)
        # hidden=True: the final-norm features (..., T, D), for a value head on the same trunk
        return x if hidden else _head(params, x, cfg)

    def init_cache(params: dict, batch_shape: Sequence[int] = ()) -> dict:
        return _empty_cache(params, cfg, cfg.n_layers, batch_shape)

    def decode(params: dict, tokens: torch.Tensor, cache: dict, mask=None, positions=None):
        _check_tokens(tokens, "tokens", cfg)
        _check_cache(cache, tokens, cfg.n_layers, cfg)
        return _cached_run(params, params, tokens, cache, mask, positions, cfg)

    apply.supports_lora = True
    decode.supports_lora = True
    return Transformer(init, apply, init_cache, decode, cfg)


# ----------------------------------------------------------------------------- encoder-decoder
class EncoderDecoder(NamedTuple):
    """An encoder-decoder (T5 / BART / ``torch.nn.Transformer`` shape) with a KV cache.

    Attributes:
      init: ``init(key) -> params``: ``{"embed_tokens" (shared), "encoder":
        {["embed_positions"], "layers", "norm"}, "decoder": {...; blocks also
        hold "cross_attn_norm", "cross_attn"}, ["lm_head"]}``.
      apply: ``apply(params, src, tgt, src_mask=None, tgt_mask=None,
        src_positions=None, tgt_positions=None) -> logits (..., T_tgt, V)``.
      encode: ``encode(params, src, src_mask=None, src_positions=None) ->
        memory (..., T_src, D)`` (after the encoder's final norm).
      init_cache: as :class:`Transformer` (the decoder's self-attention only;
        cross-attention reads ``memory`` each step).
      decode: ``decode(params, tgt, memory, cache, src_mask=None,
        tgt_mask=None, tgt_positions=None) -> (logits, cache)``.
      config: the :class:`TransformerConfig` (``n_layers`` decoder blocks,
        ``n_encoder_layers`` encoder blocks).
    """

    init: Callable[[torch.Tensor], dict]
    apply: Callable[..., torch.Tensor]
    encode: Callable[..., torch.Tensor]
    init_cache: Callable[..., dict]
    decode: Callable[..., tuple[torch.Tensor, dict]]
    config: TransformerConfig


def encoder_decoder(vocab_size: int, max_len: int, n_encoder_layers: int | None = None, **kwargs: Any) -> EncoderDecoder:
    """A bidirectional encoder and a causal decoder with cross-attention.

    Args:
      vocab_size, max_len: see :class:`TransformerConfig` (one vocabulary and
        one token embedding for source and target, as BART and T5).
      n_encoder_layers: encoder blocks (default: ``n_layers``).
      **kwargs: the other :class:`TransformerConfig` fields.

    Returns:
      An :class:`EncoderDecoder`.  ``src (..., S)`` and ``tgt (..., T)``
      share leading dims; the encoder sees all real source tokens (``src_mask``),
      the decoder attends causally to the target and to every real source token.
    """
    n_layers = kwargs.get("n_layers", TransformerConfig.n_layers)
    cfg = TransformerConfig(vocab_size=vocab_size, max_len=max_len,
                            n_encoder_layers=n_layers if n_encoder_layers is None else n_encoder_layers, **kwargs)
    if cfg.n_encoder_layers < 1:
        raise ValueError(f"n_encoder_layers: expected a positive int, got {cfg.n_encoder_layers}")

    def init(key: torch.Tensor) -> dict:
        jr._check_key(key)
        ke, kenc, kdec, kh = jr.split(key, 4)
        params = {
            "embed_tokens": {"weight": _normal(ke, (cfg.vocab_size, cfg.d_model), cfg, cfg.init_std)},
            "encoder": _init_stack(kenc, cfg, cfg.n_encoder_layers, cross=False),
            "decoder": _init_stack(kdec, cfg, cfg.n_layers, cross=True),
        }
        if not cfg.tied:
            params["lm_head"] = {"weight": _normal(kh, (cfg.vocab_size, cfg.d_model), cfg, cfg.init_std)}
        return params

    def encode(params: dict, src: torch.Tensor, src_mask=None, src_positions=None) -> torch.Tensor:
        _check_tokens(src, "src", cfg)
        mask = _check_mask(src_mask, src, "src_mask")
        pos = _positions(src_positions, mask, "src_positions")
        slots = torch.arange(src.shape[-1], device=src.device)
        allowed = _self_allowed(slots, slots, mask, causal=False)
        enc = params["encoder"]
        x, _ = _stack(params, enc, _embed(params, enc, src, pos, cfg), cfg, pos, allowed)
        return x

    def _memory_allowed(memory: torch.Tensor, src_mask) -> torch.Tensor:
        check_tensor(memory, "memory")
        if memory.ndim < 2 or memory.shape[-1] != cfg.d_model:
            raise ValueError(f"memory: expected shape (..., S, {cfg.d_model}), got {tuple(memory.shape)}")
        if src_mask is None:
            return memory.new_ones(memory.shape[:-1], dtype=torch.bool)[..., None, None, :]
        check_dtype(src_mask, torch.bool, "src_mask")
        if tuple(src_mask.shape) != tuple(memory.shape[:-1]):
            raise ValueError(f"src_mask: expected shape {tuple(memory.shape[:-1])} (memory's), got {tuple(src_mask.shape)}")
        return src_mask[..., None, None, :]

    def apply(params: dict, src: torch.Tensor, tgt: torch.Tensor, src_mask=None, tgt_mask=None,
              src_positions=None, tgt_positions=None) -> torch.Tensor:
        memory = encode(params, src, src_mask, src_positions)
        _check_tokens(tgt, "tgt", cfg)
        mask = _check_mask(tgt_mask, tgt, "tgt_mask")
        pos = _positions(tgt_positions, mask, "tgt_positions")
        slots = torch.arange(tgt.shape[-1], device=tgt.device)
        allowed = _self_allowed(slots, slots, mask, causal=True)
        dec = params["decoder"]
        x, _ = _stack(params, dec, _embed(params, dec, tgt, pos, cfg), cfg, pos, allowed,
                      memory=memory, memory_allowed=_memory_allowed(memory, src_mask))
        return _head(params, x, cfg)

    def init_cache(params: dict, batch_shape: Sequence[int] = ()) -> dict:
        return _empty_cache(params, cfg, cfg.n_layers, batch_shape)

    def decode(params: dict, tgt: torch.Tensor, memory: torch.Tensor, cache: dict, src_mask=None,
               tgt_mask=None, tgt_positions=None):
        _check_tokens(tgt, "tgt", cfg)
        _check_cache(cache, tgt, cfg.n_layers, cfg)
        return _cached_run(params, params["decoder"], tgt, cache, tgt_mask, tgt_positions, cfg,
                           memory=memory, memory_allowed=_memory_allowed(memory, src_mask))

    apply.supports_lora = True
    encode.supports_lora = True
    decode.supports_lora = True
    return EncoderDecoder(init, apply, encode, init_cache, decode, cfg)


# ----------------------------------------------------------------------------- GPT-2 checkpoints
def from_gpt2(state_dict: Mapping[str, torch.Tensor], n_heads: int, eps: float = 1e-5,
              max_len: int | None = None) -> tuple[dict, Transformer]:
    """Convert a GPT-2-style state dict into funrl params and the matching model.

    Works for Hugging Face's ``GPT2LMHeadModel`` / ``GPT2Model`` state dicts
    (``transformer.`` prefix optional) and nanoGPT checkpoints with the same
    names.  GPT-2's ``Conv1D`` layers store weights ``[in, out]``; they are
    transposed to ``[out, in]`` and the fused ``c_attn`` is split into
    ``q_proj``, ``k_proj``, ``v_proj``.  The head is tied to the token
    embedding (GPT-2's); buffers such as ``attn.bias`` are ignored.

    Args:
      state_dict: ``name -> tensor``; never modified (the params are copies).
      n_heads: attention heads (``config.n_head``; not recoverable from shapes).
      eps: LayerNorm epsilon (``config.layer_norm_epsilon``).
      max_len: sequence limit (default: the number of learned positions).

    Returns:
      ``(params, model)``: ``model = transformer(..., activation="gelu_tanh",
      norm="layernorm", positions="learned", tied=True)`` sized from the
      weights, in their dtype; ``model.apply(params, input_ids)`` gives the
      HF model's logits.

    Pretrained weights: ``GPT2LMHeadModel.from_pretrained("gpt2").state_dict()``
    converted here runs as a funrl model; any other ``torch.nn.Module`` goes
    through :func:`funrl.nn.from_module` instead.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping name -> tensor, got {type(state_dict).__name__}")
    sd = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in state_dict.items()}
    for need in ("wte.weight", "wpe.weight", "ln_f.weight"):
        if need not in sd:
            raise ValueError(f"state_dict: expected GPT-2 names such as {need!r}; got keys like {sorted(sd)[:5]}")
    wte, wpe = sd["wte.weight"], sd["wpe.weight"]
    vocab, d = wte.shape
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
    d_ff = sd["h.0.mlp.c_fc.weight"].shape[1]
    n_pos = wpe.shape[0]
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or not 1 <= max_len <= n_pos):
        raise ValueError(f"max_len: expected an int in [1, {n_pos}] (the checkpoint's learned positions), got {max_len!r}")
    model = transformer(vocab, n_pos if max_len is None else max_len, d_model=d, n_heads=n_heads, n_layers=n_layers,
                        d_ff=d_ff, activation="gelu_tanh", norm="layernorm", positions="learned", tied=True,
                        bias=True, eps=eps, dtype=wte.dtype)

    def lin(prefix: str) -> dict:  # Conv1D [in, out] -> Linear [out, in]
        return {"weight": sd[prefix + ".weight"].detach().t().clone(), "bias": sd[prefix + ".bias"].detach().clone()}

    def norm(prefix: str) -> dict:
        return {"weight": sd[prefix + ".weight"].detach().clone(), "bias": sd[prefix + ".bias"].detach().clone()}

    layers = {}
    for i in range(n_layers):
        h = f"h.{i}"
        qkv = lin(f"{h}.attn.c_attn")
        w = qkv["weight"].split(d, 0)
        b = qkv["bias"].split(d, 0)
        layers[str(i)] = {
            "attn_norm": norm(f"{h}.ln_1"),
            "self_attn": {
                "q_proj": {"weight": w[0].contiguous(), "bias": b[0].contiguous()},
                "k_proj": {"weight": w[1].contiguous(), "bias": b[1].contiguous()},
                "v_proj": {"weight": w[2].contiguous(), "bias": b[2].contiguous()},
                "o_proj": lin(f"{h}.attn.c_proj"),
            },
            "mlp_norm": norm(f"{h}.ln_2"),
            "mlp": {"up_proj": lin(f"{h}.mlp.c_fc"), "down_proj": lin(f"{h}.mlp.c_proj")},
        }
    params = {
        "embed_tokens": {"weight": wte.detach().clone()},
        "embed_positions": {"weight": wpe.detach().clone()[: model.config.max_len]},
        "layers": layers,
        "norm": norm("ln_f"),
    }
    return params, model
