"""Cheap argument checks shared by every funrl module.

All checks look only at static metadata (type, dtype, rank, shape), never at
tensor values, so they are free under ``torch.func.vmap`` (where shapes are the
per-example shapes) and under ``torch.compile`` (where they are traced away).
Every failure names the argument, what was expected and what was given.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_tensor(x, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a ``torch.Tensor``; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_rank(x, rank: int | Sequence[int], name: str) -> torch.Tensor:
    """Raise ``ValueError`` unless ``x.ndim`` is ``rank`` (or one of ``rank``)."""
    check_tensor(x, name)
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    if x.ndim not in ranks:
        want = ranks[0] if len(ranks) == 1 else f"one of {ranks}"
        raise ValueError(
            f"{name}: expected rank {want}, got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    return x


def check_shape(x, shape: Sequence[int | None], name: str) -> torch.Tensor:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` = any size)."""
    check_tensor(x, name)
    if x.ndim != len(shape) or any(
        s is not None and int(d) != int(s) for d, s in zip(x.shape, shape)
    ):
        want = tuple("*" if s is None else int(s) for s in shape)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    return x


def check_same_shape(tensors: dict, reference: str | None = None) -> None:
    """Raise ``ValueError`` unless every tensor in ``tensors`` has the same shape.

    ``tensors`` maps argument names to tensors; ``reference`` (default: the
    first key) is the argument the others are compared with.
    """
    names = list(tensors)
    ref = reference or names[0]
    ref_shape = tuple(check_tensor(tensors[ref], ref).shape)
    for n in names:
        s = tuple(check_tensor(tensors[n], n).shape)
        if s != ref_shape:
            raise ValueError(
                f"{n}: expected shape {ref_shape} (the shape of {ref}), got {s}"
            )


def check_float(x, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a floating-point tensor."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def check_int(x, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is an integer tensor."""
    check_tensor(x, name)
    if x.dtype not in _INTS:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {x.dtype}")
    return x


def check_dtype(x, dtypes: torch.dtype | Iterable[torch.dtype], name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x.dtype`` is one of ``dtypes``."""
    check_tensor(x, name)
    allowed = (dtypes,) if isinstance(dtypes, torch.dtype) else tuple(dtypes)
    if x.dtype not in allowed:
        want = allowed[0] if len(allowed) == 1 else f"one of {allowed}"
        raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    return x


def check_positive(value, name: str, allow_zero: bool = False):
    """Raise ``ValueError`` unless a Python number is > 0 (or >= 0)."""
    if isinstance(value, torch.Tensor):
        return value  # tensors (e.g. vmapped hyper-parameters) are not checked by value
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a number {bound}, got {value}")
    return value


def check_in_range(value, low, high, name: str):
    """Raise ``ValueError`` unless ``low <= value <= high`` for a Python number."""
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not (low <= value <= high):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value}")
    return value
