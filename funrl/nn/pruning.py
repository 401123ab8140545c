"""Magnitude pruning and sparse training over params trees.

::

    masks = pruning.magnitude_masks(params, sparsity=0.9)              # global: 90% of the weights
    params = pruning.apply_masks(params, masks)                         # pruned entries -> 0
    tx = optim.chain(optim.adam(1e-3), pruning.keep_masked(masks))      # training keeps them exactly 0

A mask tree has the params' structure with a bool tensor of each leaf's shape
(``True`` = kept); leaves that are not pruning targets get all-``True`` masks.
Masks come from an integer ranking of ``|w|``, so ``vmap`` over seeds gives
the same masks as a loop, bit for bit.  ``magnitude_masks`` matches
``torch.nn.utils.prune.l1_unstructured`` (per layer) and
``global_unstructured`` (global): the ``round(sparsity * n)`` smallest
magnitudes are pruned.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.utils._pytree as _pytree

from funrl import tree as _tree
from funrl.nn.lora import _matcher as _path_matcher
from funrl.optim import EmptyState, GradientTransformation

__all__ = ["magnitude_masks", "apply_masks", "keep_masked", "sparsity"]

_SCOPES = ("global", "layer")


def _default_target(path: str, leaf: torch.Tensor) -> bool:
    return leaf.ndim >= 2


def _matcher(targets) -> Callable[[str, torch.Tensor], bool]:
    # None: every weight matrix; otherwise LoRA's rule (a regex over the "."-joined path, or a callable)
    return _default_target if targets is None else _path_matcher(targets)


def _path_name(kp) -> str:
    parts = []
    for k in kp:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def _keep_largest(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """bool like ``scores (n,)``: False for the ``n_prune`` smallest (ties by index)."""
    # rank of each entry in ascending order (argsort of argsort): integer
    # comparisons only, so exact under vmap
    rank = torch.argsort(torch.argsort(scores, stable=True), stable=True)
    return rank >= n_prune


def magnitude_masks(params: Any, sparsity: float, scope: str = "global", targets=None) -> Any:
    """Masks that prune the smallest-magnitude weights.

    Args:
      params: a pytree of tensors.
      sparsity: fraction in ``[0, 1]`` of the targeted entries to prune;
        ``round(sparsity * n)`` entries are pruned (torch.nn.utils.prune's count).
      scope: ``"global"`` ranks all targeted entries together (layers end up
        with different sparsities); ``"layer"`` prunes each targeted leaf to
        ``sparsity`` on its own.
      targets: which leaves to prune: ``None`` for every leaf with at least 2
        dims (weights, not biases or norms), a regex searched in the leaf's
        path joined with ``"."``, or a callable ``(path, leaf) -> bool``.

    Returns:
      A pytree with ``params``' structure: bool tensors of each leaf's shape,
      ``False`` where pruned.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1], got {sparsity!r}")
    if scope not in _SCOPES:
        raise ValueError(f"scope: expected one of {_SCOPES}, got {scope!r}")
    match = _matcher(targets)
    flat, spec = _pytree.tree_flatten_with_path(params)
    for kp, leaf in flat:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"params: expected tensor leaves, got a {type(leaf).__name__} at {_path_name(kp)}")
    chosen = [i for i, (kp, leaf) in enumerate(flat) if match(_path_name(kp), leaf)]
    if not chosen:
        raise ValueError(f"targets: expected to select at least one leaf of params, got {targets!r}, which selects none")
    masks = [torch.ones_like(leaf, dtype=torch.bool) for _, leaf in flat]
    if scope == "layer":
        for i in chosen:
            w = flat[i][1]
            masks[i] = _keep_largest(w.abs().reshape(-1), round(sparsity * w.numel())).reshape(w.shape)
    else:
        ws = [flat[i][1] for i in chosen]
        dtype = torch.promote_types(ws[0].dtype, torch.float32)
        scores = torch.cat([w.abs().reshape(-1).to(dtype) for w in ws])
        keep = _keep_largest(scores, round(sparsity * scores.numel()))
        for i, part in zip(chosen, torch.split(keep, [w.numel() for w in ws])):
            masks[i] = part.reshape(flat[i][1].shape)
    return _pytree.tree_unflatten(masks, spec)


def _check_masks(masks: Any, params: Any) -> list[torch.Tensor]:
    ps, ms = _tree.structure(params), _tree.structure(masks)
    if ps != ms:
        raise ValueError(f"masks: expected a tree with the structure of params ({ps}), got {ms}")
    flat_m = _tree.leaves(masks)
    for i, (m, p) in enumerate(zip(flat_m, _tree.leaves(params))):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            got = m.dtype if isinstance(m, torch.Tensor) else type(m).__name__
            raise TypeError(f"masks: leaf {i} expected a bool tensor, got {got}")
        if m.shape != p.shape:
            raise ValueError(f"masks: leaf {i} expected shape {tuple(p.shape)} (the param's), got {tuple(m.shape)}")
    return flat_m


def apply_masks(params: Any, masks: Any) -> Any:
    """Zero the pruned entries: ``where(mask, w, 0)`` leaf-wise.

    Args:
      params: a pytree of tensors.
      masks: bool tensors with ``params``' structure and shapes.

    Returns:
      New params (inputs untouched).
    """
    _check_masks(masks, params)
    return _tree.map(lambda p, m: torch.where(m, p, torch.zeros_like(p)), params, masks)


def keep_masked(masks: Any) -> GradientTransformation:
    """A transformation that keeps pruned weights exactly zero; put it last in a chain.

    ``update`` replaces the update of each pruned entry by ``-w``: after
    ``apply_updates`` the entry is ``w + (-w) = 0`` exactly (already-zero entries
    stay zero), whatever the optimizer before it did (momentum, weight decay).
    Kept entries pass through unchanged.

    Args:
      masks: from :func:`magnitude_masks` (bool tensors, the params' structure).
        Under ``vmap`` with per-seed masks, build the transformation inside the
        vmapped function.

    Returns:
      A :class:`funrl.optim.GradientTransformation` (stateless; ``update``
      needs ``params``).
    """

    def init(params):
        _check_masks(masks, params)
        return EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params: keep_masked needs the params in update(updates, state, params)")
        _check_masks(masks, updates)
        return _tree.map(lambda u, p, m: torch.where(m, u, -p), updates, params, masks), state

    return GradientTransformation(init, update)


def sparsity(masks: Any) -> torch.Tensor:
    """Fraction of pruned (``False``) entries over all mask leaves: a float32 scalar tensor."""
    ls = _tree.leaves(masks)
    if not ls or not all(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in ls):
        raise TypeError("masks: expected a non-empty tree of bool tensors")
    pruned = sum((~m).sum() for m in ls)
    return pruned.to(torch.float32) / sum(m.numel() for m in ls)
