"""LoRA (Hu et al., 2021) as a transformation of a params tree, not a new model class.

::

    adapters = lora.init(key, params, rank=4, alpha=8, targets=r"(q_proj|v_proj)\\.weight$")
    logits = lora.apply(model.apply)(params, adapters, tokens)          # low-rank path, unmerged
    grads = torch.func.grad(loss_of_adapters)(adapters)                 # the base params stay frozen
    merged = lora.merge(params, adapters)                               # W + scale * B @ A

For every targeted 2-D weight ``W [out, in]`` (torch's ``Linear`` layout) the
adapters hold ``{"a": [rank, in], "b": [out, rank]}`` at the weight's path, and
nothing elsewhere.  peft's defaults: ``a`` is kaiming-uniform with
``a=sqrt(5)`` (i.e. ``U(-1/sqrt(in), 1/sqrt(in))``, what ``torch.nn.Linear``
does), ``b`` is zero (so a fresh adapter changes nothing), and the scale is
``alpha / rank`` (``alpha / sqrt(rank)`` with ``rslora=True``).

:class:`Adapters` is a registered pytree dataclass: its tensor leaves are the
``a`` and ``b`` matrices, while ``rank``, ``alpha``, ``scale`` and ``dropout``
are static (kept in the tree structure), so ``grad``, ``vmap``, ``compile`` and
``funrl.optim`` see only the matrices, and :func:`merge` / :func:`apply` still
know the scale.

Paths: a weight's path is its dict keys joined with ``"."``
(``"layers.0.self_attn.q_proj.weight"``), the names of a torch
``state_dict``; params from :func:`funrl.nn.from_module` (a flat dict keyed by
those names) work the same way.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping

import torch

from funrl import random as jr
from funrl import tree as _tree

__all__ = ["Adapters", "init", "merge", "unmerge", "apply", "weight_paths", "with_adapters"]


@_tree.pytree_dataclass(static_fields=("rank", "alpha", "scale", "dropout"))
class Adapters:
    """LoRA adapters for some weights of a params tree.

    Attributes:
      tree: nested dict mirroring the params: at the path of each targeted
        weight ``W [out, in]``, ``{"a": [rank, in], "b": [out, rank]}``.
      rank: ``r``.
      alpha: LoRA's alpha.
      scale: the multiplier of ``B @ A`` (``alpha / rank``, or
        ``alpha / sqrt(rank)`` for rsLoRA).
      dropout: dropout probability on the adapter's input (used only when
        :func:`apply` gets a key).
    """

    tree: dict
    rank: int
    alpha: float
    scale: float
    dropout: float


# ----------------------------------------------------------------------------- paths
def weight_paths(params: Any, prefix: tuple = ()) -> list[tuple[tuple[str, ...], torch.Tensor]]:
    """Every tensor leaf of a nested-dict params tree with its key path.

    Args:
      params: nested dicts with tensor leaves (funrl params, or the flat dict
        of :func:`funrl.nn.from_module`).

    Returns:
      ``[(path, leaf), ...]`` in the dicts' order; ``".".join(path)`` is the
      name a target pattern is matched against.
    """
    if isinstance(params, torch.Tensor):
        return [(prefix, params)]
    if not isinstance(params, Mapping):
        where = ".".join(prefix) or "the root"
        raise TypeError(f"params: expected nested dicts of tensors, got a {type(params).__name__} at {where}")
    out = []
    for k, v in params.items():
        out.extend(weight_paths(v, prefix + (str(k),)))
    return out


def _get(tree_: Any, path: tuple[str, ...]):
    node = tree_
    for p in path:
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def _set(tree_: Mapping, path: tuple[str, ...], value) -> dict:
    """A copy of ``tree_`` with ``value`` at ``path`` (only the dicts along the path are copied)."""
    out = dict(tree_)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = _set(tree_.get(path[0], {}), path[1:], value)
    return out


def _matcher(targets, name: str = "targets") -> Callable[[str, torch.Tensor], bool]:
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as e:
            raise ValueError(f"{name}: expected a valid regular expression, got {targets!r} ({e})") from None
        return lambda path, leaf: pattern.search(path) is not None
    if isinstance(targets, re.Pattern):
        return lambda path, leaf: targets.search(path) is not None
    if callable(targets):
        return lambda path, leaf: bool(targets(path, leaf))
    raise TypeError(f"{name}: expected a regex string or a callable (path, leaf) -> bool, got {type(targets).__name__}")


def _adapter_items(adapters: Adapters) -> list[tuple[tuple[str, ...], dict]]:
    """``[(weight path, {"a", "b"}), ...]``."""
    out = []

    def walk(node, prefix):
        if isinstance(node, Mapping) and set(node) == {"a", "b"} and all(isinstance(v, torch.Tensor) for v in node.values()):
            out.append((prefix, node))
            return
        if not isinstance(node, Mapping):
            raise TypeError(f"adapters: expected nested dicts ending in {{'a', 'b'}}, got a {type(node).__name__} at {'.'.join(prefix)}")
        for k, v in node.items():
            walk(v, prefix + (k,))

    walk(adapters.tree, ())
    return out


def _check_adapters(adapters) -> Adapters:
    if not isinstance(adapters, Adapters):
        raise TypeError(f"adapters: expected funrl.nn.lora.Adapters (from lora.init), got {type(adapters).__name__}")
    return adapters


# ----------------------------------------------------------------------------- init
def init(
    key: torch.Tensor,
    params: Any,
    rank: int,
    alpha: float,
    targets: str | re.Pattern | Callable[[str, torch.Tensor], bool],
    dropout: float = 0.0,
    rslora: bool = False,
) -> Adapters:
    """Fresh LoRA adapters for the 2-D weights that ``targets`` selects.

    Args:
      key: a funrl key ``(2,)``; each targeted weight gets its own split key,
        so ``vmap(lambda k: init(k, params, ...))(keys)[i]`` equals
        ``init(keys[i], ...)`` bit for bit (the draws are integer-derived).
      params: nested dicts of tensors (``[out, in]`` weights, torch's layout).
      rank: ``r``, an int in ``[1, min(out, in)]`` for every targeted weight.
      alpha: > 0.
      targets: a regex searched (``re.search``) in each 2-D weight's path
        joined with ``"."``, e.g. ``r"(q_proj|v_proj)\\.weight$"``; or a callable
        ``(path: str, leaf) -> bool``.  Must select at least one weight.
      dropout: in ``[0, 1)``, on the adapter's input during training.
      rslora: scale by ``alpha / sqrt(rank)`` (Kalajdzievski, 2023) instead of
        ``alpha / rank``.

    Returns:
      :class:`Adapters`; ``a [rank, in]`` kaiming-uniform
      (``U(-1/sqrt(in), 1/sqrt(in))``) in the weight's dtype, ``b [out, rank]``
      zeros.
    """
    jr._check_key(key)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    match = _matcher(targets)
    matrices = [(p, w) for p, w in weight_paths(params) if w.ndim == 2]
    chosen = [(p, w) for p, w in matrices if match(".".join(p), w)]
    if not chosen:
        names = [".".join(p) for p, _ in matrices]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(f"targets: expected a pattern matching at least one 2-D weight path, got {targets!r}, "
                         f"which matches none of: {shown or '(no 2-D weights)'}")
    for p, w in chosen:
        if rank > min(w.shape):
            raise ValueError(f"rank: expected at most min(out, in) = {min(w.shape)} for {'.'.join(p)} of shape "
                             f"{tuple(w.shape)}, got {rank}")
    keys = jr.split(key, len(chosen))
    adapters: dict = {}
    for i, (p, w) in enumerate(chosen):
        out_f, in_f = w.shape
        bound = 1.0 / math.sqrt(in_f)
        a = jr.uniform(keys[i], (rank, in_f), w.dtype, -bound, bound)
        # zeros through an op on the (possibly vmapped) key: batched like `a`
        b = keys[i].new_zeros((out_f, rank), dtype=w.dtype)
        adapters = _set(adapters, p, {"a": a, "b": b})
    scale = alpha / math.sqrt(rank) if rslora else alpha / rank
    return Adapters(tree=adapters, rank=rank, alpha=float(alpha), scale=float(scale), dropout=float(dropout))


# ----------------------------------------------------------------------------- merge
def _delta(ab: dict, scale: float, weight: torch.Tensor) -> torch.Tensor:
    # (B @ A) * scale: peft's get_delta_weight order, so merges agree to rounding
    return ((ab["b"] @ ab["a"]) * scale).to(weight.dtype)


def _targeted(params: Any, adapters: Adapters) -> list[tuple[tuple[str, ...], dict, torch.Tensor]]:
    items = []
    for path, ab in _adapter_items(adapters):
        w = _get(params, path)
        name = ".".join(path)
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"adapters: expected params to hold a weight at {name} (where the adapters have one), found none")
        want = (ab["b"].shape[-2], ab["a"].shape[-1])
        if tuple(w.shape[-2:]) != want:
            raise ValueError(f"adapters: expected the weight at {name} to have shape {want}, got {tuple(w.shape)}")
        items.append((path, ab, w))
    return items


def merge(params: Any, adapters: Adapters) -> Any:
    """Fold the adapters into the weights: ``W + scale * B @ A`` at each adapted path.

    Args:
      params: the base params (never modified).
      adapters: from :func:`init` for params of this structure.

    Returns:
      New params with the same structure (untargeted leaves are the same
      tensors).  Pure and differentiable in both arguments; equals peft's
      ``merge_and_unload``.
    """
    _check_adapters(adapters)
    out = params
    for path, ab, w in _targeted(params, adapters):
        out = _set(out, path, w + _delta(ab, adapters.scale, w))
    return out


def unmerge(params: Any, adapters: Adapters) -> Any:
    """Inverse of :func:`merge`: ``W - scale * B @ A`` (exact up to float rounding)."""
    _check_adapters(adapters)
    out = params
    for path, ab, w in _targeted(params, adapters):
        out = _set(out, path, w - _delta(ab, adapters.scale, w))
    return out


# ----------------------------------------------------------------------------- apply
def apply(apply_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a model with adapters, without merging them into the weights.

    Args:
      apply_fn: a model's ``apply(params, *args, **kwargs)``.

    Returns:
      ``f(params, adapters, *args, key=None, **kwargs)``.  For funrl models
      (:func:`funrl.nn.transformer`, :func:`funrl.nn.encoder_decoder`,
      :func:`funrl.nn.mlp`, :func:`funrl.nn.Linear`; they carry
      ``apply.supports_lora``) each adapted linear computes
      ``x W^T + b + scale * dropout(x) A^T B^T``, peft's forward (every 2-D
      weight of these models qualifies: an embedding table ``[N, D]`` looks up
      rows of ``W + scale * B A`` without dropout, and a tied head is a linear
      layer with that table as weight); the dropout
      draws from ``key`` (split per adapted weight), and ``key=None`` means no
      dropout (evaluation).  Other ``apply`` functions (e.g. from
      :func:`funrl.nn.from_module`) get ``merge(params, adapters)``, the same
      function of the inputs; dropout there needs the unmerged path, so a
      ``key`` with ``dropout > 0`` raises ``ValueError``.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn: expected a model's apply function, got {type(apply_fn).__name__}")
    unmerged = getattr(apply_fn, "supports_lora", False)

    def f(params, adapters: Adapters, *args, key: torch.Tensor | None = None, **kwargs):
        _check_adapters(adapters)
        use_dropout = key is not None and adapters.dropout > 0.0
        if key is not None:
            jr._check_key(key)
        items = _targeted(params, adapters)
        if not unmerged or any(path[-1] != "weight" for path, _, _ in items):
            if use_dropout:
                raise ValueError("key: LoRA dropout needs a funrl model (apply.supports_lora); for this apply_fn "
                                 "call without key (no dropout) or use dropout=0")
            return apply_fn(merge(params, adapters), *args, **kwargs)
        keys = jr.split(key, len(items)) if use_dropout else [None] * len(items)
        injected = params
        for (path, ab, _), k in zip(items, keys):
            layer = dict(_get(injected, path[:-1]))
            layer["lora"] = {"a": ab["a"], "b": ab["b"], "scale": adapters.scale,
                             "dropout": adapters.dropout if use_dropout else 0.0, "key": k}
            injected = _set(injected, path[:-1], layer) if len(path) > 1 else layer
        return apply_fn(injected, *args, **kwargs)

    return f


# ----------------------------------------------------------------------------- a model with adapters
def with_adapters(model, rank: int, alpha: float, targets, dropout: float = 0.0, rslora: bool = False):
    """The same model with LoRA adapters: its params are ``{"base": params, "adapters": Adapters}``.

    A transform of the model's functions, not a new model: ``init(key)`` makes
    base params and fresh adapters (``b = 0``, so the adapted model starts equal
    to the base); ``apply`` and, for a :class:`funrl.nn.Transformer`,
    ``init_cache`` / ``decode`` run the base with the adapters unmerged
    (:func:`apply`).  Train the adapters alone by differentiating with respect
    to ``params["adapters"]``; the base with the adapters off is the reference
    model of RL fine-tuning, so no second copy of the weights is kept.

    Args:
      model: a funrl model with ``init`` and ``apply`` (and ``init_cache`` /
        ``decode`` if it is a Transformer); a NamedTuple, as funrl models are.
      rank, alpha, targets, dropout, rslora: as for :func:`init`.

    Returns:
      A model of the same type whose functions take the ``{"base", "adapters"}`` params.
    """
    if not hasattr(model, "_replace") or not callable(getattr(model, "apply", None)):
        raise TypeError(f"model: expected a funrl model (a NamedTuple with init and apply), got {type(model).__name__}")
    base_apply = apply(model.apply)

    def init_(key: torch.Tensor) -> dict:
        k_base, k_adapters = jr.split(key)
        base = model.init(k_base)
        return {"base": base, "adapters": init(k_adapters, base, rank, alpha, targets, dropout, rslora)}

    def apply_(params: dict, *args, **kwargs):
        return base_apply(params["base"], params["adapters"], *args, **kwargs)

    fns = {"init": init_, "apply": apply_}
    if hasattr(model, "decode"):
        base_decode = apply(model.decode)

        def init_cache(params: dict, *args, **kwargs):
            return model.init_cache(params["base"], *args, **kwargs)

        def decode(params: dict, *args, **kwargs):
            return base_decode(params["base"], params["adapters"], *args, **kwargs)

        fns.update(init_cache=init_cache, decode=decode)
    return model._replace(**fns)
