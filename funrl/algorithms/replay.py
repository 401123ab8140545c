"""A functional, uniform replay buffer: a circular buffer of tensors in a pytree.

The buffer is a :class:`ReplayState` — the stored items (any pytree of tensors
with a leading ``capacity`` axis), the next write position and the number of
filled slots — and three pure functions: :func:`add` writes a batch of items
out of place, :func:`sample` draws a uniform batch from the filled slots with a
funrl key, :func:`can_sample` says (as a bool tensor) whether enough items are
stored.  Nothing mutates its inputs and nothing branches on tensor values, so a
buffer per seed is just ``torch.func.vmap`` over these functions and everything
compiles (the shape of the Flashbax/DQN-Zoo flat uniform buffer).

The capacity is static (the leading size of the stored leaves); position and
size are int64 tensors, so under ``vmap`` every seed's buffer fills on its own.

Usage::

    item = {"obs": torch.zeros(4), "action": torch.zeros((), dtype=torch.int64)}
    buf = replay.init(item, capacity=10_000)
    buf = replay.add(buf, {"obs": obs_batch, "action": action_batch})  # leading axis N
    batch = replay.sample(buf, key, 128)                               # leaves [128, ...]
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from funrl import random as jr
from funrl import tree
from funrl._checks import check_tensor

__all__ = ["ReplayState", "init", "add", "sample", "sample_indices", "gather", "can_sample", "capacity"]


class ReplayState(NamedTuple):
    """A uniform replay buffer (a pytree; vmap it for one buffer per seed).

    Attributes:
      data: pytree of tensors ``[capacity, *item_shape]`` (zeros where unfilled).
      position: int64 ``()``: the slot the next item goes to, in ``[0, capacity)``.
      size: int64 ``()``: filled slots, in ``[0, capacity]``.
    """

    data: Any
    position: torch.Tensor
    size: torch.Tensor


def _leaves(x: Any, name: str) -> list[torch.Tensor]:
    ls = tree.leaves(x)
    if not ls:
        raise ValueError(f"{name}: expected a pytree with at least one tensor leaf, got {type(x).__name__} with none")
    for i, leaf in enumerate(ls):
        check_tensor(leaf, f"{name} (leaf {i})")
    return ls


def _check_state(state) -> int:
    if not isinstance(state, ReplayState):
        raise TypeError(f"state: expected a ReplayState (from replay.init), got {type(state).__name__}")
    ls = _leaves(state.data, "state.data")
    cap = ls[0].shape[0] if ls[0].ndim else 0
    for i, leaf in enumerate(ls):
        if leaf.ndim == 0 or leaf.shape[0] != cap:
            raise ValueError(
                f"state.data: leaf {i} has shape {tuple(leaf.shape)}, expected a leading capacity axis of size {cap}"
            )
    for name in ("position", "size"):
        v = getattr(state, name)
        check_tensor(v, f"state.{name}")
        if v.dtype != torch.int64 or v.ndim != 0:
            raise ValueError(f"state.{name}: expected an int64 tensor of shape (), got {v.dtype} {tuple(v.shape)}")
    return cap


def capacity(state: ReplayState) -> int:
    """The buffer's capacity (a Python int: the leading size of the stored leaves)."""
    return _check_state(state)


def init(example_item: Any, capacity: int) -> ReplayState:
    """An empty buffer for items shaped like ``example_item``.

    Args:
      example_item: pytree of tensors, ONE item (no leading batch axis); only
        shapes, dtypes and devices are used.
      capacity: number of slots (Python int >= 1).

    Returns:
      A :class:`ReplayState` with zeros ``[capacity, *leaf.shape]`` in each
      leaf's dtype and device, ``position = size = 0``.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity: expected an int >= 1, got {capacity!r}")
    ls = _leaves(example_item, "example_item")
    # zeros_like of an expanded view (not torch.zeros): under vmap the buffer is
    # then batched like the example, not a stride-0 broadcast of one buffer
    data = tree.map(lambda x: torch.zeros_like(x.unsqueeze(0).expand((capacity,) + tuple(x.shape))), example_item)
    zero = torch.zeros((), dtype=torch.int64, device=ls[0].device)
    return ReplayState(data=data, position=zero, size=zero.clone())


def add(state: ReplayState, items: Any) -> ReplayState:
    """Write a batch of ``N`` items at ``position, ..., position + N - 1`` (mod capacity), out of place.

    The oldest items are overwritten once the buffer is full.  When ``N``
    exceeds the capacity only the last ``capacity`` items are kept (as if they
    had been added one by one).

    Args:
      state: the buffer.
      items: pytree with the structure of the stored items, each leaf
        ``[N, *item_shape]`` with the stored dtype (the same ``N`` for all).

    Returns:
      A new :class:`ReplayState`; ``state`` is not modified.
    """
    cap = _check_state(state)
    if tree.structure(items) != tree.structure(state.data):
        raise ValueError(
            f"items: expected the structure of the stored items {tree.structure(state.data)}, "
            f"got {tree.structure(items)}"
        )
    stored, new = tree.leaves(state.data), _leaves(items, "items")
    n = new[0].shape[0] if new[0].ndim else None
    for i, (s, x) in enumerate(zip(stored, new)):
        want = (n,) + tuple(s.shape[1:])
        if x.ndim != s.ndim or tuple(x.shape) != want:
            raise ValueError(
                f"items: leaf {i} expected shape (N, {', '.join(map(str, s.shape[1:]))}) with the same N as leaf 0 "
                f"(N={n}), got {tuple(x.shape)}"
            )
        if x.dtype != s.dtype:
            raise TypeError(f"items: leaf {i} expected dtype {s.dtype} (the stored dtype), got {x.dtype}")
    if n == 0:
        return ReplayState(tree.map(torch.clone, state.data), state.position.clone(), state.size.clone())
    keep = min(n, cap)
    skip = n - keep
    offsets = torch.arange(skip, n, dtype=torch.int64, device=state.position.device)
    idx = torch.remainder(state.position + offsets, cap)  # distinct slots, since keep <= cap
    data = tree.map(lambda s, x: s.index_copy(0, idx, x[skip:]), state.data, items)
    return ReplayState(
        data=data,
        position=torch.remainder(state.position + n, cap),
        size=torch.clamp(state.size + n, max=cap),
    )


def sample_indices(state: ReplayState, key: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Uniform slot indices in ``[0, size)`` (with replacement).

    Args:
      state: the buffer.
      key: a funrl key ``(2,)``.
      batch_size: number of indices (Python int >= 1).

    Returns:
      int64 ``[batch_size]``.  An empty buffer (``size == 0``, which cannot be
      checked under vmap) gives all zeros: slot 0.
    """
    _check_state(state)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    return jr.randint(key, (batch_size,), 0, torch.clamp(state.size, min=1))


def gather(state: ReplayState, indices: torch.Tensor) -> Any:
    """The items stored at ``indices`` (int64 ``[B]``): a pytree with leaves ``[B, *item_shape]``."""
    _check_state(state)
    check_tensor(indices, "indices")
    if indices.dtype != torch.int64 or indices.ndim != 1:
        raise ValueError(f"indices: expected an int64 tensor of shape (B,), got {indices.dtype} {tuple(indices.shape)}")
    return tree.map(lambda x: torch.index_select(x, 0, indices), state.data)


def sample(state: ReplayState, key: torch.Tensor, batch_size: int) -> Any:
    """A uniform batch of stored items (with replacement) from the filled slots.

    Args:
      state: the buffer.
      key: a funrl key ``(2,)``.
      batch_size: number of items (Python int >= 1).

    Returns:
      pytree with the stored structure, leaves ``[batch_size, *item_shape]``.
      Sampling an empty buffer returns copies of slot 0, i.e. zeros (guard the
      use of the batch with :func:`can_sample` and ``torch.where``).
    """
    return gather(state, sample_indices(state, key, batch_size))


def can_sample(state: ReplayState, batch_size: int | torch.Tensor) -> torch.Tensor:
    """Whether the buffer holds at least ``batch_size`` items.

    Also the learning-starts test: ``can_sample(state, learning_starts)``.

    Args:
      state: the buffer.
      batch_size: Python int >= 0 or an integer tensor ``()``.

    Returns:
      bool tensor ``()`` (one per buffer under vmap).
    """
    _check_state(state)
    if isinstance(batch_size, torch.Tensor):
        if batch_size.is_floating_point() or batch_size.dtype == torch.bool or batch_size.ndim != 0:
            raise ValueError(
                f"batch_size: expected an int or an integer tensor of shape (), got {batch_size.dtype} "
                f"{tuple(batch_size.shape)}"
            )
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size: expected an int >= 0, got {batch_size!r}")
    return state.size >= batch_size
