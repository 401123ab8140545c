"""Element-wise functions whose value at an element does not depend on the tensor around it.

Why this module exists: on the CPU, torch evaluates many element-wise
functions with a vectorised kernel over blocks of 2 x SIMD-width elements
and a *scalar* kernel for the elements left over at the end of the tensor.
For some functions the two kernels round differently in the last bit
(measured with torch 2.13 on AVX2: ``sigmoid``, ``softplus``, ``silu``,
``logaddexp``, ``atanh``, ``atan2``, ``pow`` with a non-integer exponent,
``sinh``, ``cosh``, ``exp2``, ``mish``).  So the value of ``f(x)[k]`` depends
on ``x.numel()`` and on ``k``: a batch of seeds, which lays every seed's
elements at other positions of one larger tensor, rounds differently from a
single seed.  Training amplifies one ulp into a different run.

The functions here compose only operations whose vectorised and scalar
kernels agree (``exp``, ``log``, ``log1p``, ``expm1``, ``tanh``, ``sqrt``,
``sin``, ``cos``, ``erf``, the arithmetic operators, comparisons,
``where``, ``clamp``), so ``f(x)[k] == f(x[k])`` bit for bit whatever the
size and position; ``tests/test_ops.py`` checks this for every function
under each CPU capability CI runs.  funrl's distributions, optimisers,
activations and losses use them wherever a result feeds training.  Values
agree with torch's own functions to a few ulps.

All functions take and return float tensors of any shape (the output has the
input's shape) and are differentiable, vmappable and compilable.
"""

from __future__ import annotations

import math

import torch

__all__ = ["softplus", "sigmoid", "log_sigmoid", "silu", "gelu", "logaddexp", "atanh", "power"]


def softplus(x: torch.Tensor, threshold: float = 20.0) -> torch.Tensor:
    """``log(1 + exp(x))``, linear above ``threshold`` like ``torch.nn.functional.softplus``.

    Computed as ``max(x, 0) + log1p(exp(-|x|))`` (exact for both signs, no
    overflow); shape of ``x``.
    """
    smooth = torch.clamp(x, min=0.0) + torch.log1p(torch.exp(-torch.abs(x)))
    return torch.where(x > threshold, x, smooth)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))`` for any ``x`` (no overflow); shape of ``x``.

    ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` below, with
    ``e = exp(-|x|)``: full relative precision in both tails.
    """
    e = torch.exp(-torch.abs(x))
    return torch.where(x >= 0, 1.0, e) / (1.0 + e)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(x)) = -softplus(-x)``; shape of ``x``."""
    return -softplus(-x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)`` (swish); shape of ``x``."""
    return x * sigmoid(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU ``x/2 (1 + erf(x / sqrt 2))`` (torch's default ``approximate='none'``); shape of ``x``."""
    return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) + exp(b))`` without overflow; ``a`` and ``b`` broadcast.

    ``max(a, b) + log1p(exp(-|a - b|))``; equal infinities give that infinity.
    """
    m = torch.maximum(a, b)
    d = torch.where(a == b, torch.zeros_like(m), -torch.abs(a - b))  # inf - inf would be NaN
    return m + torch.log1p(torch.exp(d))


def atanh(x: torch.Tensor) -> torch.Tensor:
    """Inverse hyperbolic tangent ``0.5 log((1 + x) / (1 - x))`` for ``x`` in ``[-1, 1]``; shape of ``x``.

    Written as ``0.5 log1p(2x / (1 - x))``, accurate near 0 where ``log`` of a
    ratio would cancel; ``±1`` give ``±inf`` as ``torch.atanh`` does.
    """
    return 0.5 * torch.log1p(2.0 * x / (1.0 - x))


def power(base, exponent) -> torch.Tensor:
    """``base ** exponent`` for ``base > 0`` (tensors or numbers, broadcast), as ``exp(exponent * log(base))``.

    ``base == 0`` gives 0 for a positive exponent, like ``**``.  Used for
    optimiser bias corrections and schedules, where ``**`` with a tensor
    exponent would round differently per position.
    """
    ref = exponent if isinstance(exponent, torch.Tensor) else base
    if not isinstance(ref, torch.Tensor):
        raise TypeError(f"base, exponent: expected at least one tensor, got {type(base).__name__} and {type(exponent).__name__}")
    dtypes = [t.dtype for t in (base, exponent) if isinstance(t, torch.Tensor)]
    dtype = torch.promote_types(dtypes[0], dtypes[-1])
    base = torch.as_tensor(base, dtype=dtype, device=ref.device)
    return torch.exp(exponent * torch.log(base))
