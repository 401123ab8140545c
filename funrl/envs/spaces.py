"""Observation and action spaces (gymnax style) with key-based sampling.

A space describes the shape, dtype and bounds of one *unbatched* observation
or action.  ``sample(key)`` is a pure function of a funrl key, so it vmaps
(``vmap(space.sample)(keys)``) and compiles.  ``contains(x)`` reads tensor
values and is therefore eager-only (it returns a Python bool).
``to_gymnasium()`` gives the equivalent ``gymnasium.spaces`` object and
:func:`from_gymnasium_space` goes the other way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from funrl import random as jr

__all__ = ["Space", "Discrete", "Box", "MultiDiscrete", "from_gymnasium_space"]

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _np_dtype(dtype: torch.dtype):
    return torch.empty((), dtype=dtype).numpy().dtype if dtype != torch.bfloat16 else np.float32


def _torch_dtype(np_dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros((), dtype=np_dtype)).dtype


class Space:
    """Base class.  Subclasses set ``shape`` (tuple of ints) and ``dtype``."""

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32

    def sample(self, key: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Draw one element with a funrl key ``(2,)``."""
        raise NotImplementedError

    def contains(self, x) -> bool:  # pragma: no cover - abstract
        """True if ``x`` is a tensor of this space's shape, dtype kind and bounds (eager only)."""
        raise NotImplementedError

    def __contains__(self, x) -> bool:
        return self.contains(x)

    def to_gymnasium(self):  # pragma: no cover - abstract
        """The equivalent ``gymnasium.spaces`` object."""
        raise NotImplementedError


class Discrete(Space):
    """Integers ``{start, ..., start + n - 1}``; elements are int64 tensors of shape ``()``.

    Args:
      n: number of elements (a Python int >= 1).
      start: smallest element (default 0).
    """

    def __init__(self, n: int, start: int = 0):
        if isinstance(n, torch.Tensor) and n.ndim == 0 and not n.is_floating_point():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected an int >= 1, got {n!r}")
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)):
            raise ValueError(f"start: expected an int, got {start!r}")
        self.n = int(n)
        self.start = int(start)
        self.shape = ()
        self.dtype = torch.int64

    def sample(self, key: torch.Tensor) -> torch.Tensor:
        """Uniform element: int64 tensor ``()`` on ``key``'s device."""
        return jr.randint(key, (), self.start, self.start + self.n)

    def contains(self, x) -> bool:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            x = torch.tensor(int(x))
        if not isinstance(x, torch.Tensor) or x.dtype not in _INT_DTYPES or x.shape != ():
            return False
        return bool(self.start <= int(x) < self.start + self.n)

    def to_gymnasium(self):
        import gymnasium

        return gymnasium.spaces.Discrete(self.n, start=self.start)

    def __repr__(self) -> str:
        return f"Discrete({self.n})" if self.start == 0 else f"Discrete({self.n}, start={self.start})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Discrete) and other.n == self.n and other.start == self.start

    __hash__ = None


class MultiDiscrete(Space):
    """A vector of independent discrete variables; element ``i`` lies in ``[0, nvec[i])``.

    Args:
      nvec: sequence of ints >= 1 (or an integer tensor), the number of values per entry.
    """

    def __init__(self, nvec: Sequence[int] | torch.Tensor):
        nv = torch.as_tensor(nvec, dtype=torch.int64) if not isinstance(nvec, torch.Tensor) else nvec
        if nv.is_floating_point() or nv.ndim < 1 or bool((nv < 1).any()):
            raise ValueError(f"nvec: expected a non-empty sequence of ints >= 1, got {nvec!r}")
        self.nvec = nv.to(torch.int64)
        self.shape = tuple(self.nvec.shape)
        self.dtype = torch.int64

    def sample(self, key: torch.Tensor) -> torch.Tensor:
        """Uniform element: int64 tensor of ``shape`` on ``key``'s device."""
        return jr.randint(key, self.shape, 0, self.nvec.to(key.device))

    def contains(self, x) -> bool:
        if not isinstance(x, torch.Tensor) or x.dtype not in _INT_DTYPES or tuple(x.shape) != self.shape:
            return False
        nv = self.nvec.to(x.device)
        return bool(((x >= 0) & (x < nv)).all())

    def to_gymnasium(self):
        import gymnasium

        return gymnasium.spaces.MultiDiscrete(self.nvec.cpu().numpy())

    def __repr__(self) -> str:
        return f"MultiDiscrete({self.nvec.tolist()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, MultiDiscrete) and torch.equal(other.nvec, self.nvec)

    __hash__ = None


class Box(Space):
    """A (possibly unbounded) box in R^shape.

    Args:
      low, high: bounds; Python numbers or tensors broadcastable to ``shape``
        (``-inf``/``inf`` allowed).  Stored as tensors of ``shape`` and ``dtype``.
      shape: the element shape; default: the broadcast shape of ``low`` and ``high``.
      dtype: element dtype (default float32); integer dtypes give integer boxes.

    Sampling follows gymnasium: uniform on bounded coordinates, a shifted
    exponential on half-bounded ones and a standard normal on unbounded ones
    (computed branch-free for every coordinate, then selected).
    """

    def __init__(self, low, high, shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32):
        if dtype not in _FLOAT_DTYPES + _INT_DTYPES:
            raise TypeError(f"dtype: expected a torch float or integer dtype, got {dtype!r}")
        device = None
        for v in (low, high):
            if isinstance(v, torch.Tensor):
                device = v.device
        work = torch.float64
        lo = torch.as_tensor(low, dtype=work, device=device) if not isinstance(low, torch.Tensor) else low.to(work)
        hi = torch.as_tensor(high, dtype=work, device=device) if not isinstance(high, torch.Tensor) else high.to(work)
        if shape is None:
            shape = torch.broadcast_shapes(lo.shape, hi.shape)
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(int(s) for s in shape)
        try:
            lo = torch.broadcast_to(lo, shape)
            hi = torch.broadcast_to(hi, shape)
        except RuntimeError as e:
            raise ValueError(
                f"low, high: expected bounds broadcastable to shape {shape}, got shapes "
                f"{tuple(lo.shape)} and {tuple(hi.shape)}"
            ) from e
        self.shape = shape
        self.dtype = dtype
        # float bounds are rounded to dtype (as gymnasium does); infinities survive
        self.low = lo.to(dtype) if dtype in _FLOAT_DTYPES else lo
        self.high = hi.to(dtype) if dtype in _FLOAT_DTYPES else hi

    @property
    def bounded_below(self) -> torch.Tensor:
        """bool tensor of ``shape``: finite lower bound."""
        return torch.isfinite(self.low) if self.low.is_floating_point() else torch.ones(self.shape, dtype=torch.bool)

    @property
    def bounded_above(self) -> torch.Tensor:
        """bool tensor of ``shape``: finite upper bound."""
        return torch.isfinite(self.high) if self.high.is_floating_point() else torch.ones(self.shape, dtype=torch.bool)

    def sample(self, key: torch.Tensor) -> torch.Tensor:
        """One element: ``dtype`` tensor of ``shape`` on ``key``'s device."""
        dev = key.device
        work = torch.float64 if self.dtype == torch.float64 or self.dtype in _INT_DTYPES else torch.float32
        lo = self.low.to(device=dev, dtype=work)
        hi = self.high.to(device=dev, dtype=work)
        k_u, k_n, k_e = jr.split(key, 3)
        if self.dtype in _INT_DTYPES:
            # gymnasium: uniform on the integers low..high inclusive
            u = jr.uniform(k_u, self.shape, work)
            x = torch.floor(lo + u * (hi - lo + 1.0))
            return torch.minimum(x, hi).to(self.dtype)
        fin_lo, fin_hi = torch.isfinite(lo), torch.isfinite(hi)
        safe_lo = torch.where(fin_lo, lo, torch.zeros_like(lo))
        safe_hi = torch.where(fin_hi, hi, torch.ones_like(hi))
        uni = jr.uniform(k_u, self.shape, work, safe_lo, safe_hi)
        nrm = jr.normal(k_n, self.shape, work)
        exp = jr.exponential(k_e, self.shape, work)
        x = torch.where(
            fin_lo & fin_hi,
            uni,
            torch.where(fin_lo, safe_lo + exp, torch.where(fin_hi, safe_hi - exp, nrm)),
        )
        return x.to(self.dtype)

    def contains(self, x) -> bool:
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != self.shape:
            return False
        if self.dtype in _FLOAT_DTYPES and not x.is_floating_point():
            return False
        if self.dtype in _INT_DTYPES and x.dtype not in _INT_DTYPES:
            return False
        xd = x.to(torch.float64)
        lo = self.low.to(device=x.device, dtype=torch.float64)
        hi = self.high.to(device=x.device, dtype=torch.float64)
        return bool(((xd >= lo) & (xd <= hi)).all())

    def to_gymnasium(self):
        import gymnasium

        npd = _np_dtype(self.dtype)
        return gymnasium.spaces.Box(
            low=self.low.detach().cpu().to(torch.float64).numpy().astype(npd),
            high=self.high.detach().cpu().to(torch.float64).numpy().astype(npd),
            shape=self.shape,
            dtype=npd,
        )

    def __repr__(self) -> str:
        lo, hi = self.low.detach().cpu(), self.high.detach().cpu()
        if lo.numel() and bool((lo == lo.reshape(-1)[0]).all()) and bool((hi == hi.reshape(-1)[0]).all()):
            lo_s, hi_s = _short(lo.reshape(-1)[0]), _short(hi.reshape(-1)[0])
        else:
            lo_s = "[" + ", ".join(_short(x) for x in lo.reshape(-1)) + "]"
            hi_s = "[" + ", ".join(_short(x) for x in hi.reshape(-1)) + "]"
        return f"Box({lo_s}, {hi_s}, {self.shape}, {self.dtype})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Box)
            and other.shape == self.shape
            and other.dtype == self.dtype
            and torch.equal(other.low.cpu(), self.low.cpu())
            and torch.equal(other.high.cpu(), self.high.cpu())
        )

    __hash__ = None


def from_gymnasium_space(space) -> Space:
    """Convert a ``gymnasium.spaces`` Discrete, MultiDiscrete or Box into a funrl space.

    Raises:
      TypeError: for other gymnasium space types (Dict, Tuple, Text, ...).
    """
    import gymnasium

    if isinstance(space, gymnasium.spaces.Discrete):
        return Discrete(int(space.n), start=int(space.start))
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        if bool(np.any(space.start != 0)) if hasattr(space, "start") else False:
            raise TypeError("space: MultiDiscrete with a non-zero start is not supported")
        return MultiDiscrete(torch.as_tensor(np.asarray(space.nvec), dtype=torch.int64))
    if isinstance(space, gymnasium.spaces.Box):
        dt = _torch_dtype(space.dtype)
        return Box(
            torch.as_tensor(np.asarray(space.low, dtype=np.float64)),
            torch.as_tensor(np.asarray(space.high, dtype=np.float64)),
            tuple(space.shape),
            dt,
        )
    raise TypeError(
        f"space: expected a gymnasium Discrete, MultiDiscrete or Box space, got {type(space).__name__}"
    )


def _short(x: torch.Tensor) -> str:
    """The shortest decimal that reads back as the same value in the tensor's own dtype (float32's
    ``4.8``, not ``4.800000190734863``), as numpy prints a float32 scalar."""
    if not x.is_floating_point():
        return str(int(x))
    v = float(x)
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    for digits in range(1, 18):
        text = f"{v:.{digits}g}"
        if torch.tensor(float(text), dtype=x.dtype) == x:
            return text if any(c in text for c in ".en") else text + ".0"
    return repr(v)
