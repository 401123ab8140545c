"""Stateless, splittable pseudo-random keys (JAX-style) in plain torch integer ops.

A *key* is an ``int64`` tensor of shape ``(2,)`` holding two unsigned 32-bit
words.  Every sampler is a pure function of a key: the same key gives the same
numbers on every call, under ``torch.func.vmap`` (``vmap(f)(keys)[i] ==
f(keys[i])`` bit for bit) and under ``torch.compile``.  Nothing here touches
torch's global generator.

The generator is Threefry-2x32 with 20 rounds (Salmon et al., "Parallel random
numbers: as easy as 1, 2, 3", SC 2011), the cipher JAX uses, emulated on
``int64`` lanes masked to 32 bits because torch's ``uint32`` lacks add and
shifts on CPU.  ``threefry_2x32`` reproduces the Random123 known-answer
vectors.  Keys derive as in JAX (``key(seed)`` = ``[seed >> 32, seed & mask]``)
but the sample streams are funrl's own.

Compile time: a 20-round cipher is a long chain of integer ops, which Inductor's
default fusion turns into huge kernels that take tens of seconds to generate.
:func:`funrl.jit` compiles with ``realize_opcount_threshold=4`` which cuts that
by ~5x with equal or better run time (see ``shared/torch-func-notes.md``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from funrl._checks import check_float, check_int

__all__ = [
    "key",
    "is_key",
    "split",
    "fold_in",
    "bits",
    "threefry_2x32",
    "uniform",
    "normal",
    "truncated_normal",
    "randint",
    "bernoulli",
    "categorical",
    "gumbel",
    "exponential",
    "permutation",
    "choice",
]

_MASK32 = 0xFFFFFFFF
_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)
_KS_PARITY = 0x1BD11BDA


# --------------------------------------------------------------------------- keys
def key(seed: int | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Make a key from an integer seed.

    Args:
      seed: a Python int in ``[-2**63, 2**63)`` or an integer tensor of shape ``()``.
      device: where the key lives; samples drawn from it live there too.

    Returns:
      ``int64`` tensor of shape ``(2,)``: ``[seed >> 32, seed & 0xFFFFFFFF]``
      (unsigned words, as ``jax.random.PRNGKey``).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, torch.Tensor)):
        raise TypeError(f"seed: expected an int or an integer tensor, got {type(seed).__name__}")
    if isinstance(seed, int):
        if not -(2**63) <= seed < 2**63:
            raise ValueError(f"seed: expected an int in [-2**63, 2**63), got {seed}")
        seed = torch.tensor(seed, dtype=torch.int64, device=device)
    else:
        check_int(seed, "seed")
        if seed.ndim != 0:
            raise ValueError(f"seed: expected shape (), got {tuple(seed.shape)}")
        seed = seed.to(dtype=torch.int64, device=device)
    hi = (seed >> 32) & _MASK32
    lo = seed & _MASK32
    return torch.stack([hi, lo])


def is_key(x) -> bool:
    """True if ``x`` looks like a key: an ``int64`` tensor whose last axis has size 2."""
    return isinstance(x, torch.Tensor) and x.dtype == torch.int64 and x.ndim >= 1 and x.shape[-1] == 2


def _check_key(k, name: str = "key") -> torch.Tensor:
    if not isinstance(k, torch.Tensor):
        raise TypeError(
            f"{name}: expected a funrl key (int64 tensor of shape (2,)), got {type(k).__name__}"
        )
    if k.dtype != torch.int64:
        raise TypeError(
            f"{name}: expected a funrl key (int64 tensor of shape (2,)), got dtype {k.dtype}; "
            "make keys with funrl.random.key(seed)"
        )
    if tuple(k.shape) != (2,):
        raise ValueError(
            f"{name}: expected a single key of shape (2,), got shape {tuple(k.shape)}; "
            "to use many keys, torch.func.vmap over them"
        )
    return k


def _shape(shape, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"{name}: expected a tuple of non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


# ------------------------------------------------------------------------ cipher
def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    # x holds a value in [0, 2**32); the high bits of the left shift are
    # discarded by the mask the caller applies after the xor.
    return (x << r) | (x >> (32 - r))


def threefry_2x32(key: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Threefry-2x32, 20 rounds: encrypt counter pairs ``(x0, x1)`` under ``key``.

    Args:
      key: int64 ``(2,)`` key words, each in ``[0, 2**32)``.
      x0, x1: int64 tensors of the same shape, words in ``[0, 2**32)``.

    Returns:
      Two int64 tensors of that shape, words in ``[0, 2**32)``.
    """
    k0, k1 = key[0], key[1]
    k2 = k0 ^ k1 ^ _KS_PARITY
    ks = (k0, k1, k2)
    x0 = (x0 + k0) & _MASK32
    x1 = (x1 + k1) & _MASK32
    for block in range(5):
        rots = _ROTATIONS[:4] if block % 2 == 0 else _ROTATIONS[4:]
        for r in rots:
            x0 = (x0 + x1) & _MASK32
            x1 = (_rotl(x1, r) ^ x0) & _MASK32
        # key injection after every 4 rounds
        x0 = (x0 + ks[(block + 1) % 3]) & _MASK32
        x1 = (x1 + ks[(block + 2) % 3] + (block + 1)) & _MASK32
    return x0, x1


def _random_words(k: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` random 32-bit words (int64 tensor ``(n,)``) from counters ``0..ceil(n/2)-1``."""
    m = (n + 1) // 2
    ctr = torch.arange(m, dtype=torch.int64, device=k.device)
    y0, y1 = threefry_2x32(k, torch.zeros_like(ctr), ctr)
    return torch.cat([y0, y1])[:n]


def bits(key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
    """Uniform random 32-bit words.

    Args:
      key: a key ``(2,)``.
      shape: output shape.

    Returns:
      int64 tensor of ``shape`` with values in ``[0, 2**32)``.
    """
    k = _check_key(key)
    shape = _shape(shape)
    return _random_words(k, math.prod(shape)).reshape(shape)


def split(key: torch.Tensor, num: int = 2) -> torch.Tensor:
    """Split a key into ``num`` independent keys.

    Args:
      key: a key ``(2,)``.
      num: number of new keys (a Python int >= 1).

    Returns:
      int64 tensor ``(num, 2)``; ``split(key)[i]`` is a key.  Unpack with
      ``k1, k2 = split(key)``.
    """
    k = _check_key(key)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num: expected an int >= 1, got {num!r}")
    # a distinct counter domain from `bits` (high word 1, not 0) so that
    # split(key) and bits(key, ...) never share cipher outputs.
    ctr = torch.arange(num, dtype=torch.int64, device=k.device)
    y0, y1 = threefry_2x32(k, torch.ones_like(ctr), ctr)
    return torch.stack([y0, y1], dim=-1)


def fold_in(key: torch.Tensor, data: int | torch.Tensor) -> torch.Tensor:
    """Derive a new key from ``key`` and an integer ``data`` (e.g. a step count).

    Args:
      key: a key ``(2,)``.
      data: Python int in ``[0, 2**32)`` or an integer tensor of shape ``()``
        (taken modulo ``2**32``; may be a vmapped/traced value).

    Returns:
      A key ``(2,)``, distinct for distinct ``data``.
    """
    k = _check_key(key)
    if isinstance(data, bool) or not isinstance(data, (int, torch.Tensor)):
        raise TypeError(f"data: expected an int or an integer tensor, got {type(data).__name__}")
    if isinstance(data, int):
        if not 0 <= data < 2**32:
            raise ValueError(f"data: expected an int in [0, 2**32), got {data}")
        d = torch.tensor(data, dtype=torch.int64, device=k.device)
    else:
        check_int(data, "data")
        if data.ndim != 0:
            raise ValueError(f"data: expected shape (), got {tuple(data.shape)}")
        d = data.to(torch.int64) & _MASK32
    y0, y1 = threefry_2x32(k, torch.full_like(d, 2), d)
    return torch.stack([y0, y1])


# ---------------------------------------------------------------------- samplers
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype, got {dtype}")
    return dtype


def _unit_uniform(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Exact dyadic uniforms in ``[0, 1)`` built from integer bits."""
    n = math.prod(shape)
    if dtype == torch.float64:
        w = _random_words(k, 2 * n)
        hi, lo = w[:n], w[n:]
        mant = ((hi & 0x1FFFFF) << 32) | lo  # 53 bits: 21 from hi, 32 from lo
        u = mant.to(torch.float64) * (2.0**-53)
    else:
        w = _random_words(k, n)
        nbits = {torch.float32: 24, torch.float16: 11, torch.bfloat16: 8}[dtype]
        u = (w >> (32 - nbits)).to(torch.float32) * (2.0**-nbits)
        u = u.to(dtype)
    return u.reshape(shape)


def uniform(
    key: torch.Tensor,
    shape: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    minval: float | torch.Tensor = 0.0,
    maxval: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Uniform samples in ``[minval, maxval)``.

    Args:
      key: a key ``(2,)``.
      shape: output shape.
      dtype: floating dtype (default: torch's default dtype).
      minval, maxval: bounds, Python floats or tensors broadcastable to ``shape``.
        ``minval > maxval`` raises ``ValueError`` when both are Python numbers;
        tensor bounds are not checked by value (that cannot run under
        ``vmap``): where ``minval >= maxval`` every sample equals ``minval``.

    Returns:
      ``dtype`` tensor of ``shape``.  The ``[0, 1)`` variate is an exact
      multiple of ``2**-24`` (float32) or ``2**-53`` (float64), so it is
      bit-identical eager, compiled and vmapped.
    """
    k = _check_key(key)
    shape = _shape(shape)
    dtype = _float_dtype(dtype)
    if _is_number(minval) and _is_number(maxval) and minval > maxval:
        raise ValueError(f"minval, maxval: expected minval <= maxval, got minval={minval}, maxval={maxval}")
    u = _unit_uniform(k, shape, dtype)
    if isinstance(minval, (int, float)) and isinstance(maxval, (int, float)) and minval == 0.0 and maxval == 1.0:
        return u
    lo = torch.as_tensor(minval, dtype=dtype, device=k.device)
    hi = torch.as_tensor(maxval, dtype=dtype, device=k.device)
    out = lo + u * (hi - lo)
    # rounding can reach maxval exactly; keep the interval half-open
    return torch.maximum(lo, torch.minimum(out, torch.nextafter(hi, lo)))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _open_uniform(k: torch.Tensor, shape, dtype) -> torch.Tensor:
    """Uniform in the open interval ``(0, 1)`` (safe for ``log``), float32 or float64.

    Adds half a grid step to the exact dyadic uniform, so both ends are excluded
    and the value is still exact.
    """
    if dtype == torch.float64:
        return _unit_uniform(k, shape, torch.float64) + 2.0**-54
    return _unit_uniform(k, shape, torch.float32) + 2.0**-25


def normal(
    key: torch.Tensor,
    shape: Sequence[int] = (),
    dtype: torch.dtype | None = None,
    mean: float | torch.Tensor = 0.0,
    std: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Normal samples (Box–Muller on uniforms from the key).

    Args:
      key: a key ``(2,)``.
      shape: output shape.
      dtype: floating dtype (default: torch's default dtype).
      mean, std: broadcastable to ``shape``.

    Returns:
      ``dtype`` tensor of ``shape``.
    """
    k = _check_key(key)
    shape = _shape(shape)
    dtype = _float_dtype(dtype)
    n = math.prod(shape)
    m = (n + 1) // 2
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u = _unit_uniform(k, (2 * m,), work)
    u1 = 1.0 - u[:m]  # (0, 1]: log is finite
    u2 = u[m:]
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    z = torch.cat([r * torch.cos(theta), r * torch.sin(theta)])[:n].reshape(shape).to(dtype)
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)) and mean == 0.0 and std == 1.0:
        return z
    return torch.as_tensor(mean, dtype=dtype, device=k.device) + torch.as_tensor(
        std, dtype=dtype, device=k.device
    ) * z


def truncated_normal(
    key: torch.Tensor,
    lower: float | torch.Tensor,
    upper: float | torch.Tensor,
    shape: Sequence[int] = (),
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal truncated to ``[lower, upper]`` (inverse-CDF method).

    Returns:
      ``dtype`` tensor of ``shape`` with values in ``[lower, upper]``.
    """
    k = _check_key(key)
    shape = _shape(shape)
    dtype = _float_dtype(dtype)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    lo = torch.as_tensor(lower, dtype=work, device=k.device)
    hi = torch.as_tensor(upper, dtype=work, device=k.device)
    sqrt2 = math.sqrt(2.0)
    a, b = torch.erf(lo / sqrt2), torch.erf(hi / sqrt2)
    u = _unit_uniform(k, shape, work)
    z = sqrt2 * torch.erfinv(torch.clamp(a + u * (b - a), -1 + 1e-7, 1 - 1e-7))
    return torch.clamp(z, lo, hi).to(dtype)


def randint(
    key: torch.Tensor,
    shape: Sequence[int] = (),
    minval: int | torch.Tensor = 0,
    maxval: int | torch.Tensor | None = None,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Uniform integers in ``[minval, maxval)``.

    Args:
      key: a key ``(2,)``.
      shape: output shape.
      minval, maxval: ints or integer tensors broadcastable to ``shape``
        (``maxval > minval``; under vmap this cannot be checked, and an empty
        range returns ``minval``).
      dtype: integer dtype of the result.

    Returns:
      ``dtype`` tensor of ``shape``.  Uses 62 random bits per draw, so the
      modulo bias is below ``span / 2**62``.
    """
    k = _check_key(key)
    shape = _shape(shape)
    if maxval is None:
        raise TypeError("maxval: required (randint draws from [minval, maxval))")
    for name, v in (("minval", minval), ("maxval", maxval)):
        if isinstance(v, torch.Tensor):
            check_int(v, name)
        elif isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name}: expected an int or an integer tensor, got {type(v).__name__}")
    if isinstance(minval, int) and isinstance(maxval, int) and maxval <= minval:
        raise ValueError(f"maxval: expected maxval > minval = {minval}, got {maxval}")
    n = math.prod(shape)
    w = _random_words(k, 2 * n)
    r = (((w[:n] & 0x3FFFFFFF) << 32) | w[n:]).reshape(shape)  # [0, 2**62)
    lo = torch.as_tensor(minval, dtype=torch.int64, device=k.device)
    hi = torch.as_tensor(maxval, dtype=torch.int64, device=k.device)
    span = torch.clamp(hi - lo, min=1)
    return (lo + torch.remainder(r, span)).to(dtype)


def bernoulli(
    key: torch.Tensor, p: float | torch.Tensor = 0.5, shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Bernoulli samples: ``True`` with probability ``p``.

    Args:
      key: a key ``(2,)``.
      p: probability, a float or a float tensor.
      shape: output shape (default: ``p``'s shape).

    Returns:
      bool tensor of ``shape``.
    """
    k = _check_key(key)
    if isinstance(p, torch.Tensor):
        check_float(p, "p")
        shape = tuple(p.shape) if shape is None else _shape(shape)
        dtype = p.dtype if p.dtype == torch.float64 else torch.float32
    else:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p: expected a float or a float tensor, got {type(p).__name__}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        shape = () if shape is None else _shape(shape)
        dtype = torch.float32
    return _unit_uniform(k, shape, dtype) < torch.as_tensor(p, dtype=dtype, device=k.device)


def gumbel(key: torch.Tensor, shape: Sequence[int] = (), dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log(U))``.

    Returns:
      ``dtype`` tensor of ``shape``.
    """
    k = _check_key(key)
    shape = _shape(shape)
    dtype = _float_dtype(dtype)
    return (-torch.log(-torch.log(_open_uniform(k, shape, dtype)))).to(dtype)


def exponential(key: torch.Tensor, shape: Sequence[int] = (), dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard exponential samples ``-log(U)``.

    Returns:
      ``dtype`` tensor of ``shape`` (all > 0).
    """
    k = _check_key(key)
    shape = _shape(shape)
    dtype = _float_dtype(dtype)
    return (-torch.log(_open_uniform(k, shape, dtype))).to(dtype)


def categorical(
    key: torch.Tensor,
    logits: torch.Tensor,
    axis: int = -1,
    shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """Sample indices from unnormalised log-probabilities (Gumbel-max).

    Args:
      key: a key ``(2,)``.
      logits: float tensor ``[..., K, ...]`` with the categories on ``axis``;
        ``-inf`` entries are never drawn, except in a row whose entries are
        *all* ``-inf`` (no valid category): that row returns index 0.  It is
        not an error because the check would need the values, which cannot
        run under ``vmap``; mask such rows yourself if they can occur.
      axis: the category axis.
      shape: output shape; default ``logits.shape`` without ``axis``.  It must
        end with that batch shape (extra leading axes draw more samples).

    Returns:
      int64 tensor of ``shape`` with values in ``[0, K)``.
    """
    k = _check_key(key)
    check_float(logits, "logits")
    if logits.ndim == 0:
        raise ValueError("logits: expected at least 1 dimension (the categories), got shape ()")
    axis = axis % logits.ndim
    moved = torch.movedim(logits, axis, -1)
    batch = tuple(moved.shape[:-1])
    if shape is None:
        shape = batch
    else:
        shape = _shape(shape)
        if len(shape) < len(batch) or tuple(shape[len(shape) - len(batch):]) != batch:
            raise ValueError(
                f"shape: expected a shape ending with the logits batch shape {batch}, got {shape}"
            )
    g = gumbel(k, tuple(shape) + (moved.shape[-1],), dtype=logits.dtype)
    return torch.argmax(moved + g, dim=-1)


def permutation(key: torch.Tensor, x: int | torch.Tensor, axis: int = 0) -> torch.Tensor:
    """A random permutation.

    Args:
      key: a key ``(2,)``.
      x: an int ``n`` (permute ``arange(n)``) or a tensor (permute along ``axis``).
      axis: axis of ``x`` to shuffle.

    Returns:
      int64 ``(n,)`` or a shuffled copy of ``x``.
    """
    k = _check_key(key)
    if isinstance(x, bool) or not isinstance(x, (int, torch.Tensor)):
        raise TypeError(f"x: expected an int or a tensor, got {type(x).__name__}")
    n = x if isinstance(x, int) else x.shape[axis]
    if isinstance(x, int) and n < 0:
        raise ValueError(f"x: expected a non-negative int, got {n}")
    w = _random_words(k, 2 * n)
    r = ((w[:n] & 0x3FFFFFFF) << 32) | w[n:]
    idx = torch.argsort(r, stable=True)
    if isinstance(x, int):
        return idx
    return torch.index_select(x, axis, idx)


def choice(
    key: torch.Tensor,
    a: int | torch.Tensor,
    shape: Sequence[int] = (),
    replace: bool = True,
    p: torch.Tensor | None = None,
    axis: int = 0,
) -> torch.Tensor:
    """Random draws from ``arange(a)`` or from the entries of ``a`` along ``axis``.

    Args:
      key: a key ``(2,)``.
      a: an int ``n`` or a tensor whose ``axis`` has size ``n``.
      shape: shape of the draws.
      replace: draw with replacement.  Without it, ``prod(shape) <= n``.
      p: optional float ``(n,)`` probabilities (need not be normalised).
      axis: axis of ``a`` to draw from.

    Returns:
      Indices (int64 ``shape``) if ``a`` is an int, else
      ``a`` indexed along ``axis`` with those indices.
    """
    k = _check_key(key)
    shape = _shape(shape)
    if isinstance(a, bool) or not isinstance(a, (int, torch.Tensor)):
        raise TypeError(f"a: expected an int or a tensor, got {type(a).__name__}")
    n = a if isinstance(a, int) else a.shape[axis]
    if n <= 0:
        raise ValueError(f"a: expected at least one element to choose from, got {n}")
    count = math.prod(shape)
    if p is not None:
        check_float(p, "p")
        if tuple(p.shape) != (n,):
            raise ValueError(f"p: expected shape ({n},), got {tuple(p.shape)}")
    if replace:
        if p is None:
            idx = randint(k, shape, 0, n)
        else:
            idx = categorical(k, torch.log(p), shape=shape)
    else:
        if count > n:
            raise ValueError(f"shape: cannot draw {count} > {n} items without replacement")
        if p is None:
            idx = permutation(k, n)[:count].reshape(shape)
        else:
            g = gumbel(k, (n,), dtype=p.dtype)
            idx = torch.topk(torch.log(p) + g, count).indices.reshape(shape)
    if isinstance(a, int):
        return idx
    return torch.index_select(a, axis, idx.reshape(-1)).reshape(
        a.shape[:axis] + shape + a.shape[axis + 1 :]
    )
